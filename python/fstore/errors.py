"""The one exception hierarchy of fstore.

Every error fstore raises on purpose is a subclass of :class:`FstoreError`.
The native extension raises these same classes (it imports them from here), so
callers never need to know which layer detected a problem.
"""

from __future__ import annotations


class FstoreError(Exception):
    """Base class of every error fstore raises on purpose."""


class InvalidArgumentError(FstoreError, ValueError):
    """An argument is malformed: a key of the wrong length, bad chunker sizes, ..."""


class InvalidNameError(InvalidArgumentError):
    """A file name breaks the name rules (``fstore.formats.names``, docs/FORMAT.md section 8).

    The message says which rule, and for a bad character which one (as ``U+XXXX``)
    and where.
    """


class UnsafePathError(InvalidArgumentError):
    """A path in a tree would land outside the directory it belongs in.

    An absolute path, a ``..`` segment, a symbolic link whose target leaves the
    tree, or a write that would go through a link already in the target. The
    message names the entry. Nothing is written outside the target.
    """


class WrongKindError(InvalidArgumentError):
    """A directory was named where a file is wanted, or a file where a directory is."""


class AlreadyFinalizedError(FstoreError):
    """A streaming object was used after ``finalize``/``finish`` or after a failure.

    Sealers, openers and the store pipeline refuse further use once they have
    finished or once any call has failed, so a half-processed stream is never
    continued. ``RestorePipeline`` is the one exception to "after a failure": a
    chunk that fails a check changes none of its state, so the same chunk may be
    retried with a copy from another holder; it still refuses use after ``finish``.
    """


class IntegrityError(FstoreError):
    """Bytes failed a check: they are not what they claim to be. Nothing is returned."""


class WrongKeyError(IntegrityError):
    """The key or context does not match the sealed message.

    Detected from the key commitment in the header before any record is opened.
    An altered header (salt or commitment) is indistinguishable from a wrong
    key by construction, and raises this too.
    """


class TamperedError(IntegrityError):
    """A record of a sealed message failed authentication: its bytes were altered.

    A cut that falls inside the last record also lands here: without the record's
    tag, a shortened record cannot be told apart from an altered one.
    """


class TruncatedError(IntegrityError):
    """A sealed message ended early.

    Raised when the input ends inside the header, before the final record's tag,
    or exactly on a record boundary (the final, always-short record is missing).
    """


class TrailingDataError(IntegrityError):
    """A sealed message is followed by extra bytes after its final record."""


class AddressMismatchError(IntegrityError):
    """A blob's bytes do not hash to the address they were fetched or stored under."""


class FileMismatchError(IntegrityError):
    """A reassembled file's size or whole-file BLAKE3 differs from what its manifest says."""


class StorageError(FstoreError):
    """The node's local storage (blob files or the catalog database) failed.

    The operating system's or SQLite's error is chained as ``__cause__``.
    """


class DiskFullError(StorageError):
    """The disk (or quota) holding the node's data directory is full.

    Nothing partial was left behind: a blob that could not be written completely
    is not visible under its address, and a catalog transaction was rolled back.
    """


class StorageFullError(StorageError):
    """The node's storage limit (``--max-storage``) leaves no room for the blob.

    Nothing was written. A store gets it only when fewer members than its write
    quorum had room; a full member is otherwise passed over.
    """


class DataDirInUseError(StorageError):
    """Another node (another process, or another ``Node`` of this one) holds the data directory.

    One node per data directory: two would share a node id and each other's files.
    The message names the directory and the process holding it.
    """


class ProtocolError(FstoreError):
    """A peer broke the wire protocol (``docs/PROTOCOL.md``); the connection must be closed.

    Raised for a malformed or oversized frame, a bad handshake or a broken stream
    rule, and also before sending a frame that the peer would have to reject for
    one of these reasons.
    """


class FileTooLargeError(FstoreError):
    """A file has more chunks than one manifest blob can list (files of about 70 GB)."""


class InvalidCapabilityError(FstoreError, ValueError):
    """A capability string is malformed or was altered (its check digits do not match)."""


class InvalidJoinTokenError(FstoreError, ValueError):
    """A join token is malformed or was altered (its check digits do not match)."""


class NetworkMismatchError(FstoreError):
    """A data directory already belongs to another network than the one it is asked to join."""


class NotFoundError(FstoreError):
    """No file by that name (or it was deleted), or no live node holds a needed blob."""


class NetworkError(FstoreError):
    """Talking to other nodes failed."""


class PeerUnavailableError(NetworkError):
    """A peer could not be reached, or its connection was lost or timed out."""


class PeerSlowError(PeerUnavailableError):
    """A peer did not answer within the time its past answers predict.

    Only that request is given up; the link stays, and the peer is asked last
    until it is heard from again.
    """


class PeerRejectedError(NetworkError):
    """A peer failed to prove it is a member of this network (docs/SECURITY.md).

    Its certificate is not from this network, its node id does not match its
    certificate, or it could not prove it holds the network key. The link is
    closed before any request is served.
    """


class RemoteError(NetworkError):
    """A peer answered a request with an error response.

    ``code`` is the stable error code from ``docs/PROTOCOL.md`` (``not_found``,
    ``bad_address``, ``disk_full``, ``busy``, ...).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class InsufficientReplicasError(NetworkError):
    """Fewer nodes than required acknowledged a durable copy, so a store failed."""


__all__ = [
    "AddressMismatchError",
    "AlreadyFinalizedError",
    "DataDirInUseError",
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
    "NotFoundError",
    "PeerRejectedError",
    "PeerUnavailableError",
    "ProtocolError",
    "RemoteError",
    "StorageError",
    "StorageFullError",
    "TamperedError",
    "TrailingDataError",
    "TruncatedError",
    "UnsafePathError",
    "WrongKeyError",
    "WrongKindError",
]
