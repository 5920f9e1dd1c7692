"""What this node does for its peers: the handler of every request op of docs/PROTOCOL.md.

Everything a peer sends is validated here before it reaches storage; a
malformed request is a ``bad_request`` error, never an exception of ours.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fstore.errors import (
    AddressMismatchError,
    DiskFullError,
    ProtocolError,
    RemoteError,
    StorageFullError,
)
from fstore.formats.leases import ANONYMOUS_TAG, tag_of
from fstore.formats.packing import pack
from fstore.formats.records import Version
from fstore.net import placement
from fstore.net.link import PeerLink, Reply
from fstore.node.local import LocalBlobs
from fstore.node.metrics import NodeMetrics
from fstore.node.names import LIST_PAGE_BYTES, Names, record_entry
from fstore.node.peers import Peers
from fstore.node.repair import DIGEST_MAX, KINDS, OFFER_MAX, Repair
from fstore.node.space import LEASE_BATCH, LEASES_ASKED_MAX

log = logging.getLogger(__name__)

MAX_PEERS_LISTED = 256

Handler = Callable[["Service", PeerLink, dict[str, Any], memoryview], Awaitable[Reply]]


class Service:
    def __init__(
        self,
        peers: Peers,
        local: LocalBlobs,
        names: Names,
        metrics: NodeMetrics,
        repair: Repair,
        own_address: Callable[[], str],
        foreground: Callable[[], contextlib.AbstractContextManager[None]],
    ) -> None:
        self.peers = peers
        self.local = local
        self.catalog = local.catalog
        self.names = names
        self.metrics = metrics
        self.repair = repair
        self._own_address = own_address
        self._foreground = foreground

    async def handle(
        self, link: PeerLink, op: str, meta: dict[str, Any], body: memoryview
    ) -> Reply:
        handler = HANDLERS.get(op)
        if handler is None:
            raise RemoteError("bad_request", f"unknown op {op!r}")
        return await handler(self, link, meta, body)

    async def ping(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        return Reply({})

    async def list_peers(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        known = self.peers.addresses()[:MAX_PEERS_LISTED]
        return Reply({"peers": [[n, a] for n, a in known]})

    async def gossip(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        assert link.peer_node is not None  # requests are served only after HELLO
        try:
            self.peers.driver.receive(link.peer_node, meta.get("m"))
        except ProtocolError as e:
            raise RemoteError("bad_request", f"gossip message: {e}") from e
        return Reply({})

    async def put_blob(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        with self._foreground():
            return await self._put_blob(meta, body)

    async def _put_blob(self, meta: dict[str, Any], body: memoryview) -> Reply:
        address = _address(meta, "addr")
        tag = meta.get("tag", ANONYMOUS_TAG)
        if not isinstance(tag, bytes) or len(tag) != 32:
            raise RemoteError("bad_request", "a tag is 32 bytes")
        self.metrics.blob_bytes_received.inc(len(body))
        try:
            await self.local.put(address, body, tag=tag)
        except AddressMismatchError as e:
            self.metrics.verification_failed("peer")
            raise RemoteError("bad_address", str(e)) from e
        except StorageFullError as e:
            raise RemoteError("storage_full", str(e)) from e
        except DiskFullError as e:
            raise RemoteError("disk_full", str(e)) from e
        return Reply({})

    async def hold_blobs(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        items, stamp = _lease_items(meta)
        await self.local.hold(items, stamp)
        return Reply({})

    async def get_leases(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        addrs = meta.get("addrs")
        if not isinstance(addrs, list) or len(addrs) > LEASES_ASKED_MAX:
            raise RemoteError(
                "bad_request", f"addrs must be a list of at most {LEASES_ASKED_MAX} addresses"
            )
        now = self.local.clock()
        answer = []
        for address in addrs:
            leases = self.catalog.leases(_checked_address(address))
            answer.append([[t, st, s, e - now] for t, st, s, e in leases if e > now])
        return Reply({"leases": answer})

    async def release_blobs(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        items, stamp = _lease_items(meta)
        await self.local.release([(address, tag_of(secret)) for address, secret in items], stamp)
        return Reply({})

    async def get_blob(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        # Serving a peer's user is foreground work here too; repair's own fetches say "bg".
        busy = contextlib.nullcontext() if meta.get("bg") is True else self._foreground()
        with busy:
            return await self._get_blob(meta)

    async def _get_blob(self, meta: dict[str, Any]) -> Reply:
        # Sent as stored: the requester hashes every copy it gets (it trusts no
        # holder), and tells this node with ``bad_blob`` when the copy was bad.
        blob = await self.local.load_unverified(_address(meta, "addr"))
        if blob is None:
            raise RemoteError("not_found", "no such blob here")
        self.metrics.blob_bytes_sent.inc(len(blob))
        return Reply({}, blob)

    async def bad_blob(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        """A requester says the copy this node served does not match its address. It is
        not trusted either: the copy is checked here, and quarantined only if it is bad."""
        address = _address(meta, "addr")
        try:
            await self.local.load(address)
        except AddressMismatchError:
            self.metrics.verification_failed("disk")
            return Reply({"bad": True})
        return Reply({"bad": False})

    async def has_blobs(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        addrs = meta.get("addrs")
        if not isinstance(addrs, list) or len(addrs) > OFFER_MAX:
            raise RemoteError(
                "bad_request", f"addrs must be a list of at most {OFFER_MAX} addresses"
            )
        return Reply({"have": [self.local.has(_checked_address(a)) for a in addrs]})

    async def put_record(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        parsed = record_entry([meta.get("loc"), meta.get("rec"), meta.get("ver")])
        if parsed is None:
            raise RemoteError("bad_request", "malformed record")
        locator, record, version = parsed
        await self.names.keep(locator, record, version, link.describe())
        return Reply({})

    async def get_record(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        held = self.catalog.get_record(_address(meta, "loc"))
        if held is None:
            raise RemoteError("not_found", "no such record here")
        return Reply({"rec": held[0], "ver": list(held[1])})

    async def list_records(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        after = meta.get("after")
        if after is not None:
            after = _checked_address(after)
        page: list[list[Any]] = []
        size = 0
        more = False
        for loc, rec, ver in sorted(self.catalog.records()):
            if after is not None and loc <= after:
                continue
            if size + len(rec) + 128 > LIST_PAGE_BYTES:
                more = True
                break
            page.append([loc, rec, list(ver)])
            size += len(rec) + 128
        return Reply({"more": more}, pack(page))

    async def sync_digest(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        kind = _kind(meta)
        entries = meta.get("entries")
        if not isinstance(entries, list) or len(entries) > DIGEST_MAX:
            raise RemoteError("bad_request", f"entries must be a list of at most {DIGEST_MAX}")
        checked = [_digest_entry(e) for e in entries]
        return Reply({"differ": await self.repair.compare(kind, checked)})

    async def sync_offer(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        kind = _kind(meta)
        items = meta.get("items")
        if not isinstance(items, list) or len(items) > OFFER_MAX:
            raise RemoteError("bad_request", f"items must be a list of at most {OFFER_MAX}")
        if kind == "blob":
            return Reply(
                {"wanted": self.repair.offered_blobs([_checked_address(a) for a in items])}
            )
        assert link.peer_node is not None
        records = [_offered_record(item) for item in items]
        return Reply({"wanted": self.repair.offered_records(link.peer_node, records)})

    async def find_node(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        target = _address(meta, "target")
        known = dict(self.peers.addresses())
        if own := self._own_address():
            known[self.peers.node_id] = own
        nearest = placement.closest(target, known, 20)
        return Reply({"peers": [[n, known[n]] for n in nearest]})


HANDLERS: dict[str, Handler] = {
    "ping": Service.ping,
    "peers": Service.list_peers,
    "gossip": Service.gossip,
    "put_blob": Service.put_blob,
    "get_blob": Service.get_blob,
    "bad_blob": Service.bad_blob,
    "has_blobs": Service.has_blobs,
    "hold_blobs": Service.hold_blobs,
    "release_blobs": Service.release_blobs,
    "get_leases": Service.get_leases,
    "put_record": Service.put_record,
    "get_record": Service.get_record,
    "list_records": Service.list_records,
    "find_node": Service.find_node,
    "sync_digest": Service.sync_digest,
    "sync_offer": Service.sync_offer,
}


def _checked_address(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise RemoteError("bad_request", "an address is 32 bytes")
    return value


def _address(meta: dict[str, Any], key: str) -> bytes:
    return _checked_address(meta.get(key))


def _lease_items(meta: dict[str, Any]) -> tuple[list[tuple[bytes, bytes]], int]:
    """``items: [[address, tag or secret], …]`` and ``stamp`` from a peer, validated."""
    items = meta.get("items")
    stamp = meta.get("stamp")
    if not isinstance(items, list) or len(items) > LEASE_BATCH:
        raise RemoteError("bad_request", f"items must be a list of at most {LEASE_BATCH}")
    if type(stamp) is not int or not 0 <= stamp < 1 << 63:
        raise RemoteError("bad_request", "stamp must be an int of at most 63 bits")
    parsed = []
    for item in items:
        if not isinstance(item, list) or len(item) != 2:
            raise RemoteError("bad_request", "a lease item is [address, 32 bytes]")
        parsed.append((_checked_address(item[0]), _checked_address(item[1])))
    return parsed, stamp


def _kind(meta: dict[str, Any]) -> str:
    kind = meta.get("kind")
    if kind not in KINDS:
        raise RemoteError("bad_request", f"kind must be one of {', '.join(KINDS)}")
    assert isinstance(kind, str)
    return kind


def _offered_record(item: object) -> tuple[bytes, Version]:
    """``[locator, clock, node id]`` from a peer, validated."""
    parsed = record_entry([item[0], b"", item[1:]] if isinstance(item, list) and item else None)
    if parsed is None:
        raise RemoteError("bad_request", "an offered record is [locator, clock, node id]")
    return parsed[0], parsed[2]


def _digest_entry(entry: object) -> tuple[int, bytes, bytes, int]:
    """``[partition, group key, digest, count]`` from a peer, validated."""
    if isinstance(entry, list) and len(entry) == 4:
        partition, key, digest, count = entry
        if (
            type(partition) is int
            and 0 <= partition < 256
            and isinstance(key, bytes)
            and len(key) == 16
            and isinstance(digest, bytes)
            and len(digest) == 32
            and type(count) is int
            and 0 <= count < 1 << 40
        ):
            return partition, key, digest, count
    raise RemoteError("bad_request", "a digest entry is [partition, group key, digest, count]")
