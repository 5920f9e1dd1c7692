"""Blob files on disk: content-addressed, written durably, quarantined when bad.

A node's data directory holds (DESIGN.md section 3)::

    blobs/ab/cd/<address>   one file per blob: 64 lowercase hex characters, ab and cd
                            its first two bytes
    blobs/tmp/              blobs being written; anything left here is a crash's debris
                            and is removed when the store is opened
    blobs/corrupt/          blobs that failed their hash check on read, kept for inspection
    fstore.db               the catalog: name records, chunk index, blobs kept, leases,
                            references, peers, and the small blobs (below)

A store opened with a :class:`SmallBlobs` keeps each blob of at most
SMALL_BLOB_MAX bytes as a row of the catalog instead of a file (a node's store
always does; ``fstore.storage.smallblobs`` says why). A small blob already held
as a file, by an earlier version, stays one. Reads look for the row first.

Durability rule: when :meth:`BlobStore.put` or :meth:`BlobStore.put_many` returns,
the blob survives a crash of the process *and* of the machine (unless the store was
opened with ``durable=False``). A blob is written to a temporary file in the same
file system, fsynced, renamed into place and its directory fsynced, so a partial
blob is never visible under its address. Catalog writes are durable when the
method returns (``synchronous=FULL``).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

from typing_extensions import Buffer

from fstore import _native
from fstore.errors import AddressMismatchError
from fstore.storage.common import check_id, os_error
from fstore.storage.smallblobs import SMALL_BLOB_MAX, SmallBlobs

__all__ = ["BlobStore", "fsync_dir"]

log = logging.getLogger(__name__)

_HEX_ADDRESS = re.compile(r"[0-9a-f]{64}")
_HEX_BYTE = re.compile(r"[0-9a-f]{2}")
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# A path is absent when its file is, and when something that is not a directory
# (damage from outside fstore) stands where one of its directories should be.
_ABSENT = (FileNotFoundError, NotADirectoryError)
# Blobs are hashed on one core (``parallel=False``): reads and writes of several blobs
# already run at once, and the extension's pool would spin idle between blobs.
# Threads that write and fsync the files of one batch, and fsync its directories, at once.
SYNC_WORKERS = 8

T = TypeVar("T")
R = TypeVar("R")


def fsync_dir(path: str) -> None:
    """Make the entries of directory ``path`` (creations, renames) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: str) -> None:
    """Remove a temporary file during cleanup; a failure here must not hide the real error."""
    try:
        os.unlink(path)
    except OSError as exc:
        log.warning("could not remove temporary file %s: %s", path, exc)


def _write_fd(fd: int, view: memoryview) -> None:
    """Write all of ``view``: ``os.write`` may write less than asked."""
    offset = 0
    while offset < view.nbytes:
        offset += os.write(fd, view[offset:])


def _outcome(work: Callable[[T], R], item: T) -> R | BaseException:
    try:
        return work(item)
    except BaseException as exc:  # handed back to the caller, which raises it
        return exc


def _read_fd(fd: int, size: int) -> bytes:
    """Read ``size`` bytes (the file's size from ``fstat``), or fewer if it shrank."""
    data = os.read(fd, size)  # one allocation, one syscall in the usual case
    if len(data) == size or not data:
        return data
    parts = [data]
    remaining = size - len(data)
    while remaining and (part := os.read(fd, remaining)):
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _as_stored(data: bytes) -> bytes:
    return data


def verify_address(address: bytes, data: Buffer) -> None:
    """Raise :class:`AddressMismatchError` unless ``data`` hashes to ``address``.

    Hashes on this thread alone: several blobs are checked at once, and the
    extension's pool would spin idle between them.
    """
    if _native.hash(data, parallel=False) != address:
        raise AddressMismatchError(f"bytes that do not hash to blob {address.hex()}")


def _byte_view(data: Buffer) -> memoryview:
    """A flat byte view of any C-contiguous buffer, without copying."""
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


# --- blobs ---------------------------------------------------------------------


