"""Small helpers for the tests that feed data in pieces."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import cycle

KiB = 1024
MiB = 1024 * KiB


def pieces(data: bytes, sizes: Sequence[int]) -> Iterator[memoryview]:
    """``data`` cut into consecutive pieces whose sizes cycle through ``sizes`` (0 allowed)."""
    view = memoryview(data)
    pos = 0
    for size in cycle(sizes):
        if pos >= len(view):
            return
        yield view[pos : pos + size]
        pos += size
