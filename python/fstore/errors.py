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


__all__ = [
    "AddressMismatchError",
    "AlreadyFinalizedError",
    "FileMismatchError",
    "FstoreError",
    "IntegrityError",
    "InvalidArgumentError",
    "TamperedError",
    "TrailingDataError",
    "TruncatedError",
    "WrongKeyError",
]
