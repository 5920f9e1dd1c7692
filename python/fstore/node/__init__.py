"""The node: ``Node`` (lifecycle and the public API) and the roles it delegates to.

``writer`` stores, ``reader`` gets, ``trees`` stores and reads directory trees
(with ``treestore`` and ``bridge``), ``names`` keeps name records, ``service``
answers peers; ``replication`` places copies, ``peers`` says whom to ask,
``local`` is this node's own copies, ``metrics`` its Prometheus registry.
May import: ``fstore.net``, ``fstore.storage``, ``fstore.formats``, ``fstore.errors``,
``fstore._native``.
"""

from fstore.node.names import FileEntry
from fstore.node.node import Node, PeerInfo
from fstore.node.trees import FileView, Located, TreeRestoreResult, TreeStoreResult
from fstore.node.writer import PIECE_SIZE, StoreResult

__all__ = [
    "PIECE_SIZE",
    "FileEntry",
    "FileView",
    "Located",
    "Node",
    "PeerInfo",
    "StoreResult",
    "TreeRestoreResult",
    "TreeStoreResult",
]
