"""The repair round's grouping and message sizes, without a network."""

from __future__ import annotations

import os

import msgpack

from fstore.net import placement, wire
from fstore.node.repair import DIGEST_MAX, OFFER_MAX, blob_items, group_key, offer_max, table


def test_groups_are_the_same_on_every_node_whatever_the_order() -> None:
    members = {os.urandom(32) for _ in range(7)}
    addresses = [os.urandom(32) for _ in range(500)]
    mine = table(blob_items(addresses), members, 3)
    theirs = table(blob_items(reversed(addresses)), set(members), 3)
    assert {k: g.summary() for k, g in mine.items()} == {k: g.summary() for k, g in theirs.items()}
    for (partition, key), group in mine.items():
        assert key == group_key(group.members)
        for address in group.offers:
            assert address[0] == partition
            # The same responsible members; their order within a group is the first
            # address's (two members sharing a first byte rank differently for others).
            assert set(group.members) == set(placement.closest(address, members, 3))


def test_one_missing_address_changes_its_groups_digest_only() -> None:
    members = {os.urandom(32) for _ in range(5)}
    addresses = [os.urandom(32) for _ in range(300)]
    full = table(blob_items(addresses), members, 3)
    short = table(blob_items(addresses[1:]), members, 3)
    differ = [k for k in full if k not in short or full[k].summary() != short[k].summary()]
    assert differ == [(addresses[0][0], group_key(placement.closest(addresses[0], members, 3)))]


def test_the_largest_digest_and_offer_fit_in_one_frame_meta() -> None:
    entries = [[255, os.urandom(16), os.urandom(32), (1 << 40) - 1]] * DIGEST_MAX
    meta = {"op": "sync_digest", "kind": "record", "entries": entries}
    assert len(msgpack.packb(meta)) <= wire.MAX_META
    offer = [os.urandom(32)] * offer_max("blob")
    assert offer_max("blob") == OFFER_MAX
    meta = {"op": "sync_offer", "kind": "blob", "items": offer}
    assert len(msgpack.packb(meta)) <= wire.MAX_META
    records = [[os.urandom(32), (1 << 63) - 1, os.urandom(32)]] * offer_max("record")
    meta = {"op": "sync_offer", "kind": "record", "items": records}
    assert len(msgpack.packb(meta)) <= wire.MAX_META
