"""Full membership by gossip, sans-IO: SWIM with Lifeguard's refinements.

``Gossip`` is one node's membership state machine. It touches no socket, no
clock and no global random: the host passes ``now`` (any monotonic clock, in
seconds) and a ``random.Random``, feeds it received messages and timer ticks,
and sends the ``Send`` values it returns. The same code runs in a node and in
``fstore.sim``. The design and its numbers: docs/SCALE.md; the messages:
docs/PROTOCOL.md, section 11.

- Failure detection: every ``probe_interval`` the node pings the next member
  of a shuffled round-robin; without an ack within ``probe_timeout`` it pings
  again and asks ``indirect_checks`` members to ping for it (``PingReq``). No
  ack by the end of the interval makes the member *suspect*, not dead.
- Suspicion: a suspect member is declared dead when its suspicion times out,
  unless it refutes first by raising its incarnation. The timeout starts long
  and shrinks towards ``suspicion_mult * log10(N) * probe_interval`` as other
  members independently suspect it too (Lifeguard).
- Dissemination: every change is piggybacked on probes and on ``Broadcast``
  messages to ``gossip_fanout`` random members every ``gossip_interval``; each
  change is sent ``ceil(retransmit_mult * log10(N + 1))`` times by each member.
- Anti-entropy: every ``sync_interval`` a member compares a digest of its live
  records (256 buckets by the first byte of the node id) with a random member's,
  and the two exchange the records of the buckets that differ. A join is the
  same exchange with a seed, whose digest differs in every bucket.

Who sent a message is the host's business: ``receive`` must be given the node
id that the link's certificate proves (docs/SECURITY.md), so only members of the
network ever speak to this machine. An address in a record is only a claim.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from fstore.errors import InvalidArgumentError
from fstore.net.gossip_messages import (
    MAX_ENTRIES,
    MAX_SEQ,
    MAX_SYNC_BYTES,
    MAX_UPDATES,
    NODE_ID_SIZE,
    Ack,
    Broadcast,
    Member,
    Message,
    Nack,
    Ping,
    PingReq,
    State,
    SyncPush,
    SyncReply,
    SyncRequest,
    address_problem,
    pack_bitmap,
    unpack_bitmap,
)
from fstore.net.gossip_table import BroadcastQueue, MemberTable

MAX_RELAYS: Final = 64  # indirect probes served at once; more PingReqs are ignored


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """Timing and fan-out; the defaults are the ones docs/SCALE.md measures."""

    probe_interval: float = 1.0
    probe_timeout: float = 0.5  # about the 99th percentile of a round trip
    indirect_checks: int = 4
    suspicion_mult: int = 4
    suspicion_max_mult: int = 6  # the timeout with no confirmation, in minimum timeouts
    retransmit_mult: float = 4.0
    gossip_interval: float = 0.2  # one gossip round
    gossip_fanout: int = 3
    max_piggyback_bytes: int = 1024
    sync_interval: float = 30.0
    gossip_to_dead: float = 30.0  # a dead member still gets gossip this long, so it can refute
    dead_retention: float = 600.0  # a dead member's record is forgotten after this
    join_retry: float = 1.0
    max_awareness: int = 8  # probes slow down by up to this factor while this node is unwell

    def __post_init__(self) -> None:
        for name in ("probe_interval", "probe_timeout", "gossip_interval", "sync_interval"):
            if not getattr(self, name) > 0:
                raise InvalidArgumentError(f"{name} must be positive")
        if not self.probe_timeout < self.probe_interval:
            raise InvalidArgumentError("probe_timeout must be shorter than probe_interval")
        if self.gossip_fanout < 1 or self.indirect_checks < 0 or self.max_awareness < 1:
            raise InvalidArgumentError("gossip_fanout, indirect_checks and max_awareness")
        if self.suspicion_mult < 1 or self.suspicion_max_mult < 1 or self.retransmit_mult <= 0:
            raise InvalidArgumentError("suspicion and retransmit multipliers must be positive")

    def retransmit_limit(self, members: int) -> int:
        """How many times each member sends each change."""
        return max(1, math.ceil(self.retransmit_mult * math.log10(members + 1)))

    def suspicion_timeouts(self, members: int) -> tuple[float, float]:
        """(minimum, maximum) seconds a member stays suspect before it is declared dead."""
        shortest = self.suspicion_mult * max(1.0, math.log10(max(1, members))) * self.probe_interval
        return shortest, shortest * self.suspicion_max_mult

    def detection_bound(self, members: int) -> float:
        """Seconds within which every member holds a failed member dead (docs/SCALE.md).

        Some member's probe of it fails within a few probe intervals (each interval
        every member probes one other, so a given member escapes all probes of k
        intervals with odds of about e**-k); the suspicion spreads in
        ``retransmit_limit`` gossip rounds, and times out everywhere within the
        longest suspicion timeout, the one that no other member confirms.
        """
        _, longest = self.suspicion_timeouts(members)
        spread = self.retransmit_limit(members) * self.gossip_interval
        return 3 * self.probe_interval + spread + longest


DEFAULT_CONFIG: Final = GossipConfig()


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``message`` to member ``to``; ``addr`` is its claimed address, if known.

    Delivery is best effort: a message the host cannot deliver (no link, a dial
    failed) is simply lost, and the protocol copes with that.
    """

    to: bytes
    addr: str | None
    message: Message


