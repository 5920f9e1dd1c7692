"""How a node process uses glibc's allocator: buffers reused while busy, freed memory given back.

A get moves every blob through fresh buffers of up to 4 MiB: the holder's read of the
blob, TLS's ciphertext, the reader's plaintext. Left to its defaults, glibc's mmap
threshold starts at 128 KiB and rises with the largest block freed, so a node that has
opened and closed many links keeps their freed buffers resident. A threshold held at
128 KiB gave that memory back, but made every blob buffer an mmap of its own: 256 page
faults per MiB touched and an munmap when freed: two fifths of the holders' CPU in a get.

So ``tune_allocator`` fixes the threshold above the largest frame, where blob buffers are
reused from glibc's heaps, and a node calls ``trim`` every ``TRIM_INTERVAL`` seconds
(``malloc_trim``), which hands the free pages of every heap back to the system: an idle
node keeps only what it uses. Both do nothing where the C library is not glibc.
"""

from __future__ import annotations

import asyncio
import ctypes
from typing import Final

from fstore.net.wire import MAX_FRAME, MiB

# Above the largest frame (a sealed 4 MiB chunk and its header), so that no blob buffer
# is an mmap of its own; larger blocks (a manifest of a huge file) still are.
MMAP_THRESHOLD: Final = 2 * MAX_FRAME
# Free space at the top of a heap is kept up to this much between trims.
TRIM_THRESHOLD: Final = 16 * MiB
ARENAS: Final = 2  # glibc's default is 8 per core: each short-lived thread may keep one
TRIM_INTERVAL: Final = 1.0  # seconds: a trim with little to give back costs microseconds

_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
_M_ARENA_MAX: Final = -8


def _glibc() -> ctypes.CDLL | None:
    """The C library this process runs on, if it is glibc (whose mallopt codes these are)."""
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded: no search, no subprocess
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC: Final = _glibc()


def is_glibc() -> bool:
    return _LIBC is not None


def tune_allocator() -> None:
    """Set the thresholds for this process (call it first thing); nothing if not glibc."""
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        _LIBC.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        _LIBC.mallopt(_M_ARENA_MAX, ARENAS)


def trim() -> bool:
    """Give the free pages of every heap back to the system; True if any were."""
    return _LIBC is not None and bool(_LIBC.malloc_trim(0))


async def trim_periodically(interval: float = TRIM_INTERVAL) -> None:
    """``trim`` every ``interval`` seconds, on a worker thread, until cancelled."""
    if _LIBC is None:
        return
    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(trim)
