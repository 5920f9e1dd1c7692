"""Group commit: writes that arrive together share one commit, and none is acknowledged early."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from fstore import _native
from fstore.errors import AddressMismatchError, StorageError
from fstore.node import local as local_module
from fstore.node.local import MAX_COMMITS, LocalBlobs
from fstore.storage.blobs import BlobStore
from fstore.storage.catalog import Catalog
from fstore.storage.smallblobs import SMALL_BLOB_MAX, SmallBlobs


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


def with_rows(tmp_path: Path) -> LocalBlobs:
    """LocalBlobs as a node has them: small blobs are catalog rows."""
    catalog = Catalog(tmp_path / "fstore.db")
    return LocalBlobs(BlobStore(tmp_path, small=SmallBlobs(catalog)), catalog)


def commits_counted(local: LocalBlobs) -> dict[str, float]:
    registry = local.metrics.registry
    return {
        on: registry.get_sample_value("fstore_group_commits_total", {"on": on}) or 0.0
        for on in ("loop", "thread")
    }


async def put_small(local: LocalBlobs) -> bytes:
    blob = os.urandom(4096)
    address = _native.hash(blob)
    await local.put(address, blob)
    return address


def test_rows_commit_on_the_loop_and_blob_files_on_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of rows alone (small blobs, records) commit on the event loop's thread;
    a batch with a blob file commits on the commit threads. Both are durable on return."""
    # However slow this machine's disk is now, no commit counts as slow here.
    monkeypatch.setattr(local_module, "LOOP_COMMIT_LIMIT", 3600.0)

    async def main() -> None:
        local = with_rows(tmp_path)
        small = [await put_small(local) for _ in range(3)]
        locator = os.urandom(32)
        assert await local.put_record(locator, b"record", (1, bytes(32)))
        assert (local.commits, commits_counted(local)["loop"]) == (4, 4)
        large = os.urandom(SMALL_BLOB_MAX + 1)
        await local.put(_native.hash(large), large)
        assert (local.commits, commits_counted(local)["loop"]) == (5, 4)
        assert commits_counted(local) == {"loop": 4, "thread": 1}
        with committed(tmp_path) as other:
            assert set(other.kept()) == {*small, _native.hash(large)}
            assert other.get_record(locator) == (b"record", (1, bytes(32)))
        await local.close()

    asyncio.run(main())


def test_a_catalog_written_by_another_thread_never_blocks_the_loop(tmp_path: Path) -> None:
    """While another thread holds a catalog transaction, a small put waits on a commit
    thread, not on the loop: the loop goes on running and is what ends that transaction."""

    async def main() -> None:
        local = with_rows(tmp_path)
        inside, release = threading.Event(), threading.Event()
        released_by_loop: list[bool] = []

        def long_transaction() -> None:
            with local.catalog.transaction():
                inside.set()
                released_by_loop.append(release.wait(timeout=30))

        other_writer = threading.Thread(target=long_transaction)
        other_writer.start()
        await asyncio.to_thread(inside.wait)
        put = asyncio.create_task(put_small(local))
        while local.commits == 0:  # the put's commit has started
            await asyncio.sleep(0)
        assert not put.done()  # it waits for the other transaction
        release.set()  # only a loop that is not blocked gets here
        address = await put
        await asyncio.to_thread(other_writer.join)
        assert released_by_loop == [True]
        assert commits_counted(local)["loop"] == 0
        assert commits_counted(local) == {"loop": 0, "thread": 1}
        with committed(tmp_path) as other:
            assert other.is_kept(address)
        await local.close()

    asyncio.run(main())


def test_a_slow_commit_sends_row_commits_to_threads_for_a_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a commit slower than LOOP_COMMIT_LIMIT, rows commit on threads until
    LOOP_COMMIT_PAUSE has passed without another slow one."""

    async def main() -> None:
        local = with_rows(tmp_path)
        monkeypatch.setattr(local_module, "LOOP_COMMIT_LIMIT", 0.0)  # every commit is slow
        for _ in range(3):
            await put_small(local)
        assert (local.commits, commits_counted(local)["loop"]) == (3, 1)
        monkeypatch.setattr(local_module, "LOOP_COMMIT_LIMIT", 3600.0)  # none is
        monkeypatch.setattr(local_module, "LOOP_COMMIT_PAUSE", 0.0)  # and the pause is over
        for _ in range(2):
            await put_small(local)
        assert (local.commits, commits_counted(local)["loop"]) == (5, 3)
        await local.close()

    asyncio.run(main())
