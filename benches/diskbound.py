"""The disk's bound on a durable store: three writer processes, the same files, the same fsyncs.

On one machine the three nodes of a store share one disk, so a durable store can go no faster
than three processes that write the same blob files at the same time with the same pattern as
``fstore.storage.blobs.BlobStore.put``:

1. write the bytes to a new temporary file in ``blobs/tmp`` (``mkstemp``) and fsync it;
2. create ``blobs/ab`` and ``blobs/ab/cd`` if this writer has not made them yet;
3. rename the file to ``blobs/ab/cd/<address>``;
4. fsync ``blobs/ab/cd``, and, where step 2 made a directory, its parent (once each, in order).

Each writer gets the stored blobs' names (their addresses, so the directory tree and the
number of directory fsyncs are the node's) and sizes; the bytes are incompressible random
bytes already in memory (a node also holds a blob in memory when it writes it). It does not
hash, encrypt or talk to anyone: this is the disk alone. ``durable=False`` skips every fsync.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
import traceback
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

from fstore.storage.blobs import fsync_dir

START_TIMEOUT = 60.0  # a writer process is ready within a second or two
RUN_TIMEOUT = 600.0
POLL_INTERVAL = 0.05


@dataclass(frozen=True)
class BlobFile:
    """One file to write: a blob's address (64 hex characters) and size."""

    name: str
    size: int


# --- in each writer process ---------------------------------------------------------------


class _Writer:
    """``BlobStore.put``'s file and directory pattern, one blob at a time, nothing else."""

    def __init__(self, root: Path, durable: bool) -> None:
        self.durable = durable
        self.blobs = str(root / "blobs")
        self.tmp = os.path.join(self.blobs, "tmp")
        os.makedirs(self.tmp)
        if durable:  # as BlobStore does when it opens
            fsync_dir(str(root))
            fsync_dir(self.blobs)
        self.known_dirs: set[str] = set()

    def put(self, name: str, data: memoryview) -> None:
        fd, temp = tempfile.mkstemp(prefix=name[:16] + ".", suffix=".tmp", dir=self.tmp)
        try:
            written = 0
            while written < data.nbytes:
                written += os.write(fd, data[written:])
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        ab = os.path.join(self.blobs, name[0:2])
        parent = os.path.join(ab, name[2:4])
        to_sync = {parent}
        for directory in (ab, parent):
            if directory not in self.known_dirs:
                with suppress(FileExistsError):
                    os.mkdir(directory)
                to_sync.add(os.path.dirname(directory))
        os.rename(temp, os.path.join(parent, name))
        if self.durable:
            for directory in sorted(to_sync):
                fsync_dir(directory)
        self.known_dirs.update((ab, parent))


def _write_all(
    root: str,
    files: list[BlobFile],
    durable: bool,
    ready: Event,
    go: Event,
    results: Queue[tuple[str, float | str]],
) -> None:
    """A writer process: prepare, say ready, wait for ``go``, write every file, report."""
    try:
        data = memoryview(os.urandom(max(f.size for f in files)))
        writer = _Writer(Path(root), durable)
        ready.set()
        if not go.wait(RUN_TIMEOUT):
            return
        start = time.perf_counter()
        for f in files:
            writer.put(f.name, data[: f.size])
        results.put(("done", time.perf_counter() - start))
    except BaseException:
        results.put(("error", traceback.format_exc()))


# --- in the benchmark process ---------------------------------------------------------------


class DiskBound:
    """``writers`` processes that write ``files`` each, under ``root/w0``, ``root/w1``, ...

    :meth:`start` writes back every dirty page (``sync``), launches them and waits until each
    is ready (untimed); :meth:`run` lets them all go at once and returns the seconds until the
    last one finished; :meth:`stop` ends any still running. The files stay: the caller
    deletes ``root``.
    """

    def __init__(
        self, root: Path, files: list[BlobFile], *, writers: int = 3, durable: bool = True
    ) -> None:
        if not files:
            raise ValueError("nothing to write")
        self.root = root
        self.files = files
        self.writers = writers
        self.durable = durable
        self.writer_seconds: list[float] = []
        self._context = multiprocessing.get_context("spawn")
        self._go = self._context.Event()
        self._results: Queue[tuple[str, float | str]] = self._context.Queue()
        self._processes: list[tuple[SpawnProcess, Event]] = []

    @property
    def nbytes(self) -> int:
        """Bytes each writer writes."""
        return sum(f.size for f in self.files)

    def start(self) -> None:
        os.sync()
        for index in range(self.writers):
            ready = self._context.Event()
            process = self._context.Process(
                target=_write_all,
                args=(
                    str(self.root / f"w{index}"),
                    self.files,
                    self.durable,
                    ready,
                    self._go,
                    self._results,
                ),
                name=f"disk-bound-writer-{index}",
                daemon=True,
            )
            process.start()
            self._processes.append((process, ready))
        deadline = time.monotonic() + START_TIMEOUT
        for process, ready in self._processes:
            while not ready.wait(POLL_INTERVAL):
                if not process.is_alive():
                    raise RuntimeError(f"{process.name} exited ({process.exitcode}) before ready")
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{process.name} not ready within {START_TIMEOUT:g}s")

    def run(self) -> float:
        """Release every writer; the wall-clock seconds until the last one is done."""
        start = time.perf_counter()
        self._go.set()
        for _ in self._processes:
            kind, value = self._results.get(timeout=RUN_TIMEOUT)
            if kind != "done" or not isinstance(value, float):
                raise RuntimeError(f"a disk-bound writer failed:\n{value}")
            self.writer_seconds.append(value)
        return time.perf_counter() - start

    def check(self) -> None:
        """Every writer left every file, whole, under its address."""
        for index in range(self.writers):
            blobs = self.root / f"w{index}" / "blobs"
            for f in self.files:
                path = blobs / f.name[0:2] / f.name[2:4] / f.name
                if path.stat().st_size != f.size:
                    raise AssertionError(f"{path} has {path.stat().st_size} bytes, not {f.size}")

    def stop(self) -> None:
        """Kill any writer still running and reap them all."""
        for process, _ in self._processes:
            if process.is_alive():
                process.kill()
            process.join(timeout=30)
        self._processes = []
        self._results.close()
        self._results.join_thread()
