"""Capabilities: the text that lets its holder read exactly one file.

``fs1:`` followed by lowercase base32 (no padding) of
``manifest address (32) || file key (16) || check (4)``, where ``check`` is the
first 4 bytes of BLAKE3 of the 48 bytes before it. The check makes any altered
character an error instead of a silent request for the wrong file.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from fstore import _native
from fstore.errors import InvalidCapabilityError

PREFIX = "fs1:"
_ADDRESS_LEN = 32
_KEY_LEN = 16
_CHECK_LEN = 4
_RAW_LEN = _ADDRESS_LEN + _KEY_LEN + _CHECK_LEN


@dataclass(frozen=True)
class Capability:
    """A manifest address and the key that opens the manifest."""

    manifest_address: bytes
    file_key: bytes

    def __post_init__(self) -> None:
        if len(self.manifest_address) != _ADDRESS_LEN or len(self.file_key) != _KEY_LEN:
            raise InvalidCapabilityError("a capability holds a 32-byte address and a 16-byte key")

    def __str__(self) -> str:
        body = self.manifest_address + self.file_key
        raw = body + _native.hash(body)[:_CHECK_LEN]
        return PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=").lower()

    @classmethod
    def parse(cls, text: str) -> Capability:
        """Parse the text form; any altered, missing or extra character raises."""
        if not text.startswith(PREFIX):
            raise InvalidCapabilityError(f"a capability starts with {PREFIX!r}")
        encoded = text[len(PREFIX) :].upper()
        try:
            raw = base64.b32decode(encoded + "=" * (-len(encoded) % 8))
        except (binascii.Error, ValueError) as e:
            raise InvalidCapabilityError("a capability's body is base32") from e
        if len(raw) != _RAW_LEN:
            raise InvalidCapabilityError("a capability has the wrong length")
        body, check = raw[:-_CHECK_LEN], raw[-_CHECK_LEN:]
        if _native.hash(body)[:_CHECK_LEN] != check:
            raise InvalidCapabilityError("the capability's check digits do not match")
        # Re-encoding must give the same text, so two spellings never mean one file.
        cap = cls(body[:_ADDRESS_LEN], body[_ADDRESS_LEN:])
        if str(cap) != text:
            raise InvalidCapabilityError("the capability is not in canonical form")
        return cap

    @staticmethod
    def looks_like(text: str) -> bool:
        return text.startswith(PREFIX)
