"""Reading files: manifests, whole files and ranges, every blob fetched and verified.

A blob is taken from this node's disk when it holds a good copy, else from
the live members closest to its address; every copy is checked against its
address before use (holders send blobs unchecked), and a peer that served a bad
one is told, so it checks its copy, and is asked last from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import TypeVar

from fstore import _native
from fstore.errors import (
    AddressMismatchError,
    FstoreError,
    InvalidArgumentError,
    NotFoundError,
    PeerUnavailableError,
    RemoteError,
)
from fstore.formats.capability import Capability
from fstore.formats.manifest import ChunkRef, Manifest
from fstore.node.hedge import Hedge, run_detached
from fstore.node.local import LocalBlobs
from fstore.node.metrics import NodeMetrics
from fstore.node.peers import Peers
from fstore.storage.blobs import verify_address

log = logging.getLogger(__name__)

# Chunks fetched ahead during a get: bounds a transfer's memory to about this
# many 4 MiB blobs.
GET_WINDOW = 4
BUSY_RETRIES = 4

T = TypeVar("T")


class Reader:
    def __init__(self, peers: Peers, local: LocalBlobs, metrics: NodeMetrics) -> None:
        self.peers = peers
        self.local = local
        self.metrics = metrics

    async def manifest(self, cap: Capability) -> Manifest:
        """The opened manifest a capability names."""
        return Manifest.open(cap.file_key, await self.fetch_blob(cap.manifest_address))

    async def read_range(
        self, manifest: Manifest, start: int = 0, end: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Stream bytes ``start`` up to ``end`` (exclusive; default the end) of a file.

        A small file's bytes are in its manifest (``manifest.inline``); of a
        larger file, only the chunks that overlap the range are fetched. Each blob is still
        checked against its address and opened with its key (every record
        authenticated); the whole file's size and BLAKE3 can be checked only
        when the range is the whole file, and then are.
        """
        end = manifest.size if end is None else end
        if not 0 <= start <= end <= manifest.size:
            raise InvalidArgumentError(
                f"bytes {start} to {end} are not within a file of {manifest.size} bytes"
            )
        if manifest.inline is not None:  # opened and checked with its manifest
            if end > start:
                self.metrics.served_bytes.inc(end - start)
                yield manifest.inline[start:end]
            return
        spans = _overlapping(manifest.chunks, start, end)
        # One core: chunks are opened one at a time here, and rayon workers that
        # idle-spin between 1 MiB jobs cost the network path more than they save.
        restore = _native.RestorePipeline(parallel=False)
        plains = self._fetch_ahead([ref for _, ref in spans])
        async with contextlib.aclosing(plains):
            for offset, _ref in spans:
                plain = await anext(plains)
                restore.add_opened(plain)
                piece = plain[max(0, start - offset) : end - offset]
                self.metrics.served_bytes.inc(len(piece))
                yield piece
        if (start, end) == (0, manifest.size):
            restore.finish(manifest.size, manifest.blake3)

    async def _fetch_ahead(self, refs: Sequence[ChunkRef]) -> AsyncGenerator[bytes, None]:
        """The opened chunks of ``refs`` in order, up to GET_WINDOW fetched ahead.

        When the get ends early (a failure, or the reader stopped), fetches still
        running are cancelled and the outcome of every one is collected, so a
        failed get leaves no "exception was never retrieved" behind.
        """
        ahead: deque[asyncio.Task[bytes]] = deque()
        waiting = iter(refs)

        def top_up() -> None:
            for ref in itertools.islice(waiting, GET_WINDOW - len(ahead)):
                ahead.append(asyncio.create_task(self.fetch_chunk(ref)))

        try:
            top_up()
            while ahead:
                blob = await ahead[0]
                ahead.popleft()
                top_up()
                yield blob
        finally:
            for task in ahead:
                task.cancel()
            await asyncio.gather(*ahead, return_exceptions=True)

    async def fetch_blob(
        self, address: bytes, size_hint: int = 0, *, background: bool = False
    ) -> bytes | memoryview:
        """A blob whose bytes match its address (see :meth:`_fetch`)."""

        def verified(blob: bytes | memoryview) -> bytes | memoryview:
            verify_address(address, blob)
            return blob

        return await self._fetch(address, size_hint, background, verified)

    async def fetch_chunk(self, ref: ChunkRef) -> bytes:
        """A file chunk's plaintext: its blob fetched, checked against its address and
        opened in one pass over the bytes (see :meth:`_fetch`)."""

        def opened(blob: bytes | memoryview) -> bytes:
            return _native.open_blob(ref.address, ref.key, blob, ref.length)

        return await self._fetch(ref.address, ref.length, False, opened)

    async def _fetch(
        self,
        address: bytes,
        size_hint: int,
        background: bool,
        accept: Callable[[bytes | memoryview], T],
    ) -> T:
        """What ``accept`` makes of a good copy of a blob: local first, then the closest holders.

        ``accept`` runs on a worker thread and raises :class:`AddressMismatchError`
        for a copy that does not match the address; any other error it raises is
        the blob's own (its bytes are right, so every copy has it) and ends the fetch.

        Holders are asked in XOR order, liars and overdue ones last; one that
        fails, lies or is gone is skipped, and one silent past its expected time
        is joined by the next (:class:`Hedge`): the first good copy wins.
        Holders that answered ``busy`` are tried again, a few rounds with a
        growing pause, before the blob is declared unavailable: an
        :class:`IntegrityError` if a copy was found that failed its check (here,
        or served by a peer), else :class:`NotFoundError`. ``background`` tells
        holders the fetch is repair's, so they do not count it as a user's.
        """
        bad_copies = 0
        try:
            local = await self.local.load_with(address, accept)
        except AddressMismatchError:
            self.metrics.verification_failed("disk")
            bad_copies += 1
        else:
            if local is not None:
                return local
        candidates = self.peers.holders(address)
        for attempt in range(BUSY_RETRIES + 1):
            busy: list[bytes] = []
            hedge = Hedge(
                self.peers, candidates, lambda n: self._ask(n, address, background), size_hint
            )
            try:
                while not hedge.exhausted:
                    for node, result in await hedge.wait(1):
                        if isinstance(result, RemoteError | PeerUnavailableError):
                            if isinstance(result, RemoteError) and result.code == "busy":
                                busy.append(node)
                            log.debug(
                                "get_blob %s from %s: %s",
                                address.hex()[:12],
                                node.hex()[:12],
                                result,
                            )
                            continue
                        if isinstance(result, BaseException):
                            raise result
                        self.metrics.blob_bytes_received.inc(len(result))
                        try:
                            return await asyncio.to_thread(accept, result)
                        except AddressMismatchError:
                            pass
                        self.metrics.verification_failed("peer")
                        self.peers.record_lie(node)
                        self._report_bad_copy(node, address)
                        bad_copies += 1
                        log.warning(
                            "%s served bytes that do not match blob %s; trying another holder",
                            self.peers.describe(node),
                            address.hex(),
                        )
            finally:
                hedge.cancel()
                self.metrics.hedged_requests.inc(hedge.hedged)
            if not busy:
                break
            candidates = busy
            await asyncio.sleep(0.05 * 2**attempt)
        if bad_copies:
            raise AddressMismatchError(
                f"{bad_copies} copies of blob {address.hex()} failed their check "
                "and no live holder has a good one"
            )
        raise NotFoundError(f"no live holder has blob {address.hex()}")

    def _report_bad_copy(self, node: bytes, address: bytes) -> None:
        """Tell ``node`` its copy of ``address`` was bad, so that it checks and quarantines
        it (holders serve blobs unchecked); in the background, and best effort."""
        run_detached(asyncio.ensure_future(self._tell_bad_copy(node, address)))

    async def _tell_bad_copy(self, node: bytes, address: bytes) -> None:
        with contextlib.suppress(FstoreError):
            link = await self.peers.connect(node)
            await link.request("bad_blob", {"addr": address})

    async def _ask(self, node: bytes, address: bytes, background: bool) -> bytes | memoryview:
        link = await self.peers.connect(node)
        meta: dict[str, object] = {"addr": address}
        if background:
            meta["bg"] = True
        return (await link.request("get_blob", meta)).body


def _overlapping(chunks: Sequence[ChunkRef], start: int, end: int) -> list[tuple[int, ChunkRef]]:
    """(offset in the file, chunk) of every chunk holding some of bytes ``start`` to ``end``."""
    spans = []
    offset = 0
    for ref in chunks:
        if offset < end and offset + ref.length > start:
            spans.append((offset, ref))
        offset += ref.length
    return spans
