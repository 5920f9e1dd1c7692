"""The native store and restore pipelines beside the same steps composed in Python, on 256 MiB.

The Python side is pyfastcdc (``cut_stream`` over 8 MiB reads; or, for ``Chunker``, fstore's
own chunker fed the same pieces), the blake3 package (chunk id, blob address, whole-file hash)
and ``cryptography.cobblestone``; chunk keys come from ``fstore._native.chunk_key`` (a few
hundred tiny calls). ``1core`` hashes on the calling thread only, ``allcores`` lets BLAKE3 use
every core. ``open_blob+add_opened`` is the fetch path: each blob verified and opened in one
call where its holder is chosen, the plaintexts then taken in file order.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from typing_extensions import Buffer

from benches.measure import Bench
from benches.workloads import (
    Stored,
    native_chunker_chunks,
    native_open_blobs,
    native_restore,
    native_store,
    python_restore,
    python_store,
)

STORES: dict[str, Callable[[bytes, Buffer], Stored]] = {
    "native-StorePipeline-1core": lambda s, d: native_store(s, d, parallel=False),
    "native-StorePipeline-allcores": lambda s, d: native_store(s, d, parallel=True),
    "python-composed-1core": lambda s, d: python_store(s, d, parallel=False),
    "python-composed-allcores": lambda s, d: python_store(s, d, parallel=True),
    "python-composed-Chunker-1core": lambda s, d: python_store(
        s, d, parallel=False, chunks=native_chunker_chunks
    ),
}

RESTORES: dict[str, Callable[[Stored], int]] = {
    "native-RestorePipeline-1core": lambda s: native_restore(s, parallel=False),
    "native-RestorePipeline-allcores": lambda s: native_restore(s, parallel=True),
    "native-open_blob+add_opened-1core": native_open_blobs,
    "python-composed-1core": lambda s: python_restore(s, parallel=False),
    "python-composed-allcores": lambda s: python_restore(s, parallel=True),
}


@pytest.mark.benchmark(group="store pipeline, 256 MiB fed in 8 MiB pieces")
@pytest.mark.parametrize("impl", STORES)
def test_store(bench: Bench, impl: str, secret: bytes, data: bytes, stored: Stored) -> None:
    work = STORES[impl]
    result = bench(len(data), lambda: work(secret, data))
    assert (result.chunk_ids, result.size, result.blake3) == (
        stored.chunk_ids,
        stored.size,
        stored.blake3,
    )


@pytest.mark.benchmark(group="restore pipeline, the sealed chunks of 256 MiB")
@pytest.mark.parametrize("impl", RESTORES)
def test_restore(bench: Bench, impl: str, stored: Stored) -> None:
    work = RESTORES[impl]
    assert bench(stored.size, lambda: work(stored)) == stored.size
