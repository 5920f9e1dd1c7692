"""Cobblestone-128 in ``fstore._native``, against ``cryptography.cobblestone`` as the oracle."""

from __future__ import annotations

import mmap
import random
from collections.abc import Callable, Sequence
from itertools import pairwise

import pytest
from cryptography.cobblestone import Cobblestone128Decryptor, Cobblestone128Encryptor
from datautil import MiB, pieces

from fstore import _native
from fstore.errors import (
    AlreadyFinalizedError,
    IntegrityError,
    InvalidArgumentError,
    TamperedError,
    TrailingDataError,
    TruncatedError,
    WrongKeyError,
)

HEADER = 56  # 24-byte salt + 32-byte key commitment
RECORD = 16384  # plaintext bytes per full record
TAG = 16
FULL = RECORD + TAG  # sealed bytes per full record

SIZES = [0, 1, 16383, 16384, 16385, MiB + 7]
SIZE_IDS = ["0", "1", "16383", "16384", "16385", "1MiB+7"]
CONTEXTS = [b"", b"fstore test context \x00\xff"]
CONTEXT_IDS = ["empty-ctx", "ctx"]
# Odd piece sizes for the streaming APIs: they straddle headers, records and tags.
ODD_PIECES = (1, 7, 55, 2, 4093, 16385, 3, 16399, 16401, 65537, 31, 0)

ErrorClass = type[BaseException]


