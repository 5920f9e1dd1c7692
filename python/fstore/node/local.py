"""This node's own copies and catalog rows, written in group commits.

Blobs, their kept marks and leases, name records and chunk-index rows that arrive while a
commit runs wait for the next one, which writes them all together: the blob
files with one round of fsyncs (``BlobStore.put_many``, files synced in
parallel) and the catalog rows in one SQLite transaction (one commit, one
fsync), both at once. Small blobs are catalog rows themselves
(``fstore.storage.smallblobs``) and go in that same transaction, so a batch of
small writes costs one fsync. Every waiter is released only after what it
wrote is durable, so an acknowledgement never runs ahead of the disk; a node
under many concurrent small writes pays a few fsyncs per batch instead of
several per write.

A batch of rows alone (no blob files) commits on the event loop's own thread
while the disk answers quickly: the two thread hops around a commit of a third
of a millisecond cost more CPU than the commit itself. Only when no other thread
is writing to the catalog (the loop never waits for a lock), and not for a while
after any commit took longer than ``LOOP_COMMIT_LIMIT``: a stalling disk then
blocks the loop at most once in ``LOOP_COMMIT_PAUSE``.

Collection (:meth:`LocalBlobs.collect`) keeps the same order: it never takes a
blob a put is writing, and a put of a blob being collected waits for the
collection, then writes the blob again. The storage limit is checked here too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fstore import _native
from fstore.errors import AddressMismatchError, StorageFullError
from fstore.formats.leases import ANONYMOUS_TAG
from fstore.node.metrics import NodeMetrics
from fstore.storage.blobs import BlobStore
from fstore.storage.catalog import HELD, RELEASED, Catalog
from fstore.storage.common import Version

log = logging.getLogger(__name__)

T = TypeVar("T")

# Blobs up to this size are hashed on the event loop: a thread hop costs more.
HASH_INLINE_MAX = 64 * 1024
# Group commits running at once. A disk takes concurrent fsyncs much faster than
# the same ones in a row, so a write arriving during a commit starts the next one
# rather than waiting for it; only when all are busy do writes gather into batches.
MAX_COMMITS = 4
GC_GRACE = 6 * 3600.0  # upload and released leases lapse after this
LEASE_PERIOD = 30 * 24 * 3600.0  # a hold lapses after this unless renewed
COLLECT_BATCH = 1000  # blobs collected per pair of catalog commits
# A commit slower than this sends row commits to the commit threads for the pause.
LOOP_COMMIT_LIMIT = 0.025  # seconds; a commit takes 0.3 ms here, 20 ms at worst under load
LOOP_COMMIT_PAUSE = 30.0  # seconds


@dataclass
class _Batch:
    """The writes of one group commit, each with the future its writer waits on."""

    blobs: dict[bytes, bytes | memoryview] = field(default_factory=dict)
    blob_waiters: list[tuple[bytes, asyncio.Future[None]]] = field(default_factory=list)
    uploads: set[tuple[bytes, bytes]] = field(default_factory=set)  # (address, tag)
    records: list[tuple[bytes, bytes, Version, asyncio.Future[bool]]] = field(default_factory=list)
    chunks: list[tuple[bytes, bytes, asyncio.Future[None]]] = field(default_factory=list)
    # (state, [(address, tag)], stamp, future): holds and releases
    leases: list[tuple[int, list[tuple[bytes, bytes]], int, asyncio.Future[None]]] = field(
        default_factory=list
    )

    def __bool__(self) -> bool:
        return bool(self.blob_waiters or self.records or self.chunks or self.leases)


@dataclass
class _RowsDone:
    """What the catalog transaction of a batch did."""

    kept: list[bool]  # each record's
    newly_kept: list[bytes]
    new_row_bytes: int  # of the small blobs added as rows


class LocalBlobs:
    def __init__(
        self,
        blobs: BlobStore,
        catalog: Catalog,
        *,
        grace: float = GC_GRACE,
        lease_period: float = LEASE_PERIOD,
        max_storage: int | None = None,
        clock: Callable[[], float] = time.time,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.blobs = blobs
        self.metrics = metrics if metrics is not None else NodeMetrics()
        self.catalog = catalog
        self.grace = grace
        self.lease_period = lease_period
        self.max_storage = max_storage
        self.clock = clock
        self.used_bytes = 0  # blob bytes on disk; counted by count_used() at start
        self._incoming_bytes = 0  # of puts not yet committed
        self._writing: dict[bytes, int] = {}  # address → puts of it not yet committed
        self._collecting: set[bytes] = set()
        self._collected = asyncio.Event()
        self._pending = _Batch()
        self._commits: set[asyncio.Task[None]] = set()
        self._launch_scheduled = False
        self.commits = 0  # group commits run so far
        self._slow_commit_at = -LOOP_COMMIT_PAUSE  # monotonic time of the last slow one
        # Threads of its own: a commit never queues behind the reads of a get.
        self._executor = ThreadPoolExecutor(2 * MAX_COMMITS, thread_name_prefix="commit")

    # --- writes (durable when they return) ---

    async def put(
        self,
        address: bytes,
        blob: bytes | memoryview,
        *,
        verified: bool = False,
        tag: bytes = ANONYMOUS_TAG,
    ) -> None:
        """Keep ``blob`` durably, marked kept, with an upload lease under ``tag``
        (``verified``: its address was computed in this process).
        :class:`AddressMismatchError` if it does not hash to ``address``,
        :class:`StorageFullError` if it would pass the storage limit."""
        if not verified:
            one_core = functools.partial(_native.hash, blob, parallel=False)
            actual = (
                one_core() if len(blob) <= HASH_INLINE_MAX else await asyncio.to_thread(one_core)
            )
            if actual != address:
                raise AddressMismatchError(
                    f"blob of {len(blob)} bytes does not hash to its address {address.hex()}"
                )
        while address in self._collecting:
            await self._collected.wait()
        self._check_room(address, len(blob))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.blobs.setdefault(address, blob)
        self._pending.blob_waiters.append((address, future))
        self._pending.uploads.add((address, tag))
        self._writing[address] = self._writing.get(address, 0) + 1
        self._incoming_bytes += len(blob)
        self._start()
        try:
            await future
        finally:
            self._incoming_bytes -= len(blob)
            if (left := self._writing.pop(address) - 1) > 0:
                self._writing[address] = left

    def _check_room(self, address: bytes, size: int) -> None:
        if self.max_storage is None or self.blobs.has(address):
            return
        if self.used_bytes + self._incoming_bytes + size > self.max_storage:
            raise StorageFullError(
                f"storage limit reached: {self.used_bytes} of {self.max_storage} bytes used, "
                f"no room for a blob of {size} bytes"
            )

    async def count_used(self) -> None:
        """Count the blob bytes on disk (at start: a walk of the blob directory)."""
        self.used_bytes = await asyncio.to_thread(self.blobs.total_bytes)

    async def hold(self, items: list[tuple[bytes, bytes]], stamp: int) -> None:
        """Hold each (address, tag) for the lease period, unless a later stamp released it."""
        await self._lease(HELD, items, stamp)

    async def release(self, items: list[tuple[bytes, bytes]], stamp: int) -> None:
        """Release each (address, tag) (lapsing after the grace), unless a later stamp
        held it."""
        await self._lease(RELEASED, items, stamp)

    async def _lease(self, state: int, items: list[tuple[bytes, bytes]], stamp: int) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.leases.append((state, items, stamp, future))
        self._start()
        await future

    async def collect(self, addresses: list[bytes]) -> tuple[int, int]:
        """Delete the blobs among ``addresses`` that have no live lease; (blobs, bytes) freed.

        Blobs are taken in batches, each in two commits: one drops their lapsed
        leases, then one drops their kept marks and the rows of the small ones,
        their files going while it is open; a kill between them leaves blobs with
        no lease, which the next pass takes.
        Blobs a put is writing are skipped; puts of the blobs being collected wait
        until this returns.
        """
        chosen = [a for a in dict.fromkeys(addresses) if a not in self._writing]
        chosen = [a for a in chosen if a not in self._pending.blobs]
        self._collecting.update(chosen)
        self._collected.clear()
        try:
            freed, freed_bytes = await self._in_thread(
                functools.partial(self._collect_in_thread, chosen)
            )
            self.used_bytes -= freed_bytes
            return freed, freed_bytes
        finally:
            self._collecting.difference_update(chosen)
            self._collected.set()

    def _collect_in_thread(self, addresses: list[bytes]) -> tuple[int, int]:
        now = self.clock()
        freed = freed_bytes = 0
        for start in range(0, len(addresses), COLLECT_BATCH):
            lapsed = self.catalog.forget_expired_leases(
                addresses[start : start + COLLECT_BATCH], now
            )  # the others were held or put again since they were chosen
            # One commit takes the rows of small blobs and every kept mark.
            with self.catalog.transaction():
                for address in lapsed:
                    size = self.blobs.size(address)
                    if self.blobs.delete(address) and size is not None:
                        freed += 1
                        freed_bytes += size
                self.catalog.unmark_kept_many(lapsed)
        self.catalog.forget_stray_leases(now)
        if freed:
            self.catalog.vacuum_freed()  # the pages of the small blobs among them
        return freed, freed_bytes

    async def discard(self, address: bytes) -> None:
        """Drop this node's copy of a blob that others keep (hand-off)."""

        def discard_in_thread() -> int:
            size = self.blobs.size(address)
            deleted = self.blobs.delete(address)
            self.catalog.unmark_kept(address)
            return (size or 0) if deleted else 0

        self.used_bytes -= await asyncio.to_thread(discard_in_thread)

    def expired(self) -> set[bytes]:
        """Blobs kept whose leases have all lapsed: about to be collected."""
        return set(self.catalog.expired_kept(self.clock()))

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

    async def load_unverified(self, address: bytes) -> bytes | None:
        """The stored bytes, unchecked, or None: only for a requester that checks them."""
        return await asyncio.to_thread(self.blobs.read_unverified, address)

    async def load_with(self, address: bytes, accept: Callable[[bytes], T]) -> T | None:
        """What ``accept`` (which checks the address) makes of the blob here, or None."""
        return await asyncio.to_thread(self.blobs.load_with, address, accept)

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
        """Write the batch's blob files and rows at once; release each waiter with its outcome.

        Records, chunk rows, leases and small blobs (rows too) are released once the
        catalog commit is durable; blobs kept as files once their files and their
        kept marks both are.
        """
        files: list[tuple[bytes, bytes | memoryview]] = []
        small: list[tuple[bytes, bytes | memoryview]] = []
        for item in batch.blobs.items():
            (small if self.blobs.keeps_as_row(len(item[1])) else files).append(item)
        self.commits += 1
        writing = (
            self._in_thread(functools.partial(self.blobs.put_many, files, verified=True))
            if files
            else None
        )
        rows: _RowsDone | BaseException
        try:
            done = None if files else self._write_rows_on_loop(batch, small)
            if done is None:
                self.metrics.group_commits.labels("thread").inc()
                done = await self._in_thread(functools.partial(self._write_rows, batch, small))
            rows = done
        except Exception as e:
            rows = e
        row_error = rows if isinstance(rows, BaseException) else None
        kept = rows.kept if isinstance(rows, _RowsDone) else [False] * len(batch.records)
        for (*_, record_future), was_kept in zip(batch.records, kept, strict=True):
            _settle(record_future, was_kept, row_error)
        for *_, chunk_future in batch.chunks:
            _settle(chunk_future, None, row_error)
        for *_, lease_future in batch.leases:
            _settle(lease_future, None, row_error)
        if isinstance(rows, _RowsDone):
            self.used_bytes += rows.new_row_bytes
        file_error: BaseException | None = None
        if writing is not None:
            try:
                written = await writing
                self.used_bytes += sum(
                    len(blob) for (_, blob), new in zip(files, written, strict=True) if new
                )
            except Exception as e:
                file_error = e
                if isinstance(rows, _RowsDone):
                    in_files = {address for address, _ in files}
                    if failed := [a for a in rows.newly_kept if a in in_files]:
                        await self._unmark(failed)
        as_rows = {address for address, _ in small}
        for address, future in batch.blob_waiters:
            _settle(future, None, row_error if address in as_rows else file_error or row_error)

    def _in_thread(self, work: Callable[[], T]) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._executor, work)

    def _write_rows_on_loop(
        self, batch: _Batch, small: list[tuple[bytes, bytes | memoryview]]
    ) -> _RowsDone | None:
        """The batch's rows committed right here, or None if they must go to a commit
        thread: another thread is writing to the catalog, or a commit was slow lately."""
        if time.monotonic() - self._slow_commit_at < LOOP_COMMIT_PAUSE:
            return None
        with self.catalog.writer_if_free() as free:
            if not free:
                return None
            self.metrics.group_commits.labels("loop").inc()
            return self._write_rows(batch, small)

    def _write_rows(
        self, batch: _Batch, small: list[tuple[bytes, bytes | memoryview]]
    ) -> _RowsDone:
        """Small blobs, kept marks, leases, records and chunk rows of a batch in one
        transaction (on a commit thread, or on the loop: ``_write_rows_on_loop``)."""
        started = time.monotonic()
        try:
            return self._write_rows_now(batch, small)
        finally:
            ended = time.monotonic()
            if ended - started > LOOP_COMMIT_LIMIT:
                if ended - self._slow_commit_at >= LOOP_COMMIT_PAUSE:
                    log.info(
                        "a catalog commit took %.0f ms: committing on threads for %.0f s",
                        1000 * (ended - started),
                        LOOP_COMMIT_PAUSE,
                    )
                self._slow_commit_at = ended

    def _write_rows_now(
        self, batch: _Batch, small: list[tuple[bytes, bytes | memoryview]]
    ) -> _RowsDone:
        now = self.clock()
        with self.catalog.transaction():
            added = self.blobs.put_rows([(a, memoryview(blob)) for a, blob in small])
            newly_kept = [address for address in batch.blobs if self.catalog.mark_kept(address)]
            for address, tag in batch.uploads:
                self.catalog.lease_upload(address, tag, now + self.grace)
            for state, items, stamp, _ in batch.leases:
                for address, tag in items:
                    if state == HELD:
                        self.catalog.lease_hold(address, tag, stamp, now + self.lease_period)
                    else:
                        self.catalog.lease_release(address, tag, stamp, now + self.grace)
            kept = [self.catalog.put_record(loc, rec, ver) for loc, rec, ver, _ in batch.records]
            for chunk_id, address, _ in batch.chunks:
                self.catalog.add_chunk(chunk_id, address)
        new_row_bytes = sum(len(blob) for (_, blob), new in zip(small, added, strict=True) if new)
        return _RowsDone(kept, newly_kept, new_row_bytes)

    async def _unmark(self, addresses: list[bytes]) -> None:
        """Take back the kept marks of blobs whose write failed (marked alongside)."""

        def unmark_all() -> None:
            with self.catalog.transaction():
                for address in addresses:
                    self.catalog.unmark_kept(address)

        try:
            await self._in_thread(unmark_all)
        except Exception as e:  # the write's own error is what the waiters get
            log.warning("could not unmark %d blobs whose write failed: %s", len(addresses), e)


def _settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if future.done():  # its waiter was cancelled; the write went ahead anyway
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
