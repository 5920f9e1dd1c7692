"""Type stubs for ``fstore._native``, the Rust extension that does every bulk-byte step.

Every function and method here that takes bulk data accepts any C-contiguous
object supporting the buffer protocol (``bytes``, ``bytearray``, ``memoryview``,
``mmap``...) without copying it, and releases the GIL while it works.
Errors are raised as the classes of :mod:`fstore.errors`.
"""

import os
from typing import Final, Self, final

from typing_extensions import Buffer

__all__ = [
    "CHUNK_CONTEXT",
    "DEFAULT_AVG_SIZE",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_MIN_SIZE",
    "HASH_LEN",
    "HEADER_LEN",
    "KEY_LEN",
    "RECORD_SIZE",
    "TAG_LEN",
    "Chunker",
    "Hasher",
    "Opener",
    "RestorePipeline",
    "SealedChunk",
    "Sealer",
    "StorePipeline",
    "__version__",
    "chunk_id",
    "chunk_id_key",
    "chunk_key",
    "derive_key",
    "generate_key",
    "hash",
    "hash_file",
    "keyed_hash",
    "open",
    "open_blob",
    "seal",
    "sealed_length",
]

__version__: Final[str]

# --- BLAKE3 -----------------------------------------------------------------

HASH_LEN: Final[int]
"""32: the length of a BLAKE3 digest, of an address and of a chunk id."""

def hash(data: Buffer, length: int = 32, *, parallel: bool = True) -> bytes:
    """BLAKE3 of ``data``; ``length`` may be any size (extended output).

    With ``parallel``, inputs of 128 KiB and more are hashed on all cores.
    """

def keyed_hash(key: Buffer, data: Buffer, length: int = 32, *, parallel: bool = True) -> bytes:
    """BLAKE3 in keyed mode; ``key`` must be 32 bytes."""

def derive_key(context: str, key_material: Buffer, length: int = 32) -> bytes:
    """BLAKE3 in key-derivation mode with a hard-coded, globally unique ``context``."""

def hash_file(path: str | os.PathLike[str], length: int = 32, *, parallel: bool = True) -> bytes:
    """BLAKE3 of a file's contents, memory-mapped and multi-threaded for large files.

    Equal to what ``b3sum`` prints for the same file.
    """

@final
class Hasher:
    """Streaming BLAKE3. Exactly one of ``key`` and ``derive_key_context`` may be given."""

    def __new__(
        cls,
        data: Buffer | None = None,
        *,
        key: Buffer | None = None,
        derive_key_context: str | None = None,
    ) -> Self: ...
    def update(self, data: Buffer, *, parallel: bool = True) -> None: ...
    def finalize(self, length: int = 32) -> bytes:
        """The digest so far; the hasher stays usable (BLAKE3 finalization does not consume it)."""
    def hexdigest(self, length: int = 32) -> str: ...
    def copy(self) -> Hasher: ...

# --- FastCDC ----------------------------------------------------------------

DEFAULT_MIN_SIZE: Final[int]
"""256 KiB."""
DEFAULT_AVG_SIZE: Final[int]
"""1 MiB."""
DEFAULT_MAX_SIZE: Final[int]
"""4 MiB."""

@final
class Chunker:
    """Push-style FastCDC (2020) chunker.

    Feed buffers of any size with :meth:`update`; each call returns the end
    offsets (counted from the start of the stream) of the chunks whose end it
    made certain. :meth:`finish` returns the rest. The offsets are identical to
    chunking the whole stream at once, however the input is split. Only the
    start of the chunk still being cut (less than ``max_size``) is copied.
    Sizes must be powers of two with ``min_size < avg_size < max_size``
    (64 B <= min <= 1 MiB, 256 B <= avg <= 4 MiB, 1 KiB <= max <= 16 MiB).
    """

    def __new__(
        cls,
        min_size: int = ...,
        avg_size: int = ...,
        max_size: int = ...,
    ) -> Self: ...
    @property
    def min_size(self) -> int: ...
    @property
    def avg_size(self) -> int: ...
    @property
    def max_size(self) -> int: ...
    def update(self, data: Buffer) -> list[int]: ...
    def finish(self) -> list[int]: ...

# --- Cobblestone-128 (C2SP chunked encryption) ----------------------------------

KEY_LEN: Final[int]
"""16: the input key length of Cobblestone-128."""
RECORD_SIZE: Final[int]
"""16384: plaintext bytes per sealed record (the last record is always shorter)."""
HEADER_LEN: Final[int]
"""56: the 24-byte salt plus the 32-byte key commitment in front of every sealed message."""
TAG_LEN: Final[int]
"""16: the AES-GCM tag after every record."""

def generate_key() -> bytes:
    """16 random bytes from the operating system, for a new sealing key."""

def sealed_length(plain_length: int) -> int:
    """The exact length of a sealed message whose plaintext is ``plain_length`` bytes."""

def seal(key: Buffer, context: Buffer, data: Buffer) -> bytes:
    """Seal ``data`` in one call with a fresh random salt."""

def open(key: Buffer, context: Buffer, data: Buffer) -> bytes:
    """Open a whole sealed message.

    Raises ``WrongKeyError``, ``TamperedError``, ``TruncatedError`` or
    ``TrailingDataError`` (see :mod:`fstore.errors`).
    """

