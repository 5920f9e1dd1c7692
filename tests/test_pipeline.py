"""The store and restore pipelines of ``fstore._native``, each step checked independently."""

from __future__ import annotations

import mmap
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import blake3 as blake3_ref
import pytest
from cryptography.cobblestone import Cobblestone128Decryptor

from fstore import _native
from fstore.errors import (
    AddressMismatchError,
    AlreadyFinalizedError,
    FileMismatchError,
    FstoreError,
    IntegrityError,
    InvalidArgumentError,
    TamperedError,
    TrailingDataError,
    TruncatedError,
    WrongKeyError,
)

KiB = 1024
MiB = 1024 * KiB

HEADER = 56
RECORD = 16384
TAG = 16
FULL = RECORD + TAG
SMALL = (4 * KiB, 16 * KiB, 64 * KiB)  # many chunks from little data

Buffer = bytes | bytearray | memoryview | mmap.mmap


@dataclass
class Stored:
    chunks: list[_native.SealedChunk]
    size: int
    blake3: bytes


def random_pieces(data: bytes, rng: random.Random) -> Iterator[memoryview]:
    """``data`` in consecutive pieces of very different random sizes (tiny, odd, huge)."""
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        size = rng.choice([rng.randint(1, 100), rng.randint(1, 70_000), rng.randint(1, 3 * MiB)])
        yield view[pos : pos + size]
        pos += size


def fixed_pieces(data: bytes, size: int) -> Iterator[memoryview]:
    view = memoryview(data)
    return (view[pos : pos + size] for pos in range(0, len(view), size))


def store(
    secret: bytes,
    pieces: Iterable[Buffer],
    sizes: tuple[int, int, int] | None = None,
) -> Stored:
    if sizes is None:
        pipeline = _native.StorePipeline(secret)
    else:
        pipeline = _native.StorePipeline(
            secret, min_size=sizes[0], avg_size=sizes[1], max_size=sizes[2]
        )
    chunks: list[_native.SealedChunk] = []
    fed = 0
    for piece in pieces:
        chunks += pipeline.feed(piece)
        fed += len(piece)
        assert pipeline.size == fed
    chunks += pipeline.finish()
    return Stored(chunks, pipeline.size, pipeline.blake3)


def restore(stored: Stored) -> bytes:
    pipeline = _native.RestorePipeline()
    out = bytearray()
    for chunk in stored.chunks:
        out += pipeline.open_chunk(chunk.address, chunk.key, chunk.sealed, chunk.plain_length)
        assert pipeline.size == len(out)
    pipeline.finish(stored.size, stored.blake3)
    return bytes(out)


def check_chunks(secret: bytes, data: bytes, stored: Stored) -> None:
    """Every property of every sealed chunk, recomputed with the blake3 package and cryptography."""
    id_key = _native.chunk_id_key(secret)
    assert len(id_key) == 32
    offset = 0
    for chunk in stored.chunks:
        assert chunk.offset == offset
        assert chunk.plain_length > 0
        plain = data[offset : offset + chunk.plain_length]
        assert len(plain) == chunk.plain_length
        assert len(chunk.address) == 32
        assert chunk.address == blake3_ref.blake3(chunk.sealed).digest()
        assert chunk.chunk_id == blake3_ref.blake3(plain, key=id_key).digest()
        assert chunk.chunk_id == _native.chunk_id(secret, plain)
        assert len(chunk.key) == 16
        assert chunk.key == _native.chunk_key(secret, chunk.chunk_id)
        assert len(chunk.sealed) == _native.sealed_length(chunk.plain_length)
        decryptor = Cobblestone128Decryptor(chunk.key, _native.CHUNK_CONTEXT)
        assert decryptor.update(chunk.sealed) + decryptor.finalize() == plain
        offset += chunk.plain_length
    assert offset == len(data)
    assert stored.size == len(data)
    assert stored.blake3 == blake3_ref.blake3(data).digest()


def boundaries(stored: Stored) -> list[tuple[bytes, int, int]]:
    return [(c.chunk_id, c.offset, c.plain_length) for c in stored.chunks]


def chunker_offsets(data: bytes, sizes: tuple[int, int, int]) -> list[int]:
    chunker = _native.Chunker(*sizes)
    return chunker.update(data) + chunker.finish()


