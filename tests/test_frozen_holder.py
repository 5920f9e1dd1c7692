"""A holder that is alive but silent (SIGSTOP) costs a get or a store well under a second.

Four real node processes, R=3. The reader drops its own copies, so every blob
comes from the holders. One holder is then frozen: its TCP connections stay
open, it answers nothing, and its ping times out only after 10 s. Gets and
stores must not wait for it: each peer request is due within the time that
peer's past answers predict, after which the next holder is asked too.
"""

from __future__ import annotations

import contextlib
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from netutil import Cluster, MiB, NodeProcess, wait_for_mesh, write_random_file

from fstore.net.link import REQUEST_TIMEOUT

MESH_TIMEOUT = 20.0
RUNS = 10
SIZE = 64 * MiB


@contextlib.contextmanager
def stopped(node: NodeProcess) -> Iterator[None]:
    """``node`` stopped (SIGSTOP) while the block runs: alive, linked, and silent."""
    node.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        node.proc.send_signal(signal.SIGCONT)


def timed_runs(action: Callable[[int], None]) -> list[float]:
    times = []
    for run in range(RUNS):
        started = time.perf_counter()
        action(run)
        times.append(time.perf_counter() - started)
    return times


def summary(label: str, times: list[float]) -> str:
    return f"{label}: p50 {statistics.median(times):.2f}s, max {max(times):.2f}s"


def test_a_frozen_holder_adds_under_a_second_to_gets_and_stores(
    cluster: Cluster, tmp_path: Path
) -> None:
    s = cluster.agent("s")
    r = cluster.agent("r", peers=[s.address])
    h1 = cluster.holder("h1", peers=[s.address])
    h2 = cluster.holder("h2", peers=[s.address])
    everyone: list[NodeProcess] = [s, r, h1, h2]
    wait_for_mesh([s, r], everyone, MESH_TIMEOUT)

    source = tmp_path / "file.bin"
    digest = write_random_file(source, SIZE, b"frozen holder")
    cap = s.call("store", name="file.bin", path=str(source))["capability"]
    r.call("delete_local", target=cap)

    def get(run: int) -> None:
        got = r.call("get", timeout=REQUEST_TIMEOUT, target=cap, out=str(tmp_path / "got"))
        assert got["blake3"] == digest

    sources = []
    for run in range(2 * RUNS):
        sources.append(tmp_path / f"store-{run}.bin")
        write_random_file(sources[-1], SIZE, b"store %d" % run)

    def store(offset: int) -> Callable[[int], None]:
        def action(run: int) -> None:
            path = sources[offset + run]
            stored = s.call("store", timeout=REQUEST_TIMEOUT, name=path.name, path=str(path))
            assert stored["replicas"] >= 2

        return action

    gets_before = timed_runs(get)
    stores_before = timed_runs(store(0))

    # Each measured right after its own freeze, before a ping timeout can drop the link.
    with stopped(h1):
        stores_frozen = timed_runs(store(RUNS))
    wait_for_mesh([s, r], everyone, MESH_TIMEOUT)  # h1 answers again, and is linked again
    with stopped(h2):
        gets_frozen = timed_runs(get)

    report = "; ".join(
        [
            summary("get, all live", gets_before),
            summary("get, one frozen", gets_frozen),
            summary("store, all live", stores_before),
            summary("store, one frozen", stores_frozen),
        ]
    )
    print(f"64 MiB, {RUNS} runs each: {report}")
    for before, frozen in ((gets_before, gets_frozen), (stores_before, stores_frozen)):
        # The goal is under 1 s (docs/PERFORMANCE.md has the figures); the bound here
        # leaves room for a busy machine's noise and still fails on a 10 s ping timeout.
        added = statistics.median(frozen) - statistics.median(before)
        assert added < 2.0, report
        # The first request to the frozen holder pays its due time; none waits for a ping
        # timeout (10 s) or a request timeout.
        assert max(frozen) < max(before) + 3.0, report
