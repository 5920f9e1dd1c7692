"""A simulated network of ``Gossip`` cores: one event heap, a simulated clock, lossy links.

Every message a core sends is counted (its msgpack size, ``wire_size()``), then
dropped with probability ``loss`` (or by a partition or a cut path), else
delivered after a latency drawn from a log-normal distribution. Each core is
ticked exactly when its ``next_deadline()`` says. Nothing here sleeps: a run of
ten simulated minutes takes as long as the work it simulates.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

import msgpack

from fstore.net.gossip import Event, Gossip, Send
from fstore.net.gossip_messages import Message, decode

_DELIVER: Final = 0
_TICK: Final = 1
_CALL: Final = 2

EventHandler: TypeAlias = Callable[[bytes, list[Event], float], None]
_Entry: TypeAlias = tuple[float, int, int, bytes, bytes, object]


@dataclass(frozen=True, slots=True)
class Latency:
    """One-way delay: log-normal with this median (seconds) and shape ``sigma``."""

    median: float = 0.010
    sigma: float = 0.5

    def table(self, rng: random.Random, size: int = 1 << 16) -> list[float]:
        """``size`` draws, to pick from at random: much cheaper than a draw per message."""
        return [self.median * math.exp(self.sigma * rng.gauss()) for _ in range(size)]


class SimNetwork:
    """Runs the cores added to it; ``on_events`` sees every event a core emits.

    ``wire_check`` is the fraction of messages that travel as real bytes:
    packed with msgpack, checked against ``wire_size()``, and decoded with
    ``gossip_messages.decode`` before delivery.
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        latency: Latency = Latency(),
        loss: float = 0.0,
        wire_check: float = 0.0,
        on_events: EventHandler | None = None,
    ) -> None:
        self.rng = rng
        self.latency = latency
        self._delays = latency.table(rng)
        self.loss = loss
        self.wire_check = wire_check
        self.on_events = on_events
        self.now = 0.0
        self.nodes: dict[bytes, Gossip] = {}
        self.groups: dict[bytes, int] = {}  # a partition: only nodes of the same group talk
        self.cut: set[tuple[bytes, bytes]] = set()  # (sender, receiver) paths that lose everything
        self.bytes_sent: Counter[bytes] = Counter()
        self.bytes_by_kind: Counter[str] = Counter()
        self.messages_sent = 0
        self.messages_delivered = 0
        self._heap: list[_Entry] = []
        self._order = itertools.count()
        self._scheduled: dict[bytes, float] = {}

    # --- the cluster ------------------------------------------------------------------

    def add(self, node: Gossip) -> None:
        self.nodes[node.node] = node
        self._reschedule(node.node, node)

    def remove(self, node: bytes) -> None:
        """The node stops at once, as in a crash: what is sent to it from now on is lost."""
        self.nodes.pop(node, None)
        self._scheduled.pop(node, None)

    def at(self, time: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (time, next(self._order), _CALL, b"", b"", action))

    def send(self, sender: bytes, sends: list[Send]) -> None:
        """Put what a core returned on the wire (for calls made outside ``run``, like ``join``)."""
        self._send_all(sender, sends)
        node = self.nodes.get(sender)
        if node is not None:
            self._after(sender, node)

    def partition(self, groups: list[set[bytes]]) -> None:
        self.groups = {node: i for i, group in enumerate(groups) for node in group}

    def heal(self) -> None:
        self.groups = {}

    # --- running ----------------------------------------------------------------------

    def run_until(self, end: float, stop: Callable[[], bool] | None = None) -> None:
        """Process every event up to simulated time ``end`` (or until ``stop()`` holds)."""
        heap = self._heap
        nodes = self.nodes
        scheduled = self._scheduled
        while heap and heap[0][0] <= end:
            time, _, kind, target, sender, payload = heapq.heappop(heap)
            self.now = time
            if kind == _CALL:
                assert callable(payload)
                payload()
                if stop is not None and stop():
                    return
                continue
            node = nodes.get(target)
            if node is None:
                continue
            if kind == _DELIVER:
                self.messages_delivered += 1
                sends = node.receive(sender, payload, time)  # type: ignore[arg-type]
            else:
                if scheduled.get(target) != time:
                    continue  # superseded by an earlier tick
                del scheduled[target]
                sends = node.tick(time)
            if sends:
                self._send_all(target, sends)
            self._after(target, node)
            if stop is not None and stop():
                return
        self.now = max(self.now, end)

    def _after(self, name: bytes, node: Gossip) -> None:
        events = node.drain_events()
        if events and self.on_events is not None:
            self.on_events(name, events, self.now)
        self._reschedule(name, node)

    def _reschedule(self, name: bytes, node: Gossip) -> None:
        deadline = max(node.next_deadline(), self.now)
        if deadline < self._scheduled.get(name, math.inf):
            self._scheduled[name] = deadline
            heapq.heappush(self._heap, (deadline, next(self._order), _TICK, name, b"", None))

    def _send_all(self, sender: bytes, sends: list[Send]) -> None:
        rng = self.rng
        for send in sends:
            message = send.message
            size = message.wire_size()
            self.bytes_sent[sender] += size
            self.bytes_by_kind[type(message).__name__] += size
            self.messages_sent += 1
            to = send.to
            if self.loss and rng.random() < self.loss:
                continue
            if to not in self.nodes or (sender, to) in self.cut:
                continue
            if self.groups and self.groups.get(sender) != self.groups.get(to):
                continue
            if self.wire_check and rng.random() < self.wire_check:
                message = _through_the_wire(message, size)
            arrival = self.now + self._delays[rng.getrandbits(16)]
            heapq.heappush(self._heap, (arrival, next(self._order), _DELIVER, to, sender, message))


def _through_the_wire(message: Message, size: int) -> Message:
    packed = msgpack.packb(message.to_wire(), use_bin_type=True)
    if len(packed) != size:
        raise AssertionError(f"{type(message).__name__}: wire_size {size}, packed {len(packed)}")
    return decode(msgpack.unpackb(packed, raw=False))
