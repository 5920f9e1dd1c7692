"""BLAKE3 in ``fstore._native``: the official vectors, the ``blake3`` package and ``b3sum``."""

from __future__ import annotations

import json
import mmap
import os
import random
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import blake3 as blake3_ref  # the blake3 PyPI package: an independent implementation
import pytest
from datautil import KiB, MiB, pieces

from fstore import _native
from fstore.errors import InvalidArgumentError

# The official vectors, shipped in the repository (tests/vectors/README.md says whence).
VECTORS_PATH = Path(__file__).resolve().parent / "vectors" / "blake3_test_vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
VECTOR_KEY: bytes = VECTORS["key"].encode("ascii")
VECTOR_CONTEXT: str = VECTORS["context_string"]
CASES: list[dict[str, Any]] = VECTORS["cases"]
CASE_IDS = [f"len{case['input_len']}" for case in CASES]

# A context string for derive_key in the tests against the blake3 package.
TEST_CONTEXT = "fstore tests 2025-01-01 derive_key cross-check"


def vector_input(length: int) -> bytes:
    """The input of the official vectors: ``length`` bytes of 0, 1, ..., 250, 0, 1, ..."""
    return bytes(i % 251 for i in range(length))


def test_hash_len() -> None:
    assert _native.HASH_LEN == 32
    assert len(_native.hash(b"")) == _native.HASH_LEN


def test_vectors_file_is_complete() -> None:
    assert VECTOR_KEY == b"whats the Elvish word for friend"
    assert len(CASES) == 35
    assert {case["input_len"] for case in CASES} >= {0, 1, 1023, 1024, 1025, 102400}


# --- the official vectors, in all three modes ---------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_vector_hash(case: dict[str, Any]) -> None:
    data = vector_input(case["input_len"])
    expected = bytes.fromhex(case["hash"])
    assert _native.hash(data, len(expected)) == expected
    assert _native.hash(data, length=len(expected)) == expected
    assert _native.hash(data) == expected[:32]
    assert _native.Hasher(data).finalize(len(expected)) == expected
    assert _native.Hasher(data).finalize() == expected[:32]
    assert _native.Hasher(data).hexdigest(len(expected)) == case["hash"]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_vector_keyed_hash(case: dict[str, Any]) -> None:
    data = vector_input(case["input_len"])
    expected = bytes.fromhex(case["keyed_hash"])
    assert _native.keyed_hash(VECTOR_KEY, data, len(expected)) == expected
    assert _native.keyed_hash(VECTOR_KEY, data) == expected[:32]
    hasher = _native.Hasher(key=VECTOR_KEY)
    hasher.update(data)
    assert hasher.finalize(len(expected)) == expected
    assert hasher.finalize() == expected[:32]
    assert _native.Hasher(data, key=VECTOR_KEY).hexdigest(len(expected)) == case["keyed_hash"]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_vector_derive_key(case: dict[str, Any]) -> None:
    data = vector_input(case["input_len"])
    expected = bytes.fromhex(case["derive_key"])
    assert _native.derive_key(VECTOR_CONTEXT, data, len(expected)) == expected
    assert _native.derive_key(VECTOR_CONTEXT, data) == expected[:32]
    hasher = _native.Hasher(derive_key_context=VECTOR_CONTEXT)
    hasher.update(data)
    assert hasher.finalize(len(expected)) == expected
    assert hasher.finalize() == expected[:32]
    hexed = _native.Hasher(data, derive_key_context=VECTOR_CONTEXT).hexdigest(len(expected))
    assert hexed == case["derive_key"]


# --- streaming ----------------------------------------------------------------

SPLIT_PATTERNS: dict[str, Sequence[int]] = {
    "bytewise": (1,),
    "odd": (1, 7, 63, 64, 65, 1023, 1025, 3),
    "chunk-aligned": (1024,),
    "around-chunks": (1023, 1, 1024, 1025, 2047),
    "with-empty": (0, 5000, 0, 0, 17),
    "large": (64 * KiB, 100_003),
}
MODES = ("hash", "keyed", "derive")


