"""Name records: put, resolve, delete and list the names of this node's namespace.

A record is sealed with the namespace's key, its locator and its version
(docs/FORMAT.md); it is replicated like a blob on the members closest to its
locator. Holders outside the namespace cannot check what they keep, so readers
try copies from the highest version down and skip any that do not open.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from dataclasses import dataclass
from typing import Any

import msgpack

from fstore.errors import (
    FstoreError,
    IntegrityError,
    NotFoundError,
    RemoteError,
)
from fstore.formats.capability import Capability
from fstore.formats.names import check_name
from fstore.formats.records import HybridClock, NameKeys, NameValue, Version
from fstore.net.link import PeerLink
from fstore.node.local import LocalBlobs
from fstore.node.peers import Peers
from fstore.node.replication import Replicator, request_patiently

log = logging.getLogger(__name__)

RECORD_MAX = 64 * 1024
LIST_PAGE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int
    blake3: bytes
    stored_at: float
    capability: str


class Names:
    def __init__(
        self, keys: NameKeys, local: LocalBlobs, peers: Peers, replicator: Replicator
    ) -> None:
        self.keys = keys
        self.local = local
        self.catalog = local.catalog
        self.peers = peers
        self.replicator = replicator
        self._clock = HybridClock()

    async def put(self, value: NameValue, *, allow_degraded: bool = False) -> int:
        """Seal and replicate the record of ``value``; returns the durable copies.

        The writer always keeps its own names too, so ``list`` works offline:
        its own copy is committed alongside the copies sent to the closest
        members, and counts as one when it is among them.
        """
        locator = self.keys.locator(value.name)
        version: Version = (self._clock.now(self._latest_version(locator)), self.peers.node_id)
        record = self.keys.seal(value, locator, version)
        own = asyncio.ensure_future(self.local.put_record(locator, record, version))
        try:
            return await self.replicator.replicate(
                locator,
                f"name record for {value.name!r}",
                lambda node: self._put_record_on(node, locator, record, version, own),
                allow_degraded=allow_degraded,
            )
        finally:
            await own

    def _latest_version(self, locator: bytes) -> int:
        held = self.catalog.get_record(locator)
        return held[1][0] if held else 0

    async def _put_record_on(
        self,
        node: bytes,
        locator: bytes,
        record: bytes,
        version: Version,
        own: asyncio.Future[bool],
    ) -> None:
        if node == self.peers.node_id:
            await asyncio.shield(own)
            return
        link = await self.peers.connect(node)
        meta = {"loc": locator, "rec": record, "ver": list(version)}
        await request_patiently(link, "put_record", meta)

    async def keep(self, locator: bytes, record: bytes, version: Version, source: str) -> bool:
        """Keep a record a peer sent if it is newer than the one held; whether it was kept.

        Storage is "highest version wins": a holder outside the record's namespace
        has no key to check it with, so any member can replace a record with
        garbage or with a genuine record under a higher version it was not sealed
        with. Readers skip such copies (:meth:`resolve`). A node of the namespace
        can check, and does not give up a record that opens for one that does not.
        """
        held = self.catalog.get_record(locator)
        if (
            held is not None
            and version > held[1]
            and self.opens(locator, held[0], held[1])
            and not self.opens(locator, record, version)
        ):
            log.warning(
                "%s sent a record at version %d/%s that does not open over one of this "
                "namespace that does; kept the one held",
                source,
                version[0],
                version[1].hex()[:12],
            )
            return False
        return await self.local.put_record(locator, record, version)

    def opens(self, locator: bytes, record: bytes, version: Version) -> bool:
        """Whether ``record`` is one of this namespace's, sealed for ``locator`` at ``version``."""
        try:
            self.keys.open(record, locator, version)
        except IntegrityError:
            return False
        return True

    async def resolve(self, name: str) -> NameValue:
        """The newest record of ``name`` that opens, from this node's copy and its peers'.

        Any member can send any bytes with any version for a locator it has seen,
        and a holder outside the namespace cannot tell (see ``Service.put_record``):
        so candidates are tried from the highest version down, and one that does
        not open under its locator and version, or names another name, is skipped.
        """
        check_name(name)
        locator = self.keys.locator(name)
        candidates: list[tuple[bytes, Version, bytes | None]] = []
        held = self.catalog.get_record(locator)
        if held is not None:
            candidates.append((held[0], held[1], None))
        ranked = [n for n in self.peers.ranked(locator) if n != self.peers.node_id]
        asked = ranked[: self.replicator.replicas + 2]
        results = await asyncio.gather(
            *(self._get_record_from(n, locator) for n in asked), return_exceptions=True
        )
        for node, result in zip(asked, results, strict=True):
            if isinstance(result, tuple):
                candidates.append((result[0], result[1], node))
            elif isinstance(result, BaseException):
                log.debug("get_record for %r from %s: %s", name, node.hex()[:12], result)
        if not candidates:
            raise NotFoundError(f"no file named {name!r}")
        tried: set[tuple[bytes, Version]] = set()
        failed = 0
        for record, version, source in sorted(candidates, key=lambda c: c[1], reverse=True):
            if (record, version) in tried:
                failed += 1  # the same bytes as a copy that already failed
                continue
            tried.add((record, version))
            try:
                value = self.keys.open(record, locator, version)
                if value.name != name:
                    raise IntegrityError(f"it names {value.name!r}")
            except IntegrityError as e:
                failed += 1
                log.warning(
                    "skipped a copy of the record for %r at version %d/%s from %s: "
                    "it failed its check (%s)",
                    name,
                    version[0],
                    version[1].hex()[:12],
                    self.peers.describe(source),
                    e,
                )
                continue
            if value.capability is None:
                raise NotFoundError(f"{name!r} was deleted")
            return value
        raise IntegrityError(
            f"every copy of the record for {name!r} failed its check ({failed} copies, "
            "none of which opens under the namespace's key)"
        )

    async def _get_record_from(self, node: bytes, locator: bytes) -> tuple[bytes, Version] | None:
        link = await self.peers.connect(node)
        try:
            response = await link.request(
                "get_record", {"loc": locator}, deadline=link.expected_time()
            )
        except RemoteError as e:
            if e.code == "not_found":
                return None
            raise
        return record_from_meta(response.meta)

    async def _records_held_by(self, node: bytes) -> list[tuple[bytes, bytes, Version]]:
        return await _records_held_by(await self.peers.connect(node))

    async def delete(self, name: str) -> NameValue:
        """Delete ``name``: a tombstone record that outranks every earlier version.

        Returns the record that was deleted.
        """
        value = await self.resolve(name)
        await self.put(NameValue(name, None, 0, b"", time.time()))
        return value

    async def list(self) -> list[FileEntry]:
        """Every live name of this node's namespace that the network holds (pins aside)."""
        entries = [
            FileEntry(v.name, v.size, v.blake3, v.stored_at, v.capability)
            for v in await self.values()
            if v.capability is not None and not is_pin(v)
        ]
        return sorted(entries, key=lambda e: e.name)

    async def values(self) -> builtins.list[NameValue]:
        """The newest record that opens of every name of this namespace the network
        holds: live names, pins and tombstones."""
        # Every copy of every record, by locator: a copy that does not open (garbage,
        # or a record moved to another version) must not hide an older one that does.
        records: dict[bytes, set[tuple[Version, bytes]]] = {}
        for loc, rec, ver in self.catalog.records():
            records.setdefault(loc, set()).add((ver, rec))
        # Records are placed by locator, which only a name gives: every member is asked.
        results = await asyncio.gather(
            *(self._records_held_by(node) for node in self.peers.alive()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                log.debug("listing records: %s", result)
                continue
            for loc, rec, ver in result:
                records.setdefault(loc, set()).add((ver, rec))
        values = []
        for loc, copies in records.items():
            for ver, rec in sorted(copies, key=lambda c: c[0], reverse=True):
                try:
                    values.append(self.keys.open(rec, loc, ver))
                except FstoreError:
                    # Another namespace's record (ciphertext to us), or a bad copy:
                    # the two cannot be told apart without the name.
                    continue
                break
        return values


def is_pin(value: NameValue) -> bool:
    """Whether a record is a pin: its name is the capability it keeps (FORMAT.md, 11)."""
    return Capability.looks_like(value.name)


def record_entry(entry: object) -> tuple[bytes, bytes, Version] | None:
    """``[locator, sealed record, [clock, node id]]`` from a peer, validated."""
    if not isinstance(entry, list | tuple) or len(entry) != 3:
        return None
    loc, rec, ver = entry
    if not isinstance(ver, list | tuple) or len(ver) != 2:
        return None
    clock, node = ver
    if (
        isinstance(loc, bytes)
        and len(loc) == 32
        and isinstance(rec, bytes)
        and len(rec) <= RECORD_MAX
        and type(clock) is int  # not bool, which msgpack also decodes into an int subclass
        and 0 <= clock < 1 << 63
        and isinstance(node, bytes)
        and len(node) == 32
    ):
        return loc, rec, (clock, node)
    return None


def record_from_meta(meta: dict[str, Any]) -> tuple[bytes, Version] | None:
    parsed = record_entry([b"\0" * 32, meta.get("rec"), meta.get("ver")])
    return (parsed[1], parsed[2]) if parsed else None


async def _records_held_by(link: PeerLink) -> list[tuple[bytes, bytes, Version]]:
    """Every name record a peer holds, page by page."""
    records: list[tuple[bytes, bytes, Version]] = []
    after: bytes | None = None
    while True:
        response = await link.request(
            "list_records", {"after": after}, deadline=link.expected_time(LIST_PAGE_BYTES)
        )
        # unpackb takes no max_buffer_size (only Unpacker does); its length limits
        # default to the body's size, which the wire already bounds by MAX_BODY.
        page = msgpack.unpackb(response.body, raw=False)
        if not isinstance(page, list):
            raise RemoteError("bad_request", "list_records body is not a list")
        for entry in page:
            parsed = record_entry(entry)
            if parsed is not None:
                records.append(parsed)
                after = max(after or parsed[0], parsed[0])
        if not response.meta.get("more") or not page:
            return records
