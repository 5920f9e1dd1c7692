"""Sustained load on three real nodes through their HTTP APIs, with each node's memory sampled.

Not a test: a measurement run by hand (docs/PERFORMANCE.md, "Memory under sustained load")::

    .venv/bin/python benches/soak.py --minutes 10 --clients 64 --csv rss.csv

Three ``fstore-node`` processes (durable, R=3, one shared namespace) on loopback;
``--clients`` concurrent clients each loop: PUT a file of 4 KiB to 1 MiB of random
bytes to a random node, or GET a random file stored earlier from a random node,
half and half. Every node's RSS is sampled every ``--every`` seconds. At the end
every acknowledged file is read back and checked, and a table of throughput,
latencies, errors and the RSS curve is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import blake3

KiB = 1024
MiB = 1024 * KiB


@dataclass
class Node:
    name: str
    proc: subprocess.Popen[bytes]
    http: str

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for {self.name}")


@dataclass
class Tally:
    put_latency: list[float] = field(default_factory=list)
    get_latency: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stored: dict[str, str] = field(default_factory=dict)  # name -> BLAKE3 hex


def start_node(root: Path, name: str, port: int, args: list[str]) -> Node:
    node = shutil.which("fstore-node", path=os.path.dirname(sys.executable))
    assert node is not None, "fstore-node is not installed beside this Python"
    data = root / name
    http_port = port + 10000
    log = open(root / f"{name}.log", "ab")  # noqa: SIM115 (lives as long as the process)
    argv = [node, "--addr", f"127.0.0.1:{port}", "--data-dir", str(data), *args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log)
    assert proc.stdout is not None
    for raw in proc.stdout:
        if raw.startswith(b"http on "):
            break
    else:
        raise RuntimeError(f"{name} exited: see {root / (name + '.log')}")
    return Node(name, proc, f"http://127.0.0.1:{http_port}")


def start_network(root: Path, base_port: int) -> list[Node]:
    namespace = root / "namespace.key"
    namespace.write_bytes(os.urandom(32))
    namespace.chmod(0o600)
    init = subprocess.run(
        [
            shutil.which("fstore-node", path=os.path.dirname(sys.executable)) or "fstore-node",
            "init",
            "--addr",
            f"127.0.0.1:{base_port}",
            "--data-dir",
            str(root / "n0"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    token = next(line.split()[2] for line in init.stdout.splitlines() if line.startswith("join"))
    common = ["--namespace-file", str(namespace)]
    nodes = [start_node(root, "n0", base_port, common)]
    for i in (1, 2):
        join = ["--join", token, "--peer", f"127.0.0.1:{base_port}"]
        nodes.append(start_node(root, f"n{i}", base_port + i, [*common, *join]))
    return nodes


async def wait_linked(session: aiohttp.ClientSession, nodes: list[Node]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        counts = []
        for node in nodes:
            async with session.get(f"{node.http}/v1/peers") as response:
                counts.append(len((await response.json())["peers"]))
        if all(c == len(nodes) - 1 for c in counts):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the nodes did not link within 30 s")


async def client(
    session: aiohttp.ClientSession,
    nodes: list[Node],
    tally: Tally,
    until: float,
    rng: random.Random,
    index: int,
) -> None:
    count = 0
    while time.monotonic() < until:
        node = rng.choice(nodes)
        started = time.perf_counter()
        try:
            if tally.stored and rng.random() < 0.5:
                name = rng.choice(list(tally.stored))
                async with session.get(f"{node.http}/v1/files/{name}") as response:
                    body = await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"GET {response.status}: {body[:200]!r}")
                if blake3.blake3(body).hexdigest() != tally.stored[name]:
                    raise RuntimeError(f"GET {name}: wrong bytes")
                tally.get_latency.append(time.perf_counter() - started)
            else:
                data = rng.randbytes(rng.randint(4 * KiB, MiB))
                name = f"c{index}-{count}"
                count += 1
                async with session.put(f"{node.http}/v1/files/{name}", data=data) as response:
                    text = await response.text()
                    if response.status != 201:
                        raise RuntimeError(f"PUT {response.status}: {text[:200]}")
                tally.stored[name] = blake3.blake3(data).hexdigest()
                tally.put_latency.append(time.perf_counter() - started)
        except Exception as e:
            tally.errors.append(f"{type(e).__name__}: {e}")


async def sample_rss(
    nodes: list[Node], every: float, until: float, curve: list[list[float]]
) -> None:
    started = time.monotonic()
    while True:
        curve.append([time.monotonic() - started, *(n.rss_mib() for n in nodes)])
        if time.monotonic() >= until:
            return
        await asyncio.sleep(min(every, max(0.0, until - time.monotonic())))


async def verify_all(session: aiohttp.ClientSession, nodes: list[Node], tally: Tally) -> int:
    """Read every acknowledged file back (from the three nodes in turn); count the bad ones."""
    bad = 0
    limit = asyncio.Semaphore(16)

    async def check(i: int, name: str, digest: str) -> None:
        nonlocal bad
        async with limit, session.get(f"{nodes[i % 3].http}/v1/files/{name}") as response:
            body = await response.read()
            if response.status != 200 or blake3.blake3(body).hexdigest() != digest:
                bad += 1

    await asyncio.gather(*(check(i, n, d) for i, (n, d) in enumerate(tally.stored.items())))
    return bad


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 100 else max(values, default=0)


async def run(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="fstore-soak-"))
    nodes = start_network(root, args.port)
    tally = Tally()
    curve: list[list[float]] = []
    try:
        timeout = aiohttp.ClientTimeout(total=600)
        connector = aiohttp.TCPConnector(limit=args.clients * 2)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await wait_linked(session, nodes)
            until = time.monotonic() + args.minutes * 60
            rng = random.Random(args.seed)
            sampler = asyncio.create_task(sample_rss(nodes, args.every, until, curve))
            await asyncio.gather(
                *(
                    client(session, nodes, tally, until, random.Random(rng.random()), i)
                    for i in range(args.clients)
                )
            )
            await sampler
            seconds = args.minutes * 60
            bad = await verify_all(session, nodes, tally)
    finally:
        for node in nodes:
            node.proc.terminate()
        for node in nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)

    ops = len(tally.put_latency) + len(tally.get_latency)
    print(f"{args.clients} clients, {args.minutes:g} min: {ops / seconds:.0f} ops/s in all")
    print(
        f"PUT {len(tally.put_latency)}  p50 {statistics.median(tally.put_latency) * 1000:.0f} ms"
        f"  p99 {p99(tally.put_latency) * 1000:.0f} ms"
    )
    if tally.get_latency:
        print(
            f"GET {len(tally.get_latency)}  p50 {statistics.median(tally.get_latency) * 1000:.0f}"
            f" ms  p99 {p99(tally.get_latency) * 1000:.0f} ms"
        )
    print(f"errors {len(tally.errors)}; files read back wrong or missing: {bad}")
    for error in sorted(set(tally.errors))[:10]:
        print(f"  {error}")
    print("RSS MiB by minute:  t   " + "  ".join(n.name for n in nodes))
    for row in [*curve[:: max(1, int(60 / args.every))], curve[-1]]:
        print(f"  {row[0]:6.0f}s  " + "  ".join(f"{v:5.0f}" for v in row[1:]))
    if args.csv:
        with open(args.csv, "w") as f:
            f.write("seconds," + ",".join(n.name for n in nodes) + "\n")
            for row in curve:
                f.write(",".join(f"{v:.1f}" for v in row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--port", type=int, default=23000, help="first node's port (3 in a row)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--csv", help="write the RSS curve here")
    import uvloop

    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
