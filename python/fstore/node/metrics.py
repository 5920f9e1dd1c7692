"""The Prometheus metrics of one node (docs/API.md, "Metrics").

Every :class:`NodeMetrics` has a ``CollectorRegistry`` of its own, never the
global one, so several nodes in one process (the tests, ``fstore demo``) keep
separate counts. The node counts bytes and failures as they happen; the gauges
(blobs held, peers linked) are read from the node when ``/metrics`` is scraped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "NodeMetrics", "NodeStats"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The ``Content-Type`` of :meth:`NodeMetrics.exposition` (Prometheus text format)."""

# Seconds: from a health check (a millisecond) to a multi-gigabyte transfer.
HTTP_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 30.0, 120.0, 600.0)

VerificationSource = Literal["peer", "disk"]


@dataclass(frozen=True)
class NodeStats:
    """What a node holds and who it is linked with, at one moment."""

    blobs: int
    blob_bytes: int
    peers: int
    under_replicated: int = 0
    repair_queue: int = 0
    last_scrub: float = 0.0
    used_bytes: int = 0
    max_storage: int | None = None
    reclaimable_bytes: int = 0
    reclaimed_bytes: int = 0
    pinned_bytes: int = 0
    last_collection: float = 0.0


class NodeMetrics:
    """The counters, gauges and histogram of one node, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.stored_bytes = self._counter(
            "fstore_stored_bytes", "Plaintext bytes stored by this node's user."
        )
        self.served_bytes = self._counter(
            "fstore_served_bytes", "Plaintext bytes returned by gets (whole files and ranges)."
        )
        self.blob_bytes_received = self._counter(
            "fstore_blob_bytes_received", "Blob bytes received from peers."
        )
        self.blob_bytes_sent = self._counter("fstore_blob_bytes_sent", "Blob bytes sent to peers.")
        self.replication_failures = self._counter(
            "fstore_replication_failures", "Targets that failed to acknowledge a copy."
        )
        self.hedged_requests = self._counter(
            "fstore_hedged_requests",
            "Peer requests joined by a second one because the first was overdue.",
        )
        self.repair_rounds = self._counter(
            "fstore_repair_rounds", "Repair rounds begun (digests compared with peers)."
        )
        self.repaired_bytes = self._counter(
            "fstore_repaired_bytes", "Bytes of blobs this node copied to itself in repair."
        )
        self.repaired_blobs = self._counter(
            "fstore_repaired_blobs", "Blobs this node copied to itself in repair."
        )
        self.handed_off_blobs = self._counter(
            "fstore_handed_off_blobs",
            "Copies dropped here once every member responsible for them held one.",
        )
        self.scrubbed_bytes = self._counter(
            "fstore_scrubbed_bytes", "Bytes of blobs re-hashed by the scrubber."
        )
        self.scrub_bad = self._counter(
            "fstore_scrub_bad_blobs", "Blobs the scrubber found not matching their address."
        )
        self.tree_nodes_fetched = self._counter(
            "fstore_tree_nodes_fetched",
            "Directory nodes fetched (from this node's disk or a peer) and opened.",
        )
        self.reclaimed_bytes = self._counter(
            "fstore_space_reclaimed_bytes", "Bytes of blobs collected here once no lease held them."
        )
        self.reclaimed_blobs = self._counter(
            "fstore_space_reclaimed_blobs", "Blobs collected here once no lease held them."
        )
        self.peers_rejected = self._counter(
            "fstore_peers_rejected",
            "Connections dropped because the peer did not prove it is a network member.",
        )
        self.verification_failures = Counter(
            "fstore_verification_failures",
            "Copies of blobs that did not match their address, by where they came from.",
            ["source"],
            registry=self.registry,
        )
        for source in ("peer", "disk"):
            self.verification_failures.labels(source)  # exported at 0 from the start
        self.group_commits = Counter(
            "fstore_group_commits",
            "Group commits of this node's own writes, by the thread that ran their catalog "
            "transaction: the event loop's (rows alone, disk quick) or a commit thread.",
            ["on"],
            registry=self.registry,
        )
        for on in ("loop", "thread"):
            self.group_commits.labels(on)
        self.http_request_duration = Histogram(
            "fstore_http_request_duration_seconds",
            "HTTP API requests, until the last byte of the response was handed on.",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        self._blobs = self._gauge("fstore_blobs", "Blobs held on this node's disk.")
        self._blob_bytes = self._gauge("fstore_blob_bytes", "Bytes of the blobs held.")
        self._peers = self._gauge("fstore_peers_connected", "Peers linked right now.")
        self._under_replicated = self._gauge(
            "fstore_under_replicated_blobs",
            "Blobs known to lack a copy on a responsible member (pulls here, offers refused).",
        )
        self._repair_queue = self._gauge("fstore_repair_queue", "Copies waiting to be pulled.")
        self._last_scrub = self._gauge(
            "fstore_last_scrub_pass_timestamp_seconds", "When the last full scrub pass ended."
        )
        self._used = self._gauge("fstore_space_used_bytes", "Blob bytes counted against the limit.")
        self._limit = self._gauge(
            "fstore_space_limit_bytes", "The storage limit (--max-storage); 0 when there is none."
        )
        self._reclaimable = self._gauge(
            "fstore_space_reclaimable_bytes",
            "Bytes of blobs here whose leases have all lapsed, not collected yet.",
        )
        self._pinned = self._gauge(
            "fstore_space_pinned_bytes", "Plaintext bytes of the files this namespace pins."
        )
        self.last_collection = self._gauge(
            "fstore_space_last_collection_timestamp_seconds", "When the last collection pass ended."
        )

    def _counter(self, name: str, documentation: str) -> Counter:
        return Counter(name, documentation, registry=self.registry)

    def _gauge(self, name: str, documentation: str) -> Gauge:
        return Gauge(name, documentation, registry=self.registry)

    def verification_failed(self, source: VerificationSource) -> None:
        self.verification_failures.labels(source).inc()

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_request_duration.labels(method, route, str(status)).observe(seconds)

    def exposition(self, stats: NodeStats) -> bytes:
        """Every metric in the Prometheus text format, the gauges set from ``stats``."""
        self._blobs.set(stats.blobs)
        self._blob_bytes.set(stats.blob_bytes)
        self._peers.set(stats.peers)
        self._under_replicated.set(stats.under_replicated)
        self._repair_queue.set(stats.repair_queue)
        self._last_scrub.set(stats.last_scrub)
        self._used.set(stats.used_bytes)
        self._limit.set(stats.max_storage or 0)
        self._reclaimable.set(stats.reclaimable_bytes)
        self._pinned.set(stats.pinned_bytes)
        return generate_latest(self.registry)
