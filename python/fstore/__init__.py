"""fstore: a peer-to-peer, content-addressed, end-to-end encrypted file store.

``from fstore import Node`` is the Python API; every error is an
:class:`FstoreError` from :mod:`fstore.errors`. ``Node`` is imported on first
use, so the ``fstore`` command does not load the node's dependencies to print
its help.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fstore._native import __version__
from fstore.errors import (
    AddressMismatchError,
    AlreadyFinalizedError,
    DiskFullError,
    FileMismatchError,
    FileTooLargeError,
    FstoreError,
    InsufficientReplicasError,
    IntegrityError,
    InvalidArgumentError,
    InvalidCapabilityError,
    InvalidJoinTokenError,
    InvalidNameError,
    NetworkError,
    NetworkMismatchError,
    NotFoundError,
    PeerRejectedError,
    PeerSlowError,
    PeerUnavailableError,
    ProtocolError,
    RemoteError,
    StorageError,
    TamperedError,
    TrailingDataError,
    TruncatedError,
    UnsafePathError,
    WrongKeyError,
    WrongKindError,
)

if TYPE_CHECKING:
    from fstore.node import Node

__all__ = [
    "AddressMismatchError",
    "AlreadyFinalizedError",
    "DiskFullError",
    "FileMismatchError",
    "FileTooLargeError",
    "FstoreError",
    "InsufficientReplicasError",
    "IntegrityError",
    "InvalidArgumentError",
    "InvalidCapabilityError",
    "InvalidJoinTokenError",
    "InvalidNameError",
    "NetworkError",
    "NetworkMismatchError",
    "Node",
    "NotFoundError",
    "PeerRejectedError",
    "PeerSlowError",
    "PeerUnavailableError",
    "ProtocolError",
    "RemoteError",
    "StorageError",
    "TamperedError",
    "TrailingDataError",
    "TruncatedError",
    "UnsafePathError",
    "WrongKeyError",
    "WrongKindError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "Node":
        from fstore.node import Node

        return Node
    raise AttributeError(f"module 'fstore' has no attribute {name!r}")
