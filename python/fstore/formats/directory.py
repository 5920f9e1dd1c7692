"""Directories: a tree of sealed nodes listing one directory's entries (docs/FORMAT.md section 11).

A directory is one or more **nodes**, each a msgpack map sealed with
Cobblestone-128 under its own 16-byte key and the context ``fstore/dir/v1``,
stored as a blob. A **leaf** lists entries, sorted by name::

    {"v": 1, "entries": [entry, ...]}

and a large directory's leaves sit under **index** nodes, B-tree style::

    {"v": 1, "height": h, "children": [[first name, address, key, entries, files, size], ...]}

An entry is a file (its bytes inline when small, else its manifest), a
subdirectory (the address and key of its top node) or a symbolic link.
Whoever holds a node's address and key can read that node and everything
below it, never anything above: a subdirectory's capability is exactly that.

Everything read is validated: a malformed node is an :class:`IntegrityError`.
This module is pure (no I/O); building, storing and walking trees is
``fstore.node.trees``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack
from typing_extensions import Buffer

from fstore import _native
from fstore.errors import FileMismatchError, IntegrityError, InvalidNameError, UnsafePathError
from fstore.formats.names import check_name
from fstore.formats.packing import pack

VERSION = 1
CONTEXT = b"fstore/dir/v1"

INLINE_MAX = 64 * 1024
"""Files of at most this many bytes are sealed into their directory's node, not stored apart."""
NODE_MIN = 32 * 1024
NODE_AVG = 128 * 1024
NODE_MAX = 1024 * 1024
"""A node's packed plaintext is at most this long (one entry is at most about 73 KiB)."""
MAX_HEIGHT = 8
MAX_TARGET_BYTES = 4096
SPLIT_CONTEXT = b"fstore/dir/split/v1"

NODE_ID_KEY_CONTEXT = "fstore 2026-11-24 directory node id key v1"
NODE_KEY_CONTEXT = "fstore 2026-11-24 directory node key v1"
MANIFEST_ID_KEY_CONTEXT = "fstore 2026-11-24 tree manifest id key v1"
MANIFEST_KEY_CONTEXT = "fstore 2026-11-24 tree manifest key v1"

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_SIZE_MAX = (1 << 63) - 1

T = TypeVar("T")


@dataclass(frozen=True)
class Ref:
    """A sealed blob's address and the key that opens it."""

    address: bytes
    key: bytes


@dataclass(frozen=True)
class Inline:
    """A small file's bytes, sealed exactly as its one chunk would be (``CHUNK_CONTEXT``)."""

    key: bytes
    sealed: bytes


@dataclass(frozen=True)
class TreeFile:
    name: str
    mode: int
    mtime_ns: int
    size: int
    blake3: bytes
    content: Inline | Ref  # Ref: the file's manifest, so (address, key) is its capability


@dataclass(frozen=True)
class TreeDir:
    name: str
    mode: int
    mtime_ns: int
    files: int  # regular files anywhere below
    size: int  # their bytes
    ref: Ref  # the subdirectory's top node


@dataclass(frozen=True)
class TreeLink:
    name: str
    mode: int
    mtime_ns: int
    target: str


TreeEntry = TreeFile | TreeDir | TreeLink


@dataclass(frozen=True)
class Child:
    """An index node's reference to the node below it and what that subtree holds."""

    first: str  # the first entry name under it
    ref: Ref
    entries: int  # directory entries under it
    files: int  # regular files under it, subdirectories included
    size: int  # their bytes


@dataclass(frozen=True)
class Leaf:
    entries: tuple[TreeEntry, ...]


@dataclass(frozen=True)
class Index:
    height: int
    children: tuple[Child, ...]


DirNode = Leaf | Index


@dataclass(frozen=True)
class Totals:
    entries: int
    files: int
    size: int


@dataclass(frozen=True)
class Skipped:
    """An entry of a tree being stored that is not stored (a FIFO, a bad name), and why."""

    path: str
    reason: str


def kind_of(entry: TreeEntry) -> str:
    if isinstance(entry, TreeFile):
        return "file"
    return "dir" if isinstance(entry, TreeDir) else "symlink"


# --- names and paths ------------------------------------------------------------------


