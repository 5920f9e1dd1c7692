"""Manifests: the sealed list of a file's chunks.

A manifest is a msgpack map ``{"v": 1, "size": int, "blake3": bytes32,
"chunks": [[address, key, length], ...], "meta": {...}}`` sealed with
Cobblestone-128 under a fresh random 16-byte file key and the context
``fstore/manifest/v1``. The sealed manifest is stored as a blob like any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack
from typing_extensions import Buffer

from fstore import _native
from fstore.errors import IntegrityError

VERSION = 1
CONTEXT = b"fstore/manifest/v1"


@dataclass(frozen=True)
class ChunkRef:
    address: bytes
    key: bytes
    length: int


@dataclass(frozen=True)
class Manifest:
    size: int
    blake3: bytes
    chunks: tuple[ChunkRef, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def pack(self) -> bytes:
        packed: bytes = msgpack.packb(
            {
                "v": VERSION,
                "size": self.size,
                "blake3": self.blake3,
                "chunks": [[c.address, c.key, c.length] for c in self.chunks],
                "meta": self.meta,
            },
            use_bin_type=True,
        )
        return packed

    def seal(self, file_key: bytes) -> bytes:
        return _native.seal(file_key, CONTEXT, self.pack())

    @classmethod
    def open(cls, file_key: bytes, sealed: Buffer) -> Manifest:
        """Open and validate a sealed manifest; anything malformed is an IntegrityError."""
        plain = _native.open(file_key, CONTEXT, sealed)
        try:
            raw = msgpack.unpackb(plain, raw=False, strict_map_key=True)
            if not isinstance(raw, dict) or raw.get("v") != VERSION:
                raise ValueError("not a version-1 manifest")
            chunks = tuple(ChunkRef(bytes(a), bytes(k), int(n)) for a, k, n in raw["chunks"])
            manifest = cls(int(raw["size"]), bytes(raw["blake3"]), chunks, dict(raw["meta"]))
        except (ValueError, KeyError, TypeError, msgpack.UnpackException) as e:
            raise IntegrityError(f"malformed manifest: {e}") from e
        if sum(c.length for c in chunks) != manifest.size or any(
            len(c.address) != 32 or len(c.key) != 16 or c.length < 0 for c in chunks
        ):
            raise IntegrityError("malformed manifest: chunk list does not add up")
        return manifest
