"""Storing a tree, the worker thread's side: entries read from a local walk or a tar stream.

A **producer** runs on a worker thread. It seals each small file there
(``seal_inline``) and writes the sealed bytes to a :class:`Spill` file, so the
loop holds only the entries' metadata however large the tree; a large file is
handed over as a stream of pieces for the writer's chunk pipeline. Entries
reach the loop in batches through a bounded :class:`ToLoop`, in the order they
were read (``fstore.node.treebuild`` collects and seals them).
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from fstore.errors import InvalidArgumentError
from fstore.formats import directory, tar
from fstore.formats.directory import (
    Inline,
    Ref,
    Skipped,
    TreeDir,
    TreeEntry,
    TreeFile,
    TreeLink,
    display,
)
from fstore.node.bridge import ToLoop
from fstore.storage import localtree

PIECE_SIZE = 8 * 1024 * 1024
BATCH_ENTRIES = 256
BATCH_BYTES = 1024 * 1024
MAX_DEPTH = 256
"""Directories nest at most this deep in a stored tree."""
IMPLICIT_DIR_MODE = 0o755


@dataclass(slots=True)
class Added:
    """An entry complete as it arrives: a directory's own attributes, a link, a small file."""

    path: tuple[str, ...]
    entry: TreeEntry  # a small file's Inline holds its key; its sealed bytes are at spill
    spill: tuple[int, int] = (0, 0)  # (offset, length) in the spill file


@dataclass(frozen=True)
class LargeFile:
    """A file stored apart (manifest and chunks): its bytes follow through ``pieces``."""

    path: tuple[str, ...]
    mode: int
    mtime_ns: int
    size: int  # as listed (a tar member's, or the file's when it was walked)
    pieces: ToLoop[bytes]


@dataclass(frozen=True)
class HardLink:
    """A tar hard link: another name for a file met earlier in the stream."""

    path: tuple[str, ...]
    linked: tuple[str, ...]


Event = Added | LargeFile | HardLink | Skipped


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class Spill:
    """Sealed bytes of small files, kept in an unnamed file until their leaf is sealed.

    One thread appends while others read what was appended before: unbuffered,
    with ``pwrite``/``pread`` at offsets this object hands out.
    """

    def __init__(self, directory_path: str) -> None:
        self._fd = os.open(directory_path, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        self._end = 0
        self._lock = threading.Lock()

    def append(self, data: bytes) -> tuple[int, int]:
        with self._lock:
            offset = self._end
            self._end += len(data)
        view = memoryview(data)
        written = 0
        while written < len(view):
            written += os.pwrite(self._fd, view[written:], offset + written)
        return offset, len(data)

    def read(self, span: tuple[int, int]) -> bytes:
        offset, length = span
        return os.pread(self._fd, length, offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Emitter:
    """The worker thread's side of a store: seals small files, batches what it hands over."""

    def __init__(self, namespace_secret: bytes, spill: Spill, out: ToLoop[list[Event]]) -> None:
        self._secret = namespace_secret
        self._spill = spill
        self._out = out
        self._batch: list[Event] = []
        self._batch_bytes = 0

    def entry(self, path: tuple[str, ...], entry: TreeEntry) -> None:
        self._add(Added(path, entry))

    def skip(self, skipped: Skipped) -> None:
        self._add(skipped)

    def hard_link(self, path: tuple[str, ...], linked: tuple[str, ...]) -> None:
        self._add(HardLink(path, linked))

    def file(
        self, path: tuple[str, ...], mode: int, mtime_ns: int, size: int, source: Readable
    ) -> None:
        """A file of ``size`` bytes (as listed) read from ``source``."""
        if size > directory.INLINE_MAX:
            self._large(path, mode, mtime_ns, size, source)
            return
        data = _read_up_to(source, directory.INLINE_MAX + 1)
        if len(data) > directory.INLINE_MAX:
            raise InvalidArgumentError(f"{display(path)} grew while it was read")
        blake3, inline = directory.seal_inline(self._secret, data)
        spill = self._spill.append(inline.sealed)
        entry = TreeFile(path[-1], mode, mtime_ns, len(data), blake3, Inline(inline.key, b""))
        self._batch_bytes += len(data)
        self._add(Added(path, entry, spill))

    def _large(
        self, path: tuple[str, ...], mode: int, mtime_ns: int, size: int, source: Readable
    ) -> None:
        pieces: ToLoop[bytes] = ToLoop(2, self._out.loop)
        self._add(LargeFile(path, mode, mtime_ns, size, pieces))
        self.flush()
        try:
            while piece := source.read(PIECE_SIZE):
                pieces.put(piece)
        except BaseException as e:
            pieces.end(e)
            raise
        pieces.end()

    def _add(self, event: Event) -> None:
        self._batch.append(event)
        if len(self._batch) >= BATCH_ENTRIES or self._batch_bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._batch:
            self._out.put(self._batch)
            self._batch, self._batch_bytes = [], 0


def _read_up_to(source: Readable, limit: int) -> bytes:
    """At most ``limit`` bytes of ``source``: all of it, if it is shorter."""
    parts = []
    left = limit
    while left and (part := source.read(left)):
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _check_depth(path: tuple[str, ...]) -> None:
    if len(path) > MAX_DEPTH:
        raise InvalidArgumentError(
            f"{display(path[:8])}/…: directories nest deeper than {MAX_DEPTH} levels"
        )


def produce_local(root: str, emit: Emitter) -> None:
    """Every entry of the local tree at ``root`` (``localtree.walk``), never following a link."""
    for found in localtree.walk(root):
        if isinstance(found, Skipped):
            emit.skip(found)
            continue
        _check_depth(found.path)
        name = found.path[-1]
        if found.kind == "dir":
            emit.entry(found.path, dir_entry(name, found.mode, found.mtime_ns))
        elif found.kind == "symlink":
            emit.entry(found.path, TreeLink(name, found.mode, found.mtime_ns, found.target))
        else:
            with os.fdopen(localtree.open_file(found), "rb", buffering=0) as source:
                emit.file(found.path, found.mode, found.mtime_ns, found.size, source)
    emit.flush()


def produce_tar(stream: io.RawIOBase, emit: Emitter) -> None:
    """Every member of a tar stream, read as it arrives (never seeking)."""
    archive = tar.TarReader(stream.read)
    for info in archive:
        member = tar.classify(info)
        if isinstance(member, Skipped):
            emit.skip(member)
            continue
        if not member.path:
            continue  # the top directory itself ("./"): a tree keeps no attributes of it
        _check_depth(member.path)
        name = member.path[-1]
        if member.kind == "dir":
            emit.entry(member.path, dir_entry(name, member.mode, member.mtime_ns))
        elif member.kind == "symlink":
            link = TreeLink(name, member.mode, member.mtime_ns, member.target)
            emit.entry(member.path, link)
        elif member.kind == "hardlink":
            emit.hard_link(member.path, member.linked)
        else:
            emit.file(member.path, member.mode, member.mtime_ns, member.size, archive)
    emit.flush()


def dir_entry(name: str, mode: int, mtime_ns: int) -> TreeDir:
    """A directory's attributes as they arrive; its contents are counted when it is sealed."""
    return TreeDir(name, mode, mtime_ns, 0, 0, Ref(b"\0" * 32, b"\0" * 16))


def produce(run: Callable[[Emitter], None], emit: Emitter, out: ToLoop[list[Event]]) -> None:
    """Run a producer on this (worker) thread; the stream ends with its error, if any."""
    try:
        run(emit)
    except BaseException as e:
        out.end(e)
        raise
    out.end()
