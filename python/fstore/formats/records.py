"""Name records: how a name in a namespace resolves to a capability.

The record's *locator* is a keyed BLAKE3 of the name, so peers that hold it
learn nothing of the name. Its value is sealed with a key derived from the
namespace secret, so only nodes of the namespace can read it. Versions are
``(hybrid clock, node id)`` pairs: the highest wins everywhere, so replicas
converge whatever order updates arrive in.

The locator and the version are bound into the seal (they are part of its
context): a record opens only under the locator and version it was written
with. A member without the namespace secret can still send any bytes with any
version for a locator it has seen, but neither garbage nor a genuine record
moved to another locator or version opens, so readers skip it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import msgpack

from fstore import _native
from fstore.errors import IntegrityError, InvalidArgumentError
from fstore.formats.packing import pack

LOCATOR_KEY_CONTEXT = "fstore 2026-11-24 name locator key v1"
RECORD_KEY_CONTEXT = "fstore 2026-11-24 name record key v1"
RECORD_CONTEXT = b"fstore/record/v2"

Version = tuple[int, bytes]


def record_context(locator: bytes, version: Version) -> bytes:
    """The seal's context: ``RECORD_CONTEXT || locator || be64(clock) || node id``."""
    clock, node = version
    if len(locator) != 32 or len(node) != 32 or not 0 <= clock < 1 << 64:
        raise InvalidArgumentError("a record's locator and node id are 32 bytes, its clock 64 bits")
    return RECORD_CONTEXT + bytes(locator) + clock.to_bytes(8, "big") + bytes(node)


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

    def seal(self, value: NameValue, locator: bytes, version: Version) -> bytes:
        """``value`` sealed for ``locator`` (its name's) at ``version``."""
        if locator != self.locator(value.name):
            raise InvalidArgumentError(f"that locator is not the locator of {value.name!r}")
        plain = pack(
            {
                "name": value.name,
                "cap": value.capability,
                "size": value.size,
                "blake3": value.blake3,
                "at": value.stored_at,
            }
        )
        return _native.seal(self._record_key, record_context(locator, version), plain)

    def open(self, sealed: bytes, locator: bytes, version: Version) -> NameValue:
        """The value of a record held under ``locator`` at ``version``.

        Raises :class:`IntegrityError` if ``sealed`` is not such a record:
        :class:`WrongKeyError` for a record of another namespace, or one sealed
        for another locator or version; a subclass naming the damage for
        altered, cut or malformed bytes.
        """
        plain = _native.open(self._record_key, record_context(locator, version), sealed)
        try:
            raw = msgpack.unpackb(plain, raw=False)
            value = NameValue(
                str(raw["name"]),
                None if raw["cap"] is None else str(raw["cap"]),
                int(raw["size"]),
                bytes(raw["blake3"]),
                float(raw["at"]),
            )
        except (KeyError, TypeError, ValueError, msgpack.UnpackException) as e:
            raise IntegrityError(f"malformed name record: {e}") from e
        if self.locator(value.name) != locator:
            raise IntegrityError("a name record sealed under the locator of another name")
        return value