def out_buffer(n: int) -> bytearray:
    """A buffer comfortably larger than what ``update_into`` can write for ``n`` input bytes."""
    return bytearray(n + HEADER + 2 * FULL + TAG * (n // RECORD + 4))


def their_seal(key: bytes, context: bytes, data: bytes) -> bytes:
    encryptor = Cobblestone128Encryptor(key, context)
    return encryptor.update(data) + encryptor.finalize()


def their_open(key: bytes, context: bytes, sealed: bytes) -> bytes:
    decryptor = Cobblestone128Decryptor(key, context)
    return decryptor.update(sealed) + decryptor.finalize()


def their_open_pieces(key: bytes, context: bytes, sealed: bytes) -> bytes:
    decryptor = Cobblestone128Decryptor(key, context)
    out = bytearray()
    for piece in pieces(sealed, ODD_PIECES):
        out += decryptor.update(piece)
    return bytes(out + decryptor.finalize())


def run_stream(
    stream: _native.Sealer | _native.Opener,
    data: bytes,
    sizes: Sequence[int],
    *,
    into: bool,
) -> bytes:
    """Feed ``data`` in pieces through ``update`` (or ``update_into``), then finalize."""
    out = bytearray()
    for piece in pieces(data, sizes):
        if into:
            buf = out_buffer(len(piece))
            written = stream.update_into(piece, buf)
            out += buf[:written]
        else:
            out += stream.update(piece)
    return bytes(out + stream.finalize())


def seal_streaming(key: bytes, context: bytes, data: bytes, *, into: bool = False) -> bytes:
    return run_stream(_native.Sealer(key, context), data, ODD_PIECES, into=into)


def open_streaming(
    key: bytes,
    context: bytes,
    sealed: bytes,
    *,
    into: bool = False,
    sizes: Sequence[int] = ODD_PIECES,
) -> bytes:
    return run_stream(_native.Opener(key, context), sealed, sizes, into=into)


def expected_sealed_length(n: int) -> int:
    """The spec's length: header, full records, then one always-short final record."""
    return HEADER + (n // RECORD) * FULL + n % RECORD + TAG


def open_error(key: bytes, context: bytes, sealed: bytes) -> ErrorClass | None:
    """The class of what ``open`` raises, or None if it returned (any) plaintext."""
    try:
        _native.open(key, context, sealed)
    except Exception as exc:  # the caller compares the exact class
        return type(exc)
    return None


def stream_open_error(
    key: bytes, context: bytes, sealed: bytes, sizes: Sequence[int] = ODD_PIECES
) -> ErrorClass | None:
    """Like :func:`open_error` through the streaming ``Opener``; also checks it is then dead."""
    opener = _native.Opener(key, context)
    try:
        for piece in pieces(sealed, sizes):
            opener.update(piece)
        opener.finalize()
    except Exception as exc:  # the caller compares the exact class
        assert_refuses_use(opener)
        return type(exc)
    return None


def assert_refuses_use(obj: _native.Opener | _native.Sealer) -> None:
    uses: list[Callable[[], object]] = [
        lambda: obj.update(b"x"),
        lambda: obj.update(b""),
        lambda: obj.update_into(b"x", bytearray(4 * FULL)),
        obj.finalize,
    ]
    for use in uses:
        with pytest.raises(AlreadyFinalizedError):
            use()


@pytest.fixture
def key() -> bytes:
    return _native.generate_key()


# --- constants and keys -----------------------------------------------------------


def test_constants() -> None:
    assert _native.KEY_LEN == 16
    assert _native.RECORD_SIZE == RECORD
    assert _native.HEADER_LEN == HEADER
    assert _native.TAG_LEN == TAG


def test_generate_key() -> None:
    keys = [_native.generate_key() for _ in range(8)]
    assert all(isinstance(k, bytes) and len(k) == 16 for k in keys)
    assert len(set(keys)) == len(keys)


# --- interoperability with cryptography.cobblestone ---------------------------------


@pytest.mark.parametrize("context", CONTEXTS, ids=CONTEXT_IDS)
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
class TestInterop:
    def test_seal_then_their_decryptor(
        self, size: int, context: bytes, key: bytes, rng: random.Random
    ) -> None:
        data = rng.randbytes(size)
        sealed = _native.seal(key, context, data)
        assert len(sealed) == expected_sealed_length(size)
        assert their_open(key, context, sealed) == data
        assert their_open_pieces(key, context, sealed) == data

    def test_their_encryptor_then_open(
        self, size: int, context: bytes, key: bytes, rng: random.Random
    ) -> None:
        data = rng.randbytes(size)
        sealed = their_seal(key, context, data)
        assert _native.open(key, context, sealed) == data

    @pytest.mark.parametrize("into", [False, True], ids=["update", "update_into"])
    def test_sealer_in_pieces_then_their_decryptor(
        self, size: int, context: bytes, into: bool, key: bytes, rng: random.Random
    ) -> None:
        data = rng.randbytes(size)
        sealed = seal_streaming(key, context, data, into=into)
        assert len(sealed) == expected_sealed_length(size)
        assert their_open(key, context, sealed) == data

    @pytest.mark.parametrize("into", [False, True], ids=["update", "update_into"])
    def test_their_encryptor_then_opener_in_pieces(
        self, size: int, context: bytes, into: bool, key: bytes, rng: random.Random
    ) -> None:
        data = rng.randbytes(size)
        sealed = their_seal(key, context, data)
        assert open_streaming(key, context, sealed, into=into) == data

    def test_sealed_length(self, size: int, context: bytes, key: bytes) -> None:
        data = b"x" * size
        expected = len(their_seal(key, context, data))
        assert _native.sealed_length(size) == expected
        assert len(_native.seal(key, context, data)) == expected


def test_opener_whole_message_in_one_update(key: bytes, rng: random.Random) -> None:
    data = rng.randbytes(5 * RECORD + 3)
    sealed = their_seal(key, b"c", data)
    assert open_streaming(key, b"c", sealed, sizes=(len(sealed),)) == data
    assert open_streaming(key, b"c", sealed, sizes=(1,)) == data


def test_sealer_one_byte_at_a_time(key: bytes, rng: random.Random) -> None:
    data = rng.randbytes(RECORD + 100)
    sealer = _native.Sealer(key, b"c")
    out = bytearray()
    for i in range(len(data)):
        out += sealer.update(data[i : i + 1])
    out += sealer.finalize()
    assert their_open(key, b"c", bytes(out)) == data


def test_sealer_default_context_is_empty(key: bytes, rng: random.Random) -> None:
    data = rng.randbytes(1000)
    sealer = _native.Sealer(key)
    sealed = sealer.update(data) + sealer.finalize()
    assert their_open(key, b"", sealed) == data
    opener = _native.Opener(key)
    assert opener.update(sealed) + opener.finalize() == data


@pytest.mark.parametrize(
    "size", [0, 1, 2, 15, 16, 17, 16383, 16384, 16385, 16399, 16400, 16401, 32767, 32768, 32769]
)
def test_sealed_length_small(size: int, key: bytes) -> None:
    assert _native.sealed_length(size) == expected_sealed_length(size)
    assert _native.sealed_length(size) == len(their_seal(key, b"", bytes(size)))


def test_sealed_length_large() -> None:
    for n in (10**9, 2**32 + 5, 10**12 + 16383, 2**40):
        assert _native.sealed_length(n) == expected_sealed_length(n)


def test_sealed_length_strictly_increasing() -> None:
    lengths = [_native.sealed_length(n) for n in range(3 * RECORD + 2)]
    assert all(a < b for a, b in pairwise(lengths))


def test_two_seals_differ(key: bytes, rng: random.Random) -> None:
    data = rng.randbytes(20_000)
    first = _native.seal(key, b"c", data)
    second = _native.seal(key, b"c", data)
    assert first != second
    assert first[:24] != second[:24]  # the salt
    assert _native.open(key, b"c", first) == _native.open(key, b"c", second) == data
    sealer_a, sealer_b = _native.Sealer(key, b"c"), _native.Sealer(key, b"c")
    assert (
        sealer_a.update(data) + sealer_a.finalize() != sealer_b.update(data) + sealer_b.finalize()
    )


@pytest.mark.parametrize("kind", ["bytearray", "memoryview", "mmap"])
def test_accepts_buffers(kind: str, key: bytes, rng: random.Random) -> None:
    data = rng.randbytes(3 * RECORD + 5)
    context = b"buffer context"
    maps: list[mmap.mmap] = []

    def wrap(value: bytes) -> bytearray | memoryview | mmap.mmap:
        if kind == "bytearray":
            return bytearray(value)
        if kind == "memoryview":
            return memoryview(b"??" + value)[2:]
        mapped = mmap.mmap(-1, len(value))
        mapped.write(value)
        maps.append(mapped)
        return mapped

    try:
        sealed = _native.seal(wrap(key), wrap(context), wrap(data))
        assert their_open(key, context, sealed) == data
        assert _native.open(wrap(key), wrap(context), wrap(sealed)) == data
        sealer = _native.Sealer(wrap(key), wrap(context))
        streamed = sealer.update(wrap(data)) + sealer.finalize()
        assert their_open(key, context, streamed) == data
        opener = _native.Opener(wrap(key), wrap(context))
        assert opener.update(wrap(sealed)) + opener.finalize() == data
    finally:
        for mapped in maps:
            mapped.close()


# --- wrong key, wrong context ----------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 40_000])
def test_wrong_key(size: int, key: bytes, rng: random.Random) -> None:
    sealed = _native.seal(key, b"ctx", rng.randbytes(size))
    other = _native.generate_key()
    assert open_error(other, b"ctx", sealed) is WrongKeyError
    assert stream_open_error(other, b"ctx", sealed) is WrongKeyError
    near = bytes([key[0] ^ 1]) + key[1:]
    assert open_error(near, b"ctx", sealed) is WrongKeyError


@pytest.mark.parametrize("size", [0, 1, 40_000])
def test_wrong_context(size: int, key: bytes, rng: random.Random) -> None:
    sealed = _native.seal(key, b"ctx", rng.randbytes(size))
    for wrong in (b"", b"ctx\x00", b"ctX", b"ct"):
        assert open_error(key, wrong, sealed) is WrongKeyError, wrong
        assert stream_open_error(key, wrong, sealed) is WrongKeyError, wrong
    unsealed = _native.seal(key, b"", rng.randbytes(size))
    assert open_error(key, b"ctx", unsealed) is WrongKeyError


# --- single-byte flips --------------------------------------------------------------------


def flip_error(position: int) -> ErrorClass:
    """What a flipped byte must raise: the header is indistinguishable from a wrong key."""
    return WrongKeyError if position < HEADER else TamperedError


def flip_positions(sealed_len: int, rng: random.Random) -> list[int]:
    """Every header byte, the edges of every record and tag (up to 8 records), random others."""
    positions = set(range(min(HEADER, sealed_len)))
    for start in range(HEADER, sealed_len, FULL)[:8]:
        end = min(start + FULL, sealed_len)  # a record and its tag
        positions.update({start, start + 1, end - TAG - 1, end - TAG, end - TAG + 7, end - 1})
    positions.update(rng.randrange(sealed_len) for _ in range(40))
    return sorted(p for p in positions if 0 <= p < sealed_len)


def flipped(sealed: bytes, position: int, mask: int = 0xFF) -> bytes:
    out = bytearray(sealed)
    out[position] ^= mask
    return bytes(out)


@pytest.mark.parametrize("size", [0, 1, 1000, 16383, 16384, 40_000])
def test_flipped_byte(size: int, key: bytes, rng: random.Random) -> None:
    context = b"flip"
    sealed = _native.seal(key, context, rng.randbytes(size))
    wrong = []
    for pos in flip_positions(len(sealed), rng):
        got = open_error(key, context, flipped(sealed, pos))
        if got is not flip_error(pos):
            wrong.append((pos, got))
    assert wrong == [], f"(position, raised) where {len(sealed)}-byte sealed message was flipped"


@pytest.mark.parametrize("size", [0, 1000, 40_000])
def test_flipped_byte_streaming(size: int, key: bytes, rng: random.Random) -> None:
    context = b"flip"
    sealed = _native.seal(key, context, rng.randbytes(size))
    wrong = []
    for pos in flip_positions(len(sealed), rng)[::3]:
        got = stream_open_error(key, context, flipped(sealed, pos))
        if got is not flip_error(pos):
            wrong.append((pos, got))
    assert wrong == [], "(position, raised) where the streaming Opener misclassified a flip"


@pytest.mark.parametrize("context", CONTEXTS, ids=CONTEXT_IDS)
def test_every_byte_flipped_small_message(context: bytes, key: bytes, rng: random.Random) -> None:
    sealed = _native.seal(key, context, rng.randbytes(100))
    assert len(sealed) == HEADER + 100 + TAG
    wrong = []
    for pos in range(len(sealed)):
        for mask in (0x01, 0x80, 0xFF):
            got = open_error(key, context, flipped(sealed, pos, mask))
            if got is not flip_error(pos) or not issubclass(got, IntegrityError):
                wrong.append((pos, mask, got))
    assert wrong == [], "(position, xor mask, raised) for a 100-byte message"


# --- truncation -------------------------------------------------------------------------------


def truncation_error(cut: int) -> ErrorClass:
    """What a sealed message cut to ``cut`` bytes must raise (see fstore.errors).

    Inside the header, on a record boundary or with too few bytes left for the
    final record's tag: TruncatedError. Otherwise the cut falls inside what now
    looks like the final record, whose tag cannot match: TamperedError.
    """
    if cut < HEADER:
        return TruncatedError
    if (cut - HEADER) % FULL < TAG:
        return TruncatedError
    return TamperedError


def test_truncated_inside_header(key: bytes) -> None:
    sealed = _native.seal(key, b"", b"hello" * 100)
    for cut in (0, 1, 23, 24, 55):
        assert open_error(key, b"", sealed[:cut]) is TruncatedError, cut
        assert stream_open_error(key, b"", sealed[:cut]) is TruncatedError, cut


@pytest.mark.parametrize("size", [0, 100, 40_000])
def test_truncated_before_first_tag(size: int, key: bytes, rng: random.Random) -> None:
    sealed = _native.seal(key, b"", rng.randbytes(size))
    for left in range(TAG):  # header plus fewer than 16 bytes
        cut = HEADER + left
        assert open_error(key, b"", sealed[:cut]) is TruncatedError, cut
        assert stream_open_error(key, b"", sealed[:cut]) is TruncatedError, cut


def test_final_record_dropped(key: bytes, rng: random.Random) -> None:
    sealed = _native.seal(key, b"c", rng.randbytes(RECORD))
    assert len(sealed) == HEADER + FULL + TAG  # the final record is empty: just a tag
    dropped = sealed[: HEADER + FULL]
    assert open_error(key, b"c", dropped) is TruncatedError
    assert stream_open_error(key, b"c", dropped) is TruncatedError


@pytest.mark.parametrize("size", [RECORD + 1, 2 * RECORD, 3 * RECORD + 500])
def test_truncated_on_record_boundary(size: int, key: bytes, rng: random.Random) -> None:
    sealed = _native.seal(key, b"c", rng.randbytes(size))
    for boundary in range(HEADER + FULL, len(sealed), FULL):
        assert open_error(key, b"c", sealed[:boundary]) is TruncatedError, boundary
        assert stream_open_error(key, b"c", sealed[:boundary]) is TruncatedError, boundary


def test_cut_inside_last_record(key: bytes, rng: random.Random) -> None:
    sealed = _native.seal(key, b"c", rng.randbytes(40_000))
    last = HEADER + 2 * FULL
    assert len(sealed) - last == 40_000 - 2 * RECORD + TAG
    for cut in (last + TAG, last + 100, len(sealed) - TAG, len(sealed) - 1):
        assert open_error(key, b"c", sealed[:cut]) is TamperedError, cut
        assert stream_open_error(key, b"c", sealed[:cut]) is TamperedError, cut


def test_every_sampled_truncation_fails(key: bytes, rng: random.Random) -> None:
    sealed = _native.seal(key, b"c", rng.randbytes(40_000))
    cuts = set(range(HEADER + 2 * TAG))
    for boundary in range(HEADER, len(sealed), FULL):
        cuts.update(range(boundary - 20, boundary + 21))
    cuts.update(rng.randrange(len(sealed)) for _ in range(60))
    cuts.update({len(sealed) - 1, len(sealed) - TAG, len(sealed) - TAG - 1})
    wrong = []
    for cut in sorted(c for c in cuts if 0 <= c < len(sealed)):
        got = open_error(key, b"c", sealed[:cut])
        if got is None or not issubclass(got, IntegrityError) or got is not truncation_error(cut):
            wrong.append((cut, got))
    assert wrong == [], f"(cut, raised) for a {len(sealed)}-byte sealed message"
    for cut in sorted(cuts)[::7]:
        assert stream_open_error(key, b"c", sealed[:cut]) is truncation_error(cut), cut


# --- extension ----------------------------------------------------------------------------------


def last_record(sealed: bytes) -> bytes:
    return sealed[HEADER + (len(sealed) - HEADER - 1) // FULL * FULL :]


def test_last_record_helper(key: bytes) -> None:
    assert len(last_record(_native.seal(key, b"", b""))) == TAG
    assert len(last_record(_native.seal(key, b"", bytes(RECORD)))) == TAG
    assert len(last_record(_native.seal(key, b"", bytes(RECORD + 5)))) == 5 + TAG


@pytest.mark.parametrize("size", [0, 100, RECORD, 40_000])
@pytest.mark.parametrize("extra", ["1", "16", "100", "copy-of-last-record", "20000"])
def test_trailing_data(size: int, extra: str, key: bytes, rng: random.Random) -> None:
    sealed = _native.seal(key, b"c", rng.randbytes(size))
    suffix = last_record(sealed) if extra == "copy-of-last-record" else rng.randbytes(int(extra))
    extended = sealed + suffix
    assert open_error(key, b"c", extended) is TrailingDataError
    assert stream_open_error(key, b"c", extended) is TrailingDataError


# --- streaming objects' life cycle ----------------------------------------------------------------


def test_sealer_refuses_use_after_finalize(key: bytes) -> None:
    sealer = _native.Sealer(key, b"c")
    sealer.update(b"abc")
    sealer.finalize()
    assert_refuses_use(sealer)


def test_opener_refuses_use_after_finalize(key: bytes) -> None:
    opener = _native.Opener(key, b"c")
    assert opener.update(_native.seal(key, b"c", b"abc")) + opener.finalize() == b"abc"
    assert_refuses_use(opener)


def test_opener_wrong_key_then_dead(key: bytes) -> None:
    sealed = _native.seal(key, b"c", bytes(3 * RECORD))
    opener = _native.Opener(_native.generate_key(), b"c")
    with pytest.raises(WrongKeyError):
        opener.update(sealed)
        opener.finalize()
    assert_refuses_use(opener)


def test_opener_releases_authenticated_records(key: bytes, rng: random.Random) -> None:
    data = rng.randbytes(3 * RECORD + 10)
    sealed = _native.seal(key, b"c", data)
    opener = _native.Opener(key, b"c")
    released = opener.update(sealed[: HEADER + 2 * FULL + 5])
    # Two full records have authenticated (a full record is never the final one).
    assert len(released) >= RECORD
    assert len(released) % RECORD == 0
    assert released == data[: len(released)]
    assert released + opener.update(sealed[HEADER + 2 * FULL + 5 :]) + opener.finalize() == data


# --- argument checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("key_len", [0, 15, 17, 32])
def test_wrong_key_length(key_len: int) -> None:
    bad = bytes(key_len)
    sealed = _native.seal(bytes(16), b"", b"x")
    calls: list[Callable[[], object]] = [
        lambda: _native.seal(bad, b"", b"x"),
        lambda: _native.open(bad, b"", sealed),
        lambda: _native.Sealer(bad, b""),
        lambda: _native.Opener(bad, b""),
    ]
    for call in calls:
        with pytest.raises(InvalidArgumentError) as info:
            call()
        assert isinstance(info.value, ValueError)


def test_sealer_update_into_too_small(key: bytes) -> None:
    sealer = _native.Sealer(key, b"c")
    with pytest.raises(InvalidArgumentError):
        sealer.update_into(bytes(4 * RECORD + 5), bytearray(16))


def test_opener_update_into_too_small(key: bytes) -> None:
    sealed = their_seal(key, b"c", bytes(4 * RECORD + 5))
    opener = _native.Opener(key, b"c")
    with pytest.raises(InvalidArgumentError):
        opener.update_into(sealed, bytearray(16))