@final
class Sealer:
    """Streaming Cobblestone-128 encryption. Refuses further use after finalize or any failure."""

    def __new__(cls, key: Buffer, context: Buffer | None = None) -> Self: ...
    def update(self, data: Buffer) -> bytes: ...
    def update_into(self, data: Buffer, buf: Buffer) -> int:
        """Write the output of ``update(data)`` into ``buf``; returns the byte count."""
    def finalize(self) -> bytes: ...

@final
class Opener:
    """Streaming Cobblestone-128 decryption.

    Plaintext is released record by record as soon as each record authenticates;
    only :meth:`finalize` proves the message was complete.
    """

    def __new__(cls, key: Buffer, context: Buffer | None = None) -> Self: ...
    def update(self, data: Buffer) -> bytes: ...
    def update_into(self, data: Buffer, buf: Buffer) -> int: ...
    def finalize(self) -> bytes: ...

# --- The store pipeline ---------------------------------------------------------

CHUNK_CONTEXT: Final[bytes]
"""The Cobblestone context every chunk is sealed with."""

def chunk_id_key(namespace_secret: Buffer) -> bytes:
    """The 32-byte BLAKE3 key for chunk ids, derived from a 32-byte namespace secret."""

def chunk_id(namespace_secret: Buffer, data: Buffer) -> bytes:
    """The chunk id (keyed BLAKE3) of one plaintext chunk."""

def chunk_key(namespace_secret: Buffer, chunk_id: Buffer) -> bytes:
    """The 16-byte sealing key of a chunk, derived from the namespace secret and chunk id."""

@final
class SealedChunk:
    """One chunk of a stored file, ready to be put on the network as a blob."""

    @property
    def chunk_id(self) -> bytes:
        """Keyed BLAKE3 of the plaintext: the namespace's dedup key."""
    @property
    def address(self) -> bytes:
        """BLAKE3 of ``sealed``: the blob's address (32 bytes)."""
    @property
    def key(self) -> bytes:
        """The 16-byte key the chunk was sealed with (goes into the manifest)."""
    @property
    def sealed(self) -> bytes:
        """The blob: the Cobblestone-sealed chunk."""
    @property
    def plain_length(self) -> int: ...
    @property
    def offset(self) -> int:
        """Where the chunk starts in the file."""

@final
class StorePipeline:
    """Plaintext in, sealed chunks out: FastCDC, chunk id, seal, address, whole-file BLAKE3."""

    def __new__(
        cls,
        namespace_secret: Buffer,
        *,
        min_size: int = ...,
        avg_size: int = ...,
        max_size: int = ...,
        parallel: bool = True,
    ) -> Self:
        """With ``parallel`` (the default), each step seals its chunks on all cores
        while FastCDC cuts the next ones; ``parallel=False`` keeps it on one core."""
    def feed(self, data: Buffer) -> list[SealedChunk]:
        """Take more plaintext; returns, in file order, the chunks it completed.

        A chunk comes out of the call whose data makes its end certain, sealed.
        ``data`` is not copied, except the start of the chunk still being cut
        (less than ``max_size``), which is held for the next call; the caller
        may reuse ``data``'s memory once the call returns.
        """
    def finish(self) -> list[SealedChunk]:
        """End the stream; returns the last chunks.

        Then :attr:`size` and :attr:`blake3` are final.
        """
    @property
    def size(self) -> int:
        """Plaintext bytes fed so far."""
    @property
    def blake3(self) -> bytes:
        """Whole-file BLAKE3 (equal to ``b3sum``); only available after :meth:`finish`."""

def open_blob(address: Buffer, key: Buffer, sealed: Buffer, plain_length: int) -> bytes:
    """Verify a sealed chunk against its address and open it, in one pass over ``sealed``.

    Each window of the blob is hashed, then the records it completes are
    opened, while they are in cache. The address is checked first: a blob that
    does not hash to ``address`` raises ``AddressMismatchError``, whatever else
    is wrong with it (truncated, extended, altered), so the caller can try
    another holder's copy. A blob that matches its address but not
    ``plain_length`` raises ``TruncatedError``/``TrailingDataError``; one that
    does not open raises the errors of :func:`open`. Runs on the calling
    thread only, so blobs can be opened side by side in several threads;
    :meth:`RestorePipeline.add_opened` then takes the plaintexts in file order.
    """

@final
class RestorePipeline:
    """Sealed chunks in, verified plaintext out, in file order.

    Each blob is checked against its address as it is opened; :meth:`finish`
    checks the total size and whole-file BLAKE3. A chunk that fails any check
    changes nothing, so it can be retried with another holder's copy.
    """

    def __new__(cls, *, parallel: bool = True) -> Self:
        """With ``parallel``, hashing a chunk's plaintext of 128 KiB or more into
        the whole-file BLAKE3 uses all cores."""
    def open_chunk(self, address: Buffer, key: Buffer, sealed: Buffer, plain_length: int) -> bytes:
        """:func:`open_blob`, then :meth:`add_opened`: the next chunk's verified plaintext.

        Raises ``AddressMismatchError`` if ``sealed`` does not hash to
        ``address``, ``TruncatedError``/``TrailingDataError`` if its length does
        not match ``plain_length``, and the errors of :func:`open`.
        """
    def add_opened(self, plain: Buffer) -> None:
        """Take the next chunk's plaintext, which :func:`open_blob` verified and opened.

        Counts it into :attr:`size` and the whole-file BLAKE3 that
        :meth:`finish` checks.
        """
    def finish(self, expected_size: int, expected_blake3: Buffer) -> None:
        """Raise ``FileMismatchError`` unless the plaintext so far has this size and BLAKE3."""
    @property
    def size(self) -> int: ...
