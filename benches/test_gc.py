"""A collection pass over one node's blobs: CPU time and peak memory.

A data directory is filled with small blobs (100,000 with ``--benchmark-enable``, 10,000
as a smoke check), each marked kept and held, as a node's catalog has them. Two passes
are measured, through ``LocalBlobs`` as the node runs them:

1. ``idle``: nothing has lapsed; the pass is the query that finds what has.
2. ``collect 5%``: a twentieth of the blobs have only a lapsed lease; the pass deletes them
   (then another twentieth, with memory traced).

For each: wall and CPU seconds (``time.process_time``: this process, SQLite included)
and the peak of Python's allocations during the pass (``tracemalloc``), beside the
catalog's size on disk. Goals: under 1 s of CPU per 100,000 blobs, and memory that does
not grow with the blob count (only with what is collected).
"""

from __future__ import annotations

import asyncio
import os
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop
from pytest_benchmark.fixture import BenchmarkFixture

from benches.measure import _Pedantic
from fstore import _native
from fstore.formats.leases import ANONYMOUS_TAG
from fstore.node.local import LocalBlobs
from fstore.storage.blobs import BlobStore
from fstore.storage.catalog import Catalog
from fstore.storage.smallblobs import SmallBlobs

GOAL_CPU_PER_100K = 1.0
BATCH = 5000


def blob_count(config: pytest.Config) -> int:
    enabled = config.getoption("benchmark_enable") or not config.getoption("benchmark_disable")
    return 100_000 if enabled else 10_000


def blobs(count: int) -> Iterator[tuple[bytes, bytes]]:
    for i in range(count):
        data = i.to_bytes(8, "big") * 8
        yield _native.hash(data), data


def fill(root: Path, count: int, now: float) -> tuple[BlobStore, Catalog, list[bytes]]:
    """``count`` blobs, each held for an hour; the list of every tenth (to lapse later).

    Kept as a node keeps them: these are small, so they are rows of the catalog."""
    catalog = Catalog(root / "fstore.db")
    store = BlobStore(root, durable=False, small=SmallBlobs(catalog))
    every_tenth = []
    batch: list[tuple[bytes, bytes]] = []
    for n, (address, data) in enumerate(blobs(count)):
        batch.append((address, data))
        if n % 10 == 0:
            every_tenth.append(address)
        if len(batch) == BATCH or n == count - 1:
            store.put_many(batch, verified=True)
            with catalog.transaction():
                for a, _ in batch:
                    catalog.mark_kept(a)
                    catalog.lease_hold(a, ANONYMOUS_TAG, 1, now + 3600)
            batch = []
    return store, catalog, every_tenth


def lapse(catalog: Catalog, addresses: list[bytes], now: float) -> None:
    with catalog.transaction():
        for address in addresses:
            catalog.lease_hold(address, ANONYMOUS_TAG, 2, now - 1)


def measured_pass(local: LocalBlobs, *, traced: bool) -> tuple[float, float, int, int]:
    """(wall s, CPU s, peak Python bytes if ``traced``, blobs freed) of one collection pass.

    Tracing slows every allocation, so CPU is measured on untraced passes."""

    async def one_pass() -> int:
        expired = await asyncio.to_thread(local.expired)
        freed, _ = await local.collect(sorted(expired))
        return freed

    if traced:
        tracemalloc.start()
    wall, cpu = time.perf_counter(), time.process_time()
    freed = uvloop.run(one_pass())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = 0
    if traced:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return wall, cpu, peak, freed


@pytest.mark.benchmark(group="gc")
def test_collection_pass(
    benchmark: BenchmarkFixture, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    count = blob_count(request.config)
    now = time.time()
    store, catalog, every_tenth = fill(tmp_path, count, now)
    local = LocalBlobs(store, catalog, clock=lambda: now)
    results: dict[str, tuple[float, float, int, int]] = {}
    timed: _Pedantic = benchmark
    idle = timed.pedantic(
        lambda: measured_pass(local, traced=False), rounds=1, warmup_rounds=0, iterations=1
    )
    results["idle"] = (*idle[:2], measured_pass(local, traced=True)[2], idle[3])
    half = len(every_tenth) // 2
    lapse(catalog, every_tenth[:half], now)
    collect = measured_pass(local, traced=False)
    lapse(catalog, every_tenth[half:], now)
    collect_memory = measured_pass(local, traced=True)
    results["collect 5%"] = (*collect[:2], collect_memory[2], collect[3])
    catalog_bytes = sum(
        os.path.getsize(p) for p in tmp_path.glob("fstore.db*") if os.path.isfile(p)
    )

    print(f"\ncollection pass over {count:,} blobs (catalog {catalog_bytes / 1e6:.1f} MB):")
    for name, (wall, cpu, peak, freed) in results.items():
        per_100k = cpu * 100_000 / count
        print(
            f"  {name:<12} {wall:6.2f} s wall, {cpu:6.2f} s CPU ({per_100k:.2f} s per 100,000), "
            f"peak {peak / 1e6:6.2f} MB, {freed:,} freed"
        )
    assert results["idle"][3] == 0
    assert results["collect 5%"][3] == half
    assert collect_memory[3] == len(every_tenth) - half
    assert not any(store.has(a) for a in every_tenth[:100])
    assert results["idle"][1] * 100_000 / count < GOAL_CPU_PER_100K * 3  # a smoke bound
    catalog.close()