# --- events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberJoined:
    """A member entered the live view (new, or back after being dead or gone)."""

    member: Member


@dataclass(frozen=True, slots=True)
class MemberSuspected:
    member: Member


@dataclass(frozen=True, slots=True)
class MemberAlive:
    """A suspect member refuted the suspicion."""

    member: Member


@dataclass(frozen=True, slots=True)
class MemberDead:
    member: Member


@dataclass(frozen=True, slots=True)
class MemberLeft:
    member: Member


@dataclass(frozen=True, slots=True)
class AddressChanged:
    member: Member
    previous: str | None


Event: TypeAlias = (
    MemberJoined | MemberSuspected | MemberAlive | MemberDead | MemberLeft | AddressChanged
)


# --- timers -------------------------------------------------------------------------


class _Suspicion:
    """Lifeguard's timeout: from ``longest`` down to ``shortest`` as ``k`` others confirm."""

    __slots__ = (
        "confirmers",
        "deadline",
        "incarnation",
        "k",
        "longest",
        "node",
        "shortest",
        "start",
    )

    def __init__(
        self, node: bytes, incarnation: int, by: bytes | None, now: float, k: int,
        bounds: tuple[float, float],
    ) -> None:  # fmt: skip
        self.node = node
        self.incarnation = incarnation
        self.start = now
        self.confirmers = {by}
        self.k = k
        self.shortest, self.longest = bounds
        self.deadline = now + self._timeout()

    def _timeout(self) -> float:
        if self.k < 1:
            return self.shortest
        confirmations = len(self.confirmers) - 1
        fraction = math.log(confirmations + 1) / math.log(self.k + 1)
        return max(self.shortest, self.longest - fraction * (self.longest - self.shortest))

    def confirm(self, by: bytes | None) -> bool:
        """Count an independent suspicion; whether it was new (and so worth passing on)."""
        if len(self.confirmers) - 1 >= self.k or by in self.confirmers:
            return False
        self.confirmers.add(by)
        self.deadline = self.start + self._timeout()
        return True


@dataclass(slots=True)
class _Probe:
    target: bytes
    seq: int
    indirect_at: float
    deadline: float
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(frozen=True, slots=True)
class _Relay:
    requester: bytes
    seq: int
    deadline: float


@dataclass(slots=True)
class _PendingSync:
    partner: bytes
    expires: float
    received: dict[bytes, Member] = field(default_factory=dict)  # what the partner sent