def new_hasher(mode: str, key: bytes) -> _native.Hasher:
    if mode == "keyed":
        return _native.Hasher(key=key)
    if mode == "derive":
        return _native.Hasher(derive_key_context=TEST_CONTEXT)
    return _native.Hasher()


def reference(mode: str, key: bytes, data: bytes) -> blake3_ref.blake3:
    if mode == "keyed":
        return blake3_ref.blake3(data, key=key)
    if mode == "derive":
        return blake3_ref.blake3(data, derive_key_context=TEST_CONTEXT)
    return blake3_ref.blake3(data)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pattern", SPLIT_PATTERNS, ids=list(SPLIT_PATTERNS))
def test_streaming_equals_one_shot(mode: str, pattern: str, rng: random.Random) -> None:
    key = rng.randbytes(32)
    size = 9000 if pattern == "bytewise" else 300_000 + 17
    data = rng.randbytes(size)
    hasher = new_hasher(mode, key)
    for piece in pieces(data, SPLIT_PATTERNS[pattern]):
        hasher.update(piece)
    expected = reference(mode, key, data)
    assert hasher.finalize() == expected.digest()
    assert hasher.finalize(200) == expected.digest(200)
    one_shot = {
        "hash": _native.hash(data),
        "keyed": _native.keyed_hash(key, data),
        "derive": _native.derive_key(TEST_CONTEXT, data),
    }[mode]
    assert hasher.finalize() == one_shot


def test_streaming_random_splits(rng: random.Random) -> None:
    data = rng.randbytes(2 * MiB + 5)
    expected = _native.hash(data)
    for _ in range(10):
        cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(1, 40)))
        hasher = _native.Hasher()
        start = 0
        for cut in [*cuts, len(data)]:
            hasher.update(data[start:cut])
            start = cut
        assert hasher.finalize() == expected, f"split at {cuts}"


def test_hasher_initial_data_equals_update(rng: random.Random) -> None:
    first, second = rng.randbytes(5000), rng.randbytes(3000)
    with_data = _native.Hasher(first)
    with_data.update(second)
    assert with_data.finalize() == _native.hash(first + second)
    key = rng.randbytes(32)
    assert _native.Hasher(first, key=key).finalize() == _native.keyed_hash(key, first)
    derived = _native.Hasher(first, derive_key_context=TEST_CONTEXT).finalize()
    assert derived == _native.derive_key(TEST_CONTEXT, first)


def test_extended_output(rng: random.Random) -> None:
    data = rng.randbytes(10_000)
    hasher = _native.Hasher(data)
    long = hasher.finalize(5000)
    assert long == blake3_ref.blake3(data).digest(5000)
    assert long == _native.hash(data, 5000)
    for length in (1, 16, 31, 32, 33, 64, 65, 1000):
        assert hasher.finalize(length) == long[:length]
        assert _native.hash(data, length) == long[:length]


def test_hexdigest(rng: random.Random) -> None:
    data = rng.randbytes(777)
    hasher = _native.Hasher(data)
    assert hasher.hexdigest() == hasher.finalize().hex()
    assert hasher.hexdigest() == blake3_ref.blake3(data).hexdigest()
    assert hasher.hexdigest(100) == blake3_ref.blake3(data).hexdigest(100)
    assert len(hasher.hexdigest()) == 64
    assert hasher.hexdigest() == hasher.hexdigest().lower()


def test_copy_is_independent(rng: random.Random) -> None:
    a, b, c = rng.randbytes(3000), rng.randbytes(2000), rng.randbytes(1000)
    original = _native.Hasher(a)
    clone = original.copy()
    assert clone.finalize() == original.finalize() == _native.hash(a)
    clone.update(b)
    assert original.finalize() == _native.hash(a)
    assert clone.finalize() == _native.hash(a + b)
    original.update(c)
    assert original.finalize() == _native.hash(a + c)
    assert clone.finalize() == _native.hash(a + b)