@pytest.fixture
def secret(rng: random.Random) -> bytes:
    return rng.randbytes(32)


# --- store ---------------------------------------------------------------------------


def test_chunk_context_is_fixed_bytes() -> None:
    assert isinstance(_native.CHUNK_CONTEXT, bytes)
    assert len(_native.CHUNK_CONTEXT) > 0


def test_store_random_pieces(secret: bytes, rng: random.Random) -> None:
    data = rng.randbytes(6 * MiB + 123)
    stored = store(secret, random_pieces(data, rng))
    check_chunks(secret, data, stored)
    assert len(stored.chunks) >= 2
    ends = [c.offset + c.plain_length for c in stored.chunks]
    assert ends == chunker_offsets(data, (256 * KiB, MiB, 4 * MiB))


def test_store_many_small_chunks(secret: bytes, rng: random.Random) -> None:
    data = rng.randbytes(MiB + 5)
    stored = store(secret, random_pieces(data, rng), SMALL)
    check_chunks(secret, data, stored)
    assert len(stored.chunks) > 20
    assert [c.offset + c.plain_length for c in stored.chunks] == chunker_offsets(data, SMALL)


def test_store_accepts_buffers(secret: bytes, rng: random.Random) -> None:
    data = rng.randbytes(300 * KiB)
    mapped = mmap.mmap(-1, len(data))
    try:
        mapped.write(data)
        pieces: list[Buffer] = [bytearray(data[:1000]), memoryview(data)[1000:5000]]
        stored = store(secret, [*pieces, mapped[5000:], b""], SMALL)
        check_chunks(secret, data, stored)
        pipeline = _native.StorePipeline(
            secret, min_size=SMALL[0], avg_size=SMALL[1], max_size=SMALL[2]
        )
        from_mmap = pipeline.feed(mapped) + pipeline.finish()
        assert boundaries(Stored(from_mmap, 0, b"")) == boundaries(stored)
    finally:
        mapped.close()


def test_blake3_before_finish(secret: bytes) -> None:
    pipeline = _native.StorePipeline(secret)
    with pytest.raises(FstoreError):
        _ = pipeline.blake3
    pipeline.feed(b"some bytes")
    with pytest.raises(FstoreError):
        _ = pipeline.blake3
    pipeline.finish()
    assert pipeline.blake3 == blake3_ref.blake3(b"some bytes").digest()
    assert pipeline.size == 10


def test_store_refuses_use_after_finish(secret: bytes) -> None:
    pipeline = _native.StorePipeline(secret)
    pipeline.feed(b"abc")
    pipeline.finish()
    with pytest.raises(AlreadyFinalizedError):
        pipeline.feed(b"more")
    with pytest.raises(AlreadyFinalizedError):
        pipeline.feed(b"")
    with pytest.raises(AlreadyFinalizedError):
        pipeline.finish()
    assert pipeline.size == 3
    assert pipeline.blake3 == blake3_ref.blake3(b"abc").digest()


def test_boundaries_independent_of_feed(secret: bytes, rng: random.Random) -> None:
    data = rng.randbytes(5 * MiB + 99)
    whole = store(secret, [data])
    in_pieces = store(secret, fixed_pieces(data, 4 * KiB))
    assert boundaries(whole) == boundaries(in_pieces)
    assert len(whole.chunks) >= 2
    assert whole.blake3 == in_pieces.blake3
    # The salt is random: the same plaintext never seals to the same blob.
    assert all(a.address != b.address for a, b in zip(whole.chunks, in_pieces.chunks, strict=True))
    assert [a.key for a in whole.chunks] == [b.key for b in in_pieces.chunks]


def test_chunks_come_out_of_the_call_that_completes_them(secret: bytes, rng: random.Random) -> None:
    data = rng.randbytes(3 * MiB)
    pipeline = _native.StorePipeline(
        secret, min_size=SMALL[0], avg_size=SMALL[1], max_size=SMALL[2]
    )
    first = pipeline.feed(data)
    last = pipeline.finish()
    ends = [c.offset + c.plain_length for c in first + last]
    assert ends == chunker_offsets(data, SMALL)
    assert len(ends) > 20
    # Only the end of the stream can decide the last chunks (a cut needs one more byte).
    assert 1 <= len(last) <= 2


