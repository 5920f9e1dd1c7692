"""Name records: how a name in a namespace resolves to a capability.

The record's *locator* is a keyed BLAKE3 of the name, so peers that hold it
learn nothing of the name. Its value is sealed with a key derived from the
namespace secret, so only nodes of the namespace can read it. Versions are
``(hybrid clock, node id)`` pairs: the highest wins everywhere, so replicas
converge whatever order updates arrive in.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import msgpack

from fstore import _native
from fstore.errors import IntegrityError

LOCATOR_KEY_CONTEXT = "fstore 2026-11-24 name locator key v1"
RECORD_KEY_CONTEXT = "fstore 2026-11-24 name record key v1"
RECORD_CONTEXT = b"fstore/record/v1"

Version = tuple[int, bytes]


class HybridClock:
    """Microseconds since the epoch, but never repeating or going backwards."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def now(self, at_least: int = 0) -> int:
        with self._lock:
            self._last = max(time.time_ns() // 1000, self._last + 1, at_least + 1)
            return self._last


@dataclass(frozen=True)
class NameValue:
    name: str
    capability: str | None  # None when deleted
    size: int
    blake3: bytes
    stored_at: float


class NameKeys:
    """The namespace's keys for name records."""

    def __init__(self, namespace_secret: bytes) -> None:
        self._locator_key = _native.derive_key(LOCATOR_KEY_CONTEXT, namespace_secret)
        self._record_key = _native.derive_key(RECORD_KEY_CONTEXT, namespace_secret, 16)

    def locator(self, name: str) -> bytes:
        return _native.keyed_hash(self._locator_key, name.encode("utf-8"))

    def seal(self, value: NameValue) -> bytes:
        plain = msgpack.packb(
            {
                "name": value.name,
                "cap": value.capability,
                "size": value.size,
                "blake3": value.blake3,
                "at": value.stored_at,
            },
            use_bin_type=True,
        )
        return _native.seal(self._record_key, RECORD_CONTEXT, plain)

    def open(self, sealed: bytes) -> NameValue:
        plain = _native.open(self._record_key, RECORD_CONTEXT, sealed)
        try:
            raw = msgpack.unpackb(plain, raw=False)
            return NameValue(
                str(raw["name"]),
                None if raw["cap"] is None else str(raw["cap"]),
                int(raw["size"]),
                bytes(raw["blake3"]),
                float(raw["at"]),
            )
        except (KeyError, TypeError, ValueError, msgpack.UnpackException) as e:
            raise IntegrityError(f"malformed name record: {e}") from e