def test_copy_keeps_the_mode(rng: random.Random) -> None:
    key, data = rng.randbytes(32), rng.randbytes(4000)
    keyed = _native.Hasher(key=key)
    keyed.update(data[:1000])
    clone = keyed.copy()
    clone.update(data[1000:])
    assert clone.finalize() == _native.keyed_hash(key, data)
    derive = _native.Hasher(derive_key_context=TEST_CONTEXT)
    derive.update(data[:1000])
    clone = derive.copy()
    clone.update(data[1000:])
    assert clone.finalize() == _native.derive_key(TEST_CONTEXT, data)


def test_finalize_does_not_consume(rng: random.Random) -> None:
    a, b = rng.randbytes(5000), rng.randbytes(5000)
    hasher = _native.Hasher()
    hasher.update(a)
    first = hasher.finalize()
    assert hasher.finalize() == first
    assert hasher.finalize(64)[:32] == first
    assert hasher.hexdigest() == first.hex()
    hasher.update(b)
    assert hasher.finalize() == _native.hash(a + b)


# --- against the blake3 package -------------------------------------------------

REFERENCE_SIZES = [0, 1, 1023, 1024, 1025, 64 * KiB, MiB + 3]


@pytest.mark.parametrize("size", REFERENCE_SIZES)
def test_against_blake3_package(size: int, rng: random.Random) -> None:
    data = rng.randbytes(size)
    key = rng.randbytes(32)
    assert _native.hash(data) == blake3_ref.blake3(data).digest()
    assert _native.hash(data, 100) == blake3_ref.blake3(data).digest(100)
    assert _native.keyed_hash(key, data) == blake3_ref.blake3(data, key=key).digest()
    assert _native.keyed_hash(key, data, 77) == blake3_ref.blake3(data, key=key).digest(77)
    derived = blake3_ref.blake3(data, derive_key_context=TEST_CONTEXT)
    assert _native.derive_key(TEST_CONTEXT, data) == derived.digest()
    assert _native.derive_key(TEST_CONTEXT, data, 48) == derived.digest(48)
    hasher = _native.Hasher()
    hasher.update(data)
    assert hasher.finalize() == blake3_ref.blake3(data).digest()


def test_derive_key_context_matters(rng: random.Random) -> None:
    material = rng.randbytes(32)
    assert _native.derive_key("fstore a", material) != _native.derive_key("fstore b", material)
    assert (
        _native.derive_key("fstore a", material)
        == blake3_ref.blake3(material, derive_key_context="fstore a").digest()
    )


# --- buffer types -----------------------------------------------------------------


def as_mmap(data: bytes) -> mmap.mmap:
    mapped = mmap.mmap(-1, max(len(data), 1))
    mapped.write(data)
    return mapped


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "memoryview-slice", "mmap"])
def test_accepts_buffers(kind: str, rng: random.Random) -> None:
    data = rng.randbytes(200_000 + 11)
    key = rng.randbytes(32)
    expected = blake3_ref.blake3(data).digest()
    expected_keyed = blake3_ref.blake3(data, key=key).digest()
    expected_derived = blake3_ref.blake3(data, derive_key_context=TEST_CONTEXT).digest()
    mapped: mmap.mmap | None = None
    buf: bytes | bytearray | memoryview | mmap.mmap
    key_buf: bytes | bytearray | memoryview | mmap.mmap
    if kind == "bytes":
        buf, key_buf = data, key
    elif kind == "bytearray":
        buf, key_buf = bytearray(data), bytearray(key)
    elif kind == "memoryview":
        buf, key_buf = memoryview(data), memoryview(key)
    elif kind == "memoryview-slice":
        buf = memoryview(b"prefix" + data + b"suffix")[6:-6]
        key_buf = memoryview(b"k" + key)[1:]
    else:
        mapped = as_mmap(data)
        buf, key_buf = mapped, as_mmap(key)
    try:
        assert _native.hash(buf) == expected
        assert _native.keyed_hash(key_buf, buf) == expected_keyed
        assert _native.derive_key(TEST_CONTEXT, buf) == expected_derived
        assert _native.Hasher(buf).finalize() == expected
        hasher = _native.Hasher(key=key_buf)
        hasher.update(buf)
        assert hasher.finalize() == expected_keyed
    finally:
        if mapped is not None:
            mapped.close()


