"""The work the benchmarks time: native calls and their pure-Python / third-party equivalents.

Every streaming workload is fed the same way, in :data:`PIECE`-sized pieces, through
:func:`pieces`, so native and reference paths differ only in what they do with each piece.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import blake3
import pyfastcdc
from cryptography.cobblestone import Cobblestone128Decryptor, Cobblestone128Encryptor
from typing_extensions import Buffer

from fstore import _native

KiB = 1024
MiB = 1024 * KiB
PIECE = 8 * MiB
"""How much the benchmarks hand to a streaming object per call: the real hot-path pattern."""
CDC_SIZES = (256 * KiB, MiB, 4 * MiB)
"""FastCDC min/avg/max sizes, the fstore defaults."""


def pieces(data: Buffer, size: int = PIECE) -> Iterator[memoryview]:
    """``data`` as consecutive zero-copy views of ``size`` bytes (the last may be shorter)."""
    view = memoryview(data)
    return (view[pos : pos + size] for pos in range(0, len(view), size))


# --- Streaming seal / open --------------------------------------------------------------


class Stream(Protocol):
    """What ``Sealer``, ``Opener`` and the ``cryptography`` Cobblestone classes share."""

    def update(self, data: memoryview, /) -> bytes: ...
    def update_into(self, data: memoryview, buf: bytearray, /) -> int: ...
    def finalize(self) -> bytes: ...


StreamFactory = Callable[[bytes, bytes], Stream]
"""``(key, context) -> stream``: a sealer or opener class."""


def stream_into(stream: Stream, data: Buffer, out: bytearray) -> int:
    """Feed ``data`` piece by piece, writing every output into the reused ``out``; bytes out."""
    total = sum(stream.update_into(piece, out) for piece in pieces(data))
    return total + len(stream.finalize())


def stream_update(stream: Stream, data: Buffer) -> int:
    """Feed ``data`` piece by piece, each output a fresh ``bytes``; bytes out."""
    total = sum(len(stream.update(piece)) for piece in pieces(data))
    return total + len(stream.finalize())


def stream_oneshot(stream: Stream, data: Buffer) -> int:
    """Feed all of ``data`` in one call (one fresh output as large as the input); bytes out."""
    return len(stream.update(memoryview(data))) + len(stream.finalize())


# --- Chunking ---------------------------------------------------------------------------


def native_cut_points(data: Buffer, piece: int = PIECE) -> list[int]:
    """End offsets of fstore's push-style chunker fed ``piece``-sized pieces."""
    chunker = _native.Chunker(*CDC_SIZES)
    ends: list[int] = []
    for part in pieces(data, piece):
        ends += chunker.update(part)
    return ends + chunker.finish()


def pyfastcdc_chunker() -> pyfastcdc.FastCDC:
    """pyfastcdc's FastCDC 2020 with fstore's sizes."""
    min_size, avg_size, max_size = CDC_SIZES
    return pyfastcdc.FastCDC(avg_size, min_size=min_size, max_size=max_size)


class PieceReader:
    """A ``readinto`` stream over ``data`` that returns at most :data:`PIECE` bytes per call."""

    def __init__(self, data: Buffer) -> None:
        self._views = pieces(data)
        self._rest = memoryview(b"")

    def readinto(self, buf: memoryview) -> int:
        if not self._rest:
            self._rest = next(self._views, memoryview(b""))
        count = min(len(buf), len(self._rest))
        buf[:count] = self._rest[:count]
        self._rest = self._rest[count:]
        return count


def pyfastcdc_stream_chunks(data: Buffer) -> Iterator[memoryview]:
    """Chunks of ``data`` by pyfastcdc reading it in pieces (each view valid until the next)."""
    return (chunk.data for chunk in pyfastcdc_chunker().cut_stream(PieceReader(data)))


def pyfastcdc_stream_cut_points(data: Buffer) -> list[int]:
    """End offsets of pyfastcdc reading ``data`` in pieces (each read copied into its buffer)."""
    return ends_of(len(chunk) for chunk in pyfastcdc_stream_chunks(data))


def pyfastcdc_buffer_cut_points(data: Buffer) -> list[int]:
    """End offsets of pyfastcdc cutting the whole in-memory buffer at once (zero-copy)."""
    return ends_of(chunk.length for chunk in pyfastcdc_chunker().cut_buf(memoryview(data)))


def ends_of(lengths: Iterable[int]) -> list[int]:
    """Chunk end offsets from chunk lengths."""
    ends: list[int] = []
    end = 0
    for length in lengths:
        end += length
        ends.append(end)
    return ends


