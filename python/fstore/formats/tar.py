"""Tar as fstore writes and reads trees: POSIX ustar headers, pax records where needed.

Written (:func:`header`): one member per directory, file or symbolic link,
paths relative to the tree (``a/b/c``, a directory's with a trailing ``/``),
the mode, and the mtime, whole seconds in the ustar header and, when it is not
whole seconds, exactly as a pax ``mtime`` record with nine decimals (so a tree
comes back with the mtimes it went in with); a pax ``path``/``linkpath`` for
names that do not fit ustar or are not ASCII; no owner. GNU tar, bsdtar and
Python's ``tarfile`` read it.

Read (:class:`TarReader`): the members of a ustar, GNU or pax tar stream, read
front to back as it arrives (never seeking): pax ``x`` records (``path``,
``linkpath``, ``size``, ``mtime``) and GNU long names (``L``, ``K``) apply to
the next member; ``g`` (global) records and volume labels are read and
ignored; GNU sparse members are refused. :func:`classify` turns a member into
what a tree holds: an absolute name or a ``..`` raises
:class:`UnsafePathError`; a special file, or a name that breaks the name
rules, is a :class:`Skipped`.

Both are written here rather than with ``tarfile`` for speed: ``tarfile``
takes about 100 µs of Python per member to parse a header and about as long to
write one, which bounds a tree of small files at a few thousand files a second
on one core and holds the GIL against the node's event loop meanwhile.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from fstore.errors import InvalidArgumentError, InvalidNameError
from fstore.formats.directory import Skipped, display, member_path

BLOCK = 512
END = b"\0" * (2 * BLOCK)
"""The end of an archive: two zero blocks."""

MAX_EXTENDED = 1 << 20
"""The largest pax header or GNU long name read (more is a malformed tar)."""

_NS = 10**9
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_PAX_SECONDS = re.compile(rb"(-?)([0-9]{1,19})(?:\.([0-9]{1,64}))?", re.ASCII)
_PAX_NAME = b"././@PaxHeader"
_USTAR_NAME = 100
_USTAR_PREFIX = 155
_OCTAL_SIZE_MAX = 8**11 - 1
_ZERO_BLOCK = bytes(BLOCK)

MemberKind = Literal["file", "dir", "symlink", "hardlink", "special"]
_KINDS: dict[bytes, MemberKind] = {
    b"0": "file",
    b"\0": "file",
    b"7": "file",  # contiguous file
    b"1": "hardlink",
    b"2": "symlink",
    b"5": "dir",
}
_SPECIAL = {b"3": "a character device", b"4": "a block device", b"6": "a FIFO"}
_TYPE_FLAGS = {"file": b"0", "dir": b"5", "symlink": b"2"}


class MalformedTarError(InvalidArgumentError):
    """A tar stream that cannot be read: a bad checksum, a number that is no number, a cut."""


# --- writing -------------------------------------------------------------------------------


def header(
    path: tuple[str, ...],
    kind: Literal["file", "dir", "symlink"],
    mode: int,
    mtime_ns: int,
    size: int = 0,
    target: str = "",
) -> bytes:
    """The header blocks of one member (a pax header first when needed)."""
    name = display(path) + ("/" if kind == "dir" else "")
    size = size if kind == "file" else 0
    pax: dict[str, str] = {}
    name_field, prefix_field = _ustar_name(name)
    if name_field is None:
        pax["path"] = name
        name_field, prefix_field = _ascii_stub(name, _USTAR_NAME), b""
    link_field = target.encode("utf-8")
    if len(link_field) > _USTAR_NAME or not target.isascii():
        pax["linkpath"] = target
        link_field = _ascii_stub(target, _USTAR_NAME)
    seconds, fraction = divmod(mtime_ns, _NS)
    if fraction or mtime_ns < 0 or seconds > _OCTAL_SIZE_MAX:
        pax["mtime"] = _decimal_seconds(mtime_ns)
    if size > _OCTAL_SIZE_MAX:
        pax["size"] = str(size)
    blocks = b""
    if pax:
        records = _pax_records(pax)
        blocks = _ustar(_PAX_NAME, b"", b"x", 0o644, 0, len(records), b"")
        blocks += records + padding(len(records))
    mtime_field = min(max(seconds, 0), _OCTAL_SIZE_MAX)
    size_field = size if size <= _OCTAL_SIZE_MAX else 0
    flag = _TYPE_FLAGS[kind]
    return blocks + _ustar(
        name_field, prefix_field, flag, mode, mtime_field, size_field, link_field
    )


def padding(size: int) -> bytes:
    """The zero bytes that end a member's data of ``size`` bytes on a block boundary."""
    return bytes(-size % BLOCK)


