"""A node process's allocator: blob-sized buffers reused while busy, free memory given back.

Each check runs in a fresh interpreter: the settings are the whole process's.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fstore.node import memory

pytestmark = pytest.mark.skipif(not memory.is_glibc(), reason="the C library is not glibc")

BUFFERS = 200
BUFFER = 1 << 20  # a typical blob


def run(script: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    answer: dict[str, int] = json.loads(done.stdout)
    return answer


# Allocates, touches and frees BUFFERS blob-sized buffers one after another, as a holder
# serving a get does, and counts the page faults that took.
FAULTS = f"""
import json, resource
from fstore.node import memory
if TUNE:
    memory.tune_allocator()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
bytearray({BUFFER})  # the heap grows once
before = faults()
for _ in range({BUFFERS}):
    buffer = bytearray({BUFFER})
    del buffer
print(json.dumps({{"faults": faults() - before}}))
"""


def test_blob_buffers_are_reused_without_page_faults() -> None:
    tuned = run("TUNE = True\n" + FAULTS)["faults"]
    # One fresh mapping per buffer faults in every one of its 256 pages.
    assert tuned < BUFFERS, tuned
    # The check can fail: an mmap threshold under a blob's size (as a fixed 128 KiB
    # threshold was) costs a page fault per page of every buffer.
    untuned = run(
        "import ctypes, ctypes.util\n"
        "ctypes.CDLL(ctypes.util.find_library('c')).mallopt(-3, 128 * 1024)\n"
        "TUNE = False\n" + FAULTS
    )["faults"]
    assert untuned > BUFFERS * (BUFFER // 4096) // 2, untuned


TRIM = f"""
import json
from fstore.node import memory
memory.tune_allocator()
def anon():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
# Blob-sized buffers, each followed by a smaller block that outlives it (too large for any
# hole that the interpreter's start left in the heap, so it comes right after the buffer),
# so that the freed buffers lie between blocks in use and glibc cannot give them back on
# free().
held = []
for _ in range(64):
    buffer = bytearray({BUFFER})
    buffer[::4096] = b"x" * ({BUFFER} // 4096)  # every page touched
    held.append((buffer, bytes(128 * 1024)))
buffer = None
small = [pair[1] for pair in held]
high = anon()
held = None
freed = anon()
memory.trim()
print(json.dumps({{"high": high, "freed": freed, "trimmed": anon()}}))
"""


def test_trim_gives_freed_buffers_back() -> None:
    sizes = run(TRIM)
    everything = 64 * BUFFER
    assert sizes["high"] - sizes["freed"] < everything // 2, sizes  # kept for reuse
    assert sizes["freed"] - sizes["trimmed"] > everything * 3 // 4, sizes  # given back
