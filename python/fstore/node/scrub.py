"""Scrub: every blob on disk re-hashed on a schedule, at a bounded rate.

A blob that no longer matches its address is quarantined (as on any read,
``BlobStore.load``) and a good copy is pulled from another holder through the
repair queue. A pass starts every ``interval`` seconds (the next one right
after a pass that took longer) and reads at most ``rate`` bytes per second.
"""

from __future__ import annotations

import asyncio
import logging
import time

from fstore.errors import AddressMismatchError
from fstore.node.local import LocalBlobs
from fstore.node.metrics import NodeMetrics
from fstore.node.repair import Repair

log = logging.getLogger(__name__)

SCRUB_RATE = 4.0  # MB/s
SCRUB_INTERVAL = 7 * 24 * 3600.0  # a full pass a week


class Scrub:
    def __init__(
        self,
        local: LocalBlobs,
        repair: Repair,
        metrics: NodeMetrics,
        *,
        rate_mb: float = SCRUB_RATE,
        interval: float = SCRUB_INTERVAL,
    ) -> None:
        self.local = local
        self.repair = repair
        self.metrics = metrics
        self.rate = rate_mb * 1e6
        self.interval = interval
        self.last_pass = 0.0  # Unix time the last full pass ended

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            await self.scrub_pass()
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def scrub_pass(self) -> int:
        """Re-hash every blob once; returns how many were bad."""
        addresses = await asyncio.to_thread(lambda: list(self.local.blobs.addresses()))
        bad = 0
        for address in addresses:
            started = time.monotonic()
            try:
                blob = await self.local.load(address)
            except AddressMismatchError:
                bad += 1
                self.metrics.verification_failed("disk")
                self.metrics.scrub_bad.inc()
                log.warning(
                    "scrub: blob %s is damaged; quarantined, pulling a good copy", address.hex()
                )
                self.repair.enqueue(address)
                continue
            if blob is None:  # deleted meanwhile
                continue
            self.metrics.scrubbed_bytes.inc(len(blob))
            await asyncio.sleep(max(0.0, len(blob) / self.rate - (time.monotonic() - started)))
        self.last_pass = time.time()
        log.info("scrub pass over %d blobs done: %d bad", len(addresses), bad)
        return bad