def test_namespaces_are_separate(rng: random.Random) -> None:
    data = rng.randbytes(2 * MiB)
    first, second = rng.randbytes(32), rng.randbytes(32)
    a, b = store(first, [data]), store(second, [data])
    assert [(c.offset, c.plain_length) for c in a.chunks] == [
        (c.offset, c.plain_length) for c in b.chunks
    ]
    for x, y in zip(a.chunks, b.chunks, strict=True):
        assert x.chunk_id != y.chunk_id
        assert x.key != y.key
    assert _native.chunk_id_key(first) != _native.chunk_id_key(second)
    assert _native.chunk_id(first, data) != _native.chunk_id(second, data)
    chunk_id = _native.chunk_id(first, data)
    assert _native.chunk_key(first, chunk_id) != _native.chunk_key(second, chunk_id)


def test_key_derivations(secret: bytes, rng: random.Random) -> None:
    id_key = _native.chunk_id_key(secret)
    assert id_key == _native.chunk_id_key(bytearray(secret))
    assert len(id_key) == 32
    assert id_key != secret
    data = rng.randbytes(1000)
    chunk_id = _native.chunk_id(secret, data)
    assert chunk_id == blake3_ref.blake3(data, key=id_key).digest()
    assert chunk_id != _native.chunk_id(secret, data + b"\x00")
    key = _native.chunk_key(secret, chunk_id)
    assert len(key) == 16
    assert key == _native.chunk_key(secret, chunk_id)
    assert key != _native.chunk_key(secret, _native.chunk_id(secret, data[1:]))


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_secret_of_wrong_length(length: int) -> None:
    bad = bytes(length)
    calls: list[Callable[[], object]] = [
        lambda: _native.StorePipeline(bad),
        lambda: _native.chunk_id_key(bad),
        lambda: _native.chunk_id(bad, b"data"),
        lambda: _native.chunk_key(bad, bytes(32)),
    ]
    for call in calls:
        with pytest.raises(InvalidArgumentError):
            call()


@pytest.mark.parametrize(
    "sizes",
    [
        (3000, 16 * KiB, 64 * KiB),
        (16 * KiB, 16 * KiB, 64 * KiB),
        (0, 16 * KiB, 64 * KiB),
        (-4096, 16 * KiB, 64 * KiB),
    ],
    ids=["min-not-pow2", "min-eq-avg", "min-zero", "min-negative"],
)
def test_store_invalid_sizes(sizes: tuple[int, int, int], secret: bytes) -> None:
    with pytest.raises(InvalidArgumentError):
        _native.StorePipeline(secret, min_size=sizes[0], avg_size=sizes[1], max_size=sizes[2])


# --- round trip ------------------------------------------------------------------------------

ROUND_TRIP_SIZES = [0, 1, 1000, 256 * KiB, MiB + 1, 5 * MiB, 9 * MiB + 17]
ROUND_TRIP_IDS = ["0", "1", "1000", "256KiB", "1MiB+1", "5MiB", "9MiB+17"]


@pytest.mark.parametrize("size", ROUND_TRIP_SIZES, ids=ROUND_TRIP_IDS)
def test_round_trip(size: int, secret: bytes, rng: random.Random) -> None:
    data = rng.randbytes(size)
    stored = store(secret, random_pieces(data, rng))
    check_chunks(secret, data, stored)
    assert restore(stored) == data


# --- restore rejects ---------------------------------------------------------------------------


@pytest.fixture
def stored_file(secret: bytes, rng: random.Random) -> tuple[bytes, Stored]:
    data = rng.randbytes(4 * MiB + 300 * KiB)  # longer than the 4 MiB maximum: two chunks at least
    stored = store(secret, [data])
    assert len(stored.chunks) >= 2
    return data, stored


def flip_positions(sealed_len: int, rng: random.Random) -> list[int]:
    """Every header byte, the edges of some records and their tags, and random positions."""
    positions = set(range(HEADER))
    record_starts = list(range(HEADER, sealed_len, FULL))
    for start in record_starts[:3] + record_starts[-2:]:
        end = min(start + FULL, sealed_len)
        positions.update({start, start + 1, end - TAG - 1, end - TAG, end - 1})
    positions.update(rng.randrange(sealed_len) for _ in range(30))
    return sorted(positions)