def display(path: Sequence[str]) -> str:
    """A path of segments as text, ``a/b/c`` (``.`` for the top)."""
    return "/".join(path) or "."


def check_segment(name: str) -> str:
    """``name`` if it can name an entry: a name (``check_name``) without ``/``, not ``.``/``..``."""
    if "/" in name:
        raise InvalidNameError(f"an entry's name cannot contain '/': {name!r}")
    if name in (".", ".."):
        raise InvalidNameError(f"an entry cannot be named {name!r}")
    return check_name(name)


def split_path(text: str) -> tuple[str, ...]:
    """The segments of a path inside a tree, ``a/b/c``; a leading or trailing ``/`` is ignored."""
    inner = text.strip("/")
    if not inner:
        return ()
    segments = tuple(inner.split("/"))
    for segment in segments:
        if segment == "..":
            raise UnsafePathError(f"a path inside a tree cannot go up ('..'): {text!r}")
        if not segment:
            raise InvalidNameError(f"an empty segment in the path {text!r}")
        check_segment(segment)
    return segments


def member_path(name: str) -> tuple[str, ...]:
    """The segments of a tar member's name, ``./`` and empty segments dropped.

    An absolute name or one with ``..`` raises :class:`UnsafePathError`; a segment
    that breaks the name rules, :class:`InvalidNameError`.
    """
    if name.startswith("/"):
        raise UnsafePathError(f"an absolute path in the tree: {name!r}")
    segments = tuple(s for s in name.split("/") if s not in ("", "."))
    if ".." in segments:
        raise UnsafePathError(f"a path that goes up ('..') in the tree: {name!r}")
    for segment in segments:
        check_segment(segment)
    return segments


def link_escapes(location: Sequence[str], target: str) -> bool:
    """Whether a link at ``location`` (its path's segments) to ``target`` may leave the tree.

    Conservative: an absolute target, more leading ``..`` than the link is deep,
    or a ``..`` after a name (that name may itself be a link) all count as leaving.
    """
    if target.startswith("/"):
        return True
    parts = [p for p in target.split("/") if p not in ("", ".")]
    ups = 0
    for position, part in enumerate(parts):
        if part == "..":
            if position != ups:
                return True
            ups += 1
    return ups > len(location) - 1


# --- keys -----------------------------------------------------------------------------


class TreeKeys:
    """The namespace's keys for the blobs of trees: content-derived, so unchanged parts recur.

    A node's id is keyed BLAKE3 of its identity (:func:`identity`), its sealing
    key derived from the namespace secret and that id; a file manifest's the same
    with the manifest's packed plaintext. Equal content in one namespace so gets
    the same id and key, and the node's catalog maps the id to the blob already
    stored, as it does for chunks.
    """

    def __init__(self, namespace_secret: bytes) -> None:
        self._secret = namespace_secret
        self._node_id_key = _native.derive_key(NODE_ID_KEY_CONTEXT, namespace_secret)
        self._manifest_id_key = _native.derive_key(MANIFEST_ID_KEY_CONTEXT, namespace_secret)

    def node_id(self, node_identity: bytes) -> bytes:
        return _native.keyed_hash(self._node_id_key, node_identity)

    def node_key(self, node_id: bytes) -> bytes:
        return _native.derive_key(NODE_KEY_CONTEXT, self._secret + node_id, 16)

    def manifest_id(self, packed_manifest: bytes) -> bytes:
        return _native.keyed_hash(self._manifest_id_key, packed_manifest)

    def manifest_key(self, manifest_id: bytes) -> bytes:
        return _native.derive_key(MANIFEST_KEY_CONTEXT, self._secret + manifest_id, 16)


def seal_inline(namespace_secret: bytes, data: Buffer) -> tuple[bytes, Inline]:
    """(BLAKE3, sealed bytes) of a small file: sealed as its one chunk would be."""
    chunk_id = _native.chunk_id(namespace_secret, data)
    key = _native.chunk_key(namespace_secret, chunk_id)
    return _native.hash(data), Inline(key, _native.seal(key, _native.CHUNK_CONTEXT, data))


