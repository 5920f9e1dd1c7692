"""FastCDC (2020) in ``fstore._native``: bounds, determinism, split independence, resilience."""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable

import blake3 as blake3_ref
import pyfastcdc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fstore import _native
from fstore.errors import InvalidArgumentError

KiB = 1024
MiB = 1024 * KiB

DEFAULTS = (256 * KiB, MiB, 4 * MiB)
SMALL = (4 * KiB, 16 * KiB, 64 * KiB)  # many chunks from little data
DATA_LEN = 3 * MiB + 12_345


@functools.cache
def sample_data() -> bytes:
    return random.Random(20_240_601).randbytes(DATA_LEN)


@functools.cache
def sample_offsets() -> tuple[int, ...]:
    return tuple(chunk_whole(sample_data(), SMALL))


def chunk_whole(
    data: bytes | bytearray | memoryview, sizes: tuple[int, int, int] = DEFAULTS
) -> list[int]:
    chunker = _native.Chunker(*sizes)
    return chunker.update(data) + chunker.finish()


def chunk_pieces(data: bytes, cuts: Iterable[int], sizes: tuple[int, int, int]) -> list[int]:
    """Feed ``data`` split at ``cuts``; checks each update only reports completed chunks."""
    chunker = _native.Chunker(*sizes)
    view = memoryview(data)
    offsets: list[int] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        completed = chunker.update(view[start:cut])
        assert all(offset <= cut for offset in completed), "a chunk ends beyond the data fed"
        offsets += completed
        start = max(start, cut)
    return offsets + chunker.finish()


def chunk_sizes(offsets: list[int]) -> list[int]:
    return [end - start for start, end in zip([0, *offsets], offsets, strict=False)]


def check_bounds(offsets: list[int], total: int, sizes: tuple[int, int, int]) -> None:
    min_size, _, max_size = sizes
    assert offsets == sorted(set(offsets)), "offsets must strictly increase"
    assert offsets[-1] == total
    lengths = chunk_sizes(offsets)
    assert all(min_size <= n <= max_size for n in lengths[:-1]), (min_size, max_size)
    assert 0 < lengths[-1] <= max_size


# --- parameters --------------------------------------------------------------------


def test_default_sizes() -> None:
    constants = (_native.DEFAULT_MIN_SIZE, _native.DEFAULT_AVG_SIZE, _native.DEFAULT_MAX_SIZE)
    assert constants == (256 * KiB, MiB, 4 * MiB)
    chunker = _native.Chunker()
    assert (chunker.min_size, chunker.avg_size, chunker.max_size) == DEFAULTS


def test_sizes_are_kept() -> None:
    chunker = _native.Chunker(*SMALL)
    assert (chunker.min_size, chunker.avg_size, chunker.max_size) == SMALL
    chunker = _native.Chunker(min_size=64, avg_size=256, max_size=1024)
    assert (chunker.min_size, chunker.avg_size, chunker.max_size) == (64, 256, 1024)