def test_flipped_bit_is_caught(stored_file: tuple[bytes, Stored], rng: random.Random) -> None:
    _, stored = stored_file
    chunk = stored.chunks[0]
    wrong: list[tuple[str, int, type[BaseException] | None]] = []
    for pos in flip_positions(len(chunk.sealed), rng):
        bad = bytearray(chunk.sealed)
        bad[pos] ^= 1 << rng.randrange(8)
        # The address is checked first...
        try:
            _native.RestorePipeline().open_chunk(chunk.address, chunk.key, bad, chunk.plain_length)
        except Exception as exc:
            if type(exc) is not AddressMismatchError:
                wrong.append(("stored address", pos, type(exc)))
        else:
            wrong.append(("stored address", pos, None))
        # ...and a blob re-addressed after the flip is caught by the AEAD.
        expected = WrongKeyError if pos < HEADER else TamperedError
        new_address = blake3_ref.blake3(bad).digest()
        try:
            _native.RestorePipeline().open_chunk(new_address, chunk.key, bad, chunk.plain_length)
        except Exception as exc:
            if type(exc) is not expected or not isinstance(exc, IntegrityError):
                wrong.append(("recomputed address", pos, type(exc)))
        else:
            wrong.append(("recomputed address", pos, None))
    assert wrong == [], "(address given, flipped position, raised)"


def test_wrong_plain_length(stored_file: tuple[bytes, Stored]) -> None:
    _, stored = stored_file
    chunk = stored.chunks[0]
    for length, error in [
        (chunk.plain_length + 1, TruncatedError),
        (chunk.plain_length + RECORD, TruncatedError),
        (chunk.plain_length * 2, TruncatedError),
        (chunk.plain_length - 1, TrailingDataError),
        (chunk.plain_length - RECORD, TrailingDataError),
        (0, TrailingDataError),
    ]:
        with pytest.raises(error):
            _native.RestorePipeline().open_chunk(chunk.address, chunk.key, chunk.sealed, length)


def test_wrong_key(stored_file: tuple[bytes, Stored]) -> None:
    _, stored = stored_file
    first, second = stored.chunks[0], stored.chunks[1]
    for key in (second.key, _native.generate_key()):
        with pytest.raises(WrongKeyError):
            _native.RestorePipeline().open_chunk(
                first.address, key, first.sealed, first.plain_length
            )
    with pytest.raises(InvalidArgumentError):
        _native.RestorePipeline().open_chunk(
            first.address, first.key[:15], first.sealed, first.plain_length
        )


def test_finish_checks_size_and_hash(stored_file: tuple[bytes, Stored]) -> None:
    data, stored = stored_file

    def opened() -> _native.RestorePipeline:
        pipeline = _native.RestorePipeline()
        for c in stored.chunks:
            pipeline.open_chunk(c.address, c.key, c.sealed, c.plain_length)
        assert pipeline.size == len(data)
        return pipeline

    bad_hash = bytes([stored.blake3[0] ^ 1]) + stored.blake3[1:]
    for size, digest in [
        (stored.size + 1, stored.blake3),
        (stored.size - 1, stored.blake3),
        (0, stored.blake3),
        (stored.size, bad_hash),
        (stored.size, bytes(32)),
        (stored.size + 1, bad_hash),
    ]:
        with pytest.raises(FileMismatchError):
            opened().finish(size, digest)
    opened().finish(stored.size, stored.blake3)


def test_missing_chunk_fails_finish(stored_file: tuple[bytes, Stored]) -> None:
    _, stored = stored_file
    pipeline = _native.RestorePipeline()
    for c in stored.chunks[:-1]:
        pipeline.open_chunk(c.address, c.key, c.sealed, c.plain_length)
    with pytest.raises(FileMismatchError):
        pipeline.finish(stored.size, stored.blake3)


