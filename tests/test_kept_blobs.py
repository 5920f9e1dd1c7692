"""Every blob a node keeps is marked kept in its catalog, and the marks survive a restart."""

from __future__ import annotations

import os
from pathlib import Path

import uvloop
from netutil import stored_blobs

from fstore.net.trust import NetworkKey
from fstore.node import Node
from fstore.storage.catalog import Catalog


async def store_on_two_nodes(root: Path) -> None:
    network = NetworkKey.generate()
    async with (
        Node(root / "a", network=network) as a,
        Node(root / "b", peers=[a.address], network=network) as b,
    ):
        await b.wait_for_peers(1)
        await a.wait_for_peers(1)
        await b.store("one", os.urandom(3 * 1024 * 1024))
        await a.store("two", os.urandom(5 * 1024 * 1024 + 17))


def test_every_kept_blob_is_kept(tmp_path: Path) -> None:
    uvloop.run(store_on_two_nodes(tmp_path))
    for name in ("a", "b"):
        data_dir = tmp_path / name
        held = {a.hex() for a in stored_blobs(data_dir)}
        assert len(held) >= 4
        with Catalog(data_dir / "fstore.db") as catalog:
            assert {a.hex() for a in catalog.kept()} == held
