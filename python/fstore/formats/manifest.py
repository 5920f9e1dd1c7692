"""Manifests: the sealed description of a file, and the bodies of small files.

A manifest is a msgpack map sealed with Cobblestone-128 under a fresh random
16-byte file key and the context ``fstore/manifest/v1``, and stored as a blob
like any other (docs/FORMAT.md, section 6). Two versions:

- 1: ``{"v": 1, "size", "blake3", "chunks": [[address, key, length], ...], "meta"}``,
  the file in chunk blobs;
- 2: version 1 plus ``"inline"``: a file of at most :data:`INLINE_MAX` bytes
  carried inside its manifest, its body sealed on its own under the file key
  (:func:`seal_inline`), with an empty chunk list. One blob per small file.

Writers use version 2 only for inline files, so a reader that knows only
version 1 still reads every chunked file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack
from typing_extensions import Buffer

from fstore import _native
from fstore.errors import IntegrityError
from fstore.formats.packing import pack

VERSION = 1
INLINE_VERSION = 2
CONTEXT = b"fstore/manifest/v1"
INLINE_CONTEXT = b"fstore/inline/v1"
INLINE_MAX = 64 * 1024
"""Files of at most this many bytes are carried inside their manifest."""


def seal_inline(file_key: bytes, body: Buffer) -> bytes:
    """A small file's body sealed under its file key (context ``fstore/inline/v1``)."""
    return _native.seal(file_key, INLINE_CONTEXT, body)


def open_inline(file_key: bytes, sealed: Buffer, size: int, blake3: bytes) -> bytes:
    """The body :func:`seal_inline` sealed, checked against the file's size and BLAKE3.

    A wrong key raises :class:`WrongKeyError`, altered bytes :class:`TamperedError`,
    a body of another length or hash :class:`IntegrityError`.
    """
    body = _native.open(file_key, INLINE_CONTEXT, sealed)
    if len(body) != size or _native.hash(body) != blake3:
        raise IntegrityError("the inline body does not match the file's size and BLAKE3")
    return body


@dataclass(frozen=True)
class ChunkRef:
    address: bytes
    key: bytes
    length: int


@dataclass(frozen=True)
class Manifest:
    """A file: its size, whole-file BLAKE3, and either its chunks or (small) its body.

    ``inline`` is the plaintext of a file carried in its manifest (version 2),
    None for a file in chunks (version 1).
    """

    size: int
    blake3: bytes
    chunks: tuple[ChunkRef, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    inline: bytes | None = None

    def pack(self, file_key: bytes | None = None) -> bytes:
        """The manifest's plaintext; ``file_key`` seals an inline body (needed only then)."""
        fields: dict[str, Any] = {
            "v": VERSION if self.inline is None else INLINE_VERSION,
            "size": self.size,
            "blake3": self.blake3,
            "chunks": [[c.address, c.key, c.length] for c in self.chunks],
            "meta": self.meta,
        }
        if self.inline is not None:
            if file_key is None:
                raise ValueError("packing a manifest with an inline body needs its file key")
            fields["inline"] = seal_inline(file_key, self.inline)
        return pack(fields)

    def seal(self, file_key: bytes) -> bytes:
        return _native.seal(file_key, CONTEXT, self.pack(file_key))

    @classmethod
    def open(cls, file_key: bytes, sealed: Buffer) -> Manifest:
        """Open and validate a sealed manifest; anything malformed is an IntegrityError."""
        plain = _native.open(file_key, CONTEXT, sealed)
        try:
            raw = msgpack.unpackb(plain, raw=False, strict_map_key=True)
            if not isinstance(raw, dict) or raw.get("v") not in (VERSION, INLINE_VERSION):
                raise ValueError("not a version-1 or version-2 manifest")
            chunks = tuple(ChunkRef(bytes(a), bytes(k), int(n)) for a, k, n in raw["chunks"])
            size, blake3 = int(raw["size"]), bytes(raw["blake3"])
            meta = dict(raw["meta"])
            sealed_body = raw["inline"] if raw["v"] == INLINE_VERSION else None
            if raw["v"] == INLINE_VERSION and not isinstance(sealed_body, bytes):
                raise ValueError("a version-2 manifest's inline is not bytes")
        except (ValueError, KeyError, TypeError, msgpack.UnpackException) as e:
            raise IntegrityError(f"malformed manifest: {e}") from e
        if sealed_body is not None:
            if chunks or size > INLINE_MAX:
                raise IntegrityError("malformed manifest: an inline file has chunks or is large")
            return cls(size, blake3, (), meta, open_inline(file_key, sealed_body, size, blake3))
        if sum(c.length for c in chunks) != size or any(
            len(c.address) != 32 or len(c.key) != 16 or c.length < 0 for c in chunks
        ):
            raise IntegrityError("malformed manifest: chunk list does not add up")
        return cls(size, blake3, chunks, meta)
