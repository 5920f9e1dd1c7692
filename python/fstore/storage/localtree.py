"""Directory trees on the local disk: walking one to store it, writing one safely to restore it.

:func:`extract_tar` restores a tar stream through a :class:`TreeWriter`.

:func:`walk` never follows a symbolic link below the root: a link is reported
as a link. Special files (devices, sockets, FIFOs) and entries whose names
break the name rules are reported as :class:`Skipped`, never stored.

:class:`TreeWriter` writes every entry inside its target directory and
nowhere else: each path is opened segment by segment from the target without
following any link (``O_NOFOLLOW``), so a link already in the target, or one
the tree itself made, is never written through; a link whose target would
leave the tree is refused; files appear atomically (a temporary file, renamed
into place) with their mode and mtime already set. Directories get their mode
and mtime when :meth:`TreeWriter.finish` runs, after everything inside them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from fstore.errors import InvalidArgumentError, InvalidNameError, UnsafePathError, WrongKindError
from fstore.formats import tar
from fstore.formats.directory import Skipped, check_segment, display, link_escapes

__all__ = ["Extracted", "FileSink", "LocalEntry", "TreeWriter", "extract_tar", "open_file", "walk"]

Kind = Literal["file", "dir", "symlink"]

RESTORED_MODE_BITS = 0o1777
"""Modes are restored without setuid and setgid: a tree from elsewhere never makes one."""

_SPECIAL = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_CACHED_DIRS = 256
_PIECE = 1 << 20


@dataclass(frozen=True)
class LocalEntry:
    """One entry of a local tree: its segments below the root, what it is, where it is."""

    path: tuple[str, ...]
    kind: Kind
    mode: int  # st_mode & 0o7777
    mtime_ns: int
    size: int  # a file's size when it was listed
    target: str  # a link's target
    location: str  # its path on disk


def walk(root: str | os.PathLike[str]) -> Iterator[LocalEntry | Skipped]:
    """Every entry below ``root``, a directory before what it holds, names in sorted order.

    ``root`` itself may be a link to a directory (it is what was asked for);
    nothing below it is followed. Raises :class:`InvalidArgumentError` if
    ``root`` is not a directory.
    """
    top = os.fspath(root)
    try:
        if not stat.S_ISDIR(os.stat(top).st_mode):
            raise InvalidArgumentError(f"{top}: not a directory")
    except OSError as e:
        raise InvalidArgumentError(f"{top}: {e.strerror or e}") from None
    pending: list[Iterator[tuple[tuple[str, ...], str]]] = [_listing((), top)]
    while pending:
        item = next(pending[-1], None)
        if item is None:
            pending.pop()
            continue
        path, location = item
        found = _entry(path, location)
        yield found
        if isinstance(found, LocalEntry) and found.kind == "dir":
            pending.append(_listing(path, location))


def _listing(path: tuple[str, ...], location: str) -> Iterator[tuple[tuple[str, ...], str]]:
    try:
        with os.scandir(location) as entries:
            names = sorted(entry.name for entry in entries)
    except OSError as e:
        raise InvalidArgumentError(f"{location}: {e.strerror or e}") from None
    for name in names:
        yield (*path, name), os.path.join(location, name)


def _entry(path: tuple[str, ...], location: str) -> LocalEntry | Skipped:
    shown = display(path)
    try:
        check_segment(path[-1])
    except InvalidNameError as e:
        return Skipped(shown, f"invalid name: {e}")
    try:
        st = os.lstat(location)
        target = os.readlink(location) if stat.S_ISLNK(st.st_mode) else ""
    except OSError as e:
        return Skipped(shown, e.strerror or str(e))
    for test, what in _SPECIAL:
        if test(st.st_mode):
            return Skipped(shown, f"{what}, not stored")
    kind: Kind = "dir" if stat.S_ISDIR(st.st_mode) else "symlink" if target else "file"
    if kind == "symlink" and "\0" in target:
        return Skipped(shown, "a link target with a NUL byte")
    mode = stat.S_IMODE(st.st_mode)
    size = st.st_size if kind == "file" else 0
    return LocalEntry(path, kind, mode, st.st_mtime_ns, size, target, location)


def open_file(entry: LocalEntry) -> int:
    """A file descriptor of a file found by :func:`walk`, refusing one replaced by a link since."""
    try:
        return os.open(entry.location, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise InvalidArgumentError(f"{entry.location}: {e.strerror or e}") from None


# --- writing ------------------------------------------------------------------------------


class FileSink:
    """A file being written under a temporary name; :meth:`commit` puts it in place."""

    def __init__(self, parent: int, name: str, path: tuple[str, ...]) -> None:
        self._parent = parent
        self._name = name
        self._path = path
        self._temporary = f".fstore-{os.urandom(6).hex()}.part"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        self._fd = os.open(self._temporary, flags, 0o600, dir_fd=parent)

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def commit(self, mode: int, mtime_ns: int) -> None:
        """Set the mode and mtime, then rename over whatever file or link was at the name."""
        try:
            os.fchmod(self._fd, mode & RESTORED_MODE_BITS)
            os.utime(self._fd, ns=(mtime_ns, mtime_ns))
            os.close(self._fd)
            self._fd = -1
            _rename_into_place(self._temporary, self._name, self._parent, self._path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temporary, dir_fd=self._parent)


class TreeWriter:
    """Writes entries inside ``target`` (made if missing) and nowhere else.

    Paths are tuples of segments, each checked by ``check_segment``. Every
    method may raise :class:`UnsafePathError` (a link in the way, or a link
    that would leave the tree), :class:`WrongKindError` (a file where a
    directory must go, or the reverse) or ``OSError``. Not thread-safe: one
    thread at a time.
    """

    def __init__(self, target: str | os.PathLike[str]) -> None:
        self.target = Path(target)
        self.target.mkdir(parents=True, exist_ok=True)
        self._root = os.open(self.target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._fds: dict[tuple[str, ...], int] = {}
        self._dirs: dict[tuple[str, ...], tuple[int, int]] = {}

    def directory(self, path: tuple[str, ...], mode: int, mtime_ns: int) -> None:
        """Make a directory (or keep the one there); its mode and mtime are set by finish."""
        self._dir(path)
        self._dirs[path] = (mode, mtime_ns)

    def file(self, path: tuple[str, ...]) -> FileSink:
        """A file to write; nothing is at ``path`` until its :meth:`FileSink.commit`."""
        return FileSink(self._parent(path), path[-1], path)

    def symlink(self, path: tuple[str, ...], target: str, mtime_ns: int) -> None:
        """Make a link to ``target``, refused if it could resolve outside the tree."""
        if link_escapes(path, target):
            raise UnsafePathError(
                f"refused the link {display(path)} -> {target}: it points outside the tree"
            )
        parent = self._parent(path)
        temporary = f".fstore-{os.urandom(6).hex()}.link"
        os.symlink(target, temporary, dir_fd=parent)
        try:
            os.utime(temporary, ns=(mtime_ns, mtime_ns), dir_fd=parent, follow_symlinks=False)
            _rename_into_place(temporary, path[-1], parent, path)
        except BaseException:
            os.unlink(temporary, dir_fd=parent)
            raise

    def finish(self) -> None:
        """Give every directory its mode and mtime (deepest first), and close everything."""
        try:
            for path in sorted(self._dirs, key=len, reverse=True):
                mode, mtime_ns = self._dirs[path]
                fd = self._dir(path)
                os.fchmod(fd, mode & RESTORED_MODE_BITS)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
        finally:
            self.close()

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if self._root >= 0:
            os.close(self._root)
            self._root = -1

    def _parent(self, path: tuple[str, ...]) -> int:
        if not path:
            raise InvalidArgumentError("an entry needs a name")
        return self._dir(path[:-1])

    def _dir(self, path: tuple[str, ...]) -> int:
        """The descriptor of the directory at ``path``, made if missing, never through a link."""
        if not path:
            return self._root
        cached = self._fds.get(path)
        if cached is not None:
            return cached
        parent = self._dir(path[:-1])
        name = check_segment(path[-1])
        try:
            fd = os.open(name, _OPEN_DIR, dir_fd=parent)
        except FileNotFoundError:
            os.mkdir(name, 0o700, dir_fd=parent)
            fd = os.open(name, _OPEN_DIR, dir_fd=parent)
        except OSError as e:
            raise _in_the_way(e, parent, name, path) from None
        if len(self._fds) >= _MAX_CACHED_DIRS:
            for old in self._fds.values():
                os.close(old)
            self._fds.clear()
        self._fds[path] = fd
        return fd


def _rename_into_place(temporary: str, name: str, parent: int, path: tuple[str, ...]) -> None:
    check_segment(name)
    try:
        os.rename(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
    except OSError as e:
        if e.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
            raise WrongKindError(f"{display(path)}: a directory is in the way") from None
        raise


def _in_the_way(error: OSError, parent: int, name: str, path: tuple[str, ...]) -> Exception:
    """The error for a directory that cannot be opened: a link or a file in its place."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except OSError:
        return error
    if stat.S_ISLNK(st.st_mode):
        return UnsafePathError(
            f"{display(path)} is a link in the target: nothing is written through it"
        )
    if not stat.S_ISDIR(st.st_mode):
        return WrongKindError(f"{display(path)}: a file is in the way of a directory")
    return error


