"""Where blobs live: the R nodes whose ids are XOR-closest to the address."""

from __future__ import annotations

from collections.abc import Iterable


def distance(a: bytes, b: bytes) -> int:
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def closest(target: bytes, node_ids: Iterable[bytes], count: int) -> list[bytes]:
    """The ``count`` node ids closest to ``target``, nearest first."""
    return sorted(set(node_ids), key=lambda n: distance(n, target))[:count]
