"""Capabilities: the text that lets its holder read exactly one file.

``fs1:`` followed by lowercase base32 (no padding) of
``manifest address (32) || file key (16) || check (4)``, where ``check`` is the
first 4 bytes of BLAKE3 of the 48 bytes before it (``fstore.formats.textcode``). The
check makes any altered character an error instead of a silent request for
the wrong file.
"""

from __future__ import annotations

from dataclasses import dataclass

from fstore.errors import InvalidCapabilityError
from fstore.formats import textcode

PREFIX = "fs1:"
_ADDRESS_LEN = 32
_KEY_LEN = 16


@dataclass(frozen=True)
class Capability:
    """A manifest address and the key that opens the manifest."""

    manifest_address: bytes
    file_key: bytes

    def __post_init__(self) -> None:
        if len(self.manifest_address) != _ADDRESS_LEN or len(self.file_key) != _KEY_LEN:
            raise InvalidCapabilityError("a capability holds a 32-byte address and a 16-byte key")

    def __str__(self) -> str:
        return textcode.encode(PREFIX, self.manifest_address + self.file_key)

    @classmethod
    def parse(cls, text: str) -> Capability:
        """Parse the text form; any altered, missing or extra character raises."""
        try:
            body = textcode.decode(PREFIX, text, _ADDRESS_LEN + _KEY_LEN, "a capability")
        except ValueError as e:
            raise InvalidCapabilityError(str(e)) from None
        return cls(body[:_ADDRESS_LEN], body[_ADDRESS_LEN:])

    @staticmethod
    def looks_like(text: str) -> bool:
        return text.startswith(PREFIX)