# --- the state machine --------------------------------------------------------------


class Gossip:
    """One node's view of the membership: timers and messages in, messages and events out.

    ``table`` restores records kept from an earlier run (or, in the simulator, a
    converged view); this node's own record in it is superseded if needed.
    """

    def __init__(
        self,
        node: bytes,
        addr: str | None,
        rng: random.Random,
        now: float,
        config: GossipConfig = DEFAULT_CONFIG,
        *,
        incarnation: int = 0,
        table: MemberTable | None = None,
    ) -> None:
        if not isinstance(node, bytes) or len(node) != NODE_ID_SIZE:
            raise InvalidArgumentError(f"a node id is {NODE_ID_SIZE} bytes")
        _check_addr(addr)
        self.node = node
        self.config = config
        self._rng = rng
        self._addr = addr
        self._table = table if table is not None else MemberTable()
        self._queue = BroadcastQueue()
        self._events: list[Event] = []
        self._suspicions: dict[bytes, _Suspicion] = {}
        self._suspicion_timers: list[tuple[float, int, _Suspicion]] = []
        self._timer_count = 0
        self._relays: dict[int, _Relay] = {}
        self._syncs: dict[int, _PendingSync] = {}
        self._dead_since: dict[bytes, float] = {}
        if len(self._table) > self._table.live_count:
            self._dead_since = {m.node: now for m in self._table if not m.live and m.node != node}
        self._probe: _Probe | None = None
        self._seq = rng.randrange(MAX_SEQ)
        self._awareness = 0
        self._left = False
        self._joined = False
        self._seeds: list[tuple[bytes, str | None]] = []
        self._next_join = math.inf
        self._order = [n for n in self._table.ids() if n != node]
        self._cursor = rng.randrange(len(self._order)) if self._order else 0
        self._next_probe = now + rng.uniform(0, config.probe_interval)
        self._next_gossip = now + rng.uniform(0, config.gossip_interval)
        self._next_sync = now + rng.uniform(0, config.sync_interval)
        self._me = self._own_record(incarnation)

    def _own_record(self, incarnation: int) -> Member:
        wanted = Member(self.node, self._addr, incarnation, State.ALIVE)
        kept = self._table.get(self.node)
        if kept == wanted:
            return kept
        if kept is not None and kept.incarnation >= incarnation:
            wanted = Member(self.node, self._addr, kept.incarnation + 1, State.ALIVE)
        self._table.put(wanted)
        self._queue.push(wanted)
        return wanted

    # --- views --------------------------------------------------------------------

    @property
    def incarnation(self) -> int:
        return self._me.incarnation

    @property
    def addr(self) -> str | None:
        return self._addr

    @property
    def joined(self) -> bool:
        """Whether a state sync with another member has completed."""
        return self._joined

    @property
    def left(self) -> bool:
        return self._left

    @property
    def awareness(self) -> int:
        """Lifeguard's local health score: 0 is healthy; probes slow down by (score + 1)."""
        return self._awareness

    @property
    def pending_broadcasts(self) -> int:
        return len(self._queue)

    @property
    def live_count(self) -> int:
        """Members alive or suspect, this node included: the N of the timing formulas."""
        return self._table.live_count

    @property
    def view_version(self) -> int:
        """Changes whenever ``live_ids()`` changes: a key to cache placement structures by."""
        return self._table.version

    def member(self, node: bytes) -> Member | None:
        return self._table.get(node)

    def members(self) -> list[Member]:
        """Every record held: live members and the dead not yet forgotten."""
        return list(self._table)

    def live_ids(self) -> list[bytes]:
        """The members placement counts: alive and suspect (a suspect still holds its data)."""
        return self._table.live_ids()

    def drain_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def next_deadline(self) -> float:
        """When ``tick`` must next be called (it may be called earlier, or more often)."""
        deadline = self._next_gossip if self._queue else math.inf
        if self._left:
            return deadline
        deadline = min(deadline, self._next_probe, self._next_sync, self._next_join)
        probe = self._probe
        if probe is not None:
            deadline = min(deadline, probe.deadline)
            if not probe.indirect_sent:
                deadline = min(deadline, probe.indirect_at)
        if self._relays:
            deadline = min(deadline, min(r.deadline for r in self._relays.values()))
        timers = self._suspicion_timers
        while timers and not self._timer_valid(timers[0]):
            heapq.heappop(timers)
        if timers:
            deadline = min(deadline, timers[0][0])
        return deadline

    # --- the host's calls -----------------------------------------------------------

    def tick(self, now: float) -> list[Send]:
        out: list[Send] = []
        if not self._left:
            self._expire_relays(now, out)
            self._run_probe(now, out)
            self._expire_suspicions(now)
            if now >= self._next_sync:
                self._next_sync = now + self.config.sync_interval
                self._forget_dead(now)
                self._start_sync(now, out)
            if now >= self._next_join:
                self._send_join(now, out)
        if now >= self._next_gossip:
            self._next_gossip = now + self.config.gossip_interval
            self._gossip(now, out)
        return out

    def join(self, seeds: Iterable[tuple[bytes, str | None]], now: float) -> list[Send]:
        """Sync with each seed (members the host has linked to), again until one answers."""
        self._seeds = [(node, addr) for node, addr in seeds if node != self.node]
        self._joined = False
        out: list[Send] = []
        self._send_join(now, out)
        return out

    def leave(self, now: float) -> list[Send]:
        """Announce a graceful leave. Keep calling ``tick`` until ``pending_broadcasts`` is 0.

        From now on this node answers nothing and probes nobody.
        """
        if self._left:
            return []
        self._left = True
        self._probe = None
        self._relays.clear()
        self._syncs.clear()
        self._me = Member(self.node, self._addr, self._me.incarnation, State.LEFT)
        self._table.put(self._me)
        self._queue.push(self._me)
        out: list[Send] = []
        self._gossip(now, out)
        return out

    def set_addr(self, addr: str | None) -> None:
        """This node now accepts connections at ``addr``: a new incarnation tells everyone."""
        _check_addr(addr)
        self._addr = addr
        self._refute(self._me.incarnation + 1)

    def receive(self, sender: bytes, message: Message, now: float) -> list[Send]:
        """Handle ``message`` from ``sender``, the node id its link's certificate proves."""
        out: list[Send] = []
        if self._left or sender == self.node:
            return out
        handler = _HANDLERS.get(type(message))
        if handler is not None:
            handler(self, sender, message, now, out)
        return out

    # --- receiving --------------------------------------------------------------------

    def _on_ping(self, sender: bytes, message: Message, now: float, out: list[Send]) -> None:
        assert isinstance(message, Ping)
        self._merge_all(message.updates, sender, now, sync=False)
        out.append(self._send(sender, Ack(message.seq, self._piggyback_for(sender))))

    def _on_ack(self, sender: bytes, message: Message, now: float, out: list[Send]) -> None:
        assert isinstance(message, Ack)
        self._merge_all(message.updates, sender, now, sync=False)
        probe = self._probe
        if probe is not None and message.seq == probe.seq:
            self._probe = None
            self._adjust_awareness(-1)
            return
        relay = self._relays.pop(message.seq, None)
        if relay is not None:
            out.append(self._send(relay.requester, Ack(relay.seq, self._piggyback())))

    def _on_ping_req(self, sender: bytes, message: Message, now: float, out: list[Send]) -> None:
        assert isinstance(message, PingReq)
        self._merge_all(message.updates, sender, now, sync=False)
        if message.target in (self.node, sender) or len(self._relays) >= MAX_RELAYS:
            return
        seq = self._next_seq()
        self._relays[seq] = _Relay(sender, message.seq, now + self.config.probe_timeout)
        out.append(self._send(message.target, Ping(seq, self._piggyback())))

    def _on_nack(self, sender: bytes, message: Message, now: float, out: list[Send]) -> None:
        assert isinstance(message, Nack)
        probe = self._probe
        if probe is not None and message.seq == probe.seq:
            probe.nacks += 1

    def _on_broadcast(self, sender: bytes, message: Message, now: float, out: list[Send]) -> None:
        assert isinstance(message, Broadcast)
        self._merge_all(message.updates, sender, now, sync=False)

    def _on_sync_request(
        self, sender: bytes, message: Message, now: float, out: list[Send]
    ) -> None:
        assert isinstance(message, SyncRequest)
        buckets = self._table.differing(message.digest)
        bitmap = pack_bitmap(buckets)
        parts = _chunks(self._table.in_buckets(buckets)) if buckets else [()]
        for i, part in enumerate(parts):
            reply = SyncReply(message.seq, bitmap, part, last=i == len(parts) - 1)
            out.append(self._send(sender, reply))

    def _on_sync_reply(self, sender: bytes, message: Message, now: float, out: list[Send]) -> None:
        assert isinstance(message, SyncReply)
        self._merge_all(message.entries, sender, now, sync=True)
        pending = self._syncs.get(message.seq)
        if pending is None or pending.partner != sender:
            return
        pending.received.update((m.node, m) for m in message.entries)
        if not message.last:
            return
        del self._syncs[message.seq]
        self._joined = True
        self._seeds = []
        self._next_join = math.inf
        # Push back only what the partner does not have already.
        buckets = unpack_bitmap(message.buckets)
        records = self._table.in_buckets(buckets) if buckets else []
        news = [m for m in records if pending.received.get(m.node) != m]
        out.extend(self._send(sender, SyncPush(part)) for part in _chunks(news))

    def _on_sync_push(self, sender: bytes, message: Message, now: float, out: list[Send]) -> None:
        assert isinstance(message, SyncPush)
        self._merge_all(message.entries, sender, now, sync=True)

    # --- merging records ------------------------------------------------------------------

    def _merge_all(
        self, records: tuple[Member, ...], source: bytes, now: float, *, sync: bool
    ) -> None:
        for record in records:
            self._merge(record, source, now, sync=sync)

    def _merge(self, record: Member, source: bytes, now: float, *, sync: bool) -> None:
        node = record.node
        current = self._table.get(node)
        if current is record:
            return
        if node == self.node:
            self._about_me(record)
        elif record.state == State.ALIVE:
            self._on_alive(record, current, now)
        elif record.state == State.SUSPECT:
            self._on_suspect(record, current, now)
        elif sync and record.state == State.DEAD:
            # A member's "dead" from a state sync may be stale, or from the other
            # side of a healed partition: suspect it, so that it can still refute.
            if current is not None and current.live:
                suspect = Member(node, current.addr, record.incarnation, State.SUSPECT, source)
                self._on_suspect(suspect, current, now)
        else:
            self._on_down(record, current, now)

    def _on_alive(self, record: Member, current: Member | None, now: float) -> None:
        if current is not None and record.incarnation <= current.incarnation:
            return
        self._apply(record, current, now)
        self._queue.push(record)

    def _on_suspect(self, record: Member, current: Member | None, now: float) -> None:
        if current is None or record.incarnation > current.incarnation:
            self._suspect(record, current, now)
        elif record.incarnation == current.incarnation:
            if current.state == State.ALIVE:
                self._suspect(record, current, now)
            elif current.state == State.SUSPECT:
                self._confirm(record)

    def _confirm(self, record: Member) -> None:
        suspicion = self._suspicions.get(record.node)
        if suspicion is not None and suspicion.confirm(record.suspector):
            self._schedule(suspicion)
            self._queue.push(record)

    def _suspect(self, record: Member, current: Member | None, now: float) -> None:
        self._apply(record, current, now)
        members = self._table.live_count
        k = self.config.suspicion_mult - 2 if members - 2 >= self.config.suspicion_mult - 2 else 0
        bounds = self.config.suspicion_timeouts(members)
        suspicion = _Suspicion(record.node, record.incarnation, record.suspector, now, k, bounds)
        self._suspicions[record.node] = suspicion
        self._schedule(suspicion)
        self._queue.push(record)

    def _on_down(self, record: Member, current: Member | None, now: float) -> None:
        if current is None or not current.live or record.incarnation < current.incarnation:
            return
        self._apply(record, current, now)
        self._queue.push(record)

    def _about_me(self, record: Member) -> None:
        """Someone speaks of this node: refute anything but the truth at our incarnation."""
        me = self._me
        if self._left or record.incarnation < me.incarnation or record == me:
            return
        if record.state != State.ALIVE:
            self._adjust_awareness(+1)
        self._refute(record.incarnation + 1)

    def _refute(self, incarnation: int) -> None:
        self._me = Member(self.node, self._addr, incarnation, State.ALIVE)
        self._table.put(self._me)
        self._queue.push(self._me)

    def _apply(self, record: Member, current: Member | None, now: float) -> None:
        node = record.node
        self._table.put(record)
        if current is None:
            self._insert_in_order(node)
        if record.state != State.SUSPECT:
            self._suspicions.pop(node, None)
        if record.live:
            self._dead_since.pop(node, None)
        else:
            self._dead_since[node] = now
        self._events.extend(_events_for(record, current))

    # --- probing --------------------------------------------------------------------------

    def _run_probe(self, now: float, out: list[Send]) -> None:
        probe = self._probe
        if probe is not None and not probe.indirect_sent and now >= probe.indirect_at:
            self._probe_indirectly(probe, out)
        if probe is not None and now >= probe.deadline:
            self._probe_failed(probe, now, out)
        if now >= self._next_probe:
            self._start_probe(now, out)

    def _start_probe(self, now: float, out: list[Send]) -> None:
        scale = self._awareness + 1
        self._next_probe = now + self.config.probe_interval * scale
        if self._probe is not None:  # a tick came late: the old probe ends unanswered
            self._probe_failed(self._probe, now, out)
        target = self._next_probe_target()
        if target is None:
            return
        seq = self._next_seq()
        self._probe = _Probe(
            target.node, seq, now + self.config.probe_timeout * scale, self._next_probe
        )
        out.append(self._send(target.node, Ping(seq, self._piggyback_for(target.node))))

    def _probe_indirectly(self, probe: _Probe, out: list[Send]) -> None:
        probe.indirect_sent = True
        helpers = self._random_members(
            self.config.indirect_checks,
            lambda m: m.state == State.ALIVE and m.node != probe.target,
        )
        probe.expected_nacks = len(helpers)
        for helper in helpers:
            out.append(self._send(helper.node, PingReq(probe.seq, probe.target, self._piggyback())))
        out.append(self._send(probe.target, Ping(probe.seq, self._piggyback())))

    def _probe_failed(self, probe: _Probe, now: float, out: list[Send]) -> None:
        self._probe = None
        if probe.expected_nacks:
            self._adjust_awareness(probe.expected_nacks - probe.nacks)
        else:
            self._adjust_awareness(+1)
        current = self._table.get(probe.target)
        if current is None or not current.live:
            return
        record = Member(current.node, current.addr, current.incarnation, State.SUSPECT, self.node)
        self._on_suspect(record, current, now)
        if current.state == State.ALIVE:  # tell the suspect at once, so it can refute
            out.append(self._send(current.node, Broadcast((record,))))

    def _next_probe_target(self) -> Member | None:
        for _ in range(len(self._order) + 1):
            if self._cursor >= len(self._order):
                self._reshuffle()
                if not self._order:
                    return None
            node = self._order[self._cursor]
            self._cursor += 1
            member = self._table.get(node)
            if member is not None and member.live:
                return member
        return None

    def _reshuffle(self) -> None:
        self._order = self._known(self._order)
        self._rng.shuffle(self._order)
        self._cursor = 0

    def _known(self, nodes: list[bytes]) -> list[bytes]:
        """``nodes`` without duplicates and without those forgotten since."""
        return [n for n in dict.fromkeys(nodes) if self._table.get(n) is not None]

    def _insert_in_order(self, node: bytes) -> None:
        # At a random place, so that a new member is not probed by everyone at once.
        order = self._order
        order.append(node)
        i = self._rng.randrange(len(order))
        order[i], order[-1] = order[-1], order[i]

    def _expire_relays(self, now: float, out: list[Send]) -> None:
        for seq, relay in list(self._relays.items()):
            if now >= relay.deadline:
                del self._relays[seq]
                out.append(self._send(relay.requester, Nack(relay.seq)))

    def _adjust_awareness(self, delta: int) -> None:
        self._awareness = min(max(self._awareness + delta, 0), self.config.max_awareness - 1)

    # --- suspicion timers -------------------------------------------------------------------

    def _schedule(self, suspicion: _Suspicion) -> None:
        self._timer_count += 1
        heapq.heappush(self._suspicion_timers, (suspicion.deadline, self._timer_count, suspicion))

    def _timer_valid(self, timer: tuple[float, int, _Suspicion]) -> bool:
        deadline, _, suspicion = timer
        return self._suspicions.get(suspicion.node) is suspicion and suspicion.deadline == deadline

    def _expire_suspicions(self, now: float) -> None:
        timers = self._suspicion_timers
        while timers and (timers[0][0] <= now or not self._timer_valid(timers[0])):
            timer = heapq.heappop(timers)
            if not self._timer_valid(timer):
                continue
            suspicion = timer[2]
            del self._suspicions[suspicion.node]
            current = self._table.get(suspicion.node)
            if current is not None and current.state == State.SUSPECT:
                dead = Member(current.node, current.addr, current.incarnation, State.DEAD)
                self._on_down(dead, current, now)

    # --- gossip and anti-entropy ------------------------------------------------------------

    def _piggyback(self) -> tuple[Member, ...]:
        if not self._queue:
            return ()
        limit = self.config.retransmit_limit(self._table.live_count)
        return self._queue.take(self.config.max_piggyback_bytes, limit)

    def _piggyback_for(self, to: bytes) -> tuple[Member, ...]:
        """``_piggyback()``, plus what we hold against ``to`` if it is suspect or dead,
        so that it hears of it from the next message and can refute (Lifeguard)."""
        updates = self._piggyback()
        held = self._table.get(to)
        if held is not None and held.state in (State.SUSPECT, State.DEAD) and held not in updates:
            updates = (held, *updates[: MAX_UPDATES - 1])
        return updates

    def _gossip(self, now: float, out: list[Send]) -> None:
        if not self._queue:
            return
        horizon = now - self.config.gossip_to_dead
        targets = self._random_members(
            self.config.gossip_fanout,
            lambda m: (
                m.live
                or (m.state == State.DEAD and self._dead_since.get(m.node, -math.inf) >= horizon)
            ),
        )
        for target in targets:
            updates = self._piggyback()
            if not updates:
                break
            out.append(self._send(target.node, Broadcast(updates)))

    def _start_sync(self, now: float, out: list[Send]) -> None:
        for seq, pending in list(self._syncs.items()):
            if now >= pending.expires:
                del self._syncs[seq]
        # The dead are drawn too, in proportion: how two sides of a healed partition meet again.
        partners = self._random_members(1, lambda m: m.state != State.LEFT)
        if partners:
            self._request_sync(partners[0].node, partners[0].addr, now, out)

    def _request_sync(self, to: bytes, addr: str | None, now: float, out: list[Send]) -> None:
        seq = self._next_seq()
        self._syncs[seq] = _PendingSync(to, now + self.config.sync_interval)
        out.append(Send(to, addr, SyncRequest(seq, self._table.digest())))

    def _send_join(self, now: float, out: list[Send]) -> None:
        if self._joined or not self._seeds:
            self._next_join = math.inf
            return
        self._next_join = now + self.config.join_retry
        for node, addr in self._seeds:
            self._request_sync(node, addr, now, out)

    def _forget_dead(self, now: float) -> None:
        horizon = now - self.config.dead_retention
        for node, since in list(self._dead_since.items()):
            if since < horizon:
                del self._dead_since[node]
                self._table.remove(node)
        if len(self._order) > 2 * len(self._table):  # mostly forgotten ids: compact, in order
            done = self._known(self._order[: self._cursor])
            self._order = done + self._known(self._order[self._cursor :])
            self._cursor = len(done)

    # --- helpers ------------------------------------------------------------------------

    def _random_members(self, count: int, accept: Callable[[Member], bool]) -> list[Member]:
        """Up to ``count`` distinct members other than this node that ``accept`` takes."""
        order = self._order
        chosen: dict[bytes, Member] = {}
        for _ in range(4 * count + 8):
            if len(chosen) >= count or not order:
                break
            member = self._table.get(order[self._rng.randrange(len(order))])
            if member is not None and member.node not in chosen and accept(member):
                chosen[member.node] = member
        if len(chosen) < count and len(order) <= 64:  # small: look at everyone
            rest = [
                m
                for m in (self._table.get(n) for n in order)
                if m is not None and m.node not in chosen and accept(m)
            ]
            for member in self._rng.sample(rest, min(len(rest), count - len(chosen))):
                chosen[member.node] = member
        return list(chosen.values())

    def _send(self, to: bytes, message: Message) -> Send:
        member = self._table.get(to)
        return Send(to, member.addr if member is not None else None, message)

    def _next_seq(self) -> int:
        self._seq = self._seq + 1 if self._seq < MAX_SEQ else 0
        return self._seq


