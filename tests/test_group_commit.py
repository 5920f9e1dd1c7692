"""Group commit: writes that arrive together share one commit, and none is acknowledged early."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from fstore import _native
from fstore.errors import AddressMismatchError, StorageError
from fstore.node.local import MAX_COMMITS, LocalBlobs
from fstore.storage.blobs import BlobStore
from fstore.storage.catalog import Catalog


def committed(data_dir: Path) -> Catalog:
    """A second connection to the catalog: it sees only what was committed."""
    return Catalog(data_dir / "fstore.db")


def test_every_write_is_committed_when_it_returns(tmp_path: Path) -> None:
    """Each put, record and chunk row, awaited alone, is in the catalog (as another
    connection sees it) and the blob on disk the moment its call returns."""

    async def main() -> None:
        local = LocalBlobs(BlobStore(tmp_path), Catalog(tmp_path / "fstore.db"))
        with committed(tmp_path) as other:
            for _ in range(5):
                blob = os.urandom(4096)
                address = _native.hash(blob)
                await local.put(address, blob)
                assert other.is_kept(address) and local.blobs.get(address) == blob
                locator, record = os.urandom(32), os.urandom(100)
                assert await local.put_record(locator, record, (1, os.urandom(32)))
                assert other.get_record(locator) is not None
                chunk_id = os.urandom(32)
                await local.add_chunk(chunk_id, address)
                assert other.chunk_address(chunk_id) == address
        await local.close()

    asyncio.run(main())


def test_concurrent_writes_share_commits_and_a_bad_blob_fails_alone(tmp_path: Path) -> None:
    """64 blobs and 64 records written at once take far fewer commits than writes; a blob
    that does not match its address fails its own put only, and is neither kept nor pinned."""

    async def main() -> None:
        local = LocalBlobs(BlobStore(tmp_path), Catalog(tmp_path / "fstore.db"))
        blobs = [os.urandom(1000 + i) for i in range(64)]
        addresses = [_native.hash(b) for b in blobs]
        bad_address = _native.hash(b"something else")
        records = [(os.urandom(32), os.urandom(50)) for _ in range(64)]
        results = await asyncio.gather(
            *(local.put(a, b) for a, b in zip(addresses, blobs, strict=True)),
            local.put(bad_address, os.urandom(500)),
            *(local.put_record(loc, rec, (7, bytes(32))) for loc, rec in records),
            return_exceptions=True,
        )
        assert results[:64] == [None] * 64
        assert isinstance(results[64], AddressMismatchError)
        assert results[65:] == [True] * 64
        assert local.commits <= MAX_COMMITS + 1
        with committed(tmp_path) as other:
            assert set(other.kept()) == set(addresses)
            assert all(other.get_record(loc) == (rec, (7, bytes(32))) for loc, rec in records)
        assert not local.blobs.has(bad_address)
        await local.close()

    asyncio.run(main())


def test_a_failed_blob_write_fails_its_waiters_and_leaves_no_pin(tmp_path: Path) -> None:
    """When a blob's file cannot be placed (a file stands where its ``blobs/ab`` directory
    goes), its put fails with a StorageError, and the pin made alongside is taken back."""

    async def main() -> None:
        local = LocalBlobs(BlobStore(tmp_path), Catalog(tmp_path / "fstore.db"))
        blob = os.urandom(100)
        address = _native.hash(blob)
        (tmp_path / "blobs" / address.hex()[:2]).write_bytes(b"not a directory")
        with pytest.raises(StorageError):
            await local.put(address, blob)
        with committed(tmp_path) as other:
            assert other.kept() == []
        assert not local.blobs.has(address)
        await local.close()

    asyncio.run(main())
