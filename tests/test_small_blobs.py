"""Small blobs as catalog rows: where they go, how they are read, checked, quarantined,
deleted and counted, and how a catalog of an earlier version takes them."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from netutil import blob_path

from fstore import _native
from fstore.errors import AddressMismatchError, StorageError
from fstore.node.local import LocalBlobs
from fstore.storage.blobs import BlobStore
from fstore.storage.catalog import CATALOG_NAME, Catalog
from fstore.storage.smallblobs import SMALL_BLOB_MAX, SmallBlobs


def blob(size: int) -> tuple[bytes, bytes]:
    data = os.urandom(size)
    return _native.hash(data), data


def blob_in_shard(size: int, first_byte: int) -> tuple[bytes, bytes]:
    """A blob whose address starts with ``first_byte`` (its file's directory)."""
    while True:
        address, data = blob(size)
        if address[0] == first_byte:
            return address, data


def rows(catalog: Catalog) -> set[bytes]:
    found = catalog.query("SELECT address FROM small_blobs")
    return {address for (address,) in found if isinstance(address, bytes)}


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    with Catalog(tmp_path / CATALOG_NAME) as catalog:
        yield catalog


@pytest.fixture
def store(tmp_path: Path, catalog: Catalog) -> BlobStore:
    return BlobStore(tmp_path, small=SmallBlobs(catalog))


def test_a_small_blob_is_a_row_and_a_larger_one_a_file(
    store: BlobStore, catalog: Catalog, tmp_path: Path
) -> None:
    small, at_limit, large = blob(4096), blob(SMALL_BLOB_MAX), blob(SMALL_BLOB_MAX + 1)
    assert store.put_many([small, at_limit, large, small]) == [True, True, True, False]
    assert rows(catalog) == {small[0], at_limit[0]}
    assert not blob_path(tmp_path, small[0]).exists()
    assert blob_path(tmp_path, large[0]).read_bytes() == large[1]
    for address, data in (small, at_limit, large):
        assert store.get(address) == data
        assert store.has(address) and store.size(address) == len(data)
    assert sorted(store.addresses()) == sorted([small[0], at_limit[0], large[0]])
    assert store.count() == 3
    assert store.total_bytes() == 4096 + 2 * SMALL_BLOB_MAX + 1


def test_a_row_is_durable_when_put_returns(store: BlobStore, tmp_path: Path) -> None:
    address, data = blob(1000)
    assert store.put(address, data)
    with sqlite3.connect(tmp_path / CATALOG_NAME) as other:  # another connection sees it
        found = other.execute("SELECT data FROM small_blobs WHERE address = ?", (address,))
        assert found.fetchone() == (data,)
    other.close()


def test_a_row_is_checked_like_a_file(store: BlobStore, catalog: Catalog) -> None:
    address, data = blob(100)
    with pytest.raises(AddressMismatchError):
        store.put(address, data + b"!")
    assert not store.has(address) and rows(catalog) == set()


def test_a_damaged_row_is_quarantined_and_a_good_copy_takes_its_place(
    store: BlobStore, catalog: Catalog, tmp_path: Path
) -> None:
    address, data = blob(2000)
    store.put(address, data)
    damaged = bytes([data[0] ^ 1]) + data[1:]
    catalog.execute("UPDATE small_blobs SET data = ? WHERE address = ?", (damaged, address))
    with pytest.raises(AddressMismatchError, match="corrupt"):
        store.load(address)
    assert not store.has(address)
    (kept,) = (tmp_path / "blobs" / "corrupt").iterdir()
    assert kept.name.startswith(address.hex()) and kept.read_bytes() == damaged
    assert store.get(address) is None
    assert store.put(address, data)
    assert store.get(address) == data


def test_delete_takes_the_row(store: BlobStore, catalog: Catalog) -> None:
    address, data = blob(300)
    store.put(address, data)
    assert store.delete(address)
    assert not store.delete(address)
    assert not store.has(address) and store.get(address) is None and rows(catalog) == set()


def test_the_totals_follow_every_insert_delete_and_change(
    store: BlobStore, catalog: Catalog
) -> None:
    blobs = [blob(n * 100) for n in range(1, 31)]
    store.put_many(blobs[:20])
    store.put_many(blobs[10:])  # ten already held
    for address, _ in blobs[:5]:
        store.delete(address)
    damaged = blobs[5][0]
    catalog.execute("UPDATE small_blobs SET data = ? WHERE address = ?", (b"x" * 7, damaged))
    counted = catalog.query("SELECT count(*), sum(length(data)) FROM small_blobs")
    assert counted == [(25, sum(len(d) for _, d in blobs[6:]) + 7)]
    assert (store.count(), store.total_bytes()) == counted[0]


def test_a_small_blob_held_as_a_file_by_an_earlier_version_stays_one(
    tmp_path: Path, catalog: Catalog
) -> None:
    address, data = blob(500)
    BlobStore(tmp_path).put(address, data)  # a store that keeps no rows: a file
    store = BlobStore(tmp_path, small=SmallBlobs(catalog))
    assert store.put(address, data) is False  # already held
    assert rows(catalog) == set()
    assert store.get(address) == data
    assert list(store.addresses()) == [address] and store.count() == 1
    assert store.delete(address) and not store.has(address)


def test_a_version_2_catalog_gains_the_table_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / CATALOG_NAME
    with Catalog(path) as catalog:
        catalog.mark_kept(b"k" * 32)
    with sqlite3.connect(path) as db:  # as version 2 left it
        db.execute("DROP TABLE small_blobs")  # and its triggers
        db.execute("DROP TABLE small_blob_totals")
        db.execute("PRAGMA user_version=2")
    db.close()
    with Catalog(path) as catalog:
        assert catalog.kept() == [b"k" * 32]
        store = BlobStore(tmp_path, small=SmallBlobs(catalog))
        address, data = blob(64)
        assert store.put(address, data) and rows(catalog) == {address}
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (3,)
    db.close()


def test_deleted_rows_give_their_pages_back(store: BlobStore, catalog: Catalog) -> None:
    blobs = [blob(8 * 1024) for _ in range(400)]
    store.put_many(blobs)
    (pages_full,) = catalog.query("PRAGMA page_count")[0]
    for address, _ in blobs:
        store.delete(address)
    catalog.vacuum_freed()
    (pages_after,) = catalog.query("PRAGMA page_count")[0]
    assert catalog.query("PRAGMA freelist_count") == [(0,)]
    assert isinstance(pages_full, int) and isinstance(pages_after, int)
    assert pages_after < pages_full // 10


def test_listing_pages_through_many_rows(store: BlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fstore.storage.smallblobs._LISTING_PAGE", 7)
    blobs = [blob(10) for _ in range(50)]
    store.put_many(blobs)
    assert sorted(store.addresses()) == sorted(a for a, _ in blobs)


def test_a_group_commit_of_small_blobs_writes_no_file(tmp_path: Path, catalog: Catalog) -> None:
    store = BlobStore(tmp_path, small=SmallBlobs(catalog))
    blobs = [blob(4096) for _ in range(40)]

    async def put_all() -> int:
        local = LocalBlobs(store, catalog)
        await asyncio.gather(*(local.put(a, d) for a, d in blobs))
        assert local.used_bytes == 40 * 4096
        await local.close()
        return local.commits

    commits = asyncio.run(put_all())
    assert commits < 40  # they were batched
    assert rows(catalog) == {a for a, _ in blobs}
    assert catalog.kept() == sorted(a for a, _ in blobs)
    assert [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()] == []


def test_a_failed_file_write_fails_only_its_own_waiter(tmp_path: Path, catalog: Catalog) -> None:
    """One group commit of small blobs (rows) and a larger one whose file cannot be placed:
    the rows and their kept marks stay, the file's put fails and its kept mark is taken back.
    One of the rows shares the blocked directory: a row never needs it."""
    store = BlobStore(tmp_path, small=SmallBlobs(catalog))
    large = blob(SMALL_BLOB_MAX + 1)
    small = [blob(1000) for _ in range(4)] + [blob_in_shard(1000, large[0][0])]
    (tmp_path / "blobs" / large[0].hex()[:2]).write_bytes(b"not a directory")

    async def put_all() -> list[BaseException | None]:
        local = LocalBlobs(store, catalog)
        results = await asyncio.gather(
            *(local.put(a, d) for a, d in [*small, large]), return_exceptions=True
        )
        await local.close()
        return results

    *small_results, large_result = asyncio.run(put_all())
    assert small_results == [None] * 5
    assert isinstance(large_result, StorageError)
    assert catalog.kept() == sorted(a for a, _ in small)
    assert not store.has(large[0])
    assert all(store.get(a) == d for a, d in small)


def test_a_file_where_a_blob_directory_belongs_hides_only_its_blobs(
    tmp_path: Path, catalog: Catalog
) -> None:
    """Damage from outside (a file named like a blob directory) makes the blobs under it
    absent, not every lookup an error; rows are untouched by it."""
    store = BlobStore(tmp_path, small=SmallBlobs(catalog))
    large = blob(SMALL_BLOB_MAX + 1)
    row = blob_in_shard(1000, large[0][0])
    (tmp_path / "blobs" / large[0].hex()[:2]).write_bytes(b"not a directory")
    assert store.put_many([row]) == [True]
    assert store.load(large[0]) is None
    assert store.size(large[0]) is None
    assert not store.has(large[0])
    assert not store.delete(large[0])
    assert store.get(row[0]) == row[1]
    assert store.delete(row[0])
    with pytest.raises(StorageError):
        store.put_many([large])