def open_inline(entry: TreeFile) -> bytes:
    """The plaintext of an inline file, checked against its size and BLAKE3."""
    if not isinstance(entry.content, Inline):
        raise IntegrityError(f"{entry.name!r} is not inline")
    plain = _native.open(entry.content.key, _native.CHUNK_CONTEXT, entry.content.sealed)
    if len(plain) != entry.size or _native.hash(plain) != entry.blake3:
        raise FileMismatchError(f"{entry.name!r} does not match its size and BLAKE3")
    return plain


# --- packing ----------------------------------------------------------------------------


def _entry_map(entry: TreeEntry, identity: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": entry.name,
        "kind": kind_of(entry),
        "mode": entry.mode,
        "mtime": entry.mtime_ns,
    }
    if isinstance(entry, TreeFile):
        fields["size"] = entry.size
        fields["blake3"] = entry.blake3
        if isinstance(entry.content, Inline):
            data = [entry.content.key] if identity else [entry.content.key, entry.content.sealed]
            fields["data"] = data
        else:
            fields["manifest"] = [entry.content.address, entry.content.key]
    elif isinstance(entry, TreeDir):
        fields["files"] = entry.files
        fields["size"] = entry.size
        fields["ref"] = [entry.ref.address, entry.ref.key]
    else:
        fields["target"] = entry.target
    return fields


def pack_entry(entry: TreeEntry) -> bytes:
    return pack(_entry_map(entry, identity=False))


def pack_entry_identity(entry: TreeEntry) -> bytes:
    """The entry as :func:`identity` counts it: an inline file's sealed bytes left out.

    They are the only part that differs between two sealings of the same bytes
    (a fresh salt); the key beside them is derived from the content.
    """
    return pack(_entry_map(entry, identity=True))


def pack_child(child: Child) -> bytes:
    return pack(
        [child.first, child.ref.address, child.ref.key, child.entries, child.files, child.size]
    )


def pack_leaf(packed_entries: Sequence[bytes]) -> bytes:
    """A leaf's plaintext from its entries, each packed by :func:`pack_entry` (or the identity)."""
    head = pack({"v": VERSION, "entries": []})[:-1]  # drop the empty array: its header follows
    return head + _array_header(len(packed_entries)) + b"".join(packed_entries)


def pack_index(height: int, packed_children: Sequence[bytes]) -> bytes:
    head = pack({"v": VERSION, "height": height, "children": []})[:-1]
    return head + _array_header(len(packed_children)) + b"".join(packed_children)


def _array_header(count: int) -> bytes:
    header: bytes = msgpack.Packer().pack_array_header(count)
    return header


def seal_node(key: bytes, plain: bytes) -> bytes:
    return _native.seal(key, CONTEXT, plain)


# --- splitting --------------------------------------------------------------------------