def _ustar_name(name: str) -> tuple[bytes | None, bytes]:
    """(name, prefix) fields for an ASCII name that fits ustar; (None, b"") otherwise."""
    if not name.isascii():
        return None, b""
    raw = name.encode("ascii")
    if len(raw) <= _USTAR_NAME:
        return raw, b""
    cut = raw.rfind(b"/", 0, _USTAR_PREFIX + 1)
    while cut > 0:
        if len(raw) - cut - 1 <= _USTAR_NAME:
            return raw[cut + 1 :], raw[:cut]
        cut = raw.rfind(b"/", 0, cut)
    return None, b""


def _ascii_stub(text: str, limit: int) -> bytes:
    """An ASCII stand-in for a name a pax record carries, for readers without pax."""
    return text.encode("ascii", "replace")[:limit]


def _decimal_seconds(ns: int) -> str:
    sign = "-" if ns < 0 else ""
    seconds, fraction = divmod(abs(ns), _NS)
    return f"{sign}{seconds}.{fraction:09d}"


def _pax_records(fields: dict[str, str]) -> bytes:
    out = b""
    for key, value in fields.items():
        body = f" {key}={value}\n".encode("utf-8", "surrogateescape")
        length = len(body) + 1
        while len(str(length)) + len(body) != length:
            length = len(str(length)) + len(body)
        out += str(length).encode("ascii") + body
    return out


def _ustar(
    name: bytes, prefix: bytes, flag: bytes, mode: int, mtime: int, size: int, link: bytes
) -> bytes:
    block = bytearray(BLOCK)
    block[0 : len(name)] = name
    block[100:108] = b"%07o\0" % (mode & 0o7777)
    block[108:116] = b"0000000\0"
    block[116:124] = b"0000000\0"
    block[124:136] = b"%011o\0" % size
    block[136:148] = b"%011o\0" % mtime
    block[148:156] = b"        "
    block[156:157] = flag
    block[157 : 157 + len(link)] = link
    block[257:265] = b"ustar\x0000"
    block[345 : 345 + len(prefix)] = prefix
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


# --- reading -------------------------------------------------------------------------------


@dataclass(slots=True)
class TarHeader:
    """One member of a tar stream as its headers describe it."""

    name: str
    kind: MemberKind
    mode: int
    mtime_ns: int
    size: int  # bytes of data that follow (a file's)
    linkname: str
    special: str = ""  # what a special member is ("a FIFO"), for a message


@dataclass
class _Pending:
    """Extended attributes for the next member (pax ``x``, GNU ``L``/``K``)."""

    fields: dict[bytes, bytes] = field(default_factory=dict)


Read = Callable[[int], bytes]


