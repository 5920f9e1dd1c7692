"""The directory format, ``fstore.formats.directory`` (docs/FORMAT.md section 11), on its own.

Capabilities, nodes sealed and opened, every malformed node refused, the
content-defined split (bounded, deterministic, local), a directory of a
million entries, and the path rules that keep a restore inside its target.
"""

from __future__ import annotations

import bisect
import os
import random
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fstore import _native
from fstore.errors import (
    FileMismatchError,
    IntegrityError,
    InvalidCapabilityError,
    InvalidNameError,
    UnsafePathError,
    WrongKeyError,
)
from fstore.formats import directory
from fstore.formats.capability import Capability, DirCapability, looks_like_any
from fstore.formats.directory import (
    Child,
    Index,
    Leaf,
    Ref,
    TreeDir,
    TreeEntry,
    TreeFile,
    TreeLink,
)

SECRET = bytes(range(32))


def ref(seed: int) -> Ref:
    return Ref(_native.hash(bytes([seed])), _native.hash(bytes([seed]), 16))


def small_file(name: str, data: bytes) -> TreeFile:
    digest, inline = directory.seal_inline(SECRET, data)
    return TreeFile(name, 0o644, 1_700_000_000_123_456_789, len(data), digest, inline)


def sample_entries() -> list[TreeEntry]:
    return [
        TreeFile("big.bin", 0o600, -5, 10**9, bytes(32), ref(1)),
        TreeDir("docs", 0o755, 0, 12, 34_567, ref(2)),
        small_file("empty", b""),
        TreeLink("link", 0o777, 7, "../docs/x"),
        small_file("note.txt", b"hello"),
        small_file("ünïcödé", os.urandom(directory.INLINE_MAX)),
    ]


def seal(node: dict[str, Any], key: bytes = bytes(16)) -> bytes:
    """A node built by hand, bypassing every check of the packing functions."""
    return directory.seal_node(key, msgpack.packb(node, use_bin_type=True))


def child(first: str, *, entries: int = 1, address: bytes = bytes(32)) -> list[Any]:
    """An index node's child reference, as its msgpack array."""
    return [first, address, bytes(16), entries, 0, 0]


def as_map(entry: TreeEntry) -> dict[str, Any]:
    unpacked: dict[str, Any] = msgpack.unpackb(directory.pack_entry(entry))
    return unpacked


# --- capabilities ---------------------------------------------------------------------------


def test_a_directory_capability_round_trips_and_is_not_a_file_capability() -> None:
    cap = DirCapability(bytes(range(32)), bytes(range(16)))
    text = str(cap)
    assert text.startswith("fsd1:") and len(text) == 5 + 84
    assert DirCapability.parse(text) == cap
    assert looks_like_any(text) and not Capability.looks_like(text)
    with pytest.raises(InvalidCapabilityError):
        Capability.parse(text)
    with pytest.raises(InvalidCapabilityError):
        DirCapability.parse(str(Capability(cap.address, cap.key)))
    altered = text[:-1] + ("a" if text[-1] != "a" else "b")
    with pytest.raises(InvalidCapabilityError):
        DirCapability.parse(altered)


def test_names_never_look_like_a_directory_capability() -> None:
    from fstore.formats.names import check_name

    with pytest.raises(InvalidNameError):
        check_name("fsd1:photos")


# --- nodes -------------------------------------------------------------------------------------


def test_a_leaf_round_trips() -> None:
    entries = sample_entries()
    key = _native.generate_key()
    plain = directory.pack_leaf([directory.pack_entry(e) for e in entries])
    assert directory.open_node(key, directory.seal_node(key, plain)) == Leaf(tuple(entries))
    assert msgpack.unpackb(plain)["v"] == 1


def test_an_index_round_trips() -> None:
    children = (Child("a", ref(1), 3, 2, 10), Child("m", ref(2), 1, 0, 0))
    key = _native.generate_key()
    plain = directory.pack_index(2, [directory.pack_child(c) for c in children])
    assert directory.open_node(key, directory.seal_node(key, plain)) == Index(2, children)


