"""One node per data directory: an exclusive ``flock`` on ``DATA_DIR/lock``.

The holder writes its PID into the file, so a refused node can say who holds
the directory. The lock, not the file, is what counts: the kernel drops it when
the holder closes the file or exits, however it exits, so a stale file left by
a crash never blocks anyone. ``flock`` locks belong to an open file, so a second
``DataDirLock`` on one directory is refused inside one process too.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from fstore.errors import DataDirInUseError
from fstore.storage.common import os_error

__all__ = ["LOCK_FILE", "DataDirLock", "check_not_in_use"]

LOCK_FILE = "lock"


class DataDirLock:
    """Holds ``data_dir`` (which must exist) from construction until :meth:`release`.

    Raises :class:`DataDirInUseError` if another holder has it, :class:`StorageError`
    if the lock file cannot be opened.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        try:
            fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise os_error(e, f"opening the lock file of {data_dir}") from e
        try:
            _lock(fd, fcntl.LOCK_EX, data_dir)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd

    def release(self) -> None:
        """Let the directory go (idempotent)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the file drops the lock

    def __enter__(self) -> DataDirLock:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def check_not_in_use(data_dir: Path) -> None:
    """Raise :class:`DataDirInUseError` if a node holds ``data_dir``; writes nothing."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return  # never locked (or no such directory)
    except OSError as e:
        raise os_error(e, f"opening the lock file of {data_dir}") from e
    try:
        _lock(fd, fcntl.LOCK_SH, data_dir)  # refused while anyone holds it exclusively
    finally:
        os.close(fd)


def _lock(fd: int, kind: int, data_dir: Path) -> None:
    """``flock`` without waiting; :class:`DataDirInUseError` naming the holder if refused."""
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        raise DataDirInUseError(
            f"the data directory {data_dir} is in use by another node ({_holder(fd)})"
        ) from None
    except OSError as e:
        raise os_error(e, f"locking {data_dir}") from e


def _holder(fd: int) -> str:
    """``PID n`` from the lock file; the holder writes it just after taking the lock."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return f"PID {text}" if text.isdigit() else "PID unknown: it is starting"
