"""Storing files: chunk, seal and replicate every chunk, then the manifest, then the name.

Everything that touches bulk bytes runs in the Rust extension on a worker
thread (it releases the GIL); this module decides where bytes go and bounds
how many chunks are in flight.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Any

from fstore import _native
from fstore.errors import FileTooLargeError, FstoreError
from fstore.formats.capability import Capability
from fstore.formats.leases import LeaseKeys
from fstore.formats.manifest import INLINE_MAX, ChunkRef, Manifest
from fstore.formats.records import NameValue
from fstore.net import wire
from fstore.node.local import LocalBlobs
from fstore.node.metrics import NodeMetrics
from fstore.node.names import Names
from fstore.node.replication import Replicator
from fstore.storage.catalog import Catalog

log = logging.getLogger(__name__)

PIECE_SIZE = 8 * 1024 * 1024
# Chunks being replicated at once during a store: bounds a transfer's memory
# to about this many 4 MiB blobs.
STORE_WINDOW = 6

Source = bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes] | AsyncIterable[bytes]
# Told (name, capability, every blob of the file) once a store's name is written.
OnStored = Callable[[str, str, list[bytes]], Awaitable[None]]


@dataclass(frozen=True)
class StoreResult:
    name: str
    size: int
    blake3: bytes
    capability: str
    chunks: int
    replicas: int
    stored_at: float


class Writer:
    def __init__(
        self,
        namespace_secret: bytes,
        catalog: Catalog,
        local: LocalBlobs,
        replicator: Replicator,
        names: Names,
        metrics: NodeMetrics,
        on_stored: OnStored | None = None,
    ) -> None:
        self._namespace_secret = namespace_secret
        self._lease_keys = LeaseKeys(namespace_secret)
        self._on_stored = on_stored
        self.catalog = catalog
        self.local = local
        self.replicator = replicator
        self.names = names
        self.metrics = metrics

    async def store(
        self,
        name: str,
        source: Source,
        *,
        meta: dict[str, Any] | None = None,
        allow_degraded: bool = False,
    ) -> StoreResult:
        """Store ``source`` under ``name`` with ``replicas`` durable copies of every blob.

        Every blob needs a write quorum of durable copies, or the store fails and
        no name is written (``allow_degraded``: one copy is enough).
        A file of at most INLINE_MAX bytes is carried inside its manifest (one
        blob); a larger one is cut into chunk blobs.
        """
        pieces = _pieces(source)
        head, more = await _head(pieces, INLINE_MAX)
        if not more:
            body = b"".join(head)
            manifest = Manifest(len(body), _native.hash(body), (), meta or {}, inline=body)
            return await self._finish(name, manifest, self.replicator.replicas, allow_degraded)
        chained = _chained(head, pieces)
        return await self._store_chunks(name, chained, meta or {}, allow_degraded)

    async def _store_chunks(
        self,
        name: str,
        pieces: AsyncIterator[bytes | memoryview],
        meta: dict[str, Any],
        allow_degraded: bool,
    ) -> StoreResult:
        pipeline = _native.StorePipeline(self._namespace_secret)
        refs: dict[int, ChunkRef] = {}
        window = asyncio.Semaphore(STORE_WINDOW)
        uploads: set[asyncio.Task[None]] = set()
        failure: list[Exception] = []
        copies = self.replicator.replicas

        async def upload(chunk: _native.SealedChunk) -> None:
            nonlocal copies
            try:
                address, written = await self._put_chunk(chunk, allow_degraded)
                copies = min(copies, written)
                refs[chunk.offset] = ChunkRef(address, chunk.key, chunk.plain_length)
            except Exception as e:
                failure.append(e)
            finally:
                window.release()

        async def dispatch(chunks: list[_native.SealedChunk]) -> None:
            for chunk in chunks:
                await window.acquire()
                if failure:
                    window.release()
                    raise failure[0]
                task = asyncio.create_task(upload(chunk))
                uploads.add(task)
                task.add_done_callback(uploads.discard)

        try:
            async for piece in pieces:
                await dispatch(await asyncio.to_thread(pipeline.feed, piece))
            await dispatch(await asyncio.to_thread(pipeline.finish))
            await asyncio.gather(*uploads)
        finally:
            for task in uploads:
                task.cancel()
        if failure:
            raise failure[0]

        manifest = Manifest(
            pipeline.size,
            pipeline.blake3,
            tuple(refs[offset] for offset in sorted(refs)),
            meta,
        )
        return await self._finish(name, manifest, copies, allow_degraded)

    async def _finish(
        self, name: str, manifest: Manifest, copies: int, allow_degraded: bool
    ) -> StoreResult:
        """Seal and replicate the manifest, then name it; ``copies`` so far for the chunks."""
        file_key = _native.generate_key()
        sealed = manifest.seal(file_key)
        if len(sealed) > wire.MAX_BODY:
            raise FileTooLargeError(
                f"{name!r} has {len(manifest.chunks)} chunks: its manifest exceeds one "
                f"{wire.MAX_BODY}-byte blob (files up to about 70 GB are supported)"
            )
        manifest_address = _native.hash(sealed)
        copies = min(
            copies,
            await self.replicator.put_blob(
                manifest_address,
                sealed,
                allow_degraded=allow_degraded,
                tag=self._lease_keys.tag(manifest_address),
            ),
        )
        capability = str(Capability(manifest_address, file_key))
        stored_at = time.time()
        value = NameValue(name, capability, manifest.size, manifest.blake3, stored_at)
        await self.names.put(value, allow_degraded=allow_degraded)
        if self._on_stored is not None:
            blobs = [manifest_address, *(chunk.address for chunk in manifest.chunks)]
            await self._on_stored(name, capability, blobs)
        self.metrics.stored_bytes.inc(manifest.size)
        log.info(
            "stored %r: %d bytes %s, %d copies",
            name,
            manifest.size,
            "inline" if manifest.inline is not None else f"in {len(manifest.chunks)} chunks",
            copies,
        )
        return StoreResult(
            name,
            manifest.size,
            manifest.blake3,
            capability,
            len(manifest.chunks),
            copies,
            stored_at,
        )

    async def _put_chunk(
        self, chunk: _native.SealedChunk, allow_degraded: bool
    ) -> tuple[bytes, int]:
        """The address a chunk is kept under and its durable copies.

        A chunk this node stored before (same chunk id) reuses that blob, but
        only counts the copies its holders confirm, and is copied where one is
        missing; if that fails, the chunk is stored again as just sealed.
        """
        known = self.catalog.chunk_address(chunk.chunk_id)
        if known is not None and self.local.has(known):
            try:
                confirmed = await self.replicator.confirm_blob(known, allow_degraded=allow_degraded)
                return known, confirmed
            except FstoreError as e:
                log.info("could not reuse blob %s (%s); storing it again", known.hex()[:12], e)
        written = await self.replicator.put_blob(
            chunk.address,
            chunk.sealed,
            allow_degraded=allow_degraded,
            tag=self._lease_keys.tag(chunk.address),
        )
        await self.local.add_chunk(chunk.chunk_id, chunk.address)
        return chunk.address, written


async def _pieces(source: Source) -> AsyncIterator[bytes | memoryview]:
    """Any accepted source as pieces of at most PIECE_SIZE, never the whole file."""
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source)
        for start in range(0, len(view), PIECE_SIZE):
            yield view[start : start + PIECE_SIZE]
    elif isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            async for piece in _read_file(f):
                yield piece
    elif isinstance(source, AsyncIterable):
        async for piece in source:
            yield piece
    else:
        async for piece in _read_file(source):
            yield piece


async def _head(
    pieces: AsyncIterator[bytes | memoryview], limit: int
) -> tuple[list[bytes | memoryview], bool]:
    """The first pieces of a stream, until more than ``limit`` bytes or its end: (pieces,
    whether the stream goes on past ``limit``)."""
    head: list[bytes | memoryview] = []
    size = 0
    async for piece in pieces:
        head.append(piece)
        size += len(piece)
        if size > limit:
            return head, True
    return head, False


async def _chained(
    head: list[bytes | memoryview], rest: AsyncIterator[bytes | memoryview]
) -> AsyncIterator[bytes | memoryview]:
    for piece in head:
        yield piece
    async for piece in rest:
        yield piece


async def _read_file(f: IO[bytes]) -> AsyncIterator[bytes]:
    while piece := await asyncio.to_thread(f.read, PIECE_SIZE):
        yield piece
