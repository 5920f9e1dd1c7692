"""This node's own copies and catalog rows, written in group commits.

Blobs, their pins, name records and chunk-index rows that arrive while a
commit runs wait for the next one, which writes them all together: the blob
files with one round of fsyncs (``BlobStore.put_many``, files synced in
parallel) and the catalog rows in one SQLite transaction (one commit, one
fsync), both at once. Every waiter is released only after both are durable,
so an acknowledgement never runs ahead of the disk; a node under many
concurrent small writes pays a few fsyncs per batch instead of several per
write.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fstore import _native
from fstore.errors import AddressMismatchError
from fstore.storage.blobs import BlobStore
from fstore.storage.catalog import Catalog
from fstore.storage.common import Version

log = logging.getLogger(__name__)

T = TypeVar("T")

# Blobs up to this size are hashed on the event loop: a thread hop costs more.
HASH_INLINE_MAX = 64 * 1024
# Group commits running at once. A disk takes concurrent fsyncs much faster than
# the same ones in a row, so a write arriving during a commit starts the next one
# rather than waiting for it; only when all are busy do writes gather into batches.
MAX_COMMITS = 4


@dataclass
class _Batch:
    """The writes of one group commit, each with the future its writer waits on."""

    blobs: dict[bytes, bytes | memoryview] = field(default_factory=dict)
    blob_waiters: list[tuple[bytes, asyncio.Future[None]]] = field(default_factory=list)
    records: list[tuple[bytes, bytes, Version, asyncio.Future[bool]]] = field(default_factory=list)
    chunks: list[tuple[bytes, bytes, asyncio.Future[None]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.blob_waiters or self.records or self.chunks)


@dataclass
class _RowsDone:
    """What the catalog transaction of a batch did."""

    kept: list[bool]
    newly_kept: list[bytes]


class LocalBlobs:
    def __init__(self, blobs: BlobStore, catalog: Catalog) -> None:
        self.blobs = blobs
        self.catalog = catalog
        self._pending = _Batch()
        self._commits: set[asyncio.Task[None]] = set()
        self._launch_scheduled = False
        self.commits = 0  # group commits run so far
        # Threads of its own: a commit never queues behind the reads of a get.
        self._executor = ThreadPoolExecutor(2 * MAX_COMMITS, thread_name_prefix="commit")

    # --- writes (durable when they return) ---

    async def put(
        self, address: bytes, blob: bytes | memoryview, *, verified: bool = False
    ) -> None:
        """Keep ``blob`` durably, and pinned (``verified``: its address was computed in
        this process). :class:`AddressMismatchError` if it does not hash to ``address``."""
        if not verified:
            one_core = functools.partial(_native.hash, blob, parallel=False)
            actual = (
                one_core() if len(blob) <= HASH_INLINE_MAX else await asyncio.to_thread(one_core)
            )
            if actual != address:
                raise AddressMismatchError(
                    f"blob of {len(blob)} bytes does not hash to its address {address.hex()}"
                )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.blobs.setdefault(address, blob)
        self._pending.blob_waiters.append((address, future))
        self._start()
        await future

    async def put_record(self, locator: bytes, record: bytes, version: Version) -> bool:
        """Keep ``record`` if ``version`` is higher than the one held; True if kept."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.records.append((locator, record, version, future))
        self._start()
        return await future

    async def add_chunk(self, chunk_id: bytes, address: bytes) -> None:
        """Remember which blob holds chunk ``chunk_id`` (the namespace's dedup index)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.chunks.append((chunk_id, address, future))
        self._start()
        await future

    async def close(self) -> None:
        """Commit what is pending, then let the commit threads go."""
        await self.flush()
        self._executor.shutdown(wait=False)

    async def flush(self) -> None:
        """Wait until every write so far is committed."""
        while self._commits or self._pending:
            if self._commits:
                await asyncio.wait(list(self._commits))
            else:
                await asyncio.sleep(0)  # a launch is scheduled for this tick

    # --- reads ---

    async def load(self, address: bytes) -> bytes | None:
        """The blob, or None; :class:`AddressMismatchError` if the copy here is bad."""
        return await asyncio.to_thread(self.blobs.load, address)

    def has(self, address: bytes) -> bool:
        return self.blobs.has(address)

    # --- group commit ---

    def _start(self) -> None:
        """Commit what is pending once this tick's other writes have joined it."""
        if not self._launch_scheduled:
            self._launch_scheduled = True
            asyncio.get_running_loop().call_soon(self._launch)

    def _launch(self) -> None:
        self._launch_scheduled = False
        if self._pending and len(self._commits) < MAX_COMMITS:
            batch, self._pending = self._pending, _Batch()
            task = asyncio.create_task(self._commit(batch))
            self._commits.add(task)
            task.add_done_callback(self._committed)

    def _committed(self, task: asyncio.Task[None]) -> None:
        self._commits.discard(task)
        if self._pending:
            self._launch()

    async def _commit(self, batch: _Batch) -> None:
        """Write the batch's blobs and rows at once; release each waiter with its outcome.

        Records and chunk rows are released once the catalog commit is durable;
        blobs once their files and their pins both are.
        """
        blobs = list(batch.blobs.items())
        self.commits += 1
        writing = (
            self._in_thread(functools.partial(self.blobs.put_many, blobs, verified=True))
            if blobs
            else None
        )
        rows: _RowsDone | BaseException
        try:
            rows = await self._in_thread(functools.partial(self._write_rows, batch))
        except Exception as e:
            rows = e
        row_error = rows if isinstance(rows, BaseException) else None
        kept = rows.kept if isinstance(rows, _RowsDone) else [False] * len(batch.records)
        for (*_, record_future), was_kept in zip(batch.records, kept, strict=True):
            _settle(record_future, was_kept, row_error)
        for *_, chunk_future in batch.chunks:
            _settle(chunk_future, None, row_error)
        if writing is None:
            return
        blob_error: BaseException | None = None
        try:
            await writing
        except Exception as e:
            blob_error = e
            if isinstance(rows, _RowsDone) and rows.newly_kept:
                await self._unpin(rows.newly_kept)
        for _, future in batch.blob_waiters:
            _settle(future, None, blob_error or row_error)

    def _in_thread(self, work: Callable[[], T]) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._executor, work)

    def _write_rows(self, batch: _Batch) -> _RowsDone:
        """Pins, records and chunk rows of a batch in one transaction (a worker thread)."""
        with self.catalog.transaction():
            newly_kept = [address for address in batch.blobs if self.catalog.mark_kept(address)]
            kept = [self.catalog.put_record(loc, rec, ver) for loc, rec, ver, _ in batch.records]
            for chunk_id, address, _ in batch.chunks:
                self.catalog.add_chunk(chunk_id, address)
        return _RowsDone(kept, newly_kept)

    async def _unpin(self, addresses: list[bytes]) -> None:
        """Take back the pins of blobs whose write failed (they were pinned alongside)."""

        def unpin_all() -> None:
            with self.catalog.transaction():
                for address in addresses:
                    self.catalog.unmark_kept(address)

        try:
            await self._in_thread(unpin_all)
        except Exception as e:  # the write's own error is what the waiters get
            log.warning("could not unpin %d blobs whose write failed: %s", len(addresses), e)


def _settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if future.done():  # its waiter was cancelled; the write went ahead anyway
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
