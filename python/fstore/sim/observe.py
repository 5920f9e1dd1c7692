"""What the scenarios measure: how far news spread, false alarms, placement agreement."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Collection, Sequence

from fstore.net.gossip import Event, Gossip, MemberDead, MemberSuspected
from fstore.net.placement import closest


class Spread:
    """When each member first emitted an event of ``kinds`` about ``subject``."""

    def __init__(self, subject: bytes, kinds: tuple[type, ...]) -> None:
        self.subject = subject
        self.kinds = kinds
        self.first: dict[bytes, float] = {}

    def __call__(self, node: bytes, events: list[Event], now: float) -> None:
        if node in self.first:
            return
        for event in events:
            if isinstance(event, self.kinds) and event.member.node == self.subject:
                self.first[node] = now
                return

    def covers(self, population: Collection[bytes]) -> bool:
        return len(self.first) >= len(population) and all(n in self.first for n in population)

    def times(self, population: Collection[bytes]) -> list[float]:
        """The sorted first times of ``population``; ``math.inf`` for those not reached."""
        return sorted(self.first.get(n, math.inf) for n in population)


def time_to(times: Sequence[float], fraction: float) -> float:
    """When ``fraction`` of the population had it (``times`` sorted, as from ``Spread.times``)."""
    if not times:
        return math.inf
    return times[max(0, math.ceil(fraction * len(times)) - 1)]


class FalseAlarms:
    """Suspicions and deaths declared about members that are in fact running.

    An incident is one (member, incarnation): a suspicion gossiped to every
    member counts once. ``dead_views`` counts every member that believed it.
    """

    def __init__(self, is_running: Callable[[bytes], bool]) -> None:
        self.is_running = is_running
        self.suspicions: set[tuple[bytes, int]] = set()
        self.deaths: set[tuple[bytes, int]] = set()
        self.dead_views = 0

    def __call__(self, node: bytes, events: list[Event], now: float) -> None:
        for event in events:
            if isinstance(event, MemberSuspected | MemberDead):
                member = event.member
                if not self.is_running(member.node):
                    continue
                key = (member.node, member.incarnation)
                if isinstance(event, MemberDead):
                    self.deaths.add(key)
                    self.dead_views += 1
                else:
                    self.suspicions.add(key)


def view_closest(node: Gossip, ranked: Sequence[bytes], count: int) -> list[bytes]:
    """``closest(target, node.live_ids(), count)``, given every id ranked by distance to target.

    Walking the global ranking costs a few lookups per node instead of a sort
    of its whole view.
    """
    chosen: list[bytes] = []
    for candidate in ranked:
        member = node.member(candidate)
        if member is not None and member.live:
            chosen.append(candidate)
            if len(chosen) == count:
                break
    return chosen


def placement_agreement(
    nodes: Sequence[Gossip],
    running: Sequence[bytes],
    ever: Sequence[bytes],
    rng: random.Random,
    *,
    samples: int,
    replicas: int = 3,
) -> tuple[float, float]:
    """For random addresses: the fraction of nodes whose R closest live members are the
    true ones (the R closest running members), and the fraction that agree with the
    most common answer (consistency, whatever the truth)."""
    truthful = consistent = total = 0
    for _ in range(samples):
        target = rng.randbytes(32)
        key = int.from_bytes(target, "big")
        ranked = sorted(ever, key=lambda n: int.from_bytes(n, "big") ^ key)
        truth = closest(target, running, replicas)
        answers = Counter(tuple(view_closest(node, ranked, replicas)) for node in nodes)
        truthful += answers[tuple(truth)]
        consistent += answers.most_common(1)[0][1]
        total += len(nodes)
    return truthful / total, consistent / total
