"""End to end on loopback: three node processes store a file with R = 3, a fourth node gets it.

For each file size and each mode (durable acknowledgements, the default; ``--no-fsync``, a
benchmark-only setting) the module starts fresh node processes with the tests' harness
(``tests/netutil.py``): ``storer`` (a ``node_agent.py`` agent) and ``holder-1``, ``holder-2``
(``fstore-node``), all with ``--replicas 3``. Three benchmarks run on them, in this order:

- ``test_store``: the storer's ``store`` of the input file (written once per size beforehand,
  so it is in the page cache), timed from the command sent to the answer received.
- ``test_disk_bound``: three writer processes write the blobs the store produced, at once,
  with ``BlobStore.put``'s fsync pattern (``diskbound.py``): what the shared disk allows a
  durable store. For ``--no-fsync`` the same writers skip every fsync: what writing the
  three copies of the files costs on this machine, with no hashing, sealing or network.
- ``test_get``: ``reader``, a fourth node (an agent) started after the store, so it holds none
  of the blobs, waits until it is linked with all three, then gets the file by capability
  into ``/dev/null``; timed from the command sent to the answer received.

Sizes and BLAKE3 are checked (by the ``blake3`` package, independently of fstore), and every
node must hold every blob, so a wrong or short result fails the benchmark. The issue's goals
are shown as met or MISSED in the summary; missing one does not fail the run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from netutil import (
    Agent,
    Cluster,
    MiB,
    NodeProcess,
    read_manifest,
    stored_blobs,
    wait_for_mesh,
    write_random_file,
)
from pytest_benchmark.fixture import BenchmarkFixture

from benches.diskbound import BlobFile, DiskBound
from benches.measure import Goal, NetworkMeasurement, timed_once

REPLICAS = 3
WRITERS = 3
"""Disk-bound writers: one per node that writes every blob (R = 3 of 3 nodes)."""
FULL_SIZES_MIB = (256, 1024)
SMOKE_SIZES_MIB = (32,)
"""Without ``--benchmark-enable`` every benchmark runs once, untimed: small files suffice."""
MESH_TIMEOUT = 30.0
TRANSFER_TIMEOUT = 600.0
GROUP = "3 nodes on loopback, R=3; get on a 4th node"

GOAL_MBPS = 600.0
GOAL_BOUND_RATIO = 0.8
GOAL_PEAK_RSS = 300 * 1000 * 1000


def size_label(size: int) -> str:
    return f"{size >> 30}GiB" if size % (1 << 30) == 0 else f"{size // MiB}MiB"


@dataclass(frozen=True)
class Config:
    """One run: a file size and whether the nodes fsync before acknowledging."""

    size: int
    durable: bool

    def __str__(self) -> str:
        return f"{size_label(self.size)}-{'durable' if self.durable else 'no-fsync'}"


def network_sizes(config: pytest.Config) -> list[int]:
    """``--network-sizes``, else the full sizes when benchmarks are enabled, else the smoke size.

    "Enabled" is decided as pytest-benchmark decides it (``--benchmark-disable`` is in the
    project's ``addopts``; ``--benchmark-enable`` overrides it).
    """
    option = config.getoption("network_sizes")
    if option:
        return [int(mib) * MiB for mib in str(option).split(",")]
    disabled = config.getoption("benchmark_disable") and not config.getoption("benchmark_enable")
    return [mib * MiB for mib in (SMOKE_SIZES_MIB if disabled else FULL_SIZES_MIB)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test runs per :class:`Config`, all of one config's tests on the same nodes."""
    if "network" not in metafunc.fixturenames:
        return
    sizes = network_sizes(metafunc.config)
    configs = [Config(size, durable) for size in sizes for durable in (True, False)]
    metafunc.parametrize("network", configs, ids=str, indirect=True, scope="module")


# --- the nodes ------------------------------------------------------------------------------


def settle() -> None:
    """Write back every dirty page (``sync``), so a timed phase starts with none queued.

    Called in the untimed setup of every timed phase: otherwise the input file, or a
    ``--no-fsync`` store, would still be on its way to the disk during the next phase.
    """
    os.sync()


class Workspace:
    """Every file of the module under one directory, deleted only at the end of the module.

    Nothing is deleted between runs on purpose: this machine's ext4 has no journal, and
    without one ext4 passes over inodes freed in the last 30-odd seconds when it allocates
    new ones, which makes creating files and directories several times slower right after
    a large delete (``recently_deleted`` in ``fs/ext4/ialloc.c``).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._inputs: dict[int, tuple[Path, str]] = {}

    def input(self, size: int) -> tuple[Path, str]:
        """A random file of ``size`` bytes, written in pieces on first use; (path, BLAKE3 hex
        by the ``blake3`` package). Just written, so it is in the page cache."""
        if size not in self._inputs:
            path = self.root / f"input-{size_label(size)}.bin"
            digest = write_random_file(path, size, f"fstore network benchmark {size}".encode())
            self._inputs[size] = (path, digest)
        return self._inputs[size]

    def directory(self, config: Config) -> Path:
        path = self.root / f"run-{config}"
        path.mkdir()
        return path

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class NetworkRun:
    """The node processes of one :class:`Config`, and what they stored."""

    def __init__(self, config: Config, root: Path, source: Path, digest: str) -> None:
        self.config = config
        self.root = root
        self.source = source
        self.digest = digest
        self.cluster = Cluster(root)
        self.nodes: list[NodeProcess] = []
        self.stored: dict[str, Any] | None = None
        self.store_seconds: float | None = None
        self._storer: Agent | None = None
        self._reader: Agent | None = None

    @property
    def storer(self) -> Agent:
        assert self._storer is not None, "not started"
        return self._storer

    @property
    def reader(self) -> Agent:
        assert self._reader is not None, "no reader yet"
        return self._reader

    @property
    def capability(self) -> str:
        assert self.stored is not None, "nothing stored yet"
        return str(self.stored["capability"])

    def _start_node(self, name: str, *, agent: bool) -> NodeProcess:
        peers = [self.storer.address] if self.nodes else []
        start = self.cluster.agent if agent else self.cluster.holder
        node = start(name, peers=peers, replicas=REPLICAS, durable=self.config.durable)
        self.nodes.append(node)
        return node

    def start(self) -> None:
        """The storer and two holders, each linked with the storer."""
        storer = self._start_node("storer", agent=True)
        assert isinstance(storer, Agent)
        self._storer = storer
        self._start_node("holder-1", agent=False)
        self._start_node("holder-2", agent=False)
        wait_for_mesh([storer], self.nodes, MESH_TIMEOUT)

    def store(self) -> dict[str, Any]:
        """The storer stores the input file (the timed call)."""
        assert self.stored is None, "stored already: a second store would be deduplicated"
        self.stored = self.storer.call(
            "store", timeout=TRANSFER_TIMEOUT, name=self.source.name, path=str(self.source)
        )
        return self.stored

    def check_store(self) -> None:
        """The storer's answer is the input's size and BLAKE3, and every node holds every blob."""
        assert self.stored is not None
        answer = (self.stored["size"], self.stored["blake3"], self.stored["replicas"])
        assert answer == (self.config.size, self.digest, REPLICAS)
        addresses = [bytes.fromhex(f.name) for f in self.blob_files()]
        for node in self.nodes:
            missing = sum(1 for address in addresses if not node.has_blob(address))
            assert not missing, f"{node.name} lacks {missing} of {len(addresses)} blobs"

    def ensure_stored(self) -> None:
        """Store (untimed) if this config's ``test_store`` did not run."""
        if self.stored is None:
            self.store()
            self.check_store()

    def blob_files(self) -> list[BlobFile]:
        """The stored blobs in the order the store wrote them (chunks, then the manifest)."""
        manifest, chunks = read_manifest(self.capability, [self.storer.data_dir])
        addresses = [*(chunk.address for chunk in chunks), manifest]
        sizes = stored_blobs(self.storer.data_dir)  # a small manifest is a catalog row
        return [BlobFile(address.hex(), sizes[address]) for address in addresses]

    def join_reader(self) -> None:
        """A fourth node, started now (so it holds no blob of the file), linked with all three."""
        settle()
        reader = self._start_node("reader", agent=True)
        assert isinstance(reader, Agent)
        self._reader = reader
        wait_for_mesh([reader], self.nodes, MESH_TIMEOUT)
        assert not any(reader.has_blob(bytes.fromhex(f.name)) for f in self.blob_files())

    def get(self) -> dict[str, Any]:
        """The reader gets the file by capability into /dev/null (the timed call)."""
        return self.reader.call(
            "get", timeout=TRANSFER_TIMEOUT, target=self.capability, out=os.devnull
        )

    def check_get(self, answer: dict[str, Any]) -> None:
        """What the reader streamed has the input's size and BLAKE3."""
        assert (answer["size"], answer["blake3"]) == (self.config.size, self.digest)

    def peak_rss(self) -> dict[str, int]:
        """Each node process's peak resident set since it started (VmHWM), in bytes."""
        return {node.name: node.peak_rss() for node in self.nodes}

    def close(self) -> None:
        """Kill every node process (their data directories stay until the module ends)."""
        self.cluster.close()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    files = Workspace(tmp_path_factory.mktemp("network"))
    try:
        yield files
    finally:
        files.close()


@pytest.fixture(scope="module")
def network(request: pytest.FixtureRequest, workspace: Workspace) -> Iterator[NetworkRun]:
    """Fresh node processes for one config (parametrized by :func:`pytest_generate_tests`)."""
    config: Config = request.param
    source, digest = workspace.input(config.size)
    run = NetworkRun(config, workspace.directory(config), source, digest)
    try:
        run.start()
        yield run
    finally:
        run.close()


def rss_goal(peaks: dict[str, int]) -> Goal:
    return Goal(f"RSS < {GOAL_PEAK_RSS // 1_000_000} MB", max(peaks.values()) < GOAL_PEAK_RSS)


def speed_goal(mbps: float) -> Goal:
    return Goal(f">= {GOAL_MBPS:.0f} MB/s", mbps >= GOAL_MBPS)


# --- the benchmarks -------------------------------------------------------------------------


@pytest.mark.benchmark(group="network: store, 3 nodes, R=3")
def test_store(
    benchmark: BenchmarkFixture, network: NetworkRun, network_results: list[NetworkMeasurement]
) -> None:
    _, seconds = timed_once(benchmark, network.store, setup=settle)
    network.check_store()
    if seconds is None:
        return
    network.store_seconds = seconds
    peaks = network.peak_rss()
    size = network.config.size
    goals = [rss_goal(peaks)]
    if not network.config.durable:
        goals.insert(0, speed_goal(size / seconds / 1e6))
    NetworkMeasurement(
        GROUP, f"store {network.config}", size, seconds, goals=tuple(goals), peak_rss=peaks
    ).record(benchmark, network_results)


@pytest.mark.benchmark(group="network: 3 writers of the same blob files")
def test_disk_bound(
    benchmark: BenchmarkFixture, network: NetworkRun, network_results: list[NetworkMeasurement]
) -> None:
    network.ensure_stored()
    durable = network.config.durable
    files = network.blob_files()
    bound = DiskBound(network.root / "disk-bound", files, writers=WRITERS, durable=durable)
    try:
        _, seconds = timed_once(benchmark, bound.run, setup=bound.start)
        bound.check()
    finally:
        bound.stop()
    if seconds is None:
        return
    size = network.config.size
    # store MB/s / bound MB/s: both count the file's size once, so the sizes cancel
    ratio = None if network.store_seconds is None else seconds / network.store_seconds
    goals: tuple[Goal, ...] = ()
    if ratio is not None and durable:
        goals = (Goal(f"store >= {GOAL_BOUND_RATIO}x this", ratio >= GOAL_BOUND_RATIO),)
    blob_mbps = bound.nbytes / seconds / 1e6
    NetworkMeasurement(
        GROUP,
        f"{'disk' if durable else 'write'} bound {network.config} ({WRITERS} writers)",
        size,
        seconds,
        ratio=ratio,
        goals=goals,
        details={
            "blob MB/s per writer": blob_mbps,
            f"blob MB/s all {WRITERS}": WRITERS * blob_mbps,
        },
    ).record(benchmark, network_results)


@pytest.mark.benchmark(group="network: get on a 4th node")
def test_get(
    benchmark: BenchmarkFixture, network: NetworkRun, network_results: list[NetworkMeasurement]
) -> None:
    network.ensure_stored()
    answer, seconds = timed_once(benchmark, network.get, setup=network.join_reader)
    network.check_get(answer)
    if seconds is None:
        return
    peaks = network.peak_rss()
    size = network.config.size
    NetworkMeasurement(
        GROUP,
        f"get {network.config}",
        size,
        seconds,
        goals=(speed_goal(size / seconds / 1e6), rss_goal(peaks)),
        peak_rss=peaks,
    ).record(benchmark, network_results)