class TarReader:
    """The members of a tar stream, read front to back through ``read(n)``.

    Iterate for the headers; between two steps, :meth:`read` gives the current
    member's data (what is not read is skipped). Raises
    :class:`MalformedTarError` for a stream that is not a tar or is cut short.
    """

    def __init__(self, read: Read) -> None:
        self._read = read
        self._buffer = b""
        self._position = 0  # where the unread part of _buffer starts
        self._eof = False
        self._left = 0  # data bytes of the current member not yet read
        self._pad = 0  # padding after them

    def __iter__(self) -> TarReader:
        return self

    def __next__(self) -> TarHeader:
        self._skip(self._left + self._pad)
        self._left = self._pad = 0
        pending = _Pending()
        while True:
            block = self._take(BLOCK, allow_end=True)
            if block is None or block == _ZERO_BLOCK:
                self._drain()
                raise StopIteration
            found = self._parse(block, pending)
            if found is not None:
                self._left, self._pad = found.size, -found.size % BLOCK
                return found

    def read(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of the current member's data; b"" at its end."""
        count = min(limit, self._left)
        if count <= 0:
            return b""
        data = self._take(count)
        assert data is not None
        self._left -= count
        return data

    # --- blocks ---

    def _fill(self, count: int) -> bool:
        """Whether ``count`` unread bytes are buffered, reading more if need be."""
        if len(self._buffer) - self._position >= count:
            return True
        parts = [self._buffer[self._position :]]
        held = len(parts[0])
        while held < count and not self._eof:
            data = self._read(max(count - held, 1 << 16))
            if not data:
                self._eof = True
            parts.append(data)
            held += len(data)
        self._buffer, self._position = b"".join(parts), 0
        return held >= count

    def _take(self, count: int, *, allow_end: bool = False) -> bytes | None:
        if not self._fill(count):
            if allow_end and self._position == len(self._buffer):
                return None
            raise MalformedTarError("malformed tar: the stream ends inside a member")
        start = self._position
        self._position += count
        return self._buffer[start : self._position]

    def _skip(self, count: int) -> None:
        while count:
            step = min(count, 1 << 20)
            self._take(step)
            count -= step

    def _drain(self) -> None:
        """Read what follows the end marker (padding to a record, anything) and drop it."""
        self._buffer, self._position = b"", 0
        while not self._eof:
            if not self._read(1 << 16):
                self._eof = True

    # --- headers ---

    def _parse(self, block: bytes, pending: _Pending) -> TarHeader | None:
        """The member ``block`` starts, or None for an extended header (kept in ``pending``)."""
        _check_sum(block)
        flag = block[156:157]
        size = _number(block[124:136], "size")
        if flag in (b"x", b"g", b"L", b"K"):
            if size > MAX_EXTENDED:
                raise MalformedTarError(f"malformed tar: an extended header of {size} bytes")
            data = self._take(size)
            assert data is not None
            self._skip(-size % BLOCK)
            if flag == b"x":
                pending.fields.update(_pax_fields(data))
            elif flag == b"L":
                pending.fields[b"path"] = data.split(b"\0", 1)[0]
            elif flag == b"K":
                pending.fields[b"linkpath"] = data.split(b"\0", 1)[0]
            return None  # global records ("g") are read and ignored
        if flag == b"S" or (pending.fields and _sparse(pending.fields)):
            raise MalformedTarError("a sparse member: create the tar without --sparse")
        if flag == b"V":
            self._skip(size + -size % BLOCK)
            return None  # a volume label
        fields = pending.fields
        posix = block[257:263] == b"ustar\0"
        name = _text(block[0:100])
        if posix and block[345] != 0:
            name = _text(block[345:500]) + "/" + name
        if b"path" in fields:
            name = fields[b"path"].decode("utf-8", "surrogateescape")
        linkname = _text(block[157:257])
        if b"linkpath" in fields:
            linkname = fields[b"linkpath"].decode("utf-8", "surrogateescape")
        if b"size" in fields:
            size = _pax_number(fields[b"size"], "size")
        mtime_ns = _number(block[136:148], "mtime") * _NS
        if b"mtime" in fields:
            mtime_ns = _pax_mtime(fields[b"mtime"])
        mode = _number(block[100:108], "mode") & 0o7777
        kind: MemberKind = _KINDS.get(flag, "special")
        # As tarfile reads: data follows a file, or a member of a type it does not know.
        if kind != "file" and (kind != "special" or flag in _SPECIAL):
            size = 0
        special = _SPECIAL.get(flag, f"a member of type {flag!r}") if kind == "special" else ""
        return TarHeader(name, kind, mode, mtime_ns, size, linkname, special)


def _sparse(fields: dict[bytes, bytes]) -> bool:
    return any(key.startswith(b"GNU.sparse") for key in fields)


def _check_sum(block: bytes) -> None:
    expected = _number(block[148:156], "checksum")
    unsigned = sum(block[:148]) + sum(block[156:]) + 8 * 32
    if expected == unsigned:
        return
    signed = unsigned - 256 * sum(1 for b in block if b > 127)
    signed += 256 * sum(1 for b in block[148:156] if b > 127)
    if expected != signed:
        raise MalformedTarError("malformed tar: a header's checksum does not match")


def _number(raw: bytes, what: str) -> int:
    """An octal field (NUL or space padded), or GNU base-256 (high bit set)."""
    if raw and raw[0] & 0x80:
        value = int.from_bytes(raw[1:], "big")
        if raw[0] == 0xFF:
            value -= 1 << (8 * (len(raw) - 1))
        elif raw[0] != 0x80:
            raise MalformedTarError(f"malformed tar: a base-256 {what} field")
        return value
    text = raw.replace(b"\0", b" ").strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise MalformedTarError(f"malformed tar: a {what} field that is not a number") from None


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax_fields(data: bytes) -> dict[bytes, bytes]:
    """``length key=value\\n`` records."""
    fields: dict[bytes, bytes] = {}
    position = 0
    while position < len(data) and data[position] != 0:
        space = data.find(b" ", position)
        if space < 0:
            raise MalformedTarError("malformed tar: a pax record without a length")
        try:
            length = int(data[position:space])
        except ValueError:
            raise MalformedTarError("malformed tar: a pax record's length") from None
        record = data[space + 1 : position + length]
        too_short = length <= space - position or position + length > len(data)
        if too_short or not record.endswith(b"\n") or b"=" not in record:
            raise MalformedTarError("malformed tar: a pax record")
        key, _, value = record[:-1].partition(b"=")
        fields[key] = value
        position += length
    return fields


def _pax_number(raw: bytes, what: str) -> int:
    if not raw.isdigit() or len(raw) > 19:
        raise MalformedTarError(f"malformed tar: a pax {what} that is not a number")
    return int(raw)


def _pax_mtime(raw: bytes) -> int:
    """A pax ``mtime`` in nanoseconds, exactly (decimals beyond nine are cut)."""
    match = _PAX_SECONDS.fullmatch(raw)
    if match is None:
        raise MalformedTarError("malformed tar: a pax mtime that is not a number")
    sign, seconds, fraction = match.groups()
    value = int(seconds) * _NS + int((fraction or b"").ljust(9, b"0")[:9])
    value = -value if sign else value
    return min(max(value, _INT64_MIN), _INT64_MAX)


# --- members as tree entries -----------------------------------------------------------------


@dataclass(slots=True)
class Member:
    """A tar member as a tree entry: a file, directory, symbolic or hard link."""

    path: tuple[str, ...]
    kind: Literal["file", "dir", "symlink", "hardlink"]
    mode: int
    mtime_ns: int
    size: int  # a file's
    target: str  # a symbolic link's target
    linked: tuple[str, ...]  # a hard link's: the earlier member it names


def classify(info: TarHeader) -> Member | Skipped:
    """What a member is; :class:`UnsafePathError` if its name (or a hard link's) escapes."""
    try:
        path = member_path(info.name)
    except InvalidNameError as e:
        return Skipped(info.name, f"invalid name: {e}")
    if info.kind == "special":
        return Skipped(display(path), f"{info.special}, not stored")
    if info.kind == "symlink" and (not info.linkname or "\0" in info.linkname):
        return Skipped(display(path), "a link without a target")
    linked: tuple[str, ...] = ()
    if info.kind == "hardlink":
        try:
            linked = member_path(info.linkname)
        except InvalidNameError as e:
            return Skipped(display(path), f"a hard link to an invalid name: {e}")
    target = info.linkname if info.kind == "symlink" else ""
    size = info.size if info.kind == "file" else 0
    return Member(path, info.kind, info.mode, info.mtime_ns, size, target, linked)
