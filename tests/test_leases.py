"""Leases on a holder: the catalog's rules, collection's order against puts, the storage
limit, and the lease ops as a peer sends them."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from fstore import _native
from fstore.errors import StorageFullError
from fstore.formats.leases import ANONYMOUS_TAG, LeaseKeys, tag_of
from fstore.node.local import LocalBlobs
from fstore.storage.blobs import BlobStore
from fstore.storage.catalog import HELD, RELEASED, UPLOAD, Catalog

NOW = 1_000_000.0


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    with Catalog(tmp_path / "fstore.db") as catalog:
        yield catalog


def states(catalog: Catalog, address: bytes) -> list[tuple[int, float]]:
    return [(state, expires) for _, _, state, expires in catalog.leases(address)]


def test_the_higher_stamp_wins_whatever_the_order(catalog: Catalog) -> None:
    address, tag = os.urandom(32), os.urandom(32)
    catalog.lease_hold(address, tag, 10, NOW + 1000)
    assert not catalog.lease_release(address, tag, 5, NOW + 10)  # older: ignored
    assert states(catalog, address) == [(HELD, NOW + 1000)]
    assert catalog.lease_release(address, tag, 20, NOW + 10)
    catalog.lease_hold(address, tag, 15, NOW + 1000)  # older than the release: ignored
    assert states(catalog, address) == [(RELEASED, NOW + 10)]
    catalog.lease_hold(address, tag, 30, NOW + 2000)
    assert states(catalog, address) == [(HELD, NOW + 2000)]


def test_a_release_sent_again_keeps_the_end_the_first_one_set(catalog: Catalog) -> None:
    """A namespace node that retries a release every pass (one holder was unreachable)
    must not put off, pass after pass, the collection the first release started."""
    address, tag = os.urandom(32), os.urandom(32)
    catalog.lease_hold(address, tag, 10, NOW + 1000)
    assert catalog.lease_release(address, tag, 20, NOW + 100)
    assert catalog.lease_release(address, tag, 30, NOW + 200)  # the same release, a pass later
    assert states(catalog, address) == [(RELEASED, NOW + 100)]
    catalog.mark_kept(address)
    assert catalog.expired_kept(NOW + 101) == [address]
    catalog.lease_hold(address, tag, 40, NOW + 1000)  # held again: a new release starts anew
    assert catalog.lease_release(address, tag, 50, NOW + 300)
    assert states(catalog, address) == [(RELEASED, NOW + 300)]


def test_an_upload_never_shortens_a_lease_and_a_release_needs_one(catalog: Catalog) -> None:
    address, tag = os.urandom(32), os.urandom(32)
    assert not catalog.lease_release(address, tag, 1, NOW)  # nothing held: nothing made
    assert catalog.leases(address) == []
    catalog.lease_upload(address, tag, NOW + 10)
    assert states(catalog, address) == [(UPLOAD, NOW + 10)]
    catalog.lease_hold(address, tag, 1, NOW + 1000)
    catalog.lease_upload(address, tag, NOW + 10)
    assert states(catalog, address) == [(HELD, NOW + 1000)]


def test_a_blob_lapses_when_every_lease_has(catalog: Catalog) -> None:
    kept, other, bare = os.urandom(32), os.urandom(32), os.urandom(32)
    for address in (kept, other, bare):
        catalog.mark_kept(address)
    catalog.lease_upload(kept, ANONYMOUS_TAG, NOW - 1)
    catalog.lease_hold(kept, os.urandom(32), 1, NOW + 5)  # a second namespace's pin
    catalog.lease_upload(other, ANONYMOUS_TAG, NOW - 1)
    assert set(catalog.expired_kept(NOW)) == {other, bare}
    assert set(catalog.expired_kept(NOW + 6)) == {kept, other, bare}
    assert catalog.forget_expired_leases([kept, other], NOW) == [other]
    assert catalog.leases(other) == [] and len(catalog.leases(kept)) == 2


def test_a_version_1_catalog_is_upgraded_with_every_kept_blob_held(tmp_path: Path) -> None:
    path = tmp_path / "fstore.db"
    address = os.urandom(32)
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE records (locator BLOB PRIMARY KEY, record BLOB NOT NULL, "
            "clock INTEGER NOT NULL, node BLOB NOT NULL) WITHOUT ROWID"
        )
        db.execute(
            "CREATE TABLE chunks (chunk_id BLOB PRIMARY KEY, address BLOB NOT NULL) WITHOUT ROWID"
        )
        db.execute("CREATE TABLE pins (address BLOB PRIMARY KEY) WITHOUT ROWID")
        db.execute(
            "CREATE TABLE peers (node_id BLOB PRIMARY KEY, addr TEXT NOT NULL, "
            "last_seen REAL NOT NULL) WITHOUT ROWID"
        )
        db.execute("INSERT INTO pins VALUES (?)", (address,))
        db.execute("PRAGMA user_version=1")
    db.close()
    with Catalog(path) as catalog:
        assert catalog.kept() == [address]
        ((tag, _, state, expires),) = catalog.leases(address)
        assert (tag, state) == (ANONYMOUS_TAG, HELD)
        assert catalog.expired_kept(expires - 1) == []


def test_tags_are_unlinkable_and_a_release_proves_its_tag() -> None:
    keys, other = LeaseKeys(os.urandom(32)), LeaseKeys(os.urandom(32))
    a, b = os.urandom(32), os.urandom(32)
    assert keys.tag(a) != keys.tag(b)  # no namespace-wide id for a holder to group by
    assert keys.tag(a) != other.tag(a)
    assert tag_of(keys.secret(a)) == keys.tag(a)
    assert keys.secret(a) != keys.tag(a)


def blob(n: int) -> tuple[bytes, bytes]:
    data = n.to_bytes(4, "big") * 1000
    return _native.hash(data), data


def test_a_put_during_collection_is_never_lost(tmp_path: Path) -> None:
    """The same blob collected (its leases lapsed) and put again at once: it survives,
    kept and leased, whichever goes first."""
    clock = [NOW]

    async def main() -> None:
        local = LocalBlobs(
            BlobStore(tmp_path, durable=False),
            Catalog(tmp_path / "fstore.db"),
            grace=10,
            clock=lambda: clock[0],
        )
        for n in range(50):
            address, data = blob(n)
            await local.put(address, data)
            clock[0] += 11  # its upload lease lapses
            assert address in local.expired()
            collecting = asyncio.ensure_future(local.collect([address]))
            if n % 2:
                await asyncio.sleep(0)  # let the collection start first
            await local.put(address, data)
            await collecting
            assert local.blobs.get(address) == data, n
            assert local.catalog.is_kept(address)
            assert address not in local.expired()
        await local.close()

    uvloop.run(main())


def test_a_full_node_refuses_new_blobs_but_takes_ones_it_has(tmp_path: Path) -> None:
    async def main() -> None:
        local = LocalBlobs(
            BlobStore(tmp_path, durable=False), Catalog(tmp_path / "fstore.db"), max_storage=6000
        )
        await local.count_used()
        first, second = blob(1), blob(2)
        await local.put(*first)
        assert local.used_bytes == 4000
        with pytest.raises(StorageFullError, match="storage limit reached"):
            await local.put(*second)
        assert not local.blobs.has(second[0])
        await local.put(*first)  # already held: no new space needed
        local.catalog.lease_hold(first[0], ANONYMOUS_TAG, 1, 0.0)  # lapsed long ago
        local.catalog.lease_upload(first[0], ANONYMOUS_TAG, 0.0)
        assert await local.collect(sorted(local.expired())) == (1, 4000)
        assert local.used_bytes == 0
        await local.put(*second)
        await local.close()

    uvloop.run(main())


def test_a_copy_repair_makes_takes_the_holders_leases(tmp_path: Path) -> None:
    """A member that joins pulls the blobs it is now responsible for, and with them the
    holds of the namespace that stored them: its copies outlive the grace like theirs."""
    from fstore import Node
    from fstore.net.trust import NetworkKey

    network = NetworkKey.generate()
    namespace = tmp_path / "namespace.key"
    namespace.write_bytes(os.urandom(32))

    other_namespace = tmp_path / "other.key"
    other_namespace.write_bytes(os.urandom(32))

    def node(name: str, peers: list[str], ns: Path = namespace) -> Node:
        return Node(
            tmp_path / name,
            peers=peers,
            network=network,
            namespace_file=ns,
            durable=False,
            replicas=2,
            repair_interval=0.2,
            gc_grace=60.0,
            gc_interval=3600.0,
        )

    async def main() -> None:
        async with node("a", []) as a, node("b", [a.address]) as b:
            await a.wait_for_peers(1)
            await b.wait_for_peers(1)
            await a.store("f", os.urandom(10 * 1024 * 1024))
            # Of another namespace: its own reference passes hold none of these blobs.
            async with node("c", [a.address], other_namespace) as c:
                await c.wait_for_peers(2)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                while not (pulled := list(c.blobs.addresses())):
                    assert loop.time() < deadline, "the new member pulled nothing"
                    await asyncio.sleep(0.05)
                tag = LeaseKeys(namespace.read_bytes()).tag(pulled[0])
                while HELD not in [s for t, _, s, _ in c.catalog.leases(pulled[0]) if t == tag]:
                    assert loop.time() < deadline, "the pulled copy has no hold"
                    await asyncio.sleep(0.05)

    uvloop.run(main())
