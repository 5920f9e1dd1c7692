"""Small files through the HTTP API: files/s and the CPU-seconds they cost the nodes.

Three ``fstore-node`` processes (durable, R = 3), as ``smallfiles.py`` describes; each
benchmark PUTs 4 KiB files of random bytes to the first node's API and reads every one back
afterwards (untimed). With ``--benchmark-enable``: 1,000 files from one client, one after the
other, then 10,000 files from 16 concurrent clients; without it, 50 and 160 (a smoke check).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benches.measure import FigureRow, Goal, timed_once
from benches.smallfiles import Network, SmallFilesResult, put_small_files

GROUP = "small files: 4 KiB PUTs through HTTP, 3 nodes, R=3, durable"
GOAL_SEQUENTIAL = 400.0  # files/s from one client
GOAL_CONCURRENT = 1500.0  # files/s from 16 clients
GOAL_CPU = 3.0  # CPU-seconds per 1,000 files, all node processes together


def enabled(config: pytest.Config) -> bool:
    return not config.getoption("benchmark_disable") or bool(config.getoption("benchmark_enable"))


@pytest.fixture(scope="module")
def small_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    network = Network(tmp_path_factory.mktemp("small-files") / "nodes", durable=True)
    try:
        yield network
    finally:
        network.close()


def run(
    benchmark: BenchmarkFixture,
    network: Network,
    files: int,
    clients: int,
    goal: float,
    results: list[FigureRow],
) -> SmallFilesResult:
    result, _ = timed_once(
        benchmark, lambda: put_small_files(network, files, clients, tag=f"{clients}c-")
    )
    figures = {
        "files/s": f"{result.files_per_second:.0f}",
        "CPU-s per 1,000": f"{result.cpu_per_1000:.2f}",
        "seconds": f"{result.seconds:.2f}",
        **{f"{node} CPU-s": f"{cpu:.2f}" for node, cpu in result.node_cpu.items()},
    }
    goals = (
        Goal(f">= {goal:.0f} files/s", result.files_per_second >= goal),
        Goal(f"<= {GOAL_CPU:.0f} CPU-s per 1,000", result.cpu_per_1000 <= GOAL_CPU),
    )
    name = f"{files} files, {clients} client{'s' if clients > 1 else ''}"
    FigureRow(GROUP, name, figures, goals).record(benchmark, results)
    return result


@pytest.mark.benchmark(group="small files")
def test_sequential(
    benchmark: BenchmarkFixture,
    small_network: Network,
    figure_results: list[FigureRow],
    request: pytest.FixtureRequest,
) -> None:
    files = 1000 if enabled(request.config) else 50
    run(benchmark, small_network, files, 1, GOAL_SEQUENTIAL, figure_results)


@pytest.mark.benchmark(group="small files")
def test_concurrent(
    benchmark: BenchmarkFixture,
    small_network: Network,
    figure_results: list[FigureRow],
    request: pytest.FixtureRequest,
) -> None:
    files = 10_000 if enabled(request.config) else 160
    run(benchmark, small_network, files, 16, GOAL_CONCURRENT, figure_results)
