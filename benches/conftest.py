"""Session-wide inputs of the throughput benchmarks, the ``bench`` fixture and the summaries.

The network benchmarks start real node processes with the tests' harness, ``tests/netutil.py``;
``tests`` is put on ``sys.path`` here so they can ``import netutil``, as the tests do.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import blake3
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benches.measure import (
    Bench,
    FigureRow,
    Measurement,
    NetworkMeasurement,
    figure_summary_lines,
    network_summary_lines,
    summary_lines,
)
from benches.workloads import PIECE, MiB, Stored, native_store
from fstore import _native

SIZE = 256 * MiB
"""The input size of every benchmark."""

TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

RESULTS = pytest.StashKey[list[Measurement]]()
NETWORK_RESULTS = pytest.StashKey[list[NetworkMeasurement]]()
FIGURE_RESULTS = pytest.StashKey[list[FigureRow]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--network-sizes",
        metavar="MIB[,MIB...]",
        help="file sizes of the network benchmarks, in MiB (default: 256,1024 with "
        "--benchmark-enable, 32 without: a smoke check)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[RESULTS] = []
    config.stash[NETWORK_RESULTS] = []
    config.stash[FIGURE_RESULTS] = []


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """After pytest-benchmark's own tables: GB/s and peak RSS growth; MB/s of the network runs."""
    results = config.stash.get(RESULTS, [])
    if results:
        terminalreporter.section("fstore native throughput (GB/s = 1e9 bytes/s)")
        for line in summary_lines(results):
            terminalreporter.write_line(line)
    network = config.stash.get(NETWORK_RESULTS, [])
    if network:
        terminalreporter.section(
            "fstore network throughput (MB/s = 1e6 bytes of the file per second; "
            "peak RSS MB = VmHWM / 1e6)"
        )
        for line in network_summary_lines(network):
            terminalreporter.write_line(line)
    figures = config.stash.get(FIGURE_RESULTS, [])
    if figures:
        terminalreporter.section("fstore small files and gets through HTTP")
        for line in figure_summary_lines(figures):
            terminalreporter.write_line(line)


@pytest.fixture
def bench(benchmark: BenchmarkFixture, request: pytest.FixtureRequest) -> Bench:
    return Bench(benchmark, request.config.stash[RESULTS])


@pytest.fixture
def network_results(request: pytest.FixtureRequest) -> list[NetworkMeasurement]:
    """Where the network benchmarks record their figures for the summary."""
    return request.config.stash[NETWORK_RESULTS]


@pytest.fixture
def figure_results(request: pytest.FixtureRequest) -> list[FigureRow]:
    """Where the small-file and HTTP-get benchmarks record their figures for the summary."""
    return request.config.stash[FIGURE_RESULTS]


@pytest.fixture(scope="session")
def data() -> bytes:
    """Random bytes, generated once: incompressible, and chunked like any real file."""
    return os.urandom(SIZE)


@pytest.fixture(scope="session")
def digest(data: bytes) -> bytes:
    """The BLAKE3 of ``data`` according to the blake3 package."""
    return blake3.blake3(data, max_threads=blake3.blake3.AUTO).digest()


@pytest.fixture(scope="session")
def data_file(data: bytes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``data`` in a file; just written, so it is in the page cache."""
    path = tmp_path_factory.mktemp("throughput") / "data.bin"
    path.write_bytes(data)
    return path


@pytest.fixture(scope="session")
def secret() -> bytes:
    """A namespace secret."""
    return os.urandom(32)


@pytest.fixture(scope="session")
def key() -> bytes:
    """A Cobblestone-128 sealing key."""
    return _native.generate_key()


@pytest.fixture(scope="session")
def sealed(key: bytes, data: bytes) -> bytes:
    """``data`` sealed under ``key`` with ``CHUNK_CONTEXT``."""
    return _native.seal(key, _native.CHUNK_CONTEXT, data)


@pytest.fixture(scope="session")
def out_buffer() -> bytearray:
    """A reused output buffer, large enough for sealing or opening one piece; pre-faulted."""
    return bytearray(b"\0") * _native.sealed_length(PIECE + _native.RECORD_SIZE)


@pytest.fixture(scope="session")
def stored(secret: bytes, data: bytes) -> Stored:
    """``data`` stored by the native pipeline, every sealed chunk kept for restoring."""
    return native_store(secret, data, parallel=True, keep_blobs=True)
