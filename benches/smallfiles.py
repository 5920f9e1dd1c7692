"""Many small files through the HTTP API of three node processes, with their CPU time counted.

Used by ``test_small_files.py`` and runnable by hand, which prints the same figures::

    .venv/bin/python benches/smallfiles.py --files 1000 --clients 1
    .venv/bin/python benches/smallfiles.py --files 10000 --clients 16 [--no-fsync]

Three ``fstore-node`` processes (``--replicas 3``, durable unless ``--no-fsync``) are started
with the tests' harness and linked; ``clients`` concurrent HTTP clients (aiohttp, one
keep-alive connection each) then PUT ``files`` files of random bytes to the first node's API,
each client one file after the other. The CPU time of the node processes (user + system,
every thread, from ``/proc/PID/stat``) is read before the first PUT and after the last 201.
At the end every file is read back through the API and compared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from netutil import Cluster, wait_until  # noqa: E402

KiB = 1024
REPLICAS = 3
MESH_TIMEOUT = 30.0


@dataclass(frozen=True)
class SmallFilesResult:
    files: int
    clients: int
    file_size: int
    seconds: float
    node_cpu: dict[str, float]  # CPU-seconds of each node process during the PUTs

    @property
    def files_per_second(self) -> float:
        return self.files / self.seconds

    @property
    def cpu_per_1000(self) -> float:
        """CPU-seconds per 1,000 files, all node processes together."""
        return sum(self.node_cpu.values()) / self.files * 1000

    def line(self) -> str:
        each = "  ".join(f"{n} {c:.2f}" for n, c in self.node_cpu.items())
        return (
            f"{self.files} x {self.file_size // KiB} KiB, {self.clients} client(s): "
            f"{self.files_per_second:.0f} files/s, {self.cpu_per_1000:.2f} CPU-s per 1,000 files "
            f"({self.seconds:.2f} s; node CPU-s: {each})"
        )


class Network:
    """Three linked ``fstore-node`` processes with their HTTP APIs, ``--replicas 3``."""

    def __init__(self, root: Path, *, durable: bool) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.cluster = Cluster(root)
        try:
            first = self.cluster.holder("n0", replicas=REPLICAS, durable=durable)
            self.nodes = [first]
            for name in ("n1", "n2"):
                self.nodes.append(
                    self.cluster.holder(
                        name, peers=[first.address], replicas=REPLICAS, durable=durable
                    )
                )
            wait_until(self._linked, MESH_TIMEOUT, "the nodes to link with each other")
        except BaseException:
            self.cluster.close()
            raise

    def _linked(self) -> bool:
        ids = {n.node_id for n in self.nodes}
        return all(node.http_peers() == ids - {node.node_id} for node in self.nodes)

    def close(self) -> None:
        self.cluster.close()


async def _put_all(url: str, names: list[list[str]], bodies: dict[str, bytes]) -> None:
    async def client(mine: list[str]) -> None:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            for name in mine:
                async with session.put(f"{url}/v1/files/{name}", data=bodies[name]) as answer:
                    text = await answer.text()
                    if answer.status != 201:
                        raise RuntimeError(f"PUT {name}: {answer.status} {text[:300]}")

    await asyncio.gather(*(client(mine) for mine in names))


async def _check_all(url: str, bodies: dict[str, bytes]) -> None:
    limit = asyncio.Semaphore(16)
    async with aiohttp.ClientSession() as session:

        async def check(name: str) -> None:
            async with limit, session.get(f"{url}/v1/files/{name}") as answer:
                body = await answer.read()
                if answer.status != 200 or body != bodies[name]:
                    raise RuntimeError(f"GET {name}: {answer.status}, {len(body)} bytes")

        await asyncio.gather(*(check(name) for name in bodies))


def put_small_files(
    network: Network, files: int, clients: int, file_size: int = 4 * KiB, tag: str = ""
) -> SmallFilesResult:
    """PUT ``files`` random files to the first node from ``clients`` clients; checked after."""
    nodes = network.nodes
    bodies = {f"{tag}f{i:06d}": os.urandom(file_size) for i in range(files)}
    names = list(bodies)
    shares = [names[i::clients] for i in range(clients)]
    url = f"http://{nodes[0].http_address}"
    before = {n.name: n.cpu_seconds() for n in nodes}
    started = time.perf_counter()
    asyncio.run(_put_all(url, shares, bodies))
    seconds = time.perf_counter() - started
    used = {n.name: n.cpu_seconds() - before[n.name] for n in nodes}
    asyncio.run(_check_all(url, bodies))
    return SmallFilesResult(files, clients, file_size, seconds, used)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--size", type=int, default=4 * KiB, help="bytes per file")
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--rounds", type=int, default=1, help="runs on the same nodes")
    parser.add_argument("--pause", action="store_true", help="wait for Enter before the PUTs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fstore-small-") as scratch:
        network = Network(Path(scratch), durable=not args.no_fsync)
        try:
            pids = " ".join(f"{n.name}={n.pid}" for n in network.nodes)
            print(f"node pids: {pids}", flush=True)
            if args.pause:
                input("press Enter to start")
            for round_ in range(args.rounds):
                result = put_small_files(
                    network, args.files, args.clients, args.size, f"r{round_}-"
                )
                print(result.line(), flush=True)
        finally:
            network.close()


if __name__ == "__main__":
    main()
