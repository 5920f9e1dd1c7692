"""Repair after losing one of six nodes, beside a store of the same bytes and gets without repair.

Six node processes on loopback (R=3, durable): ``storer`` and ``reader`` (agents) and four
``fstore-node`` holders, each with a short grace (``--repair-after 3``) and rounds every
second, at the default repair rate cap. In one run:

1. ``store``: the storer stores the data set (16 files; 1 GiB in all with
   ``--benchmark-enable``, 64 MiB as a smoke check): MB/s of file bytes.
2. ``get``: the reader gets one file (a sixteenth of the set) into /dev/null: MB/s.
3. A holder is SIGKILLed. From the moment a live node counts it as lost (its grace
   expired) until no blob of the set has
   fewer than 3 good copies on the live nodes: ``repair`` MB/s, the bytes the live nodes
   copied (their ``fstore_repaired_bytes_total``) over that time.
4. ``get during repair``: the reader gets the same file again from that same moment.

Every file is then read back and checked (0 files lost), and the goals are printed:
repair at least 0.8 times the store rate, a get during repair at least 0.7 times one without.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from netutil import (
    Agent,
    Cluster,
    MiB,
    NodeProcess,
    read_manifest,
    wait_for_mesh,
    wait_until,
    write_random_file,
)

from fstore import _native

GRACE = 3.0
OPTIONS = ["--repair-after", str(GRACE), "--repair-interval", "1"]
FILES = 16
MESH_TIMEOUT = 30.0
HEAL_TIMEOUT = 600.0


def copies(address: bytes, nodes: list[NodeProcess]) -> int:
    return sum(1 for n in nodes if n.has_blob(address))


def repaired_bytes(nodes: list[NodeProcess]) -> float:
    total = 0.0
    for node in nodes:
        if isinstance(node, Agent):
            total += node.call("metric", name="fstore_repaired_bytes_total")["value"]
        else:
            total += node.metric("fstore_repaired_bytes_total")
    return total


def timed(action: object) -> float:
    assert callable(action)
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def test_repair_after_losing_one_of_six(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    config = request.config
    enabled = config.getoption("benchmark_enable") or not config.getoption("benchmark_disable")
    total = (1 << 30) if enabled else 64 * MiB
    cluster = Cluster(tmp_path)
    try:
        s = cluster.agent("storer", options=OPTIONS)
        r = cluster.agent("reader", peers=[s.address], options=OPTIONS)
        holders = [cluster.holder(f"h{i}", peers=[s.address], options=OPTIONS) for i in range(4)]
        everyone: list[NodeProcess] = [s, r, *holders]
        wait_for_mesh([s, r], everyone, MESH_TIMEOUT)

        sources = []
        for i in range(FILES):
            sources.append(tmp_path / f"set-{i}.bin")
            write_random_file(sources[-1], total // FILES, b"repair set %d" % i)
        caps: dict[str, str] = {}

        def store_all() -> None:
            for path in sources:
                caps[path.name] = s.call("store", timeout=600, name=path.name, path=str(path))[
                    "capability"
                ]

        store_seconds = timed(store_all)
        dirs = [n.data_dir for n in everyone]
        blobs = []
        for cap in caps.values():
            manifest, chunks = read_manifest(cap, dirs)
            blobs += [manifest, *(c.address for c in chunks)]
        probe = next(iter(caps.values()))

        def get() -> None:
            r.call("get", timeout=600, target=probe, out="/dev/null")

        get_seconds = timed(get)

        victim = holders[0]
        victim.kill()
        live = [n for n in everyone if n is not victim]
        before = repaired_bytes(live)
        wait_until(
            lambda: any("counted as lost" in n.log_text() for n in live),
            HEAL_TIMEOUT,
            "a live node to count the killed one as lost",
        )
        started = time.perf_counter()
        during: list[float] = []
        getter = threading.Thread(target=lambda: during.append(timed(get)))
        getter.start()
        wait_until(
            lambda: all(copies(a, live) >= 3 for a in blobs),
            HEAL_TIMEOUT,
            "3 copies of every blob on the live nodes",
        )
        repair_seconds = time.perf_counter() - started
        getter.join()
        copied = repaired_bytes(live) - before

        lost = 0
        for name, cap in caps.items():
            got = r.call("get", timeout=600, target=cap, out=str(tmp_path / "check"))
            expected = _native.hash_file(str(tmp_path / name)).hex()
            lost += got["blake3"] != expected
    finally:
        cluster.close()

    file_bytes = total / FILES
    store_rate = total / store_seconds / 1e6
    repair_rate = copied / repair_seconds / 1e6
    get_rate = file_bytes / get_seconds / 1e6
    get_during = file_bytes / during[0] / 1e6
    lines = [
        f"store {total / MiB:.0f} MiB: {store_rate:.0f} MB/s",
        f"repair: {copied / MiB:.0f} MiB copied in {repair_seconds:.1f} s = {repair_rate:.0f} "
        f"MB/s ({repair_rate / store_rate:.2f}x the store; goal 0.8x)",
        f"get {file_bytes / MiB:.0f} MiB: {get_rate:.0f} MB/s alone, {get_during:.0f} MB/s "
        f"during repair ({get_during / get_rate:.2f}x; goal 0.7x)",
        f"files lost: {lost}",
    ]
    print("\n" + "\n".join(lines))
    assert lost == 0
