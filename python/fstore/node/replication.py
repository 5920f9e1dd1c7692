"""Copies on the ``replicas`` live members closest to a key, and the rule for enough of them."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from fstore.errors import (
    DiskFullError,
    InsufficientReplicasError,
    NotFoundError,
    RemoteError,
    StorageFullError,
)
from fstore.formats.leases import ANONYMOUS_TAG
from fstore.net.link import PeerLink
from fstore.net.wire import ResponseReceived
from fstore.node.hedge import Hedge
from fstore.node.local import LocalBlobs
from fstore.node.metrics import NodeMetrics
from fstore.node.peers import Peers

# A busy peer is asked again after 0.05, 0.1, … 1.6 s (about 3 s in all), then once more.
BUSY_RETRIES = 6
BUSY_PAUSE = 0.05


class Replicator:
    def __init__(
        self, peers: Peers, local: LocalBlobs, replicas: int, metrics: NodeMetrics
    ) -> None:
        self.peers = peers
        self.local = local
        self.replicas = replicas
        self.metrics = metrics

    async def replicate(
        self,
        key: bytes,
        what: str,
        put_on: Callable[[bytes], Awaitable[None]],
        body_bytes: int = 0,
        *,
        allow_degraded: bool = False,
    ) -> int:
        """Put something on the ``replicas`` live members closest to ``key``.

        Members are tried in XOR order (overdue ones last), a failed target
        replaced by the next one, and an overdue one (silent past the time its
        past answers predict) joined by the next one (:class:`Hedge`). It fails
        with :class:`InsufficientReplicasError` unless a write quorum of copies
        is durable (:meth:`write_quorum`). Targets still silent when enough
        copies are durable finish on their own. Returns the durable copies.
        """
        ranked = self.peers.ranked(key)
        wanted = min(self.replicas, len(ranked))
        required = self.write_quorum(allow_degraded)
        hedge: Hedge[None] = Hedge(self.peers, ranked, put_on, body_bytes)
        done = 0
        failed: list[tuple[bytes, BaseException]] = []
        try:
            while done < wanted and not hedge.exhausted:
                if hedge.waiting_only_on_overdue and done >= required:
                    break
                for node, result in await hedge.wait(wanted - done):
                    if isinstance(result, BaseException):
                        failed.append((node, result))
                    else:
                        done += 1
        finally:
            hedge.detach()
            self.metrics.hedged_requests.inc(hedge.hedged)
        self.metrics.replication_failures.inc(len(failed))
        if done < required:
            reasons = "; ".join(f"{n.hex()[:12]}: {e}" for n, e in failed)
            message = f"{what}: {done} durable copies, {required} required ({reasons})"
            own_disk = [
                e for n, e in failed if n == self.peers.node_id and isinstance(e, DiskFullError)
            ]
            if own_disk:
                raise DiskFullError(f"this node's disk is full; {message}") from own_disk[0]
            if any(_refused_for_space(e) for _, e in failed):
                raise StorageFullError(f"too few members have room; {message}")
            raise InsufficientReplicasError(message)
        return done

    def write_quorum(self, allow_degraded: bool = False) -> int:
        """Durable copies a put needs: a majority of ``replicas``, or 1 if degraded is allowed.

        In a network that has never had ``replicas`` members, a majority of the
        members it has: a lone node stores with one copy. Members that left keep
        counting (as lost), so losing nodes never lowers the bar by itself.
        """
        if allow_degraded:
            return 1
        return min(self.replicas, len(self.peers.known())) // 2 + 1

    async def put_blob(
        self,
        address: bytes,
        blob: bytes | memoryview,
        *,
        allow_degraded: bool = False,
        tag: bytes = ANONYMOUS_TAG,
    ) -> int:
        """Durable copies of a blob this process sealed, each with an upload lease under
        ``tag``; returns how many."""
        return await self.replicate(
            address,
            f"blob {address.hex()}",
            lambda node: self.put_blob_on(node, address, blob, tag),
            len(blob),
            allow_degraded=allow_degraded,
        )

    async def confirm_blob(self, address: bytes, *, allow_degraded: bool = False) -> int:
        """Durable copies of a blob stored before, on the R closest live members.

        A copy counts only when its holder confirms it (``has_blobs``); where it
        is missing, this node's copy is sent if it has one. Returns the confirmed
        copies (:class:`InsufficientReplicasError` below the write quorum).
        """

        async def confirm_on(node: bytes) -> None:
            if node == self.peers.node_id:
                if not self.local.has(address):
                    raise NotFoundError(f"blob {address.hex()} is no longer held here")
                return
            link = await self.peers.connect(node)
            response = await link.request("has_blobs", {"addrs": [address]})
            if response.meta.get("have") == [True]:
                return
            blob = await self.local.load(address)
            if blob is None:
                raise NotFoundError(f"blob {address.hex()} is no longer held here")
            await request_patiently(link, "put_blob", {"addr": address}, blob)
            self.metrics.blob_bytes_sent.inc(len(blob))

        return await self.replicate(
            address, f"blob {address.hex()}", confirm_on, allow_degraded=allow_degraded
        )

    async def put_blob_on(
        self, node: bytes, address: bytes, blob: bytes | memoryview, tag: bytes = ANONYMOUS_TAG
    ) -> None:
        if node == self.peers.node_id:
            # The address was computed from these bytes in this process.
            await self.local.put(address, blob, verified=True, tag=tag)
            return
        link = await self.peers.connect(node)
        await request_patiently(link, "put_blob", {"addr": address, "tag": tag}, blob)
        self.metrics.blob_bytes_sent.inc(len(blob))


def _refused_for_space(error: BaseException) -> bool:
    return isinstance(error, StorageFullError) or (
        isinstance(error, RemoteError) and error.code == "storage_full"
    )


async def request_patiently(
    link: PeerLink, op: str, meta: dict[str, Any], body: bytes | memoryview = b""
) -> ResponseReceived:
    """A request that a peer too busy to take it now (``busy``) gets again, a few times.

    A put belongs on its target: a busy one is asked again after a growing,
    jittered pause rather than replaced by a member further away.
    """
    for attempt in range(BUSY_RETRIES):
        try:
            return await link.request(op, meta, body)
        except RemoteError as e:
            if e.code != "busy":
                raise
        await asyncio.sleep(BUSY_PAUSE * 2**attempt * random.uniform(0.5, 1.5))
    return await link.request(op, meta, body)
