"""The node's small formats: capabilities, manifests, name records, placement."""

from __future__ import annotations

import os
import string

import msgpack
import pytest
from cryptography.cobblestone import Cobblestone128Decryptor

from fstore import _native
from fstore.errors import (
    IntegrityError,
    InvalidArgumentError,
    InvalidCapabilityError,
    WrongKeyError,
)
from fstore.formats.capability import Capability
from fstore.formats.manifest import CONTEXT as MANIFEST_CONTEXT
from fstore.formats.manifest import (
    INLINE_CONTEXT,
    INLINE_MAX,
    ChunkRef,
    Manifest,
    open_inline,
    seal_inline,
)
from fstore.formats.records import HybridClock, NameKeys, NameValue, record_context
from fstore.net.placement import closest, distance


def random_capability() -> Capability:
    return Capability(os.urandom(32), os.urandom(16))


def test_capability_round_trip() -> None:
    cap = random_capability()
    text = str(cap)
    assert text.startswith("fs1:")
    assert set(text[4:]) <= set(string.ascii_lowercase + "234567")
    assert Capability.parse(text) == cap


def test_every_altered_character_is_rejected() -> None:
    text = str(random_capability())
    alphabet = string.ascii_lowercase + "234567"
    for i in range(4, len(text)):
        for replacement in {alphabet[(alphabet.index(text[i]) + 1) % 32], "A", "0", "="}:
            altered = text[:i] + replacement + text[i + 1 :]
            with pytest.raises(InvalidCapabilityError):
                Capability.parse(altered)


@pytest.mark.parametrize(
    "text",
    ["", "fs1:", "fs2:aaaa", "fs1:" + "a" * 84, "fs1:" + "a" * 83, "FS1:abc"],
)
def test_malformed_capabilities(text: str) -> None:
    with pytest.raises(InvalidCapabilityError):
        Capability.parse(text)


def test_truncated_and_extended_capabilities() -> None:
    text = str(random_capability())
    for bad in (text[:-1], text + "a", text[:-8]):
        with pytest.raises(InvalidCapabilityError):
            Capability.parse(bad)


def test_manifest_round_trip_and_cross_check() -> None:
    refs = tuple(ChunkRef(os.urandom(32), os.urandom(16), n) for n in (1000, 2000, 5))
    manifest = Manifest(3005, os.urandom(32), refs, {"name": "x"})
    key = _native.generate_key()
    sealed = manifest.seal(key)
    assert Manifest.open(key, sealed) == manifest
    # An independent Cobblestone implementation opens it to the documented msgpack map.
    decryptor = Cobblestone128Decryptor(key, MANIFEST_CONTEXT)
    plain = decryptor.update(sealed) + decryptor.finalize()
    raw = msgpack.unpackb(plain, raw=False)
    assert raw["v"] == 1 and raw["size"] == 3005
    assert raw["chunks"][0] == [refs[0].address, refs[0].key, 1000]
    with pytest.raises(WrongKeyError):
        Manifest.open(_native.generate_key(), sealed)


def test_manifest_that_does_not_add_up_is_rejected() -> None:
    refs = (ChunkRef(os.urandom(32), os.urandom(16), 10),)
    key = _native.generate_key()
    with pytest.raises(IntegrityError):
        Manifest.open(key, Manifest(11, os.urandom(32), refs).seal(key))
    not_a_manifest = _native.seal(key, MANIFEST_CONTEXT, msgpack.packb([1, 2, 3]))
    with pytest.raises(IntegrityError):
        Manifest.open(key, not_a_manifest)


def _independent_open(key: bytes, context: bytes, sealed: bytes) -> bytes:
    decryptor = Cobblestone128Decryptor(key, context)
    return decryptor.update(sealed) + decryptor.finalize()


def test_inline_manifest_round_trip_is_version_2() -> None:
    """A small file's body in its manifest: version 2, the documented map, the body sealed
    under the file key with its own context (an independent implementation opens both)."""
    body = os.urandom(4096)
    manifest = Manifest(len(body), _native.hash(body), (), {"k": 1}, inline=body)
    key = _native.generate_key()
    sealed = manifest.seal(key)
    assert Manifest.open(key, sealed) == manifest
    raw = msgpack.unpackb(_independent_open(key, MANIFEST_CONTEXT, sealed), raw=False)
    assert set(raw) == {"v", "size", "blake3", "chunks", "inline", "meta"}
    assert (raw["v"], raw["size"], raw["chunks"]) == (2, 4096, [])
    assert _independent_open(key, INLINE_CONTEXT, raw["inline"]) == body
    assert open_inline(key, raw["inline"], len(body), _native.hash(body)) == body
    # A file in chunks is still written as version 1, which every reader knows.
    chunked = Manifest(5, os.urandom(32), (ChunkRef(os.urandom(32), os.urandom(16), 5),))
    assert msgpack.unpackb(_independent_open(key, MANIFEST_CONTEXT, chunked.seal(key)))["v"] == 1


def _sealed_map(key: bytes, fields: dict[str, object]) -> bytes:
    return _native.seal(key, MANIFEST_CONTEXT, msgpack.packb(fields, use_bin_type=True))


