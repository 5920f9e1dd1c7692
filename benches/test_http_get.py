"""A get through the HTTP API beside the in-process get of the same node, and ``cp``.

Four nodes as ``httpget.py`` describes (a 1 GiB file stored with R = 3; the reader holds none
of its blobs and serves its HTTP API). One benchmark per way of getting the file, in this
order: in-process into ``/dev/null`` and into a file, ``curl -o`` and ``fstore get -o`` to both
(each HTTP get beside the in-process get to the same destination), and ``cp`` of the input
to a file (the disk's bound). Each
destination is checked (size and BLAKE3) and removed. Without ``--benchmark-enable`` the file
is 32 MiB (a smoke check).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benches.httpget import GetNetwork, Timing
from benches.measure import FigureRow, Goal, timed_once

GROUP = "get through HTTP beside in-process, 3 nodes R=3, reader a 4th node"
SMOKE_MIB, FULL_MIB = 32, 1024
GOAL_RATIO = 0.9  # HTTP >= this x the in-process get, to the same destination


@pytest.fixture(scope="module")
def get_network(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[GetNetwork]:
    if shutil.which("curl") is None:
        pytest.fail("`curl` is not installed: apt-get install -y curl (CI does)", pytrace=False)
    config = request.config
    enabled = not config.getoption("benchmark_disable") or config.getoption("benchmark_enable")
    mib = FULL_MIB if enabled else SMOKE_MIB
    network = GetNetwork(tmp_path_factory.mktemp("http-get"), mib << 20)
    try:
        yield network
    finally:
        network.close()


@pytest.fixture(scope="module")
def in_process() -> dict[str, Timing]:
    """The in-process gets of the module, by destination: what the HTTP gets are held to."""
    return {}


def measure(
    benchmark: BenchmarkFixture,
    network: GetNetwork,
    way: Callable[[str], Timing],
    to_file: bool,
    results: list[FigureRow],
    baseline: Timing | None = None,
) -> Timing:
    out = str(network.root / "out.bin") if to_file else os.devnull
    timing, _ = timed_once(benchmark, lambda: way(out))
    figures = {
        "MB/s": f"{timing.mbps:.1f}",
        "seconds": f"{timing.seconds:.3f}",
        "CPU-s per GiB": f"{timing.cpu_per_gib:.2f}",
    }
    goals: tuple[Goal, ...] = ()
    if baseline is not None:
        ratio = timing.mbps / baseline.mbps
        figures["x in-process"] = f"{ratio:.2f}"
        goals = (Goal(f">= {GOAL_RATIO}x in-process", ratio >= GOAL_RATIO),)
    FigureRow(GROUP, timing.way, figures, goals).record(benchmark, results)
    return timing


@pytest.mark.benchmark(group="get through HTTP")
@pytest.mark.parametrize("to_file", [False, True], ids=["devnull", "file"])
def test_in_process(
    benchmark: BenchmarkFixture,
    get_network: GetNetwork,
    in_process: dict[str, Timing],
    figure_results: list[FigureRow],
    to_file: bool,
) -> None:
    timing = measure(benchmark, get_network, get_network.in_process, to_file, figure_results)
    in_process["file" if to_file else "devnull"] = timing


@pytest.mark.benchmark(group="get through HTTP")
@pytest.mark.parametrize("to_file", [False, True], ids=["devnull", "file"])
def test_curl(
    benchmark: BenchmarkFixture,
    get_network: GetNetwork,
    in_process: dict[str, Timing],
    figure_results: list[FigureRow],
    to_file: bool,
) -> None:
    baseline = in_process.get("file" if to_file else "devnull")
    measure(benchmark, get_network, get_network.curl, to_file, figure_results, baseline)


@pytest.mark.benchmark(group="get through HTTP")
@pytest.mark.parametrize("to_file", [False, True], ids=["devnull", "file"])
def test_fstore_get(
    benchmark: BenchmarkFixture,
    get_network: GetNetwork,
    in_process: dict[str, Timing],
    figure_results: list[FigureRow],
    to_file: bool,
) -> None:
    baseline = in_process.get("file" if to_file else "devnull")
    measure(benchmark, get_network, get_network.fstore_get, to_file, figure_results, baseline)


@pytest.mark.benchmark(group="get through HTTP")
def test_cp(
    benchmark: BenchmarkFixture, get_network: GetNetwork, figure_results: list[FigureRow]
) -> None:
    measure(benchmark, get_network, get_network.cp, True, figure_results)
