"""The node's view of the network for its roles: whom to ask for a key, and through which link.

Placement is the ``replicas`` members XOR-closest to a key, this node included,
among the members the gossiped list holds alive or suspect: the same answer on
every node once gossip has converged. A member counts only once it is proven:
once this node has seen its HELLO on a link (now or in an earlier run), so a
node id that a member gossips but that never answers as itself is never used.
A link to a member is opened on demand (``connect``). Peers that served bytes
not matching their address are remembered (in memory) and asked last.

Members are *present* while gossip holds them alive or suspect, and for
``repair_after`` seconds after they were last so (dead, left or forgotten); past
that they are *lost*, and the copies they held are made again elsewhere
(docs/ARCHITECTURE.md, "Durability"). A member back within the grace costs
nothing: it was responsible all along.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from fstore.errors import FstoreError
from fstore.net import placement
from fstore.net.gossip import Gossip
from fstore.net.gossip_driver import GossipDriver
from fstore.net.gossip_messages import Member
from fstore.net.link import PeerLink
from fstore.net.membership import Membership

MAX_LIARS_REMEMBERED = 4096


REPAIR_AFTER = 600.0


class Peers:
    def __init__(self, node_id: bytes, repair_after: float = REPAIR_AFTER) -> None:
        self.node_id = node_id
        self.repair_after = repair_after
        self._members: Membership | None = None
        self._driver: GossipDriver | None = None
        # Member → time.monotonic() it was last seen linked (now, for those linked now).
        self._seen: dict[bytes, float] = {}
        # Members whose HELLO this node verified, now or in an earlier run.
        self._proven: set[bytes] = {node_id}
        # Verification failures per peer; the most recent liar last (dict order).
        self._lies: dict[bytes, int] = {}

    def attach(self, members: Membership, driver: GossipDriver) -> None:
        """Use these links and this member list from now on: set once the node has started."""
        self._members = members
        self._driver = driver

    @property
    def members(self) -> Membership:
        if self._members is None:
            raise FstoreError("the node is not started")
        return self._members

    @property
    def gossip(self) -> Gossip:
        if self._driver is None:
            raise FstoreError("the node is not started")
        return self._driver.gossip

    @property
    def driver(self) -> GossipDriver:
        if self._driver is None:
            raise FstoreError("the node is not started")
        return self._driver

    @property
    def started(self) -> bool:
        return self._members is not None

    def live(self) -> dict[bytes, PeerLink]:
        """The links open now (a few of the members; see ``alive``)."""
        return self.members.live()

    def prove(self, node: bytes) -> bool:
        """A link's HELLO named ``node``: it is a member. Whether that is news."""
        if node in self._proven:
            return False
        self._proven.add(node)
        return True

    def proven(self, node: bytes) -> bool:
        return node in self._proven

    def view(self) -> list[bytes]:
        """The proven members gossip holds alive or suspect, this node included."""
        return [n for n in self.gossip.live_ids() if n in self._proven]

    def alive(self) -> list[bytes]:
        """``view()`` without this node."""
        return [n for n in self.view() if n != self.node_id]

    def member_list(self) -> list[Member]:
        """Every record gossip holds of a proven member, this node's own included."""
        return [m for m in self.gossip.members() if m.node in self._proven]

    def addresses(self) -> list[tuple[bytes, str]]:
        """(id, claimed address) of the other members alive or suspect."""
        found = (self.gossip.member(n) for n in self.alive())
        return [(m.node, m.addr) for m in found if m is not None and m.addr]

    def link(self, node: bytes) -> PeerLink | None:
        """The live link to ``node``, if there is one."""
        return self.members.live().get(node)

    async def connect(self, node: bytes) -> PeerLink:
        """A link to ``node``, opened now if there is none (PeerUnavailableError if it fails)."""
        return await self.members.connect(node, self.driver.address_of(node))

    def ranked(self, key: bytes) -> list[bytes]:
        """Every live member, this node included, nearest to ``key`` first; overdue ones last."""
        nearest = placement.closest(key, [self.node_id, *self.view()], 1 << 30)
        return sorted(nearest, key=self._overdue)  # stable: XOR order within each group

    def remember(self, members: Iterable[bytes]) -> None:
        """Members linked in an earlier run: proven, and each present for one grace from now."""
        now = time.monotonic()
        for node in members:
            self._proven.add(node)
            if node != self.node_id:
                self._seen.setdefault(node, now)

    def present(self) -> set[bytes]:
        """Members alive or suspect now, or so within ``repair_after``; this node included."""
        now = time.monotonic()
        for node in self.view():
            self._seen[node] = now
        recent = {n for n, seen in self._seen.items() if now - seen < self.repair_after}
        return recent | {self.node_id}

    def known(self) -> set[bytes]:
        """Every member this node has known: present or lost, this node included."""
        return set(self._seen) | set(self.view()) | {self.node_id}

    def lost(self) -> set[bytes]:
        """Members not alive or suspect for longer than ``repair_after``."""
        return set(self._seen) - self.present()

    def responsible(self, key: bytes, replicas: int) -> list[bytes]:
        """The ``replicas`` present members that should hold ``key``, nearest first."""
        return placement.closest(key, self.present(), replicas)

    def holders(self, key: bytes) -> list[bytes]:
        """The other live members in the order to ask them for ``key``.

        Overdue peers go last, and so do peers that lied before: in XOR order
        among themselves. Members not alive but still present follow.
        """
        candidates = [n for n in self.ranked(key) if n != self.node_id]
        candidates.sort(key=lambda n: (self._overdue(n), self._lies.get(n, 0)))
        # Then members declared dead within the grace: one may be back before gossip says so.
        gone = self.present() - set(candidates) - {self.node_id}
        return candidates + placement.closest(key, gone, len(gone))

    def _overdue(self, node: bytes) -> bool:
        link = self.link(node) if node != self.node_id else None
        return link is not None and not link.responsive

    def expected_time(self, node: bytes, body_bytes: int = 0) -> float | None:
        """Seconds within which ``node`` should answer; None for this node itself."""
        link = self.link(node) if node != self.node_id else None
        return link.expected_time(body_bytes) if link is not None else None

    def heard_since(self, node: bytes, since: float) -> bool:
        """Whether ``node`` sent anything after ``since`` (``time.monotonic()``)."""
        link = self.link(node)
        return link is not None and link.heard_at > since

    def probe(self, node: bytes) -> None:
        """Ping ``node`` in the background, so that a live peer is heard from soon."""
        link = self.link(node)
        if link is not None:
            link.probe()

    def mark_overdue(self, node: bytes) -> None:
        link = self.link(node) if node != self.node_id else None
        if link is not None:
            link.mark_overdue()

    def record_lie(self, node: bytes) -> None:
        self._lies[node] = self._lies.pop(node, 0) + 1  # re-inserted: the newest last
        if len(self._lies) > MAX_LIARS_REMEMBERED:
            del self._lies[next(iter(self._lies))]  # forget the least recent liar

    def describe(self, node: bytes | None) -> str:
        if node is None:
            return "this node's catalog"
        link = self.link(node)
        return link.describe() if link is not None else f"peer {node.hex()[:12]}"
