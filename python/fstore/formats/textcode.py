"""Secrets as text a person can copy: a prefix, then lowercase base32 with check digits.

Used by capabilities (``fs1:``) and join tokens (``fsn1:``). The last 4 bytes
before encoding are the first 4 bytes of BLAKE3 of the rest, so any altered
character is an error instead of a silent request for something else; only the
canonical spelling is accepted, so two texts never mean one thing.
"""

from __future__ import annotations

import base64
import binascii

from fstore import _native

CHECK_LEN = 4


def encode(prefix: str, body: bytes) -> str:
    raw = body + _native.hash(body)[:CHECK_LEN]
    return prefix + base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def decode(prefix: str, text: str, body_len: int, what: str) -> bytes:
    """The body of ``text``; ValueError naming ``what`` if anything about it is wrong."""
    if not text.startswith(prefix):
        raise ValueError(f"{what} starts with {prefix!r}")
    encoded = text[len(prefix) :].upper()
    try:
        raw = base64.b32decode(encoded + "=" * (-len(encoded) % 8))
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not base32 after {prefix!r}") from None
    if len(raw) != body_len + CHECK_LEN:
        raise ValueError(f"{what} has the wrong length")
    body, check = raw[:-CHECK_LEN], raw[-CHECK_LEN:]
    if _native.hash(body)[:CHECK_LEN] != check:
        raise ValueError(f"{what}'s check digits do not match")
    if encode(prefix, body) != text:
        raise ValueError(f"{what} is not in canonical form")
    return body