def test_accepts_file_mmap(tmp_path: Path, rng: random.Random) -> None:
    data = rng.randbytes(3 * MiB + 1)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        assert _native.hash(mapped) == blake3_ref.blake3(data).digest()
        hasher = _native.Hasher()
        hasher.update(mapped)
        assert hasher.finalize() == blake3_ref.blake3(data).digest()


# --- hash_file against b3sum --------------------------------------------------------


def run_b3sum(b3sum: str, path: Path, length: int | None = None) -> bytes:
    args = [b3sum, "--no-names"]
    if length is not None:
        args += ["--length", str(length)]
    result = subprocess.run([*args, str(path)], check=True, capture_output=True, text=True)
    return bytes.fromhex(result.stdout.strip())


@pytest.mark.parametrize("size", [0, 1, KiB, 4 * MiB + 1], ids=["0", "1", "1KiB", "4MiB+1"])
def test_hash_file_equals_b3sum(size: int, tmp_path: Path, b3sum: str, rng: random.Random) -> None:
    path = tmp_path / "file.bin"
    data = rng.randbytes(size)
    path.write_bytes(data)
    expected = run_b3sum(b3sum, path)
    assert expected == blake3_ref.blake3(data).digest()
    assert _native.hash_file(path) == expected
    assert _native.hash_file(str(path)) == expected
    assert _native.hash_file(path, 100) == run_b3sum(b3sum, path, 100)


def test_hash_file_100_mib_equals_b3sum(tmp_path: Path, b3sum: str) -> None:
    path = tmp_path / "big.bin"
    streamed = _native.Hasher()
    try:
        with path.open("wb") as f:
            for _ in range(100):
                piece = os.urandom(MiB)
                f.write(piece)
                streamed.update(piece)
        assert path.stat().st_size == 100 * MiB
        expected = run_b3sum(b3sum, path)
        assert _native.hash_file(path) == expected
        assert _native.hash_file(str(path)) == expected
        assert streamed.finalize() == expected
        assert _native.hash_file(path, 64) == run_b3sum(b3sum, path, 64)
    finally:
        path.unlink(missing_ok=True)  # pytest keeps recent tmp dirs: do not leave 100 MiB behind


def test_hash_file_accepts_pathlike(tmp_path: Path, rng: random.Random) -> None:
    class PathLike(os.PathLike[str]):
        def __init__(self, path: Path) -> None:
            self.path = path

        def __fspath__(self) -> str:
            return str(self.path)

    data = rng.randbytes(5000)
    path = tmp_path / "x.bin"
    path.write_bytes(data)
    assert _native.hash_file(PathLike(path)) == blake3_ref.blake3(data).digest()


def test_hash_file_missing(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist"
    with pytest.raises(FileNotFoundError) as info:
        _native.hash_file(missing)
    assert isinstance(info.value, OSError)
    with pytest.raises(FileNotFoundError):
        _native.hash_file(str(missing))


# --- argument checks ------------------------------------------------------------------


@pytest.mark.parametrize("key_len", [0, 1, 16, 31, 33, 64])
def test_keyed_hash_wrong_key_length(key_len: int) -> None:
    key = bytes(key_len)
    with pytest.raises(InvalidArgumentError) as info:
        _native.keyed_hash(key, b"data")
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidArgumentError):
        _native.Hasher(key=key)


def test_hasher_key_and_context_together() -> None:
    with pytest.raises(InvalidArgumentError):
        _native.Hasher(key=bytes(32), derive_key_context=TEST_CONTEXT)
