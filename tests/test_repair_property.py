"""A property of self-healing, on in-process nodes: no file with a good copy left is lost.

Hypothesis draws sequences of stores, node stops, restarts, joins and damaged blobs;
nodes run with a grace, repair rounds and scrub passes of fractions of a second, so
time in these runs moves fast. After the sequence, repair is left to settle; then every file each of
whose blobs still had a good copy on a running node must read back byte-identical from
every running node. ``FSTORE_PROPERTY_EXAMPLES`` sets how many sequences (default 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netutil import replace_copy, stored_copy

from fstore import Node, _native
from fstore.net.trust import NetworkKey

EXAMPLES = int(os.environ.get("FSTORE_PROPERTY_EXAMPLES", "4"))
SETTLE_TIMEOUT = 60.0
KiB = 1024

Op = tuple[str, int, int]

ops = st.lists(
    st.one_of(
        st.tuples(st.just("store"), st.integers(0, 3 * 1024 * KiB), st.just(0)),
        st.tuples(st.just("stop"), st.integers(0, 9), st.just(0)),
        st.tuples(st.just("restart"), st.integers(0, 9), st.just(0)),
        st.tuples(st.just("join"), st.just(0), st.just(0)),
        st.tuples(st.just("damage"), st.integers(0, 9), st.integers(0, 1 << 30)),
    ),
    min_size=4,
    max_size=10,
)


@dataclass
class World:
    root: Path
    network: NetworkKey = field(default_factory=NetworkKey.generate)
    running: list[Node] = field(default_factory=list)
    stopped: list[tuple[Path, bytes]] = field(default_factory=list)  # (data dir, node id)
    files: dict[str, str] = field(default_factory=dict)  # capability → BLAKE3 hex
    made: int = 0

    async def start(self, data_dir: Path | None = None) -> None:
        if data_dir is None:
            data_dir = self.root / f"n{self.made}"
            self.made += 1
        node = Node(
            data_dir,
            peers=[n.address for n in self.running[:2]],
            network=self.network,
            durable=False,
            allow_degraded=True,
            repair_after=0.6,
            repair_interval=0.2,
            repair_rate=1000,
            scrub_rate=1000,
            scrub_interval=0.3,
        )
        await node.start()
        self.running.append(node)

    def all_blobs(self) -> dict[str, list[bytes]]:
        """Every file's blob addresses, read from whichever node can open its manifest."""
        from fstore.formats.capability import Capability
        from fstore.formats.manifest import Manifest

        found: dict[str, list[bytes]] = {}
        for cap_text in self.files:
            cap = Capability.parse(cap_text)
            for data_dir in self.data_dirs():
                copy = stored_copy(data_dir, cap.manifest_address)
                if copy is not None and _native.hash(copy) == cap.manifest_address:
                    manifest = Manifest.open(cap.file_key, copy)
                    found[cap_text] = [cap.manifest_address, *(c.address for c in manifest.chunks)]
                    break
        return found

    def data_dirs(self) -> list[Path]:
        return [n.data_dir for n in self.running]


def good_copies_running(world: World, address: bytes) -> int:
    count = 0
    for data_dir in world.data_dirs():
        copy = stored_copy(data_dir, address)
        count += copy is not None and _native.hash(copy) == address
    return count


def good_copy_running(world: World, address: bytes) -> bool:
    return good_copies_running(world, address) > 0


async def stopped_nodes_lost(world: World) -> None:
    """Wait until every running node counts every stopped one it knows as lost."""
    gone = {node_id for _, node_id in world.stopped}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT
    while not all(gone & n.repair.peers.known() <= n.repair.peers.lost() for n in world.running):
        assert loop.time() < deadline, "stopped nodes were not counted as lost"
        await asyncio.sleep(0.05)


async def apply(world: World, op: Op, rng: random.Random) -> None:
    kind, a, b = op
    if kind == "store" and world.running:
        data = rng.randbytes(a)
        node = world.running[a % len(world.running)]
        stored = await node.store(f"f{len(world.files)}", data)
        world.files[stored.capability] = _native.hash(data).hex()
    elif kind == "stop" and len(world.running) > 1:
        node = world.running.pop(a % len(world.running))
        await node.stop()
        world.stopped.append((node.data_dir, node.node_id))
    elif kind == "restart" and world.stopped:
        await world.start(world.stopped.pop(a % len(world.stopped))[0])
    elif kind == "join" and len(world.running) < 7:
        await world.start()
    elif kind == "damage" and world.running:
        node = world.running[a % len(world.running)]
        addresses = sorted(node.blobs.addresses())
        if addresses:
            address = addresses[b % len(addresses)]
            damaged = bytearray(stored_copy(node.data_dir, address) or b"")
            if damaged:
                damaged[b % len(damaged)] ^= 0x01
                replace_copy(node.data_dir, address, bytes(damaged))


def rounds(node: Node) -> float:
    return node.metrics.registry.get_sample_value("fstore_repair_rounds_total") or 0.0


async def settled(world: World) -> None:
    """Wait until every node has scrubbed once since now (damaged copies are found) and,
    twice in a row, no node has a pull queued or knows of a missing copy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT
    since = time.time()
    while any(n.scrub.last_pass <= since for n in world.running):
        assert loop.time() < deadline, "a scrub pass did not end"
        await asyncio.sleep(0.05)
    calm = 0
    while calm < 2:
        assert loop.time() < deadline, "repair did not settle"
        before = [rounds(n) for n in world.running]
        while any(rounds(n) < r + 2 for n, r in zip(world.running, before, strict=True)):
            assert loop.time() < deadline, "repair rounds stopped"
            await asyncio.sleep(0.05)
        busy = any(n.repair.queue_length or n.repair.under_replicated for n in world.running)
        calm = 0 if busy else calm + 1


async def scenario(root: Path, sequence: list[Op], seed: int) -> None:
    world = World(root)
    rng = random.Random(seed)
    try:
        for _ in range(4):
            await world.start()
        await world.running[0].wait_for_peers(3)
        for op in sequence:
            await apply(world, op, rng)
        blobs = world.all_blobs()
        recoverable = [
            cap
            for cap in world.files
            if cap in blobs and all(good_copy_running(world, a) for a in blobs[cap])
        ]
        for node in world.running:
            with contextlib.suppress(TimeoutError):
                await node.wait_for_peers(len(world.running) - 1, timeout=10)
        await stopped_nodes_lost(world)
        await settled(world)
        wanted = min(3, len(world.running))
        for cap in recoverable:
            for address in blobs[cap]:
                assert good_copies_running(world, address) >= wanted, (cap, address.hex())
        for cap in recoverable:
            for node in world.running:
                data = await node.read(cap)
                assert _native.hash(data).hex() == world.files[cap], (cap, node.node_id.hex())
    finally:
        for node in world.running:
            await node.stop()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(sequence=ops, seed=st.integers(0, 1 << 32))
def test_no_file_with_a_good_copy_left_is_lost(
    tmp_path_factory: pytest.TempPathFactory, sequence: list[Op], seed: int
) -> None:
    root = tmp_path_factory.mktemp("world")
    asyncio.run(scenario(root, sequence, seed))
