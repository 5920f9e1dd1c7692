"""What this node does for its peers: the handler of every request op of docs/PROTOCOL.md.

Everything a peer sends is validated here before it reaches storage; a
malformed request is a ``bad_request`` error, never an exception of ours.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

from fstore.errors import AddressMismatchError, DiskFullError, RemoteError
from fstore.net import placement
from fstore.net.link import PeerLink, Reply
from fstore.node.local import LocalBlobs
from fstore.node.metrics import NodeMetrics
from fstore.node.names import LIST_PAGE_BYTES, Names, record_entry
from fstore.node.peers import Peers

log = logging.getLogger(__name__)

MAX_PEERS_LISTED = 256
MAX_HAS_BLOBS = 1024

Handler = Callable[["Service", PeerLink, dict[str, Any], memoryview], Awaitable[Reply]]


class Service:
    def __init__(
        self,
        peers: Peers,
        local: LocalBlobs,
        names: Names,
        metrics: NodeMetrics,
        own_address: Callable[[], str],
    ) -> None:
        self.peers = peers
        self.local = local
        self.catalog = local.catalog
        self.names = names
        self.metrics = metrics
        self._own_address = own_address

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
        known = self.peers.members.known_addresses()[:MAX_PEERS_LISTED]
        return Reply({"peers": [[n, a] for n, a in known]})

    async def put_blob(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        address = _address(meta, "addr")
        self.metrics.blob_bytes_received.inc(len(body))
        try:
            await self.local.put(address, body)
        except AddressMismatchError as e:
            self.metrics.verification_failed("peer")
            raise RemoteError("bad_address", str(e)) from e
        except DiskFullError as e:
            raise RemoteError("disk_full", str(e)) from e
        return Reply({})

    async def get_blob(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        try:
            blob = await self.local.load(_address(meta, "addr"))
        except AddressMismatchError:
            self.metrics.verification_failed("disk")
            blob = None
        if blob is None:
            raise RemoteError("not_found", "no such blob here")
        self.metrics.blob_bytes_sent.inc(len(blob))
        return Reply({}, blob)

    async def has_blobs(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        addrs = meta.get("addrs")
        if not isinstance(addrs, list) or len(addrs) > MAX_HAS_BLOBS:
            raise RemoteError(
                "bad_request", f"addrs must be a list of at most {MAX_HAS_BLOBS} addresses"
            )
        return Reply({"have": [self.local.has(_checked_address(a)) for a in addrs]})

    async def put_record(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        parsed = record_entry([meta.get("loc"), meta.get("rec"), meta.get("ver")])
        if parsed is None:
            raise RemoteError("bad_request", "malformed record")
        locator, record, version = parsed
        # Storage is "highest version wins": a holder outside the record's namespace
        # has no key to check it with, so any member can replace a record with
        # garbage or with a genuine record under a higher version it was not sealed
        # with. Readers skip such copies (Names.resolve). A node of the namespace can
        # check, and does not give up a record that opens for one that does not;
        # the put is acknowledged and ignored, like any put it does not keep.
        held = self.catalog.get_record(locator)
        if (
            held is not None
            and version > held[1]
            and self.names.opens(locator, held[0], held[1])
            and not self.names.opens(locator, record, version)
        ):
            log.warning(
                "%s sent a record at version %d/%s that does not open over one of this "
                "namespace that does; kept the one held",
                link.describe(),
                version[0],
                version[1].hex()[:12],
            )
            return Reply({})
        await self.local.put_record(locator, record, version)
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
        return Reply({"more": more}, msgpack.packb(page, use_bin_type=True))

    async def find_node(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        target = _address(meta, "target")
        known = dict(self.peers.members.known_addresses())
        if own := self._own_address():
            known[self.peers.node_id] = own
        nearest = placement.closest(target, known, 20)
        return Reply({"peers": [[n, known[n]] for n in nearest]})


HANDLERS: dict[str, Handler] = {
    "ping": Service.ping,
    "peers": Service.list_peers,
    "put_blob": Service.put_blob,
    "get_blob": Service.get_blob,
    "has_blobs": Service.has_blobs,
    "put_record": Service.put_record,
    "get_record": Service.get_record,
    "list_records": Service.list_records,
    "find_node": Service.find_node,
}


def _checked_address(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise RemoteError("bad_request", "an address is 32 bytes")
    return value


def _address(meta: dict[str, Any], key: str) -> bytes:
    return _checked_address(meta.get(key))
