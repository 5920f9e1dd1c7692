"""A get through the HTTP API beside the in-process get of the same node, and ``cp``.

Used by ``test_http_get.py`` and runnable by hand::

    .venv/bin/python benches/httpget.py --mib 1024 [--rounds 2] [--no-fsync] [--per-node]

Three nodes (``storer``, an agent, and two ``fstore-node`` holders; ``--replicas 3``) store a
file of random bytes; a fourth node, ``reader`` (an agent, which holds none of the blobs), serves
its HTTP API. Each round then times, on the reader, in this order:

- ``in-process``: the agent's own ``Node.get`` by capability into ``/dev/null``, and into a file;
- ``curl``: ``curl -o`` of ``GET /v1/caps/{capability}`` into ``/dev/null``, and into a file;
- ``fstore get -o``: the project's client into ``/dev/null``, and into a file;
- ``cp``: the input file copied to a new file on the same disk, the bound for any write of it.

Every destination file is checked (size and BLAKE3 by the ``blake3`` package) and removed; the
CPU time of every node process (and of the client, for the HTTP gets) is counted per get.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from netutil import (  # noqa: E402
    Agent,
    Cluster,
    MiB,
    NodeProcess,
    blake3_file,
    fstore_command,
    wait_for_mesh,
    write_random_file,
)

REPLICAS = 3
MESH_TIMEOUT = 30.0
TRANSFER_TIMEOUT = 600.0


def children_cpu_seconds() -> float:
    """CPU seconds of this process's waited-for children (``curl``, ``cp``, ``fstore``)."""
    usage = os.times()
    return usage.children_user + usage.children_system


@dataclass(frozen=True)
class Timing:
    way: str
    seconds: float
    cpu: float  # CPU-seconds of every node process and the client, for this transfer
    size: int
    node_cpu: dict[str, float] = field(default_factory=dict)  # each node process's share

    @property
    def mbps(self) -> float:
        return self.size / self.seconds / 1e6

    @property
    def cpu_per_gib(self) -> float:
        return self.cpu / (self.size / (1 << 30))


@dataclass
class GetNetwork:
    """The four nodes, the stored file, and where destinations go."""

    root: Path
    size: int
    durable: bool = True
    cluster: Cluster = field(init=False)
    nodes: list[NodeProcess] = field(init=False)
    reader: Agent = field(init=False)
    http: str = field(init=False)
    source: Path = field(init=False)
    digest: str = field(init=False)
    capability: str = field(init=False)

    def __post_init__(self) -> None:
        self.cluster = Cluster(self.root)
        try:
            self._start()
        except BaseException:
            self.cluster.close()
            raise

    def _start(self) -> None:
        options = {"replicas": REPLICAS, "durable": self.durable}
        storer = self.cluster.agent("storer", **options)  # type: ignore[arg-type]
        peers = [storer.address]
        holders = [
            self.cluster.holder(name, peers=peers, **options)  # type: ignore[arg-type]
            for name in ("holder-1", "holder-2")
        ]
        self.nodes = [storer, *holders]
        wait_for_mesh([storer], self.nodes, MESH_TIMEOUT)
        self.source = self.root / "input.bin"
        self.digest = write_random_file(self.source, self.size, b"fstore http get benchmark")
        stored = storer.call("store", TRANSFER_TIMEOUT, name="input", path=str(self.source))
        self.capability = str(stored["capability"])
        self.reader = self.cluster.agent("reader", peers=peers, **options)  # type: ignore[arg-type]
        self.nodes.append(self.reader)
        wait_for_mesh([self.reader], self.nodes, MESH_TIMEOUT)
        self.http = str(self.reader.call("serve_http")["http"])
        os.sync()

    def close(self) -> None:
        self.cluster.close()

    def _timed(self, way: str, run: Callable[[], None], out: str) -> Timing:
        os.sync()  # nothing of an earlier transfer still being written back
        nodes_before = [n.cpu_seconds() for n in self.nodes]
        children_before = children_cpu_seconds()
        started = time.perf_counter()
        run()
        seconds = time.perf_counter() - started
        node_cpu = {
            n.name: n.cpu_seconds() - b for n, b in zip(self.nodes, nodes_before, strict=True)
        }
        cpu = sum(node_cpu.values()) + children_cpu_seconds() - children_before
        if out != os.devnull:
            path = Path(out)
            assert path.stat().st_size == self.size, f"{way}: wrong size"
            assert blake3_file(path) == self.digest, f"{way}: wrong bytes"
            path.unlink()
        return Timing(way, seconds, cpu, self.size, node_cpu)

    def in_process(self, out: str) -> Timing:
        def run() -> None:
            answer = self.reader.call("get", TRANSFER_TIMEOUT, target=self.capability, out=out)
            assert (answer["size"], answer["blake3"]) == (self.size, self.digest)

        return self._timed(f"in-process > {_label(out)}", run, out)

    def curl(self, out: str) -> Timing:
        url = f"http://{self.http}/v1/caps/{self.capability}"
        argv = ["curl", "--silent", "--show-error", "--fail", "-o", out, url]
        return self._timed(f"curl -o {_label(out)}", lambda: _run(argv, TRANSFER_TIMEOUT), out)

    def fstore_get(self, out: str) -> Timing:
        argv = [fstore_command(), "--node", self.http, "get", self.capability, "-o", out]
        return self._timed(
            f"fstore get -o {_label(out)}", lambda: _run(argv, TRANSFER_TIMEOUT), out
        )

    def cp(self, out: str) -> Timing:
        argv = ["cp", str(self.source), out]
        return self._timed("cp (the disk's bound)", lambda: _run(argv, TRANSFER_TIMEOUT), out)

    def round(self) -> list[Timing]:
        file = str(self.root / "out.bin")
        return [
            self.in_process(os.devnull),
            self.curl(os.devnull),
            self.fstore_get(os.devnull),
            self.in_process(file),
            self.curl(file),
            self.fstore_get(file),
            self.cp(file),
        ]


def _label(out: str) -> str:
    return "/dev/null" if out == os.devnull else "file"


def _run(argv: list[str], timeout: float) -> None:
    subprocess.run(argv, check=True, timeout=timeout, stdout=subprocess.DEVNULL)


def table(timings: list[Timing], per_node: bool = False) -> list[str]:
    lines = [f"{'way':<28} {'MB/s':>7} {'seconds':>8} {'CPU-s/GiB':>10}"]
    for t in timings:
        lines.append(f"{t.way:<28} {t.mbps:>7.1f} {t.seconds:>8.3f} {t.cpu_per_gib:>10.2f}")
        if per_node and any(t.node_cpu.values()):
            gib = t.size / (1 << 30)
            lines.append("    " + "  ".join(f"{n} {c / gib:.2f}" for n, c in t.node_cpu.items()))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument(
        "--per-node", action="store_true", help="also each node process's CPU-s per GiB"
    )
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is not installed")
    with tempfile.TemporaryDirectory(prefix="fstore-get-", dir=os.environ.get("TMPDIR")) as d:
        network = GetNetwork(Path(d), args.mib * MiB, durable=not args.no_fsync)
        try:
            for _ in range(args.rounds):
                for line in table(network.round(), args.per_node):
                    print(line, flush=True)
        finally:
            network.close()


if __name__ == "__main__":
    main()