def test_an_empty_directory_is_one_empty_leaf() -> None:
    key = _native.generate_key()
    plain = directory.pack_leaf([])
    assert directory.open_node(key, directory.seal_node(key, plain)) == Leaf(())
    assert directory.split([], lambda x: x, len, 0) == [[]]


def test_a_node_opens_only_with_its_key() -> None:
    sealed = directory.seal_node(bytes(16), directory.pack_leaf([]))
    with pytest.raises(WrongKeyError):
        directory.open_node(bytes([1]) * 16, sealed)
    # Nor as a file's manifest or chunk: the context differs.
    with pytest.raises(WrongKeyError):
        _native.open(bytes(16), _native.CHUNK_CONTEXT, sealed)


def test_an_inline_file_opens_and_is_checked() -> None:
    entry = small_file("f", b"some bytes")
    assert directory.open_inline(entry) == b"some bytes"
    other_digest = TreeFile("f", 0o644, 0, entry.size, bytes(32), entry.content)
    with pytest.raises(FileMismatchError):
        directory.open_inline(other_digest)


def test_the_identity_leaves_out_only_the_sealed_bytes() -> None:
    """Two sealings of one file differ (a fresh salt) but have one identity."""
    first, second = small_file("f", b"same"), small_file("f", b"same")
    assert directory.pack_entry(first) != directory.pack_entry(second)
    assert directory.pack_entry_identity(first) == directory.pack_entry_identity(second)
    link = TreeLink("l", 0o777, 0, "t")
    assert directory.pack_entry_identity(link) == directory.pack_entry(link)
    keys = directory.TreeKeys(SECRET)
    node_id = keys.node_id(directory.pack_leaf([directory.pack_entry_identity(first)]))
    assert node_id == keys.node_id(directory.pack_leaf([directory.pack_entry_identity(second)]))
    assert keys.node_key(node_id) != directory.TreeKeys(bytes(32)).node_key(node_id)


BAD_ENTRIES: list[tuple[str, dict[str, Any]]] = [
    ("dot", {"name": "."}),
    ("dot-dot", {"name": ".."}),
    ("slash", {"name": "a/b"}),
    ("empty name", {"name": ""}),
    ("control character", {"name": "a\x1bb"}),
    ("capability-like", {"name": "fs1:x"}),
    ("name not a string", {"name": b"x"}),
    ("unknown kind", {"kind": "socket"}),
    ("mode too large", {"mode": 0o10000}),
    ("negative mode", {"mode": -1}),
    ("bool as an integer", {"mode": True}),
    ("mtime past 64 bits", {"mtime": 1 << 63}),
    ("negative size", {"size": -1}),
    ("short blake3", {"blake3": bytes(31)}),
    ("extra field", {"extra": 1}),
    ("short key", {"data": [bytes(15), b""]}),
    ("sealed bytes of another size", {"size": 6}),
    ("inline past the limit", {"size": directory.INLINE_MAX + 1}),
]


@pytest.mark.parametrize(("why", "change"), BAD_ENTRIES, ids=[b[0] for b in BAD_ENTRIES])
def test_a_malformed_entry_is_refused(why: str, change: dict[str, Any]) -> None:
    entry = {**as_map(small_file("note.txt", b"hello")), **change}
    with pytest.raises(IntegrityError, match="malformed directory node"):
        directory.open_node(bytes(16), seal({"v": 1, "entries": [entry]}))


@pytest.mark.parametrize(
    "target", ["", "a\0b", "x" * (directory.MAX_TARGET_BYTES + 1)], ids=["empty", "nul", "long"]
)
def test_a_malformed_link_is_refused(target: str) -> None:
    entry = {**as_map(TreeLink("l", 0o777, 0, "t")), "target": target}
    with pytest.raises(IntegrityError):
        directory.open_node(bytes(16), seal({"v": 1, "entries": [entry]}))


