"""Directory trees end to end: ``fstore put -r`` and ``get -r`` beside ``cp -r`` and ``tar | tar``.

Three ``fstore-node`` processes on loopback, ``--replicas 3``, durable (every blob
fsynced on all three before it is acknowledged). Two trees, generated once per
session on the same disk as the nodes' data directories:

- ``10k x 4KiB``: 10,000 files of 4 KiB of random bytes in 100 directories;
- ``kernel-like``: a source tree's shape, 10,000 files in directories up to five deep,
  sizes log-normal around 6 KiB (most under the 64 KiB inline limit, some of hundreds
  of KiB) and a few files of several MiB.

For each tree, in this order and each timed once (wall clock of the command, after a
``sync`` so no earlier writes are still queued): ``cp -r``, ``tar -cf - . | tar -xf -``
(neither fsyncs anything), ``fstore put -r`` through the first node, ``fstore get -r``
through the second, and ``fstore put -r`` of the same tree again (everything already
stored: only the directory nodes are confirmed). Every copy is checked against the
source, entry by entry. The goal (≥ 1,000 files/s for put and get) is shown as met or
MISSED; missing it does not fail the run.

Without ``--benchmark-enable`` the trees have 1,000 files and nothing is timed: a smoke check.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from netutil import Cluster, NodeProcess, wait_until
from pytest_benchmark.fixture import BenchmarkFixture

from benches.measure import Goal, NetworkMeasurement, timed_once

KiB = 1024
MiB = 1024 * KiB
REPLICAS = 3
MESH_TIMEOUT = 30.0
RUN_TIMEOUT = 1800.0
GOAL_FILES_PER_S = 1000.0
GROUP = "trees: 3 nodes on loopback, R=3 durable; put through one, get through another"
CLIENT = [sys.executable, "-m", "fstore.faces.client"]


@dataclass(frozen=True)
class Tree:
    name: str
    path: Path
    files: int
    size: int


def enabled(config: pytest.Config) -> bool:
    return not (config.getoption("benchmark_disable") and not config.getoption("benchmark_enable"))


def many_small(root: Path, files: int, rng: random.Random) -> None:
    per_dir = max(1, files // 100)
    for i in range(files):
        folder = root / f"dir{i // per_dir:03}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file{i:05}.bin").write_bytes(rng.randbytes(4 * KiB))


def kernel_like(root: Path, files: int, rng: random.Random) -> None:
    """Directories up to five deep, mostly small files, a few large ones."""
    folders = [root]
    root.mkdir(parents=True)
    while len(folders) < max(2, files // 15):
        parent = rng.choice(folders)
        if len(parent.relative_to(root).parts) >= 5:
            continue
        kind = rng.choice(["drivers", "fs", "net", "arch", "lib", "mm"])
        child = parent / f"{kind}{len(folders)}"
        child.mkdir()
        folders.append(child)
    for i in range(files):
        if i % 2000 == 0:
            size = rng.randrange(4 * MiB, 12 * MiB)  # firmware, generated tables
        else:
            size = min(2 * MiB, int(math.exp(rng.gauss(math.log(6 * KiB), 1.1))))
        suffix = rng.choice([".c", ".h", ".S", ".txt", "", ".dts"])
        (rng.choice(folders) / f"f{i:05}{suffix}").write_bytes(rng.randbytes(size))


def sizes(root: Path) -> tuple[int, int]:
    files = size = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            files, size = files + 1, size + path.stat().st_size
    return files, size


def listing(root: Path) -> dict[str, tuple[int, int, int]]:
    """(size, mode, mtime) of every file and directory: what a copy must reproduce."""
    found = {}
    for path in root.rglob("*"):
        st = path.lstat()
        size = st.st_size if path.is_file() else 0
        found[str(path.relative_to(root))] = (size, st.st_mode, st.st_mtime_ns)
    return found


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("trees")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def trees(workdir: Path, request: pytest.FixtureRequest) -> dict[str, Tree]:
    files = 10_000 if enabled(request.config) else 1_000
    made = {}
    small = "10k x 4KiB" if files == 10_000 else "1k x 4KiB"
    for name, make in ((small, many_small), ("kernel-like", kernel_like)):
        path = workdir / "source" / name.replace(" ", "-")
        make(path, files, random.Random(name))
        count, size = sizes(path)
        made[name] = Tree(name, path, count, size)
    return made


@pytest.fixture(scope="module")
def nodes(workdir: Path) -> Iterator[list[NodeProcess]]:
    (workdir / "nodes").mkdir()
    cluster = Cluster(workdir / "nodes")
    namespace = workdir / "nodes" / "namespace"  # shared: b reads the names a stores
    namespace.write_bytes(os.urandom(32))
    try:
        a = cluster.holder("a", replicas=REPLICAS, namespace_file=namespace)
        b = cluster.holder("b", replicas=REPLICAS, namespace_file=namespace, peers=[a.address])
        peers = [a.address, b.address]
        c = cluster.holder("c", replicas=REPLICAS, namespace_file=namespace, peers=peers)
        everyone = [a, b, c]
        for node in everyone:
            wait_until(functools.partial(linked, node, everyone), MESH_TIMEOUT, "a mesh")
        yield everyone
    finally:
        cluster.close()


def linked(node: NodeProcess, everyone: list[NodeProcess]) -> bool:
    return {p.node_id for p in everyone if p is not node} <= node.http_peers()


def run(command: list[str], env: dict[str, str] | None = None) -> bytes:
    """Run a command to its end; its stdout."""
    result = subprocess.run(command, capture_output=True, timeout=RUN_TIMEOUT, env=env, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def shell(command: str) -> None:
    result = subprocess.run(command, shell=True, capture_output=True, timeout=RUN_TIMEOUT)
    assert result.returncode == 0, result.stderr.decode()


def settled(path: Path) -> None:
    """No earlier copy in the way, and nothing dirty still queued for the disk."""
    shutil.rmtree(path, ignore_errors=True)
    os.sync()


def record(
    benchmark: BenchmarkFixture,
    results: list[NetworkMeasurement],
    what: str,
    tree: Tree,
    seconds: float | None,
    *,
    goal: bool = False,
    peaks: dict[str, int] | None = None,
) -> None:
    if seconds is None:
        return
    rate = tree.files / seconds
    target = Goal(f">= {GOAL_FILES_PER_S:,.0f} files/s", rate >= GOAL_FILES_PER_S)
    goals = (target,) if goal else ()
    NetworkMeasurement(
        GROUP,
        f"{what} {tree.name}",
        tree.size,
        seconds,
        goals=goals,
        peak_rss=peaks or {},
        details={"files/s": rate},
    ).record(benchmark, results)


NAMES = ["10k x 4KiB", "kernel-like"]


def put(tree: Tree, url: str) -> dict[str, Any]:
    return fstore_json("put", "-r", str(tree.path), "--name", tree.name, "--node", url)


def pick(trees: dict[str, Tree], name: str) -> Tree:
    return trees[name] if name in trees else next(t for t in trees.values() if "4KiB" in t.name)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.benchmark(group="trees: cp -r")
def test_cp(
    benchmark: BenchmarkFixture,
    trees: dict[str, Tree],
    workdir: Path,
    name: str,
    network_results: list[NetworkMeasurement],
) -> None:
    tree = pick(trees, name)
    copy = workdir / "cp"
    _, seconds = timed_once(
        benchmark, lambda: run(["cp", "-r", str(tree.path), str(copy)]), lambda: settled(copy)
    )
    assert sizes(copy) == (tree.files, tree.size)  # cp -r keeps neither modes nor mtimes
    record(benchmark, network_results, "cp -r", tree, seconds)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.benchmark(group="trees: tar | tar")
def test_tar_pipe(
    benchmark: BenchmarkFixture,
    trees: dict[str, Tree],
    workdir: Path,
    name: str,
    network_results: list[NetworkMeasurement],
) -> None:
    tree = pick(trees, name)
    copy = workdir / "tar"

    def setup() -> None:
        settled(copy)
        copy.mkdir()

    command = f"tar -C '{tree.path}' -cf - . | tar -C '{copy}' -xf -"
    _, seconds = timed_once(benchmark, lambda: shell(command), setup=setup)
    assert sizes(copy) == (tree.files, tree.size)  # GNU tar's own format keeps whole seconds
    record(benchmark, network_results, "tar | tar", tree, seconds)


def fstore_json(*args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSTORE_")}
    answer: dict[str, Any] = json.loads(run([*CLIENT, *args, "--json"], env=env))
    return answer


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.benchmark(group="trees: fstore put -r")
def test_put(
    benchmark: BenchmarkFixture,
    trees: dict[str, Tree],
    nodes: list[NodeProcess],
    name: str,
    network_results: list[NetworkMeasurement],
) -> None:
    tree = pick(trees, name)
    url = f"http://{nodes[0].http_address}"
    answer, seconds = timed_once(benchmark, lambda: put(tree, url), setup=os.sync)
    assert (answer["files"], answer["size"], answer["copies"]) == (tree.files, tree.size, REPLICAS)
    peaks = {node.name: node.peak_rss() for node in nodes}
    record(benchmark, network_results, "fstore put -r", tree, seconds, goal=True, peaks=peaks)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.benchmark(group="trees: fstore get -r")
def test_get(
    benchmark: BenchmarkFixture,
    trees: dict[str, Tree],
    nodes: list[NodeProcess],
    workdir: Path,
    name: str,
    network_results: list[NetworkMeasurement],
) -> None:
    tree = pick(trees, name)
    url = f"http://{nodes[1].http_address}"
    copy = workdir / "get"
    answer, seconds = timed_once(
        benchmark,
        lambda: fstore_json("get", "-r", tree.name, "-o", str(copy), "--node", url),
        lambda: settled(copy),
    )
    assert answer["files"] == tree.files
    assert listing(copy) == listing(tree.path)
    peaks = {node.name: node.peak_rss() for node in nodes}
    record(benchmark, network_results, "fstore get -r", tree, seconds, goal=True, peaks=peaks)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.benchmark(group="trees: fstore put -r again, unchanged")
def test_put_again(
    benchmark: BenchmarkFixture,
    trees: dict[str, Tree],
    nodes: list[NodeProcess],
    name: str,
    network_results: list[NetworkMeasurement],
) -> None:
    tree = pick(trees, name)
    url = f"http://{nodes[0].http_address}"
    answer, seconds = timed_once(benchmark, lambda: put(tree, url), setup=os.sync)
    assert answer["new_bytes"] == 0
    record(benchmark, network_results, "fstore put -r again", tree, seconds)
