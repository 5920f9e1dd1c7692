"""This node's own copies: blob files, and their pins in the catalog committed in batches."""

from __future__ import annotations

import asyncio
import functools

from fstore.storage.blobs import BlobStore
from fstore.storage.catalog import Catalog


class LocalBlobs:
    def __init__(self, blobs: BlobStore, catalog: Catalog) -> None:
        self.blobs = blobs
        self.catalog = catalog
        self._pins_pending: set[bytes] = set()
        self._pin_flush: asyncio.Task[None] | None = None

    async def put(
        self, address: bytes, blob: bytes | memoryview, *, verified: bool = False
    ) -> None:
        """Keep ``blob`` durably (``verified``: its address was computed in this process)."""
        await asyncio.to_thread(functools.partial(self.blobs.put, verified=verified), address, blob)
        self._pin(address)

    async def load(self, address: bytes) -> bytes | None:
        """The blob, or None; :class:`AddressMismatchError` if the copy here is bad."""
        return await asyncio.to_thread(self.blobs.load, address)

    def has(self, address: bytes) -> bool:
        return self.blobs.has(address)

    def _pin(self, address: bytes) -> None:
        """Record that this node keeps ``address``, in batches off the event loop.

        The acknowledgement promises a durable blob, and the blob file is
        durable before this runs; the pin is bookkeeping about it, so one
        SQLite commit (and fsync) serves every pin that arrived meanwhile.
        """
        self._pins_pending.add(address)
        if self._pin_flush is None or self._pin_flush.done():
            self._pin_flush = asyncio.create_task(self._flush_pins())

    async def _flush_pins(self) -> None:
        while self._pins_pending:
            batch, self._pins_pending = self._pins_pending, set()
            await asyncio.to_thread(self._pin_all, batch)

    def _pin_all(self, addresses: set[bytes]) -> None:
        with self.catalog.transaction():
            for address in addresses:
                self.catalog.pin(address)

    async def flush(self) -> None:
        """Wait until every pin so far is committed."""
        if self._pin_flush is not None:
            await self._pin_flush
