"""A property of space reclamation, on in-process nodes whose lease clock the test moves.

Hypothesis draws sequences of stores, overwrites, deletes, pins and unpins (by a node
of another namespace), node stops and restarts, and collection rounds (the clock moved
past the grace, then a reference pass on every node and a collection pass on every
node). After every collection round, every live name and pin reads back. At the end,
the clock is moved past a lease period (live files renewed on the way): then no blob
that no live name or pin uses remains on any node. ``FSTORE_PROPERTY_EXAMPLES`` sets
how many sequences (default 4).
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fstore import Node, _native
from fstore.formats.capability import Capability
from fstore.formats.manifest import Manifest
from fstore.net.trust import NetworkKey

EXAMPLES = int(os.environ.get("FSTORE_PROPERTY_EXAMPLES", "4"))
KiB = 1024
GRACE = 100.0
LEASE_PERIOD = 1000.0
NAMES = 4

Op = tuple[str, int, int]

ops = st.lists(
    st.one_of(
        st.tuples(st.just("store"), st.integers(0, NAMES - 1), st.integers(0, 2500 * KiB)),
        st.tuples(st.just("delete"), st.integers(0, NAMES - 1), st.just(0)),
        st.tuples(st.just("pin"), st.integers(0, NAMES - 1), st.just(0)),
        st.tuples(st.just("unpin"), st.integers(0, 3), st.just(0)),
        st.tuples(st.just("stop"), st.integers(1, 3), st.just(0)),
        st.tuples(st.just("restart"), st.just(0), st.just(0)),
        st.tuples(st.just("gc"), st.just(0), st.just(0)),
    ),
    min_size=4,
    max_size=14,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    root: Path
    clock: Clock = field(default_factory=Clock)
    network: NetworkKey = field(default_factory=NetworkKey.generate)
    nodes: dict[int, Node] = field(default_factory=dict)  # 0-3: the namespace; 4: the pinner
    stopped: set[int] = field(default_factory=set)
    names: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # live name → (cap, data)
    pins: dict[str, bytes] = field(default_factory=dict)  # pinned capability → data

    async def start(self, index: int) -> None:
        namespace = self.root / ("pinner.key" if index == 4 else "namespace.key")
        if not namespace.exists():
            namespace.write_bytes(os.urandom(32))
        running = [n.address for i, n in self.nodes.items() if i not in self.stopped]
        node = Node(
            self.root / f"n{index}",
            peers=running[:2],
            network=self.network,
            namespace_file=namespace,
            durable=False,
            repair_interval=0.2,
            repair_rate=1000,
            gc_grace=GRACE,
            gc_interval=3600.0,
            lease_period=LEASE_PERIOD,
            clock=self.clock,
        )
        await node.start()
        self.nodes[index] = node
        self.stopped.discard(index)

    def running(self) -> list[Node]:
        return [n for i, n in sorted(self.nodes.items()) if i not in self.stopped]

    def namespace_nodes(self) -> list[Node]:
        return [n for i, n in sorted(self.nodes.items()) if i < 4 and i not in self.stopped]

    async def linked(self) -> None:
        for node in self.running():
            with contextlib.suppress(TimeoutError):
                await node.wait_for_peers(len(self.running()) - 1, timeout=10)


async def apply(world: World, op: Op, rng: random.Random) -> None:
    kind, a, b = op
    storers = world.namespace_nodes()
    name = f"f{a}"
    if kind == "store":
        data = rng.randbytes(b)
        stored = await storers[a % len(storers)].store(name, data)
        world.names[name] = (stored.capability, data)
    elif kind == "delete" and name in world.names:
        await storers[a % len(storers)].delete(name)
        del world.names[name]
    elif kind == "pin" and name in world.names:
        capability, data = world.names[name]
        await world.nodes[4].pin(capability)
        world.pins[capability] = data
    elif kind == "unpin" and world.pins:
        capability = sorted(world.pins)[a % len(world.pins)]
        await world.nodes[4].unpin(capability)
        del world.pins[capability]
    elif kind == "stop" and not world.stopped:
        await world.nodes[a].stop()
        world.stopped.add(a)
    elif kind == "restart" and world.stopped:
        await world.start(world.stopped.pop())
        await world.linked()
    elif kind == "gc":
        await collection_round(world)
        await everything_reads_back(world)


async def collection_round(world: World, advance: float = GRACE + 1) -> None:
    """The clock past the grace, then a reference pass everywhere, then a collection pass."""
    world.clock.now += advance
    for node in world.running():
        await node.space.reference_pass()
    for node in world.running():
        await node.space.collect_pass()


async def everything_reads_back(world: World) -> None:
    reader = world.namespace_nodes()[0]
    for name, (_, data) in world.names.items():
        assert _native.hash(await reader.read(name)) == _native.hash(data), name
    for capability, data in world.pins.items():
        got = await world.nodes[4].read(capability)
        assert _native.hash(got) == _native.hash(data), capability


def blobs_of(world: World, capability: str) -> set[bytes]:
    cap = Capability.parse(capability)
    for node in world.running():
        blob = node.blobs.get(cap.manifest_address)
        if blob is not None:
            manifest = Manifest.open(cap.file_key, blob)
            return {cap.manifest_address, *(c.address for c in manifest.chunks)}
    raise AssertionError(f"no running node holds the manifest of {capability}")


async def scenario(root: Path, sequence: list[Op], seed: int) -> None:
    world = World(root)
    rng = random.Random(seed)
    try:
        for index in range(5):
            await world.start(index)
        await world.linked()
        for op in sequence:
            await apply(world, op, rng)
        while world.stopped:
            await world.start(world.stopped.pop())
        await world.linked()
        # Past a whole lease period, in steps: live files are renewed on every step, and
        # holds that a stopped node missed the release of lapse.
        for _ in range(int(LEASE_PERIOD / GRACE) + 2):
            await collection_round(world)
        await collection_round(world)
        await everything_reads_back(world)
        needed = set()
        for capability in [c for c, _ in world.names.values()] + list(world.pins):
            needed |= blobs_of(world, capability)
        for node in world.running():
            left = set(node.blobs.addresses()) - needed
            assert not left, (node.node_id.hex()[:12], [a.hex()[:12] for a in left])
    finally:
        for node in world.running():
            await node.stop()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=ops, seed=st.integers(0, 1 << 32))
def test_live_files_and_pins_survive_and_nothing_unreferenced_remains(
    tmp_path_factory: pytest.TempPathFactory, sequence: list[Op], seed: int
) -> None:
    uvloop.run(scenario(tmp_path_factory.mktemp("space"), sequence, seed))
