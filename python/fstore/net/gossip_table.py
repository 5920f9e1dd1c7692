"""The data a ``Gossip`` core keeps: its member table and its queue of changes to spread."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from fstore.net.gossip_messages import (
    BUCKETS,
    MAX_UPDATES,
    Member,
    pack_digest,
    unpack_digest,
)


class MemberTable:
    """Every record a node holds, by node id, with the XOR digest of each bucket's live records.

    A host may keep a table from an earlier run and pass it to ``Gossip``; the
    simulator gives each of its nodes a ``copy()`` of one converged table.
    """

    __slots__ = ("_by_id", "_digest", "_live", "get", "version")

    def __init__(self, members: Iterable[Member] = ()) -> None:
        self._by_id: dict[bytes, Member] = {}
        self.get: Callable[[bytes], Member | None] = self._by_id.get  # the record of a node id
        self._digest = [0] * BUCKETS
        self._live = 0
        self.version = 0  # changes whenever the set of live node ids changes
        for member in members:
            self.put(member)

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Member]:
        return iter(self._by_id.values())

    def ids(self) -> list[bytes]:
        return list(self._by_id)

    @property
    def live_count(self) -> int:
        return self._live

    def live_ids(self) -> list[bytes]:
        return [m.node for m in self._by_id.values() if m.live]

    def put(self, member: Member) -> Member | None:
        """Store ``member``'s record; returns the one it replaced."""
        old = self._by_id.get(member.node)
        self._by_id[member.node] = member
        if old is not None and old.live:
            self._digest[old.bucket] ^= old.digest
            self._live -= 1
        if member.live:
            self._digest[member.bucket] ^= member.digest
            self._live += 1
        if old is None or old.live != member.live:
            self.version += 1
        return old

    def remove(self, node: bytes) -> None:
        old = self._by_id.pop(node, None)
        if old is not None and old.live:
            self._digest[old.bucket] ^= old.digest
            self._live -= 1
            self.version += 1

    def digest(self) -> bytes:
        return pack_digest(self._digest)

    def differing(self, digest: bytes) -> set[int]:
        theirs = unpack_digest(digest)
        return {b for b in range(BUCKETS) if theirs[b] != self._digest[b]}

    def in_buckets(self, buckets: set[int]) -> list[Member]:
        if len(buckets) == BUCKETS:
            return list(self._by_id.values())
        return [m for m in self._by_id.values() if m.node[0] in buckets]

    def copy(self) -> MemberTable:
        twin = MemberTable()
        twin._by_id = dict(self._by_id)
        twin.get = twin._by_id.get
        twin._digest = list(self._digest)
        twin._live = self._live
        return twin


# --- the broadcast queue ------------------------------------------------------------


class _Queued:
    __slots__ = ("member", "stale", "transmits")

    def __init__(self, member: Member) -> None:
        self.member = member
        self.transmits = 0
        self.stale = False


class BroadcastQueue:
    """Changes waiting to be piggybacked, each until it was sent ``limit`` times.

    The least-sent go first, the newest first among equals; a newer record of
    the same member replaces an older one (memberlist's TransmitLimitedQueue).
    """

    __slots__ = ("_by_node", "_tiers")

    def __init__(self) -> None:
        self._by_node: dict[bytes, _Queued] = {}
        self._tiers: list[list[_Queued]] = [[]]  # by transmit count, newest last

    def __len__(self) -> int:
        return len(self._by_node)

    def __bool__(self) -> bool:
        return bool(self._by_node)

    def __contains__(self, node: bytes) -> bool:
        return node in self._by_node

    def push(self, member: Member) -> None:
        old = self._by_node.get(member.node)
        if old is not None:
            old.stale = True
        queued = _Queued(member)
        self._by_node[member.node] = queued
        self._tiers[0].append(queued)

    def take(self, budget: int, limit: int) -> tuple[Member, ...]:
        """Records for one message, at most ``budget`` bytes of them; each counts as sent once."""
        chosen: list[_Queued] = []
        used = 0
        for tier in self._tiers:
            while tier and len(chosen) < MAX_UPDATES:
                queued = tier[-1]
                if queued.stale:
                    tier.pop()
                    continue
                if used + queued.member.wire_size > budget:
                    break
                tier.pop()
                chosen.append(queued)
                used += queued.member.wire_size
            if tier or len(chosen) == MAX_UPDATES:
                break
        for queued in chosen:
            queued.transmits += 1
            if queued.transmits >= limit:
                del self._by_node[queued.member.node]
                continue
            while len(self._tiers) <= queued.transmits:
                self._tiers.append([])
            self._tiers[queued.transmits].append(queued)
        return tuple(q.member for q in chosen)