class BlobStore:
    """Content-addressed blob files under ``root/blobs`` (and small blobs as catalog rows,
    given a :class:`SmallBlobs`); thread-safe.

    Every method may be called from any thread (the node calls them through
    ``asyncio.to_thread``). Exactly one ``BlobStore`` may use a directory at a
    time: opening one removes the temporary files of any other.

    ``durable=False`` skips every fsync. It exists for benchmarks only: a blob
    may then be lost (never corrupted) if the machine crashes.
    """

    def __init__(
        self, root: Path | str, *, durable: bool = True, small: SmallBlobs | None = None
    ) -> None:
        self.root = Path(root)
        self.durable = durable
        self.small = small
        self._blobs = str(self.root / "blobs")
        self._tmp = os.path.join(self._blobs, "tmp")
        self._corrupt = os.path.join(self._blobs, "corrupt")
        # Addresses some thread is writing, deleting or quarantining right now.
        self._claims: set[bytes] = set()
        self._claims_changed = threading.Condition()
        # Directories whose own entry in their parent is known durable (or, when
        # not durable, known to exist), and directories this object has fsynced.
        # Both only grow (directories are never removed); single set operations
        # are atomic, so they need no lock.
        self._known_dirs: set[str] = set()
        self._synced_dirs: set[str] = set()
        self._pool: ThreadPoolExecutor | None = None  # for the fsyncs of a batch
        try:
            self._create_dirs()
            self._remove_leftovers()
        except OSError as exc:
            raise os_error(exc, f"opening the blob store in {self.root}") from exc

    def _create_dirs(self) -> None:
        for path in (self._blobs, self._tmp, self._corrupt):
            os.makedirs(path, exist_ok=True)
        if self.durable:
            fsync_dir(str(self.root))
            fsync_dir(self._blobs)

    def _remove_leftovers(self) -> None:
        """Crash recovery: temporary files are never a complete blob under its address."""
        removed = 0
        with os.scandir(self._tmp) as entries:
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    os.unlink(entry.path)
                    removed += 1
        if removed:
            log.info("removed %d unfinished blob(s) left in %s", removed, self._tmp)

    # --- paths and claims ---

    def _locate(self, address: bytes) -> tuple[str, str]:
        """(the blob's directory ``blobs/ab/cd``, its file path)."""
        name = address.hex()
        parent = os.path.join(self._blobs, name[0:2], name[2:4])
        return parent, os.path.join(parent, name)

    @contextmanager
    def _claimed(self, addresses: set[bytes]) -> Iterator[None]:
        """Hold ``addresses`` exclusively against other writers, deleters and quarantines.

        Taking the whole set at once (never one by one) cannot deadlock. While a
        put holds an address, a second put of it waits and then finds the blob
        present *and durable*, so "already present" is as safe to acknowledge as
        "written", and exactly one concurrent put of a blob returns True.
        """
        with self._claims_changed:
            self._claims_changed.wait_for(lambda: self._claims.isdisjoint(addresses))
            self._claims |= addresses
        try:
            yield
        finally:
            with self._claims_changed:
                self._claims -= addresses
                self._claims_changed.notify_all()

    def keeps_as_row(self, size: int) -> bool:
        """Whether a blob of ``size`` bytes is kept as a catalog row rather than a file."""
        return self.small is not None and size <= SMALL_BLOB_MAX

    # --- writing ---

    def put(self, address: Buffer, data: Buffer, *, verified: bool = False) -> bool:
        """Store one blob; True if written, False if it was already present.

        Raises :class:`AddressMismatchError` (nothing written) if ``data`` does not
        hash to ``address``, :class:`DiskFullError` if the disk is full, and
        :class:`StorageError` for other I/O failures. On return the blob is durable.
        ``verified`` skips the hash check, for a caller that computed ``address``
        from these very bytes itself (the node storing its own sealed chunks).
        """
        return self.put_many([(address, data)], verified=verified)[0]

    def put_many(
        self, items: Iterable[tuple[Buffer, Buffer]], *, verified: bool = False
    ) -> list[bool]:
        """Store several blobs with one round of directory fsyncs; one bool per item.

        Every address and hash is checked before anything is written, so a bad item
        rejects the whole batch. Each file is written and fsynced (several at once,
        on up to SYNC_WORKERS threads), then all are renamed into place, then each
        distinct directory is fsynced once (again at once). If a write
        fails (a full disk), no blob of the batch becomes visible.
        A blob repeated in the batch is written once; its later copies report False.
        """
        batch = [(check_id(address), _byte_view(data)) for address, data in items]
        for address, view in batch:
            if not verified and _native.hash(view, parallel=False) != address:
                raise AddressMismatchError(
                    f"blob of {view.nbytes} bytes does not hash to its address {address.hex()}"
                )
        as_rows = [self.keeps_as_row(view.nbytes) for _, view in batch]
        rows = iter(self.put_rows([item for item, row in zip(batch, as_rows, strict=True) if row]))
        files = [item for item, row in zip(batch, as_rows, strict=True) if not row]
        with self._claimed({address for address, _ in files}):
            try:
                in_files = iter(self._store_claimed(files))
            except OSError as exc:
                raise os_error(exc, f"writing {len(files)} blob(s) in {self._blobs}") from exc
        return [next(rows) if row else next(in_files) for row in as_rows]

    def put_rows(self, items: list[tuple[bytes, memoryview]]) -> list[bool]:
        """Keep small blobs (already checked) as catalog rows, in one commit or in the
        transaction the calling thread has open; True for each row added.

        A blob already held as a file (by an earlier version) is not added again.
        """
        if not items:
            return []
        if self.small is None:
            raise ValueError("this blob store keeps no blobs as rows")
        in_place = [self._file_in_place(address, view.nbytes) for address, view in items]
        missing = [item for item, held in zip(items, in_place, strict=True) if not held]
        added = iter(self.small.insert(missing))
        return [False if held else next(added) for held in in_place]

    def _file_in_place(self, address: bytes, size: int) -> bool:
        try:
            return os.stat(self._locate(address)[1]).st_size == size
        except _ABSENT:
            return False

    def _store_claimed(self, batch: list[tuple[bytes, memoryview]]) -> list[bool]:
        to_sync: set[str] = set()
        parents: set[str] = set()
        to_write: dict[bytes, memoryview] = {}
        for address, view in batch:
            parent, path = self._locate(address)
            parents.add(parent)
            if address in to_write:
                continue
            if self._is_stored(address, path, view.nbytes):
                self._prepare_dir(parent, to_sync, new_entry=parent not in self._synced_dirs)
            else:
                to_write[address] = view
        self._write_and_publish(to_write, to_sync)
        self._sync_dirs(to_sync, parents)
        written = set(to_write)
        results = []
        for address, _ in batch:
            results.append(address in written)
            written.discard(address)
        return results

    def _is_stored(self, address: bytes, path: str, size: int) -> bool:
        """Whether a complete copy is in place. A file of the wrong size can only
        be damage from outside fstore: it is quarantined and then replaced."""
        try:
            found = os.stat(path).st_size
        except _ABSENT:
            return False
        if found == size:
            return True
        self._quarantine(path, address, f"has {found} bytes instead of {size}")
        return False

    def _write_and_publish(self, blobs: dict[bytes, memoryview], to_sync: set[str]) -> None:
        """Write every blob to a fsynced temporary file, then rename each into place.

        The files of a batch are written and fsynced in parallel (a disk takes
        concurrent fsyncs far faster than the same ones in a row). Temporary
        files not yet renamed are removed whatever goes wrong.
        """
        temps: dict[bytes, str] = {}
        try:
            written = self._in_parallel(
                lambda item: self._write_temp(item[0], item[1]), list(blobs.items())
            )
            for address, outcome in zip(blobs, written, strict=True):
                if isinstance(outcome, str):
                    temps[address] = outcome
            failed = [e for e in written if isinstance(e, BaseException)]
            if failed:
                raise failed[0]
            for address in blobs:
                parent, path = self._locate(address)
                self._prepare_dir(parent, to_sync, new_entry=True)
                os.rename(temps[address], path)
                del temps[address]
        finally:
            for temp in temps.values():
                _remove_quietly(temp)

    def _in_parallel(self, work: Callable[[T], R], items: list[T]) -> list[R | BaseException]:
        """``work`` of each item, on up to SYNC_WORKERS threads when there are several;
        each item's result or exception, in order."""
        if len(items) <= 1:
            return [_outcome(work, item) for item in items]
        if self._pool is None:
            with self._claims_changed:  # any lock will do: created once
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(SYNC_WORKERS, thread_name_prefix="blob-sync")
        return list(self._pool.map(lambda item: _outcome(work, item), items))

    def _write_temp(self, address: bytes, view: memoryview) -> str:
        """Write ``view`` to a new file in ``blobs/tmp`` (fsynced if durable); its path."""
        fd, temp = tempfile.mkstemp(prefix=address.hex()[:16] + ".", suffix=".tmp", dir=self._tmp)
        try:
            try:
                _write_fd(fd, view)
                if self.durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            _remove_quietly(temp)
            raise
        return temp

    def _prepare_dir(self, parent: str, to_sync: set[str], *, new_entry: bool) -> None:
        """Create ``blobs/ab/cd`` if needed and note which directories must be fsynced.

        ``new_entry``: ``parent`` has (or may have) a blob entry not yet known durable.
        A directory's own entry is durable once its parent is fsynced after it
        exists; until this object knows that, it fsyncs the parent again (a
        directory another thread or an earlier process created is covered too).
        """
        ab = os.path.dirname(parent)
        for directory in (ab, parent):
            if directory in self._known_dirs:
                continue
            with suppress(FileExistsError):
                os.mkdir(directory)
            if self.durable:
                to_sync.add(os.path.dirname(directory))
            else:
                self._known_dirs.add(directory)
        if new_entry and self.durable:
            to_sync.add(parent)

    def _sync_dirs(self, to_sync: set[str], parents: set[str]) -> None:
        """fsync each directory once (in parallel), then remember what that made durable."""
        if not self.durable:
            return
        failed = [e for e in self._in_parallel(fsync_dir, sorted(to_sync)) if e is not None]
        if failed:
            raise failed[0]
        self._synced_dirs.update(to_sync)
        for parent in parents:
            for directory in (os.path.dirname(parent), parent):
                if os.path.dirname(directory) in to_sync:
                    self._known_dirs.add(directory)

    # --- reading ---

    def get(self, address: Buffer) -> bytes | None:
        """The blob's bytes, checked against its address; None if missing or corrupt.

        A corrupt blob is moved to ``blobs/corrupt/`` and logged, so the caller can
        fetch a good copy from a peer and :meth:`put` it.
        """
        try:
            return self.load(address)
        except AddressMismatchError:
            return None

    def load(self, address: Buffer) -> bytes | None:
        """Like :meth:`get`, but a corrupt blob raises :class:`AddressMismatchError`.

        The corrupt file is quarantined first, exactly as :meth:`get` does; the
        exception tells the caller that a copy existed and failed its check.
        """
        address = check_id(address)

        def verified(data: bytes) -> bytes:
            verify_address(address, data)
            return data

        return self.load_with(address, verified)

    def read_unverified(self, address: Buffer) -> bytes | None:
        """The stored bytes of a blob, unchecked, or None: for a requester that checks
        them itself (a peer's ``get_blob``), so that they are hashed once, not twice."""
        return self.load_with(address, _as_stored)

    def load_with(self, address: Buffer, accept: Callable[[bytes], T]) -> T | None:
        """What ``accept`` makes of the blob's bytes, or None if the blob is missing.

        ``accept`` checks the bytes against ``address`` (and may do more in the
        same pass, such as opening them); when it raises
        :class:`AddressMismatchError`, the copy is quarantined and the error raised.
        """
        address = check_id(address)
        if self.small is not None and (row := self.small.get(address)) is not None:
            try:
                return accept(row)
            except AddressMismatchError:
                self._quarantine_row(address, row)
                raise AddressMismatchError(
                    f"the stored copy of blob {address.hex()} is corrupt"
                ) from None
        _, path = self._locate(address)
        try:
            fd = os.open(path, os.O_RDONLY)
        except _ABSENT:
            return None
        except OSError as exc:
            raise os_error(exc, f"opening blob {address.hex()}") from exc
        try:
            stat = os.fstat(fd)
            data = _read_fd(fd, stat.st_size)
        except OSError as exc:
            raise os_error(exc, f"reading blob {address.hex()}") from exc
        finally:
            os.close(fd)
        try:
            return accept(data)
        except AddressMismatchError:
            self._quarantine_if_unchanged(address, path, (stat.st_dev, stat.st_ino))
            raise AddressMismatchError(
                f"the stored copy of blob {address.hex()} is corrupt"
            ) from None

    def _quarantine_if_unchanged(
        self, address: bytes, path: str, identity: tuple[int, int]
    ) -> None:
        """Quarantine the file we read, unless a good copy has replaced it meanwhile."""
        with self._claimed({address}):
            try:
                stat = os.stat(path)
            except _ABSENT:
                return  # another reader quarantined it, or it was deleted
            if (stat.st_dev, stat.st_ino) == identity:
                self._quarantine(path, address, "does not match its address")

    def _quarantine_row(self, address: bytes, data: bytes) -> None:
        """Move a damaged row to ``blobs/corrupt/``, unless a good copy replaced it."""
        assert self.small is not None
        if not self.small.delete_if(address, data):
            return
        target = self._corrupt_path(address)
        try:
            with open(target, "xb") as kept:
                kept.write(data)
        except OSError as exc:
            log.warning("blob %s does not match its address: deleted (%s)", address.hex(), exc)
            return
        log.warning("blob %s does not match its address: moved to %s", address.hex(), target)

    def _corrupt_path(self, address: bytes) -> str:
        """Where a damaged copy of ``address`` is kept for inspection."""
        return os.path.join(self._corrupt, f"{address.hex()}.{time.time_ns()}")

    def _quarantine(self, path: str, address: bytes, why: str) -> None:
        """Move a damaged blob out of the way; the caller holds its claim."""
        target = self._corrupt_path(address)
        try:
            os.rename(path, target)
        except _ABSENT:
            return
        except OSError as exc:
            raise os_error(exc, f"quarantining corrupt blob {address.hex()}") from exc
        log.warning("blob %s %s: moved to %s", address.hex(), why, target)

    def has(self, address: Buffer) -> bool:
        """Whether a blob is held, as a row or a file in place (complete, but unchecked).

        Only a returned :meth:`put` promises durability; a blob another thread is
        writing may already be visible here before it is.
        """
        address = check_id(address)
        if self.small is not None and self.small.size(address) is not None:
            return True
        return os.path.isfile(self._locate(address)[1])

    def size(self, address: Buffer) -> int | None:
        """The blob's size in bytes, or None if it is not stored."""
        address = check_id(address)
        if self.small is not None and (size := self.small.size(address)) is not None:
            return size
        try:
            return os.stat(self._locate(address)[1]).st_size
        except _ABSENT:
            return None

    def delete(self, address: Buffer) -> bool:
        """Remove a blob; True if it was there.

        Not fsynced: a delete lost in a machine crash only brings back a blob that
        is still valid, which the next sweep removes again.
        """
        address = check_id(address)
        deleted = self.small is not None and self.small.delete(address)
        with self._claimed({address}):
            try:
                os.unlink(self._locate(address)[1])
            except _ABSENT:
                return deleted
            except OSError as exc:
                raise os_error(exc, f"deleting blob {address.hex()}") from exc
        return True

    # --- listing (each walks the directory tree) ---

    def _entries(self) -> Iterator[os.DirEntry[str]]:
        for ab in _hex_subdirs(self._blobs):
            for cd in _hex_subdirs(ab.path):
                prefix = ab.name + cd.name
                with os.scandir(cd.path) as entries:
                    for entry in entries:
                        if (
                            _HEX_ADDRESS.fullmatch(entry.name)
                            and entry.name.startswith(prefix)
                            and entry.is_file(follow_symlinks=False)
                        ):
                            yield entry

    def addresses(self) -> Iterator[bytes]:
        """Every stored blob's address once, in no particular order."""
        for entry in self._entries():
            yield bytes.fromhex(entry.name)
        if self.small is not None:
            for address in self.small.addresses():
                if not os.path.isfile(self._locate(address)[1]):  # else listed above
                    yield address

    def count(self) -> int:
        """How many blobs are stored."""
        return self.totals()[0]

    def total_bytes(self) -> int:
        """The sum of the stored blobs' sizes."""
        return self.totals()[1]

    def totals(self) -> tuple[int, int]:
        """(how many blobs are stored, the sum of their sizes), in one walk of the files."""
        count, size = self.small.totals() if self.small is not None else (0, 0)
        for entry in self._entries():
            count += 1
            size += entry.stat(follow_symlinks=False).st_size
        return count, size


def _hex_subdirs(path: str) -> list[os.DirEntry[str]]:
    """The ``ab``-style subdirectories of ``path`` (skips ``tmp`` and ``corrupt``)."""
    with os.scandir(path) as entries:
        return [
            entry
            for entry in entries
            if _HEX_BYTE.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)
        ]