# --- Store and restore pipelines --------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    """One sealed chunk as the restore side receives it."""

    address: bytes
    key: bytes
    sealed: bytes
    plain_length: int


@dataclass
class Stored:
    """What storing a file produced: enough to check it and (with ``blobs``) to restore it."""

    chunk_ids: list[bytes] = field(default_factory=list)
    blobs: list[Blob] = field(default_factory=list)
    size: int = 0
    blake3: bytes = b""


def native_store(
    secret: bytes, data: Buffer, *, parallel: bool, keep_blobs: bool = False
) -> Stored:
    """``StorePipeline`` fed pieces; the sealed chunks are dropped after each feed unless kept."""
    pipeline = _native.StorePipeline(secret, parallel=parallel)
    stored = Stored()

    def take(chunks: list[_native.SealedChunk]) -> None:
        stored.chunk_ids.extend(chunk.chunk_id for chunk in chunks)
        if keep_blobs:
            stored.blobs.extend(
                Blob(chunk.address, chunk.key, chunk.sealed, chunk.plain_length) for chunk in chunks
            )

    for piece in pieces(data):
        take(pipeline.feed(piece))
    take(pipeline.finish())
    stored.size, stored.blake3 = pipeline.size, pipeline.blake3
    return stored


def threads(parallel: bool) -> int:
    """The ``max_threads`` argument of the blake3 package for one core or all cores."""
    return blake3.blake3.AUTO if parallel else 1


def native_chunker_chunks(data: Buffer) -> Iterator[memoryview]:
    """Chunks of ``data`` by fstore's ``Chunker`` fed pieces (zero-copy views of ``data``)."""
    view = memoryview(data)
    chunker = _native.Chunker(*CDC_SIZES)
    start = 0
    for piece in pieces(data):
        for end in chunker.update(piece):
            yield view[start:end]
            start = end
    for end in chunker.finish():
        yield view[start:end]
        start = end


def python_store(
    secret: bytes,
    data: Buffer,
    *,
    parallel: bool,
    chunks: Callable[[Buffer], Iterable[memoryview]] = pyfastcdc_stream_chunks,
) -> Stored:
    """The store pipeline composed in Python: pyfastcdc (or ``chunks``), blake3 package,
    cryptography."""
    max_threads = threads(parallel)
    id_key = _native.chunk_id_key(secret)
    whole = blake3.blake3(max_threads=max_threads)
    stored = Stored()
    for chunk in chunks(data):
        whole.update(chunk)
        chunk_id = blake3.blake3(chunk, key=id_key, max_threads=max_threads).digest()
        sealer = Cobblestone128Encryptor(_native.chunk_key(secret, chunk_id), _native.CHUNK_CONTEXT)
        sealed = bytearray(_native.sealed_length(len(chunk)))  # the blob, its own object
        written = sealer.update_into(chunk, sealed)
        sealed[written:] = sealer.finalize()
        blake3.blake3(sealed, max_threads=max_threads).digest()  # the blob's address
        stored.chunk_ids.append(chunk_id)
        stored.size += len(chunk)
    stored.blake3 = whole.digest()
    return stored


def native_restore(stored: Stored, *, parallel: bool) -> int:
    """``RestorePipeline`` over every blob, checked against size and BLAKE3; bytes restored."""
    pipeline = _native.RestorePipeline(parallel=parallel)
    for blob in stored.blobs:
        pipeline.open_chunk(blob.address, blob.key, blob.sealed, blob.plain_length)
    pipeline.finish(stored.size, stored.blake3)
    return pipeline.size


def native_open_blobs(stored: Stored) -> int:
    """``open_blob`` for every blob (the fetch path), then ``add_opened`` in order; bytes."""
    pipeline = _native.RestorePipeline(parallel=False)
    for blob in stored.blobs:
        pipeline.add_opened(
            _native.open_blob(blob.address, blob.key, blob.sealed, blob.plain_length)
        )
    pipeline.finish(stored.size, stored.blake3)
    return pipeline.size


def python_restore(stored: Stored, *, parallel: bool) -> int:
    """The restore pipeline composed in Python: blake3 verify, cryptography open, file hash."""
    max_threads = threads(parallel)
    whole = blake3.blake3(max_threads=max_threads)
    size = 0
    for blob in stored.blobs:
        if blake3.blake3(blob.sealed, max_threads=max_threads).digest() != blob.address:
            raise ValueError("address mismatch")
        opener = Cobblestone128Decryptor(blob.key, _native.CHUNK_CONTEXT)
        plain = opener.update(blob.sealed) + opener.finalize()
        whole.update(plain)
        size += len(plain)
    if (size, whole.digest()) != (stored.size, stored.blake3):
        raise ValueError("file mismatch")
    return size
