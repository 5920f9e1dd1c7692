"""The node: ``Node`` (lifecycle and the public API) and the roles it delegates to.

May import: ``fstore.net``, ``fstore.storage``, ``fstore.formats``, ``fstore.errors``,
``fstore._native``.
"""

from fstore.node.node import PIECE_SIZE, FileEntry, Node, PeerInfo, StoreResult

__all__ = ["PIECE_SIZE", "FileEntry", "Node", "PeerInfo", "StoreResult"]
