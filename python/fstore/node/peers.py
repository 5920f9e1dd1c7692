"""The node's view of the network for its roles: whom to ask for a key, and through which link.

Placement is the ``replicas`` members XOR-closest to a key, this node included.
Peers that served bytes not matching their address are remembered (in memory)
and asked last.
"""

from __future__ import annotations

from fstore.errors import FstoreError
from fstore.net import placement
from fstore.net.link import PeerLink
from fstore.net.membership import Membership

MAX_LIARS_REMEMBERED = 4096


class Peers:
    def __init__(self, node_id: bytes) -> None:
        self.node_id = node_id
        self._members: Membership | None = None
        # Verification failures per peer; the most recent liar last (dict order).
        self._lies: dict[bytes, int] = {}

    def attach(self, members: Membership) -> None:
        """Use ``members`` from now on: set once the node has started."""
        self._members = members

    @property
    def members(self) -> Membership:
        if self._members is None:
            raise FstoreError("the node is not started")
        return self._members

    @property
    def started(self) -> bool:
        return self._members is not None

    def live(self) -> dict[bytes, PeerLink]:
        return self.members.live()

    def link(self, node: bytes) -> PeerLink | None:
        """The live link to ``node``, if there is one."""
        return self.members.live().get(node)

    def ranked(self, key: bytes) -> list[bytes]:
        """Every live member, this node included, nearest to ``key`` first."""
        return placement.closest(key, [self.node_id, *self.members.live()], 1 << 30)

    def holders(self, key: bytes) -> list[bytes]:
        """The other live members in the order to ask them for ``key``: liars last."""
        candidates = [n for n in self.ranked(key) if n != self.node_id]
        # Stable: peers that lied before go last, in XOR order among themselves.
        candidates.sort(key=lambda n: self._lies.get(n, 0))
        return candidates

    def record_lie(self, node: bytes) -> None:
        self._lies[node] = self._lies.pop(node, 0) + 1  # re-inserted: the newest last
        if len(self._lies) > MAX_LIARS_REMEMBERED:
            del self._lies[next(iter(self._lies))]  # forget the least recent liar

    def describe(self, node: bytes | None) -> str:
        if node is None:
            return "this node's catalog"
        link = self.link(node)
        return link.describe() if link is not None else f"peer {node.hex()[:12]}"
