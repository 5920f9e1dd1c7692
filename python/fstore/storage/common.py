"""What the blob store and the catalog share: id checks, versions, OS error mapping."""

from __future__ import annotations

import errno

from fstore.errors import DiskFullError, InvalidArgumentError, StorageError

ADDRESS_LEN = 32
"""Length of a blob address, and of every other id the store keeps (chunk ids,
record locators, node ids): all are BLAKE3 outputs."""

Version = tuple[int, bytes]
"""A name record's version: (hybrid-clock integer, node id). Compared as a tuple;
the highest wins."""

_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def check_id(value: object, what: str = "address") -> bytes:
    """Return ``value`` as exactly 32 bytes, or raise :class:`InvalidArgumentError`.

    Only bytes-like objects are accepted, never ``str``: the store turns ids into
    hex itself, so nothing that comes from outside is ever a path component.
    """
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidArgumentError(
            f"{what} must be {ADDRESS_LEN} bytes, not {type(value).__name__}"
        )
    raw = bytes(value)
    if len(raw) != ADDRESS_LEN:
        raise InvalidArgumentError(f"{what} must be {ADDRESS_LEN} bytes, got {len(raw)}")
    return raw


def os_error(exc: OSError, doing: str) -> StorageError:
    """The fstore error for an ``OSError``; the caller chains ``exc`` as its cause."""
    if exc.errno in _DISK_FULL_ERRNOS:
        return DiskFullError(f"disk full while {doing} ({exc.strerror})")
    return StorageError(f"{doing} failed: {exc}")