# --- restoring a tar stream ---------------------------------------------------------------


@dataclass
class Extracted:
    """What :func:`extract_tar` wrote, and what it refused or skipped (messages)."""

    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    size: int = 0
    refused: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def extract_tar(
    stream: IO[bytes],
    target: str | os.PathLike[str],
    on_bytes: Callable[[int], None] = lambda n: None,
    on_file: Callable[[], None] = lambda: None,
) -> Extracted:
    """Restore the tree a tar stream holds into ``target``, read as it arrives.

    Nothing is written outside ``target``: a member with an absolute path or
    ``..``, a link leaving the tree, a write through a link, and a hard link
    are refused (listed in ``refused``), and the rest is restored. Special
    files and bad names are skipped. A file appears whole or not at all.
    """
    done = Extracted()
    writer = TreeWriter(target)
    try:
        archive = tar.TarReader(stream.read)
        for info in archive:
            try:
                member = tar.classify(info)
                if isinstance(member, Skipped):
                    done.skipped.append(f"{member.path}: {member.reason}")
                elif member.path:
                    _extract_member(writer, archive, member, done, on_bytes, on_file)
            except UnsafePathError as e:
                done.refused.append(str(e))
        writer.finish()
    finally:
        writer.close()
    return done


def _extract_member(
    writer: TreeWriter,
    archive: tar.TarReader,
    member: tar.Member,
    done: Extracted,
    on_bytes: Callable[[int], None],
    on_file: Callable[[], None],
) -> None:
    if member.kind == "dir":
        writer.directory(member.path, member.mode, member.mtime_ns)
        done.dirs += 1
    elif member.kind == "symlink":
        writer.symlink(member.path, member.target, member.mtime_ns)
        done.symlinks += 1
    elif member.kind == "hardlink":
        raise UnsafePathError(f"refused {display(member.path)}: hard links are not restored")
    else:
        sink = writer.file(member.path)
        try:
            while piece := archive.read(_PIECE):
                sink.write(piece)
                on_bytes(len(piece))
            sink.commit(member.mode, member.mtime_ns)
        except BaseException:
            sink.abort()
            raise
        done.files += 1
        done.size += member.size
        on_file()
