"""The rules for file names (docs/FORMAT.md section 8), in one place.

A name is 1 to 4096 bytes of UTF-8 with no control character (C0, DEL or C1),
so printing one never drives a terminal, and does not start like a capability
or another secret's text form (``fs`` + letters + digits + ``:``, e.g.
``fs1:``), so a name and a capability are never confused wherever either is
accepted. ``/`` is allowed: it will address files inside a stored directory.
"""

from __future__ import annotations

import re

from fstore.errors import InvalidNameError

MAX_NAME_BYTES = 4096
# fs1: (capabilities), fsn1: (join tokens), and fs<letters><digits>: kept for future kinds.
_RESERVED_PREFIX = re.compile(r"fs[a-z]*[0-9]+:", re.ASCII | re.IGNORECASE)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# A lone surrogate is no character: it cannot be UTF-8 (surrogateescape makes them).
_NOT_ALLOWED = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def is_control(char: str) -> bool:
    """Whether ``char`` is a C0 control (U+0000 to U+001F), DEL (U+007F) or a C1 control."""
    return _CONTROL.fullmatch(char) is not None


def check_name(name: str) -> str:
    """``name`` itself if it follows the name rules; else :class:`InvalidNameError` saying why."""
    if not name:
        raise InvalidNameError("a name cannot be empty")
    bad = _NOT_ALLOWED.search(name)
    if bad is not None:
        char, position = bad.group(), bad.start() + 1
        if is_control(char):
            raise InvalidNameError(
                f"a name cannot contain control characters: U+{ord(char):04X} "
                f"at character {position}"
            )
        code = ord(char)
        # Python spells an undecodable byte B of a file name or argument as U+DC00 + B.
        what = f"the byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
        raise InvalidNameError(
            f"a name must be valid UTF-8, but character {position} is {what} (a lone surrogate)"
        )
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise InvalidNameError(f"a name is at most {MAX_NAME_BYTES} bytes of UTF-8, not {size}")
    reserved = _RESERVED_PREFIX.match(name)
    if reserved is not None:
        raise InvalidNameError(
            f"a name cannot start with {reserved.group()!r}: fs, letters, digits and a colon "
            "begin a capability (fs1:…) or another secret's text form"
        )
    return name


def decode_name(raw: bytes) -> str:
    """The name whose UTF-8 bytes are ``raw``: decoded strictly, then :func:`check_name`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidNameError(
            f"a name must be valid UTF-8: byte {e.start + 1} (0x{raw[e.start]:02x}): {e.reason}"
        ) from None
    return check_name(text)


def printable(text: str) -> str:
    """``text`` with every control character written as ``\\xNN``: safe to print on a terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
