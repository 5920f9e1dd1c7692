"""msgpack packing that reuses one buffer per thread.

``msgpack.packb`` makes a new packer, and with it a 256 KiB buffer, on every
call. A node caps glibc's mmap threshold (``fstore-node``), so each of those
buffers is an mmap and a munmap, and the munmap of a threaded process costs a
TLB shootdown on every core: several per request, more than the packing
itself. A packer kept per thread starts small and grows as it must; one that
grew past ``KEEP_BUFFER`` is dropped after use, so a large value packed once
does not keep its buffer for the thread's life.
"""

from __future__ import annotations

import threading

import msgpack

__all__ = ["pack"]

START_BUFFER = 16 * 1024
KEEP_BUFFER = 256 * 1024

_local = threading.local()


def pack(value: object) -> bytes:
    """``value`` as msgpack (bin type for bytes), as ``msgpack.packb`` would pack it."""
    packer: msgpack.Packer | None = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True, buf_size=START_BUFFER)
    packed: bytes = packer.pack(value)  # resets its buffer, also when it raises
    if len(packed) > KEEP_BUFFER:
        _local.packer = None
    return packed