def test_inline_manifest_that_does_not_match_is_rejected() -> None:
    key = _native.generate_key()
    body = b"small file"
    good = {"v": 2, "size": len(body), "blake3": _native.hash(body), "chunks": [], "meta": {}}
    bad_maps = [
        {**good, "inline": seal_inline(key, body + b"!")},  # another length
        {**good, "inline": seal_inline(key, b"SMALL FILE")},  # another hash
        {**good, "inline": seal_inline(key, body), "chunks": [[b"a" * 32, b"k" * 16, 10]]},
        {**good, "inline": None},
        good,  # version 2 without its body
        {**good, "inline": seal_inline(key, body), "size": INLINE_MAX + 1},
    ]
    for fields in bad_maps:
        with pytest.raises(IntegrityError):
            Manifest.open(key, _sealed_map(key, fields))
    with pytest.raises(WrongKeyError):  # a body sealed under another file's key
        Manifest.open(key, _sealed_map(key, {**good, "inline": seal_inline(os.urandom(16), body)}))
    assert Manifest.open(key, _sealed_map(key, {**good, "inline": seal_inline(key, body)})).inline


def test_name_records_are_namespace_private() -> None:
    mine, theirs = NameKeys(os.urandom(32)), NameKeys(os.urandom(32))
    assert mine.locator("picture_1.png") != theirs.locator("picture_1.png")
    assert mine.locator("a") != mine.locator("b")
    value = NameValue("picture_1.png", str(random_capability()), 10, os.urandom(32), 1.5)
    locator = mine.locator(value.name)
    version = (1_700_000_000_000_000, os.urandom(32))
    sealed = mine.seal(value, locator, version)
    assert mine.open(sealed, locator, version) == value
    assert b"picture_1" not in sealed
    with pytest.raises(WrongKeyError):
        theirs.open(sealed, locator, version)
    with pytest.raises(WrongKeyError):
        theirs.open(sealed, theirs.locator(value.name), version)


def test_name_record_is_bound_to_its_locator_and_version() -> None:
    keys = NameKeys(os.urandom(32))
    value = NameValue("notes.txt", str(random_capability()), 10, os.urandom(32), 1.5)
    locator = keys.locator(value.name)
    clock, node = 1_700_000_000_000_000, os.urandom(32)
    sealed = keys.seal(value, locator, (clock, node))
    assert keys.open(sealed, locator, (clock, node)) == value
    # Moved to another locator (another name's, or any), or re-versioned (another
    # clock, higher or lower, or another node id, even one bit off): it does not open.
    elsewhere = [
        (keys.locator("other.txt"), (clock, node)),
        (os.urandom(32), (clock, node)),
        (locator, (clock + 1, node)),
        (locator, (clock - 1, node)),
        (locator, (2**63 - 1, node)),
        (locator, (clock, os.urandom(32))),
        (locator, (clock, node[:-1] + bytes([node[-1] ^ 1]))),
    ]
    for other_locator, other_version in elsewhere:
        with pytest.raises(WrongKeyError):
            keys.open(sealed, other_locator, other_version)


def test_name_record_context_layout() -> None:
    """The seal's context is ``fstore/record/v2 || locator || be64(clock) || node id``,
    checked by an independent Cobblestone implementation."""
    secret = os.urandom(32)
    keys = NameKeys(secret)
    value = NameValue("a/b c.bin", None, 0, b"", 2.25)
    locator = keys.locator(value.name)
    clock, node = 0x0102030405060708, bytes(range(32))
    sealed = keys.seal(value, locator, (clock, node))
    context = b"fstore/record/v2" + locator + bytes(range(1, 9)) + node
    assert record_context(locator, (clock, node)) == context
    record_key = _native.derive_key("fstore 2026-11-24 name record key v1", secret, 16)
    decryptor = Cobblestone128Decryptor(record_key, context)
    raw = msgpack.unpackb(decryptor.update(sealed) + decryptor.finalize(), raw=False)
    assert raw == {"name": "a/b c.bin", "cap": None, "size": 0, "blake3": b"", "at": 2.25}


def test_garbage_and_misfiled_name_records_fail_their_check() -> None:
    secret = os.urandom(32)
    keys = NameKeys(secret)
    locator = keys.locator("x")
    version = (5, os.urandom(32))
    for garbage in (b"", b"garbage", os.urandom(56 + 16), os.urandom(300)):
        with pytest.raises(IntegrityError):
            keys.open(garbage, locator, version)
    value = NameValue("x", None, 0, b"", 1.0)
    with pytest.raises(InvalidArgumentError):
        keys.seal(value, keys.locator("y"), version)  # not the locator of "x"
    # A record sealed (by a namespace member) under the locator of another name.
    other = keys.locator("y")
    misfiled = _native.seal(
        _native.derive_key("fstore 2026-11-24 name record key v1", secret, 16),
        record_context(other, version),
        msgpack.packb({"name": "x", "cap": None, "size": 0, "blake3": b"", "at": 1.0}),
    )
    with pytest.raises(IntegrityError, match="another name"):
        keys.open(misfiled, other, version)


def test_hybrid_clock_never_repeats_or_goes_back() -> None:
    clock = HybridClock()
    readings = [clock.now() for _ in range(1000)]
    assert readings == sorted(set(readings))
    assert clock.now(at_least=readings[-1] + 10**9) > readings[-1] + 10**9


def test_placement_is_xor_closest() -> None:
    nodes = [os.urandom(32) for _ in range(10)]
    target = os.urandom(32)
    chosen = closest(target, nodes, 3)
    assert len(chosen) == 3
    others = [n for n in nodes if n not in chosen]
    assert max(distance(n, target) for n in chosen) < min(distance(n, target) for n in others)
    assert closest(target, nodes[:2], 3) == sorted(nodes[:2], key=lambda n: distance(n, target))
