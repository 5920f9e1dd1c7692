"""The per-thread msgpack packer: the bytes ``msgpack.packb`` would give, whatever came before."""

from __future__ import annotations

import threading

import msgpack
import pytest

from fstore.formats import packing
from fstore.formats.packing import pack

VALUES = [
    {},
    {"addr": b"\x01" * 32, "tag": b"\x02" * 32, "n": 7},
    [1, "two", b"three", None, 4.5, {"nested": [True, False]}],
    "x" * 70_000,
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_pack_gives_the_bytes_packb_gives(value: object) -> None:
    assert pack(value) == msgpack.packb(value, use_bin_type=True)


def test_a_failed_pack_leaves_nothing_behind_for_the_next() -> None:
    pack({"a": 1})
    with pytest.raises(TypeError):
        pack({"half": b"x" * 100, "then": object()})
    assert pack({"b": 2}) == msgpack.packb({"b": 2}, use_bin_type=True)


def test_a_large_value_does_not_keep_its_buffer() -> None:
    large = b"y" * (packing.KEEP_BUFFER + 1)
    assert pack(large) == msgpack.packb(large, use_bin_type=True)
    assert getattr(packing._local, "packer", None) is None
    assert pack([1, 2]) == msgpack.packb([1, 2], use_bin_type=True)
    assert packing._local.packer is not None


def test_threads_packing_at_once_each_get_their_own_bytes() -> None:
    errors: list[str] = []

    def work(me: int) -> None:
        for i in range(2_000):
            value = {"thread": me, "i": i, "pad": bytes([me]) * (i % 300)}
            if pack(value) != msgpack.packb(value, use_bin_type=True):
                errors.append(f"thread {me} item {i}")
                return

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