def _boundary(name: str, size: int, level: int) -> bool:
    """Whether a node may end after an item: with probability ``size / NODE_AVG``, by its name."""
    digest = _native.hash(SPLIT_CONTEXT + bytes([level]) + name.encode("utf-8"), 4)
    return int.from_bytes(digest, "big") < min(1 << 32, (size << 32) // NODE_AVG)


class Splitter:
    """Where nodes end, item by item, for items in name order (see :func:`split`)."""

    def __init__(self, level: int) -> None:
        self._level = level
        self._size = 0
        self._count = 0

    def place(self, name: str, size: int) -> tuple[bool, bool]:
        """Take the next item: (a node ends before it, a node ends after it)."""
        before = self._count > 0 and self._size + size > NODE_MAX
        if before:
            self._size = self._count = 0
        self._size += size
        self._count += 1
        after = self._size >= NODE_MIN and _boundary(name, size, self._level)
        if after:
            self._size = self._count = 0
        return before, after


def split(
    items: Sequence[T], name_of: Callable[[T], str], size_of: Callable[[T], int], level: int
) -> list[list[T]]:
    """Sorted items cut into nodes at content-defined boundaries.

    A node ends after an item once it holds ``NODE_MIN`` bytes and the item's
    name hashes below a threshold proportional to its size (about ``NODE_AVG``
    more bytes on average), or before an item that would take it past
    ``NODE_MAX``. Boundaries depend on the names and sizes near them only, so a
    change in a large directory changes the nodes around it, not all of them.
    There is always at least one group (an empty directory is one empty leaf).
    """
    splitter = Splitter(level)
    groups: list[list[T]] = []
    group: list[T] = []
    for item in items:
        before, after = splitter.place(name_of(item), size_of(item))
        if before:
            groups.append(group)
            group = []
        group.append(item)
        if after:
            groups.append(group)
            group = []
    if group or not groups:
        groups.append(group)
    return groups


# --- reading ----------------------------------------------------------------------------


def open_node(key: bytes, sealed: Buffer) -> DirNode:
    """Open and validate a sealed node; anything malformed is an :class:`IntegrityError`."""
    plain = _native.open(key, CONTEXT, sealed)
    if len(plain) > NODE_MAX:
        raise IntegrityError(f"malformed directory node: {len(plain)} bytes, over {NODE_MAX}")
    try:
        raw = msgpack.unpackb(plain, raw=False, strict_map_key=True)
        return _node(raw)
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as e:
        raise IntegrityError(f"malformed directory node: {e}") from e


def _node(raw: object) -> DirNode:
    if not isinstance(raw, dict) or raw.get("v") != VERSION:
        raise ValueError("not a version-1 directory node")
    if set(raw) == {"v", "entries"}:
        entries = tuple(_entry(e) for e in _list(raw["entries"]))
        _check_ascending([e.name for e in entries])
        return Leaf(entries)
    if set(raw) == {"v", "height", "children"}:
        height = _int(raw["height"], 1, MAX_HEIGHT, "height")
        children = tuple(_child(c) for c in _list(raw["children"]))
        if not children:
            raise ValueError("an index node without children")
        _check_ascending([c.first for c in children])
        return Index(height, children)
    raise ValueError(f"unexpected fields {sorted(raw)}")


_COMMON = {"name", "kind", "mode", "mtime"}
_FIELDS = {
    ("file", "data"): _COMMON | {"size", "blake3", "data"},
    ("file", "manifest"): _COMMON | {"size", "blake3", "manifest"},
    ("dir", ""): _COMMON | {"files", "size", "ref"},
    ("symlink", ""): _COMMON | {"target"},
}


def _entry(raw: object) -> TreeEntry:
    if not isinstance(raw, dict):
        raise ValueError("an entry is not a map")
    kind = raw.get("kind")
    variant = "data" if "data" in raw else "manifest" if kind == "file" else ""
    expected = _FIELDS.get((str(kind), variant))
    if expected is None or set(raw) != expected:
        raise ValueError(f"an entry of kind {kind!r} with fields {sorted(raw)}")
    name = _str(raw["name"], "name")
    try:
        check_segment(name)
    except InvalidNameError as e:
        raise ValueError(f"bad entry name: {e}") from None
    mode = _int(raw["mode"], 0, 0o7777, "mode")
    mtime = _int(raw["mtime"], _INT64_MIN, _INT64_MAX, "mtime")
    if kind == "file":
        size = _int(raw["size"], 0, _SIZE_MAX, "size")
        blake3 = _bin(raw["blake3"], 32, "blake3")
        content: Inline | Ref
        if variant == "data":
            key, sealed = _pair(raw["data"], "data")
            content = Inline(_bin(key, 16, "key"), _bytes(sealed, "sealed"))
            if size > INLINE_MAX or len(content.sealed) != _native.sealed_length(size):
                raise ValueError(f"inline data of {name!r} does not fit its size {size}")
        else:
            content = _ref(raw["manifest"])
        return TreeFile(name, mode, mtime, size, blake3, content)
    if kind == "dir":
        files = _int(raw["files"], 0, _SIZE_MAX, "files")
        size = _int(raw["size"], 0, _SIZE_MAX, "size")
        return TreeDir(name, mode, mtime, files, size, _ref(raw["ref"]))
    target = _str(raw["target"], "target")
    if not target or "\0" in target or len(target.encode("utf-8")) > MAX_TARGET_BYTES:
        raise ValueError(f"a bad link target for {name!r}")
    return TreeLink(name, mode, mtime, target)


def _child(raw: object) -> Child:
    items = _list(raw)
    if len(items) != 6:
        raise ValueError("a child reference is not 6 fields")
    first, address, key, entries, files, size = items
    name = _str(first, "first name")
    try:
        check_segment(name)
    except InvalidNameError as e:
        raise ValueError(f"bad first name: {e}") from None
    return Child(
        name,
        Ref(_bin(address, 32, "address"), _bin(key, 16, "key")),
        _int(entries, 1, _SIZE_MAX, "entries"),
        _int(files, 0, _SIZE_MAX, "files"),
        _int(size, 0, _SIZE_MAX, "size"),
    )


def _ref(raw: object) -> Ref:
    address, key = _pair(raw, "reference")
    return Ref(_bin(address, 32, "address"), _bin(key, 16, "key"))


def _list(raw: object) -> list[Any]:
    if not isinstance(raw, list):
        raise ValueError("expected an array")
    return raw


def _pair(raw: object, what: str) -> tuple[Any, Any]:
    items = _list(raw)
    if len(items) != 2:
        raise ValueError(f"{what} is not two fields")
    return items[0], items[1]


def _int(raw: object, low: int, high: int, what: str) -> int:
    if type(raw) is not int or not low <= raw <= high:  # not bool, an int subclass
        raise ValueError(f"{what} is not an integer from {low} to {high}")
    return raw


def _str(raw: object, what: str) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"{what} is not a string")
    return raw


