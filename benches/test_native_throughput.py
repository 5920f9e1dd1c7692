"""The native primitives beside the blake3 package, pyfastcdc and cryptography, on 256 MiB.

``1core`` runs on the calling thread only; ``allcores`` lets BLAKE3 use every core.
Sealing and opening count plaintext bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import blake3
import pytest
from cryptography.cobblestone import Cobblestone128Decryptor, Cobblestone128Encryptor
from typing_extensions import Buffer

from benches.measure import Bench
from benches.workloads import (
    PIECE,
    MiB,
    StreamFactory,
    native_cut_points,
    pyfastcdc_buffer_cut_points,
    pyfastcdc_stream_cut_points,
    stream_into,
    stream_oneshot,
    stream_update,
)
from fstore import _native

AUTO = blake3.blake3.AUTO
CONTEXT = _native.CHUNK_CONTEXT

HASHES: dict[str, Callable[[Buffer], bytes]] = {
    "native-1core": lambda data: _native.hash(data, parallel=False),
    "native-allcores": lambda data: _native.hash(data),
    "blake3-1core": lambda data: blake3.blake3(data).digest(),
    "blake3-allcores": lambda data: blake3.blake3(data, max_threads=AUTO).digest(),
}

FILE_HASHES: dict[str, Callable[[Path], bytes]] = {
    "native-hash_file-1core": lambda path: _native.hash_file(path, parallel=False),
    "native-hash_file-allcores": lambda path: _native.hash_file(path),
    "blake3-update_mmap-1core": lambda path: blake3.blake3().update_mmap(path).digest(),
    "blake3-update_mmap-allcores": (
        lambda path: blake3.blake3(max_threads=AUTO).update_mmap(path).digest()
    ),
}

CUT_POINTS: dict[str, Callable[[Buffer], list[int]]] = {
    "native-Chunker-8MiB-pieces": native_cut_points,
    "native-Chunker-whole": lambda data: native_cut_points(data, piece=len(memoryview(data))),
    "pyfastcdc-cut_stream-8MiB-reads": pyfastcdc_stream_cut_points,
    "pyfastcdc-cut_buf-whole": pyfastcdc_buffer_cut_points,
}

CobblestoneWork = Callable[[bytes, Buffer, bytearray], int]
"""``(key, input, reused output buffer) -> bytes out``."""


def cobblestone_workloads(
    native: StreamFactory,
    native_oneshot: Callable[[bytes, bytes, Buffer], bytes],
    reference: StreamFactory,
) -> dict[str, CobblestoneWork]:
    """Streaming into a reused buffer, streaming into fresh bytes and one call, both sides."""
    per = f"{PIECE // MiB}MiB"
    return {
        f"native-update_into-{per}": lambda k, d, out: stream_into(native(k, CONTEXT), d, out),
        f"native-update-{per}": lambda k, d, _: stream_update(native(k, CONTEXT), d),
        f"native-{native_oneshot.__name__}()-oneshot": (
            lambda k, d, _: len(native_oneshot(k, CONTEXT, d))
        ),
        f"cryptography-update_into-{per}": (
            lambda k, d, out: stream_into(reference(k, CONTEXT), d, out)
        ),
        f"cryptography-update-{per}": lambda k, d, _: stream_update(reference(k, CONTEXT), d),
        "cryptography-update-oneshot": lambda k, d, _: stream_oneshot(reference(k, CONTEXT), d),
    }


SEALS = cobblestone_workloads(_native.Sealer, _native.seal, Cobblestone128Encryptor)
OPENS = cobblestone_workloads(_native.Opener, _native.open, Cobblestone128Decryptor)


@pytest.fixture(scope="module")
def cut_points(data: bytes) -> list[int]:
    """The reference chunk boundaries of ``data`` (pyfastcdc, whole buffer)."""
    return pyfastcdc_buffer_cut_points(data)


@pytest.mark.benchmark(group="BLAKE3, 256 MiB in memory")
@pytest.mark.parametrize("impl", HASHES)
def test_hash(bench: Bench, impl: str, data: bytes, digest: bytes) -> None:
    work = HASHES[impl]
    assert bench(len(data), lambda: work(data)) == digest


@pytest.mark.benchmark(group="BLAKE3, 256 MiB file in the page cache")
@pytest.mark.parametrize("impl", FILE_HASHES)
def test_hash_file(bench: Bench, impl: str, data_file: Path, data: bytes, digest: bytes) -> None:
    work = FILE_HASHES[impl]
    assert bench(len(data), lambda: work(data_file)) == digest


@pytest.mark.benchmark(group="FastCDC 2020, 256 KiB / 1 MiB / 4 MiB, 256 MiB")
@pytest.mark.parametrize("impl", CUT_POINTS)
def test_chunk(bench: Bench, impl: str, data: bytes, cut_points: list[int]) -> None:
    work = CUT_POINTS[impl]
    assert bench(len(data), lambda: work(data)) == cut_points


@pytest.mark.benchmark(group="Cobblestone-128 seal, 256 MiB")
@pytest.mark.parametrize("impl", SEALS)
def test_seal(bench: Bench, impl: str, key: bytes, data: bytes, out_buffer: bytearray) -> None:
    work = SEALS[impl]
    sealed_bytes = bench(len(data), lambda: work(key, data, out_buffer))
    assert sealed_bytes == _native.sealed_length(len(data))


@pytest.mark.benchmark(group="Cobblestone-128 open, 256 MiB")
@pytest.mark.parametrize("impl", OPENS)
def test_open(
    bench: Bench, impl: str, key: bytes, sealed: bytes, data: bytes, out_buffer: bytearray
) -> None:
    work = OPENS[impl]
    assert bench(len(data), lambda: work(key, sealed, out_buffer)) == len(data)
