"""Capabilities: the text that lets its holder read exactly one file, or one directory tree.

``fs1:`` followed by lowercase base32 (no padding) of
``manifest address (32) || file key (16) || check (4)``, where ``check`` is the
first 4 bytes of BLAKE3 of the 48 bytes before it (``fstore.formats.textcode``). The
check makes any altered character an error instead of a silent request for
the wrong file.

A directory's capability is the same with the prefix ``fsd1:`` and the address
and key of the directory's top node (``fstore.formats.directory``). The two
prefixes never name each other's kind, and both start the way no name may
(``fstore.formats.names``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fstore.errors import InvalidCapabilityError
from fstore.formats import textcode

PREFIX = "fs1:"
DIR_PREFIX = "fsd1:"
_ADDRESS_LEN = 32
_KEY_LEN = 16


def _check_lengths(address: bytes, key: bytes) -> None:
    if len(address) != _ADDRESS_LEN or len(key) != _KEY_LEN:
        raise InvalidCapabilityError("a capability holds a 32-byte address and a 16-byte key")


def _parse(prefix: str, text: str, what: str) -> tuple[bytes, bytes]:
    try:
        body = textcode.decode(prefix, text, _ADDRESS_LEN + _KEY_LEN, what)
    except ValueError as e:
        raise InvalidCapabilityError(str(e)) from None
    return body[:_ADDRESS_LEN], body[_ADDRESS_LEN:]


@dataclass(frozen=True)
class Capability:
    """A manifest address and the key that opens the manifest."""

    manifest_address: bytes
    file_key: bytes

    def __post_init__(self) -> None:
        _check_lengths(self.manifest_address, self.file_key)

    def __str__(self) -> str:
        return textcode.encode(PREFIX, self.manifest_address + self.file_key)

    @classmethod
    def parse(cls, text: str) -> Capability:
        """Parse the text form; any altered, missing or extra character raises."""
        return cls(*_parse(PREFIX, text, "a capability"))

    @staticmethod
    def looks_like(text: str) -> bool:
        return text.startswith(PREFIX)


@dataclass(frozen=True)
class DirCapability:
    """The address of a directory's top node and the key that opens it."""

    address: bytes
    key: bytes

    def __post_init__(self) -> None:
        _check_lengths(self.address, self.key)

    def __str__(self) -> str:
        return textcode.encode(DIR_PREFIX, self.address + self.key)

    @classmethod
    def parse(cls, text: str) -> DirCapability:
        """Parse the text form; any altered, missing or extra character raises."""
        return cls(*_parse(DIR_PREFIX, text, "a directory capability"))

    @staticmethod
    def looks_like(text: str) -> bool:
        return text.startswith(DIR_PREFIX)


def looks_like_any(text: str) -> bool:
    """Whether ``text`` starts like a file or a directory capability."""
    return Capability.looks_like(text) or DirCapability.looks_like(text)