def _bytes(raw: object, what: str) -> bytes:
    if not isinstance(raw, bytes):
        raise ValueError(f"{what} is not binary")
    return raw


def _bin(raw: object, length: int, what: str) -> bytes:
    value = _bytes(raw, what)
    if len(value) != length:
        raise ValueError(f"{what} is not {length} bytes")
    return value


def _check_ascending(names: Sequence[str]) -> None:
    # Code point order is UTF-8 byte order.
    for before, after in itertools.pairwise(names):
        if not before < after:
            raise ValueError(f"names not sorted and unique: {before!r} then {after!r}")


# --- what a tree holds ------------------------------------------------------------------------


def totals(node: DirNode) -> Totals:
    """The entries, files and bytes a node and everything below it hold."""
    if isinstance(node, Index):
        return Totals(
            sum(c.entries for c in node.children),
            sum(c.files for c in node.children),
            sum(c.size for c in node.children),
        )
    files = size = 0
    for entry in node.entries:
        if isinstance(entry, TreeFile):
            files, size = files + 1, size + entry.size
        elif isinstance(entry, TreeDir):
            files, size = files + entry.files, size + entry.size
    return Totals(len(node.entries), files, size)


def height_of(node: DirNode) -> int:
    return node.height if isinstance(node, Index) else 0


def first_name(node: DirNode) -> str | None:
    if isinstance(node, Index):
        return node.children[0].first
    return node.entries[0].name if node.entries else None


def child_bound(parent: Index, position: int, bound: str | None) -> str | None:
    """The name every entry under ``parent``'s child at ``position`` must be below.

    The next child's first name, or for the last child the bound of ``parent`` itself.
    """
    if position + 1 < len(parent.children):
        return parent.children[position + 1].first
    return bound


def check_child(parent: Index, position: int, bound: str | None, node: DirNode) -> None:
    """Raise :class:`IntegrityError` unless ``node`` is what ``parent`` says its child is.

    One height lower, starting at the child's first name, every name below
    ``bound`` (from :func:`child_bound`), and holding the entries, files and
    bytes the parent counts.
    """
    child = parent.children[position]
    problem = ""
    if height_of(node) != parent.height - 1:
        problem = f"height {height_of(node)} under height {parent.height}"
    elif first_name(node) != child.first:
        problem = f"it starts at {first_name(node)!r}, not {child.first!r}"
    elif bound is not None and not _last_name(node) < bound:
        problem = f"it reaches past {bound!r}"
    elif totals(node) != Totals(child.entries, child.files, child.size):
        problem = "its counts differ from its parent's"
    if problem:
        raise IntegrityError(f"malformed directory: a node below {child.first!r}: {problem}")


def _last_name(node: DirNode) -> str:
    """The last name of the node itself (for an index, its last child's first name)."""
    if isinstance(node, Index):
        return node.children[-1].first
    return node.entries[-1].name if node.entries else ""
