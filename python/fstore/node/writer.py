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
from dataclasses import dataclass, field
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

Source = (
    bytes
    | bytearray
    | memoryview
    | str
    | os.PathLike[str]
    | IO[bytes]
    | AsyncIterable[bytes | memoryview]
)


@dataclass
class BlobTally:
    """Blob bytes a store put on the network anew, and those it found already there.

    With ``defer_index`` the (id, address) of each new blob is kept in
    ``new_ids`` for the caller to record in one catalog commit, not one each.
    """

    new: int = 0
    reused: int = 0
    defer_index: bool = False
    new_ids: list[tuple[bytes, bytes]] = field(default_factory=list)
    # Every blob the store uses, new or found, for its leases (a blob may repeat).
    addresses: list[bytes] = field(default_factory=list)


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
        self.on_stored = on_stored
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
        manifest, copies = await self.store_chunks(chained, meta, allow_degraded=allow_degraded)
        return await self._finish(name, manifest, copies, allow_degraded)

    async def store_chunks(
        self,
        source: Source,
        meta: dict[str, Any] | None = None,
        tally: BlobTally | None = None,
        *,
        parallel: bool = True,
        allow_degraded: bool = False,
    ) -> tuple[Manifest, int]:
        """Chunk, seal and replicate ``source``: its manifest (not stored) and the fewest copies.

        ``parallel`` False seals on one core: cheaper for a file of a few chunks.
        """
        pipeline = _native.StorePipeline(self._namespace_secret, parallel=parallel)
        refs: dict[int, ChunkRef] = {}
        window = asyncio.Semaphore(STORE_WINDOW)
        uploads: set[asyncio.Task[None]] = set()
        failure: list[Exception] = []
        copies = self.replicator.replicas

        async def upload(chunk: _native.SealedChunk) -> None:
            nonlocal copies
            try:
                address, written = await self.put_deduplicated(
                    chunk.chunk_id,
                    chunk.address,
                    chunk.sealed,
                    tally,
                    allow_degraded=allow_degraded,
                )
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
            async for piece in _pieces(source):
                await dispatch(await asyncio.to_thread(pipeline.feed, piece))
            await dispatch(await asyncio.to_thread(pipeline.finish))
            await asyncio.gather(*uploads)
        finally:
            for task in uploads:
                task.cancel()
        if failure:
            raise failure[0]
        chunks = tuple(refs[offset] for offset in sorted(refs))
        return Manifest(pipeline.size, pipeline.blake3, chunks, meta or {}), copies

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
        if self.on_stored is not None:
            blobs = [manifest_address, *(chunk.address for chunk in manifest.chunks)]
            await self.on_stored(name, capability, blobs)
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

    async def put_deduplicated(
        self,
        dedup_id: bytes,
        address: bytes,
        blob: bytes,
        tally: BlobTally | None = None,
        *,
        allow_degraded: bool = False,
    ) -> tuple[bytes, int]:
        """The address a blob is kept under and its durable copies.

        A blob this node stored before under the same ``dedup_id`` (a chunk id)
        reuses that blob, wherever it is held (in a network larger than R this node
        holds few of the blobs it stored), but only counts the copies its holders
        confirm, and is copied from here where one is missing and this node has it;
        with too few copies, it is stored again as given.
        """
        tally = tally if tally is not None else BlobTally()
        known = self.catalog.chunk_address(dedup_id)
        if known is not None:
            try:
                copies = await self.replicator.confirm_blob(known, allow_degraded=allow_degraded)
                tally.reused += len(blob)
                tally.addresses.append(known)
                return known, copies
            except FstoreError as e:
                log.info("could not reuse blob %s (%s); storing it again", known.hex()[:12], e)
        written = await self.replicator.put_blob(
            address, blob, allow_degraded=allow_degraded, tag=self._lease_keys.tag(address)
        )
        tally.new += len(blob)
        tally.addresses.append(address)
        if tally.defer_index:
            tally.new_ids.append((dedup_id, address))
        else:
            await self.local.add_chunk(dedup_id, address)
        return address, written


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
        async for item in source:
            yield item
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