_Handler: TypeAlias = Callable[[Gossip, bytes, Message, float, list[Send]], None]
_HANDLERS: Final[dict[type, _Handler]] = {
    Ping: Gossip._on_ping,
    Ack: Gossip._on_ack,
    PingReq: Gossip._on_ping_req,
    Nack: Gossip._on_nack,
    Broadcast: Gossip._on_broadcast,
    SyncRequest: Gossip._on_sync_request,
    SyncReply: Gossip._on_sync_reply,
    SyncPush: Gossip._on_sync_push,
}


def _events_for(record: Member, previous: Member | None) -> list[Event]:
    events: list[Event] = []
    if previous is None or not previous.live:
        if record.live:
            events.append(MemberJoined(record))
    elif record.state == State.SUSPECT and previous.state == State.ALIVE:
        events.append(MemberSuspected(record))
    elif record.state == State.ALIVE and previous.state == State.SUSPECT:
        events.append(MemberAlive(record))
    elif record.state == State.DEAD:
        events.append(MemberDead(record))
    elif record.state == State.LEFT:
        events.append(MemberLeft(record))
    if previous is not None and record.live and record.addr != previous.addr:
        events.append(AddressChanged(record, previous.addr))
    return events


def _chunks(records: list[Member]) -> list[tuple[Member, ...]]:
    """``records`` in sync messages of at most MAX_ENTRIES records and about MAX_SYNC_BYTES."""
    parts: list[tuple[Member, ...]] = []
    start, size = 0, 0
    for i, record in enumerate(records):
        if i - start == MAX_ENTRIES or size + record.wire_size > MAX_SYNC_BYTES:
            parts.append(tuple(records[start:i]))
            start, size = i, 0
        size += record.wire_size
    if start < len(records):
        parts.append(tuple(records[start:]))
    return parts


def _check_addr(addr: str | None) -> None:
    problem = address_problem(addr)
    if problem is not None:
        raise InvalidArgumentError(problem)