def test_restore_failed_chunk_leaves_no_trace(stored_file: tuple[bytes, Stored]) -> None:
    """A chunk that fails any check changes nothing: the caller can retry it with
    another holder's copy, and the whole file still verifies at the end."""
    data, stored = stored_file
    first, second = stored.chunks[0], stored.chunks[1]
    pipeline = _native.RestorePipeline()
    with pytest.raises(AddressMismatchError):
        pipeline.open_chunk(second.address, first.key, first.sealed, first.plain_length)
    with pytest.raises(WrongKeyError):
        pipeline.open_chunk(first.address, second.key, first.sealed, first.plain_length)
    with pytest.raises(TruncatedError):
        pipeline.open_chunk(first.address, first.key, first.sealed, first.plain_length + 1)
    assert pipeline.size == 0
    restored = b"".join(
        pipeline.open_chunk(c.address, c.key, c.sealed, c.plain_length) for c in stored.chunks
    )
    assert restored == data
    pipeline.finish(stored.size, stored.blake3)


# --- open_blob: verify and open where the holder is chosen, add_opened in file order ----------


def test_open_blob_then_add_opened_restores(stored_file: tuple[bytes, Stored]) -> None:
    data, stored = stored_file
    # Blobs open independently of each other (here in reverse), from any buffer.
    plains = [
        _native.open_blob(c.address, c.key, memoryview(c.sealed), c.plain_length)
        for c in reversed(stored.chunks)
    ][::-1]
    assert b"".join(plains) == data
    pipeline = _native.RestorePipeline()
    for plain in plains:
        pipeline.add_opened(bytearray(plain))
    assert pipeline.size == len(data)
    pipeline.finish(stored.size, stored.blake3)


def test_a_bad_copy_is_an_address_mismatch(
    stored_file: tuple[bytes, Stored], rng: random.Random
) -> None:
    """Whatever a holder got wrong (a flipped bit anywhere, a missing or an extra
    byte), the copy does not match its address: the caller tries another holder."""
    _, stored = stored_file
    chunk = stored.chunks[0]
    sealed = chunk.sealed
    copies: list[tuple[str, bytes]] = []
    for pos in flip_positions(len(sealed), rng):
        flipped = bytearray(sealed)
        flipped[pos] ^= 1 << rng.randrange(8)
        copies.append((f"bit flipped at {pos}", bytes(flipped)))
    copies += [
        ("empty", b""),
        ("header only", sealed[:HEADER]),
        ("cut at a record boundary", sealed[: HEADER + 2 * FULL]),
        ("last byte missing", sealed[:-1]),
        ("one byte more", sealed + b"\0"),
        ("a record more", sealed + sealed[HEADER : HEADER + FULL]),
    ]
    wrong: list[tuple[str, type[Exception] | None]] = []
    for what, copy in copies:
        try:
            _native.open_blob(chunk.address, chunk.key, copy, chunk.plain_length)
        except AddressMismatchError:
            continue
        except Exception as exc:
            wrong.append((what, type(exc)))
        else:
            wrong.append((what, None))
    assert wrong == []


def test_open_blob_errors_of_a_copy_that_matches(stored_file: tuple[bytes, Stored]) -> None:
    """A copy that matches its address but not the manifest's key or length."""
    _, stored = stored_file
    first, second = stored.chunks[0], stored.chunks[1]
    for key, length, error in [
        (second.key, first.plain_length, WrongKeyError),
        (first.key[:15], first.plain_length, InvalidArgumentError),
        (first.key, first.plain_length + 1, TruncatedError),
        (first.key, first.plain_length - 1, TrailingDataError),
        (first.key, 0, TrailingDataError),
    ]:
        with pytest.raises(error):
            _native.open_blob(first.address, key, first.sealed, length)


def test_add_opened_refuses_use_after_finish() -> None:
    pipeline = _native.RestorePipeline()
    pipeline.add_opened(b"abc")
    pipeline.finish(3, blake3_ref.blake3(b"abc").digest())
    with pytest.raises(AlreadyFinalizedError):
        pipeline.add_opened(b"more")


def test_restore_refuses_use_after_finish(secret: bytes) -> None:
    stored = store(secret, [b"tiny file"])
    pipeline = _native.RestorePipeline()
    (chunk,) = stored.chunks
    assert pipeline.open_chunk(chunk.address, chunk.key, chunk.sealed, chunk.plain_length) == (
        b"tiny file"
    )
    pipeline.finish(stored.size, stored.blake3)
    with pytest.raises(AlreadyFinalizedError):
        pipeline.open_chunk(chunk.address, chunk.key, chunk.sealed, chunk.plain_length)
    with pytest.raises(AlreadyFinalizedError):
        pipeline.finish(stored.size, stored.blake3)
