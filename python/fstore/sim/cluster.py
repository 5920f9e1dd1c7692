"""A simulated cluster: members that start from a converged view, and what can happen to them."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from fstore.net.gossip import DEFAULT_CONFIG, Event, Gossip, GossipConfig
from fstore.net.gossip_messages import Member, State
from fstore.net.gossip_table import MemberTable
from fstore.sim.network import EventHandler, Latency, SimNetwork

PORT = 7000
LEAVE_GRACE = 5.0  # a leaving member keeps gossiping its departure this long, then stops


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    members: int
    seed: int = 1
    loss: float = 0.0
    latency: Latency = field(default_factory=Latency)
    config: GossipConfig = DEFAULT_CONFIG
    wire_check: float = 0.0


class Cluster:
    """``spec.members`` cores that all know each other at time 0, on one ``SimNetwork``.

    Starting converged is how a restarted cluster with saved tables starts; it
    lets a scenario measure one change against a quiet background instead of
    the settling of thousands of simultaneous joins.
    """

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.net = SimNetwork(
            self.rng,
            latency=spec.latency,
            loss=spec.loss,
            wire_check=spec.wire_check,
            on_events=self._dispatch,
        )
        self.listeners: list[EventHandler] = []
        self.ever: list[bytes] = []  # every id that ever existed, for placement sampling
        self._addresses = 0
        records = [
            Member(self._new_id(), self._new_addr(), 0, State.ALIVE) for _ in range(spec.members)
        ]
        table = MemberTable(records)
        for record in records:
            node = Gossip(record.node, record.addr, self.rng, 0.0, spec.config, table=table.copy())
            self.net.add(node)

    @property
    def now(self) -> float:
        return self.net.now

    @property
    def config(self) -> GossipConfig:
        return self.spec.config

    def running(self) -> list[bytes]:
        return [n for n, node in self.net.nodes.items() if not node.left]

    def is_running(self, node: bytes) -> bool:
        core = self.net.nodes.get(node)
        return core is not None and not core.left

    def run_for(self, seconds: float, stop: Callable[[], bool] | None = None) -> None:
        self.net.run_until(self.net.now + seconds, stop)

    # --- what happens to members ----------------------------------------------------------

    def crash(self, node: bytes) -> None:
        self.net.remove(node)

    def join_new(self) -> bytes:
        """A new member joins through one running member, as ``fstore-node`` would."""
        seed = self.net.nodes[self.rng.choice(self.running())]
        now = self.net.now
        node = Gossip(self._new_id(), self._new_addr(), self.rng, now, self.spec.config)
        self.net.add(node)
        self.net.send(node.node, node.join([(seed.node, seed.addr)], now))
        return node.node

    def leave(self, node: bytes) -> None:
        self.net.send(node, self.net.nodes[node].leave(self.net.now))
        self.net.at(self.net.now + LEAVE_GRACE, lambda: self.net.remove(node))

    def churn(self, per_minute: float, until: float) -> None:
        """From now until ``until``: members crash, and as many new ones join, each a
        Poisson process of ``per_minute`` times the cluster size per minute."""
        rate = per_minute * self.spec.members / 60.0

        def crash_one() -> None:
            self.crash(self.rng.choice(self.running()))
            self._next(rate, until, crash_one)

        def join_one() -> None:
            self.join_new()
            self._next(rate, until, join_one)

        self._next(rate, until, crash_one)
        self._next(rate, until, join_one)

    def _next(self, rate: float, until: float, action: Callable[[], None]) -> None:
        when = self.net.now + self.rng.expovariate(rate)
        if when < until:
            self.net.at(when, action)

    # --- plumbing ---------------------------------------------------------------------

    def _dispatch(self, node: bytes, events: list[Event], now: float) -> None:
        for listener in self.listeners:
            listener(node, events, now)

    def _new_id(self) -> bytes:
        node = self.rng.randbytes(32)
        self.ever.append(node)
        return node

    def _new_addr(self) -> str:
        # A claimed address of realistic length; nothing listens in a simulation.
        self._addresses += 1
        n = self._addresses
        return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}:{PORT}"