@pytest.mark.parametrize(
    "sizes",
    [(64, 256, KiB), (MiB, 4 * MiB, 16 * MiB), (64, 4 * MiB, 16 * MiB), (MiB // 2, MiB, 2 * MiB)],
)
def test_extreme_valid_sizes(sizes: tuple[int, int, int], rng: random.Random) -> None:
    data = rng.randbytes(100_000)
    check_bounds(chunk_whole(data, sizes), len(data), sizes)


@pytest.mark.parametrize(
    "sizes",
    [
        pytest.param((3000, 16 * KiB, 64 * KiB), id="min-not-pow2"),
        pytest.param((4 * KiB, 10_000, 64 * KiB), id="avg-not-pow2"),
        pytest.param((4 * KiB, 16 * KiB, 65_000), id="max-not-pow2"),
        pytest.param((16 * KiB, 16 * KiB, 64 * KiB), id="min-eq-avg"),
        pytest.param((32 * KiB, 16 * KiB, 64 * KiB), id="min-gt-avg"),
        pytest.param((4 * KiB, 64 * KiB, 64 * KiB), id="avg-eq-max"),
        pytest.param((4 * KiB, 128 * KiB, 64 * KiB), id="avg-gt-max"),
        pytest.param((32, 256, KiB), id="min-too-small"),
        pytest.param((2 * MiB, 4 * MiB, 16 * MiB), id="min-too-large"),
        pytest.param((64, 128, KiB), id="avg-too-small"),
        pytest.param((MiB, 8 * MiB, 16 * MiB), id="avg-too-large"),
        pytest.param((64, 256, 512), id="max-too-small"),
        pytest.param((MiB, 4 * MiB, 32 * MiB), id="max-too-large"),
        pytest.param((0, 16 * KiB, 64 * KiB), id="min-zero"),
        pytest.param((4 * KiB, 0, 64 * KiB), id="avg-zero"),
        pytest.param((4 * KiB, 16 * KiB, 0), id="max-zero"),
        pytest.param((-4096, 16 * KiB, 64 * KiB), id="min-negative"),
        pytest.param((4 * KiB, -16384, 64 * KiB), id="avg-negative"),
        pytest.param((4 * KiB, 16 * KiB, -65536), id="max-negative"),
    ],
)
def test_invalid_sizes(sizes: tuple[int, int, int]) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        _native.Chunker(*sizes)
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidArgumentError):
        _native.Chunker(min_size=sizes[0], avg_size=sizes[1], max_size=sizes[2])


# --- cut points ----------------------------------------------------------------------


def test_chunk_sizes_within_bounds_small() -> None:
    offsets = list(sample_offsets())
    check_bounds(offsets, DATA_LEN, SMALL)
    assert len(offsets) > 60  # enough chunks for the property to mean something


def test_chunk_sizes_within_bounds_defaults(rng: random.Random) -> None:
    data = rng.randbytes(24 * MiB + 5)
    offsets = chunk_whole(data)
    check_bounds(offsets, len(data), DEFAULTS)
    assert 8 <= len(offsets) <= 96


def test_low_entropy_data_respects_max(rng: random.Random) -> None:
    zeros = bytes(300 * KiB)
    check_bounds(chunk_whole(zeros, SMALL), len(zeros), SMALL)
    repeated = rng.randbytes(100) * 5000
    check_bounds(chunk_whole(repeated, SMALL), len(repeated), SMALL)


@pytest.mark.parametrize(
    "length", [1, 63, 4 * KiB - 1, 4 * KiB, 4 * KiB + 1, 64 * KiB, 64 * KiB + 1, 200_001]
)
def test_last_offset_is_total_length(length: int, rng: random.Random) -> None:
    data = rng.randbytes(length)
    offsets = chunk_whole(data, SMALL)
    check_bounds(offsets, length, SMALL)
    if length <= SMALL[0]:
        assert offsets == [length]


def test_last_chunk_may_be_short() -> None:
    data = sample_data()
    offsets = list(sample_offsets())
    # Cut the stream 100 bytes after a boundary: the last chunk is then 100 bytes long.
    end = offsets[len(offsets) // 2] + 100
    shorter = chunk_whole(data[:end], SMALL)
    assert shorter == [*offsets[: len(offsets) // 2 + 1], end]
    assert chunk_sizes(shorter)[-1] == 100 < SMALL[0]


def test_deterministic() -> None:
    data = sample_data()
    assert tuple(chunk_whole(data, SMALL)) == sample_offsets()
    assert chunk_whole(data, SMALL) == chunk_whole(bytearray(data), SMALL)
    assert chunk_whole(data, SMALL) == chunk_whole(memoryview(data), SMALL)


def test_finish_on_empty_input() -> None:
    assert _native.Chunker().finish() == []
    chunker = _native.Chunker(*SMALL)
    assert chunker.update(b"") == []
    assert chunker.finish() == []


def test_empty_updates_are_harmless() -> None:
    data = sample_data()
    chunker = _native.Chunker(*SMALL)
    offsets: list[int] = []
    view = memoryview(data)
    for start in range(0, len(data), 100_000):
        offsets += chunker.update(b"")
        offsets += chunker.update(view[start : start + 100_000])
        offsets += chunker.update(bytearray())
    offsets += chunker.finish()
    assert tuple(offsets) == sample_offsets()


def test_cuts_are_reported_as_soon_as_they_are_certain() -> None:
    chunker = _native.Chunker(*SMALL)
    first = chunker.update(sample_data())
    last = chunker.finish()
    assert (*first, *last) == sample_offsets()
    # Only the end of the stream can decide the last chunks (a cut needs one more byte).
    assert 1 <= len(last) <= 2


def test_stream_ending_right_after_a_cutting_byte() -> None:
    """FastCDC cuts before the byte whose hash hits; it tests bytes in pairs, so
    when the stream ends just after that byte, the cut holds only if the last
    chunk then has an even length. Ending there, or pausing there, must agree
    with pyfastcdc on the whole stream."""
    data = sample_data()
    offsets = sample_offsets()
    lengths = chunk_sizes(list(offsets))
    cuts = [(end, length) for end, length in zip(offsets, lengths, strict=True)]
    hit_cuts = [(end, n) for end, n in cuts[:-1] if n < SMALL[2]]  # not forced by max_size
    for parity in (0, 1):
        end, _ = next((end, n) for end, n in hit_cuts if n % 2 == parity)
        stream = data[: end + 1]
        expected = pyfastcdc_offsets(stream, SMALL)
        assert chunk_whole(stream, SMALL) == expected
        assert chunk_pieces(stream, [end], SMALL) == expected
        assert chunk_pieces(data, [end + 1], SMALL) == list(offsets)


def test_tiny_pieces(rng: random.Random) -> None:
    data = sample_data()
    cuts: list[int] = []
    pos = 0
    while pos < 200_000:  # the first 200 KB in pieces of 1 to 64 bytes, then the rest at once
        pos += rng.randint(1, 64)
        cuts.append(pos)
    assert tuple(chunk_pieces(data, cuts, SMALL)) == sample_offsets()


@settings(max_examples=50, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=DATA_LEN), max_size=60))
def test_split_independence(cuts: list[int]) -> None:
    assert tuple(chunk_pieces(sample_data(), cuts, SMALL)) == sample_offsets()


@settings(max_examples=20, deadline=None)
@given(
    piece=st.integers(min_value=500, max_value=300_000),
    sizes=st.sampled_from([SMALL, (64, 256, KiB), (8 * KiB, 64 * KiB, 256 * KiB)]),
)
def test_regular_pieces(piece: int, sizes: tuple[int, int, int]) -> None:
    data = sample_data()[: MiB + 7]
    expected = chunk_whole(data, sizes)
    assert chunk_pieces(data, range(piece, len(data), piece), sizes) == expected


# --- against pyfastcdc (FastCDC 2020, normalization level 1, like fastcdc-rs v2020) --------


def pyfastcdc_offsets(data: bytes, sizes: tuple[int, int, int]) -> list[int]:
    cdc = pyfastcdc.FastCDC(sizes[1], min_size=sizes[0], max_size=sizes[2], normalized_chunking=1)
    return [chunk.offset + chunk.length for chunk in cdc.cut_buf(data)]


@pytest.mark.parametrize(
    "sizes",
    [SMALL, DEFAULTS, (64, 256, KiB), (8 * KiB, 64 * KiB, 256 * KiB), (MiB, 4 * MiB, 16 * MiB)],
    ids=["small", "defaults", "smallest", "medium", "largest"],
)
def test_matches_pyfastcdc(sizes: tuple[int, int, int], rng: random.Random) -> None:
    data = rng.randbytes(20 * MiB + 7)
    expected = pyfastcdc_offsets(data, sizes)
    assert chunk_whole(data, sizes) == expected
    assert chunk_pieces(data, range(12_345, len(data), 777_777), sizes) == expected


def test_matches_pyfastcdc_low_entropy(rng: random.Random) -> None:
    for data in (bytes(MiB), rng.randbytes(100) * 10_000, b"ab" * 300_000):
        assert chunk_whole(data, SMALL) == pyfastcdc_offsets(data, SMALL)


# --- shift resilience ---------------------------------------------------------------------------


def chunk_digests(data: bytes, offsets: list[int]) -> list[bytes]:
    view = memoryview(data)
    starts = [0, *offsets[:-1]]
    return [blake3_ref.blake3(view[a:b]).digest() for a, b in zip(starts, offsets, strict=True)]


def test_shift_resilience() -> None:
    original = random.Random(64).randbytes(64 * MiB)
    edited = original[:1000] + b"INSERTD" + original[1000:]
    before = chunk_digests(original, chunk_whole(original))
    after = set(chunk_digests(edited, chunk_whole(edited)))
    assert 30 <= len(before) <= 100
    kept = sum(digest in after for digest in before)
    assert before[0] not in after  # the chunk holding the insertion must change
    assert kept / len(before) >= 0.9, f"only {kept} of {len(before)} chunks survived the insertion"
