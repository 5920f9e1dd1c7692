"""Space: the leases of this namespace's files held and released, lapsed blobs collected.

Two jobs share one loop (docs/ARCHITECTURE.md, "Space"). As a node of its
namespace, a node holds every blob its live files and pins use and releases
the blobs of the files that were deleted or overwritten (the *reference
pass*). As a holder, it deletes the blobs whose leases have all lapsed (the
*collection pass*). Both run every ``interval`` seconds, and the first right
after a delete, an overwrite or an unpin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from fstore.errors import FstoreError, NotFoundError
from fstore.formats.capability import DIR_PREFIX, Capability, DirCapability
from fstore.formats.directory import Ref
from fstore.formats.leases import LeaseKeys
from fstore.formats.records import HybridClock, NameValue
from fstore.net.waiting import woken_or_after
from fstore.node.local import LocalBlobs
from fstore.node.metrics import NodeMetrics
from fstore.node.names import FileEntry, Names, is_pin
from fstore.node.peers import Peers
from fstore.node.reader import Reader

log = logging.getLogger(__name__)

# Holds and releases go to this many times R of the live members closest to a blob:
# its responsible members, and those a store went on to past a full or silent one.
HOLDERS_FACTOR = 2
# Items per hold or release: 512 pairs of 32-byte values are 35 KiB of meta, under 64 KiB.
LEASE_BATCH = 512
# Blobs per get_leases: each may carry a lease per namespace that uses it.
LEASES_ASKED_MAX = 64
# How long the stores that follow one wait to be held with it. One client storing
# small files one after another then costs each holder one commit per this many
# seconds for its holds, not one per file; the upload leases keep the blobs meanwhile.
HOLD_GATHER = 0.25


def _leases_in(answer: object, longest: float) -> list[tuple[bytes, int, int, float]]:
    """The well-formed leases of the first address of a ``get_leases`` answer; a lease
    longer than ``longest`` (this node's lease period) is cut to it."""
    if not isinstance(answer, list) or not answer or not isinstance(answer[0], list):
        return []
    leases = []
    for lease in answer[0]:
        if not isinstance(lease, list) or len(lease) != 4:
            continue
        tag, stamp, state, remaining = lease
        if (
            isinstance(tag, bytes)
            and len(tag) == 32
            and type(stamp) is int
            and 0 <= stamp < 1 << 63
            and state in (0, 1, 2)
            and isinstance(remaining, float | int)
            and remaining > 0
        ):
            leases.append((tag, stamp, int(state), min(float(remaining), longest)))
    return leases


@dataclass(frozen=True)
class SpaceStats:
    """This node's space at one moment: the limit, and what collection did and can do."""

    used_bytes: int
    max_storage: int | None
    reclaimable_bytes: int
    reclaimed_bytes: int
    pinned_bytes: int
    last_collection: float


class Space:
    def __init__(
        self,
        peers: Peers,
        local: LocalBlobs,
        names: Names,
        reader: Reader,
        lease_keys: LeaseKeys,
        replicas: int,
        metrics: NodeMetrics,
        *,
        interval: float,
    ) -> None:
        self.peers = peers
        self.local = local
        self.catalog = local.catalog
        self.names = names
        self.reader = reader
        self.keys = lease_keys
        self.replicas = replicas
        self.metrics = metrics
        self.interval = interval
        self.reclaimed_bytes = 0
        self.pinned_bytes = 0
        self.last_collection = 0.0  # Unix time the last collection pass ended
        self._stamps = HybridClock()
        self._pending: list[tuple[str, str, list[bytes]]] = []  # stores not yet noted
        self._flushing: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()  # set by flushed(): hold what is pending now
        # The blobs of a directory tree (Trees.blobs), set once the node has its trees.
        self.tree_blobs: Callable[[Ref], AsyncIterator[bytes]] | None = None
        self._wake = asyncio.Event()

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self.reference_pass()
            except FstoreError as e:
                log.warning("reference pass failed: %s", e)
            try:
                await self.collect_pass()
            except FstoreError as e:
                log.warning("collection pass failed: %s", e)
            self._wake.clear()
            await woken_or_after(self._wake, self.interval)

    def trigger(self) -> None:
        """Run both passes soon: after a delete, an overwrite or an unpin."""
        self._wake.set()

    # --- this namespace's references ------------------------------------------------------

    async def stored(self, name: str, capability: str, blobs: list[bytes]) -> None:
        """A store named ``capability``: note the reference and hold its blobs, soon.

        Stores are noted and held in batches, after the store returns: the stores
        of the next HOLD_GATHER seconds join the first, so many small files cost
        one catalog commit and one hold request per member, not one each.
        Until the hold arrives the blobs' upload leases keep them (the grace), and
        if this node stops first, the next reference pass of any node of the
        namespace holds them. A hold that fails is not an error, for the same reason.
        """
        self._pending.append((name, capability, blobs))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())

    async def flushed(self) -> None:
        """Return once every store noted so far has been noted and held (or failed to)."""
        while self._flushing is not None and not self._flushing.done():
            self._hurry.set()
            await asyncio.shield(self._flushing)

    async def _flush(self) -> None:
        try:
            while self._pending:
                await woken_or_after(self._hurry, HOLD_GATHER)
                batch, self._pending = self._pending, []
                try:
                    replaced = await asyncio.to_thread(self._note, batch)
                    await self.hold(address for _, _, blobs in batch for address in blobs)
                except FstoreError as e:
                    log.warning("could not note or hold %d stores: %s", len(batch), e)
                    continue
                if replaced:
                    self.trigger()
        finally:
            self._hurry.clear()

    def _note(self, batch: list[tuple[str, str, list[bytes]]]) -> bool:
        """Add the stores' references in one commit; True if one replaced a name's file."""
        replaced = False
        with self.catalog.transaction():
            for name, capability, blobs in batch:
                replaced |= any(c != capability for c in self.catalog.capabilities_of(name))
                self.catalog.add_ref(name, capability, blobs)
        return replaced

    async def dropped(self, value: NameValue) -> None:
        """``value``'s name was deleted: make sure its blobs are released."""
        if value.capability is None:
            return
        with contextlib.suppress(FstoreError):
            blobs = await self._blobs_of(value.capability)
            await asyncio.to_thread(self.catalog.add_ref, value.name, value.capability, blobs)
        self.trigger()

    async def reference_pass(self) -> None:
        """Hold what every live file and pin uses; release what only dropped ones used."""
        await self.flushed()  # every hold sent so far is older than this pass's releases
        current = {v.name: v for v in await self.names.values()}
        known = {(n, c) for n, c, _ in self.catalog.refs()}
        for value in current.values():
            if value.capability is not None and (value.name, value.capability) not in known:
                try:
                    blobs = await self._blobs_of(value.capability)
                except FstoreError as e:
                    log.info("cannot read the manifest of %r yet: %s", value.name, e)
                    continue
                await asyncio.to_thread(self.catalog.add_ref, value.name, value.capability, blobs)
        live: set[bytes] = set()
        dropped: list[tuple[str, str, list[bytes]]] = []
        pinned = 0
        for name, capability, blobs in self.catalog.refs():
            newest = current.get(name)
            # A name this pass did not see is live: missing knowledge never releases.
            if newest is not None and newest.capability != capability:
                dropped.append((name, capability, blobs))
                continue
            live.update(blobs)
            if newest is not None and is_pin(newest):
                pinned += newest.size
        self.pinned_bytes = pinned
        released = {a for _, _, blobs in dropped for a in blobs} - live
        await self.hold(live)
        if await self.release(released):
            for name, capability, _ in dropped:
                await asyncio.to_thread(self.catalog.drop_ref, name, capability)
        if released:
            log.info("released %d blobs of %d dropped files", len(released), len(dropped))

    async def _blobs_of(self, capability: str) -> list[bytes]:
        """The blobs of a file (its manifest and chunks) or of a directory tree (its
        nodes, and its files' manifests and chunks), each once."""
        if capability.startswith(DIR_PREFIX) and self.tree_blobs is not None:
            top = DirCapability.parse(capability)
            found = self.tree_blobs(Ref(top.address, top.key))
            return list(dict.fromkeys([address async for address in found]))
        cap = Capability.parse(capability)
        manifest = await self.reader.manifest(cap)
        return [cap.manifest_address, *(chunk.address for chunk in manifest.chunks)]

    async def hold(self, addresses: Iterable[bytes]) -> bool:
        """Hold each blob under this namespace's tag; True if every holder took it."""
        return await self._send("hold_blobs", addresses, self.keys.tag)

    async def release(self, addresses: Iterable[bytes]) -> bool:
        """Release this namespace's lease on each blob; True if every holder took it."""
        return await self._send("release_blobs", addresses, self.keys.secret)

    async def _send(
        self, op: str, addresses: Iterable[bytes], proof: Callable[[bytes], bytes]
    ) -> bool:
        stamp = self._stamps.now()
        by_member: dict[bytes, list[tuple[bytes, bytes]]] = {}
        for address in addresses:
            item = (address, proof(address))
            for member in self.peers.ranked(address)[: HOLDERS_FACTOR * self.replicas]:
                by_member.setdefault(member, []).append(item)
        results = await asyncio.gather(
            *(self._send_to(op, m, items, stamp) for m, items in by_member.items()),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        for error in failed:
            log.info("%s: %s", op, error)
        return not failed

    async def _send_to(
        self, op: str, member: bytes, items: list[tuple[bytes, bytes]], stamp: int
    ) -> None:
        for start in range(0, len(items), LEASE_BATCH):
            batch = items[start : start + LEASE_BATCH]
            if member == self.peers.node_id:
                if op == "hold_blobs":
                    await self.local.hold(batch, stamp)
                else:
                    await self.local.release([(a, self.keys.tag(a)) for a, _ in batch], stamp)
                continue
            link = await self.peers.connect(member)
            # One due time, like a name lookup: a silent member must not hold up a
            # store; what it missed, the next reference pass sends again.
            meta = {"items": [list(i) for i in batch], "stamp": stamp}
            await link.request(op, meta, deadline=link.expected_time(len(batch) * 70))

    async def adopt_leases(self, address: bytes) -> None:
        """Copy the leases other holders have on a blob repair just copied here, so the
        copy lives as long as theirs (not only the grace of a copy that came untagged)."""
        best: dict[bytes, tuple[bytes, int, int, float]] = {}
        now = self.local.clock()
        for member in self.peers.ranked(address)[: HOLDERS_FACTOR * self.replicas]:
            try:
                link = await self.peers.connect(member)
                response = await link.request(
                    "get_leases", {"addrs": [address]}, deadline=link.expected_time()
                )
            except FstoreError as e:
                log.debug("get_leases from %s: %s", member.hex()[:12], e)
                continue
            for lease in _leases_in(response.meta.get("leases"), self.local.lease_period):
                tag, stamp, state, remaining = lease
                held = best.get(tag)
                if held is None or (stamp, now + remaining) > (held[1], held[3]):
                    best[tag] = (tag, stamp, state, now + remaining)
        if best:
            await asyncio.to_thread(self.catalog.lease_adopt, address, list(best.values()))

    # --- pins -----------------------------------------------------------------------------

    async def pin(self, capability: str) -> FileEntry:
        """Keep a file shared with this namespace alive under this namespace's leases."""
        cap = Capability.parse(capability)
        text = str(cap)
        manifest = await self.reader.manifest(cap)
        value = NameValue(text, text, manifest.size, manifest.blake3, time.time())
        await self.names.put(value)
        blobs = [cap.manifest_address, *(chunk.address for chunk in manifest.chunks)]
        await self.stored(text, text, blobs)
        await self.flushed()
        return FileEntry(text, value.size, value.blake3, value.stored_at, text)

    async def unpin(self, capability: str) -> None:
        """Stop keeping a pinned file; NotFoundError if it is not pinned."""
        text = str(Capability.parse(capability))
        if text not in {p.capability for p in await self.pins()}:
            raise NotFoundError(f"{text} is not pinned")
        await self.names.put(NameValue(text, None, 0, b"", time.time()))
        self.trigger()

    async def pins(self) -> list[FileEntry]:
        """Every live pin of this namespace."""
        return sorted(
            (
                FileEntry(v.name, v.size, v.blake3, v.stored_at, v.capability)
                for v in await self.names.values()
                if v.capability is not None and is_pin(v)
            ),
            key=lambda e: e.name,
        )

    # --- collection on this holder --------------------------------------------------------

    async def collect_pass(self) -> tuple[int, int]:
        """Delete every blob here whose leases have all lapsed; (blobs, bytes) freed."""
        expired = await asyncio.to_thread(self.local.expired)
        blobs, freed = await self.local.collect(sorted(expired))
        self.reclaimed_bytes += freed
        self.metrics.reclaimed_bytes.inc(freed)
        self.metrics.reclaimed_blobs.inc(blobs)
        self.last_collection = time.time()
        self.metrics.last_collection.set(self.last_collection)
        if blobs:
            log.info("collected %d blobs (%d bytes) no lease holds any more", blobs, freed)
        return blobs, freed

    async def stats(self) -> SpaceStats:
        def reclaimable() -> int:
            return sum(self.local.blobs.size(a) or 0 for a in self.local.expired())

        return SpaceStats(
            self.local.used_bytes,
            self.local.max_storage,
            await asyncio.to_thread(reclaimable),
            self.reclaimed_bytes,
            self.pinned_bytes,
            self.last_collection,
        )