@pytest.mark.parametrize(
    "node",
    [
        {"v": 2, "entries": []},
        {"entries": []},
        {"v": 1},
        {"v": 1, "entries": [], "children": []},
        {"v": 1, "height": 0, "children": [child("a")]},
        {"v": 1, "height": directory.MAX_HEIGHT + 1, "children": [child("a")]},
        {"v": 1, "height": 1, "children": []},
        {"v": 1, "height": 1, "children": [child("a", entries=0)]},
        {"v": 1, "height": 1, "children": [child("..")]},
        {"v": 1, "height": 1, "children": [child("b"), child("a")]},
        {"v": 1, "height": 1, "children": [child("a", address=bytes(31))]},
        [1, 2, 3],
    ],
    ids=[
        "version 2",
        "no version",
        "no entries",
        "both",
        "height 0",
        "too high",
        "no children",
        "a child of no entries",
        "a child named ..",
        "children unsorted",
        "a short address",
        "not a map",
    ],
)  # fmt: skip
def test_a_malformed_node_is_refused(node: Any) -> None:
    with pytest.raises(IntegrityError, match="malformed directory node"):
        directory.open_node(bytes(16), seal(node))


def test_unsorted_or_repeated_names_are_refused() -> None:
    a, b = as_map(TreeLink("a", 0o777, 0, "t")), as_map(TreeLink("b", 0o777, 0, "t"))
    for entries in ([b, a], [a, a]):
        with pytest.raises(IntegrityError, match="sorted and unique"):
            directory.open_node(bytes(16), seal({"v": 1, "entries": entries}))


def test_a_node_past_the_size_limit_is_refused() -> None:
    plain = directory.pack_leaf([directory.pack_entry(TreeLink("l", 0o777, 0, "t"))])
    padded = plain + bytes(directory.NODE_MAX)  # trailing bytes make it too long
    with pytest.raises(IntegrityError, match="over"):
        directory.open_node(bytes(16), directory.seal_node(bytes(16), padded))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=299), st.binary(max_size=8))
def test_any_damage_to_a_node_is_an_integrity_error(
    noise: bytes, position: int, replacement: bytes
) -> None:
    plain = directory.pack_leaf([directory.pack_entry(e) for e in sample_entries()])
    damaged = plain[:position] + replacement + plain[position + len(replacement) :] + noise
    try:
        node = directory.open_node(bytes(16), directory.seal_node(bytes(16), damaged))
    except IntegrityError:
        return
    assert isinstance(node, Leaf | Index)  # still a node: every field passed its check


def test_check_child_finds_a_child_that_is_not_what_its_parent_says() -> None:
    leaf = Leaf((TreeLink("b", 0o777, 0, "t"), TreeLink("c", 0o777, 0, "t")))
    parent = Index(1, (Child("b", ref(1), 2, 0, 0), Child("d", ref(2), 1, 0, 0)))
    directory.check_child(parent, 0, None, leaf)
    for bad_parent, bound in (
        (Index(1, (Child("a", ref(1), 2, 0, 0),)), None),  # starts elsewhere
        (Index(1, (Child("b", ref(1), 2, 0, 0), Child("c", ref(2), 1, 0, 0))), None),  # overlap
        (Index(1, (Child("b", ref(1), 3, 0, 0),)), None),  # counts differ
        (Index(2, (Child("b", ref(1), 2, 0, 0),)), None),  # a leaf two levels down
        (Index(1, (Child("b", ref(1), 2, 0, 0),)), "c"),  # past the grandparent's bound
    ):
        with pytest.raises(IntegrityError, match="malformed directory"):
            directory.check_child(bad_parent, 0, directory.child_bound(bad_parent, 0, bound), leaf)


# --- splitting ----------------------------------------------------------------------------------


def packed_links(names: list[str]) -> list[tuple[str, int]]:
    return [(n, len(directory.pack_entry(TreeLink(n, 0o777, 0, "target")))) for n in names]


def test_split_bounds_every_node_and_is_deterministic(rng: random.Random) -> None:
    items = [(f"{rng.getrandbits(64):016x}", rng.randrange(50, 40_000)) for _ in range(3000)]
    items.sort()
    groups = directory.split(items, lambda i: i[0], lambda i: i[1], 0)
    assert [i for g in groups for i in g] == items
    assert all(sum(size for _, size in g) <= directory.NODE_MAX for g in groups)
    assert all(sum(size for _, size in g) >= directory.NODE_MIN for g in groups[:-1])
    assert directory.split(items, lambda i: i[0], lambda i: i[1], 0) == groups
    average = sum(size for _, size in items) / len(groups)
    assert directory.NODE_MIN < average < directory.NODE_MIN + 3 * directory.NODE_AVG


def test_an_insertion_changes_the_nodes_around_it_only(rng: random.Random) -> None:
    names = sorted(f"file-{rng.getrandbits(48):012x}" for _ in range(60_000))
    before = directory.split(packed_links(names), lambda i: i[0], lambda i: i[1], 0)
    added = sorted([*names, names[len(names) // 2] + "-new"])
    after = directory.split(packed_links(added), lambda i: i[0], lambda i: i[1], 0)
    old = {tuple(g) for g in before}
    changed = [g for g in after if tuple(g) not in old]
    assert len(before) > 20
    assert 1 <= len(changed) <= 2


def test_a_million_entries(rng: random.Random) -> None:
    """A directory of 1,000,000 entries: nodes within bounds, three levels, and a lookup
    opens one node per level."""
    names = [f"entry{i:07}" for i in range(1_000_000)]
    packed = [directory.pack_entry(TreeLink(n, 0o777, i, "t")) for i, n in enumerate(names)]
    store: dict[bytes, tuple[bytes, bytes]] = {}

    def put(plain: bytes) -> Ref:
        assert len(plain) <= directory.NODE_MAX
        key = _native.generate_key()
        sealed = directory.seal_node(key, plain)
        store[_native.hash(sealed)] = (key, sealed)
        return Ref(_native.hash(sealed), key)

    groups = directory.split(
        list(zip(names, packed, strict=True)), lambda p: p[0], lambda p: len(p[1]), 0
    )
    children = [
        Child(g[0][0], put(directory.pack_leaf([p for _, p in g])), len(g), 0, 0) for g in groups
    ]
    height = 1
    while len(children) > 1:
        level = directory.split(
            [(c.first, directory.pack_child(c), c) for c in children],
            lambda p: p[0],
            lambda p: len(p[1]),
            height,
        )
        children = [
            Child(
                g[0][0],
                put(directory.pack_index(height, [p[1] for p in g])),
                sum(p[2].entries for p in g),
                0,
                0,
            )
            for g in level
        ]
        height += 1
    top = children[0]
    assert top.entries == 1_000_000 and height <= 4

    def opened(at: Ref) -> directory.DirNode:
        key, sealed = store[at.address]
        return directory.open_node(key, sealed)

    for name in rng.sample(names, 20):
        node, bound, fetched = opened(top.ref), None, 1
        while isinstance(node, Index):
            position = bisect.bisect_right([c.first for c in node.children], name) - 1
            child = opened(node.children[position].ref)
            directory.check_child(node, position, bound, child)
            bound = directory.child_bound(node, position, bound)
            node, fetched = child, fetched + 1
        assert name in {e.name for e in node.entries}
        assert fetched == height
    assert len(store) < 1_000_000 / 500  # hundreds of entries per node


# --- paths ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "target", "escapes"),
    [
        (("l",), "x", False),
        (("l",), "./x/../y", True),  # ".." after a name: that name may be a link
        (("l",), "..", True),
        (("a", "l"), "../x", False),
        (("a", "l"), "../../x", True),
        (("a", "b", "l"), "../../x/y", False),
        (("l",), "/etc/passwd", True),
        (("a", "l"), "x//./y", False),
        (("a", "l"), "./../x", False),
    ],
)
def test_which_links_leave_the_tree(location: tuple[str, ...], target: str, escapes: bool) -> None:
    assert directory.link_escapes(location, target) is escapes


def test_member_paths() -> None:
    assert directory.member_path("./a//b/") == ("a", "b")
    assert directory.member_path(".") == ()
    for name in ("/etc/passwd", "../x", "a/../../x", "a/.."):
        with pytest.raises(UnsafePathError):
            directory.member_path(name)
    with pytest.raises(InvalidNameError):
        directory.member_path("a/b\x1b")


def test_paths_inside_a_tree() -> None:
    assert directory.split_path("a/b/") == ("a", "b")
    assert directory.split_path("/") == ()
    with pytest.raises(UnsafePathError):
        directory.split_path("a/../b")
    with pytest.raises(InvalidNameError):
        directory.split_path("a//b")
