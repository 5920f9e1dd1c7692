"""Self-healing: every blob converges to R copies on the R closest present members.

Each round (docs/ARCHITECTURE.md, "Durability"), this node groups the blobs it
holds by partition (the address's first byte) and by the members responsible
for them (the R present members XOR-closest to the address), and sends each of
those members one digest per group: an XOR of the addresses and a count. A
member whose own digest for a group differs is offered that group's addresses
and pulls, itself, what it lacks: the member missing a copy makes it, once,
from whichever holder answers first, so no two holders copy the same blob. A
copy on a member no longer responsible (after a join, or a store that went
elsewhere) is dropped once every responsible member confirms it holds one.

Pulls are background work: a few at a time, capped in bytes per second, and
paused while this node serves its own user's stores and gets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fstore import _native
from fstore.errors import FstoreError
from fstore.formats.records import Version
from fstore.net import placement
from fstore.net.link import PeerLink
from fstore.net.waiting import woken_or_after
from fstore.node.local import LocalBlobs
from fstore.node.metrics import NodeMetrics
from fstore.node.names import Names, record_from_meta
from fstore.node.peers import Peers
from fstore.node.reader import Reader

log = logging.getLogger(__name__)

REPAIR_INTERVAL = 30.0  # seconds between rounds
REPAIR_RATE = 64.0  # MB/s of pulled copies, at most
PULLERS = 2
# Both bounded by the wire's 64 KiB of meta: 1024 addresses are 35 KiB, and a
# digest entry [partition, group key, digest, count] is at most 64 bytes.
OFFER_MAX = 1024  # addresses in one offer or has_blobs
DIGEST_MAX = 512  # entries in one digest message
FOREGROUND_PAUSE = 0.05
FOREGROUND_MAX_WAIT = 2.0

GroupKey = tuple[int, bytes]  # (partition, key of the responsible members)
KINDS = ("blob", "record")


@dataclass
class Group:
    members: tuple[bytes, ...]
    digest: int = 0
    offers: list[Any] = field(default_factory=list)  # what to offer: addresses, or records

    def add(self, item_id: bytes, offer: Any) -> None:
        self.digest ^= int.from_bytes(item_id, "big")
        self.offers.append(offer)

    def summary(self) -> tuple[bytes, int]:
        return self.digest.to_bytes(32, "big"), len(self.offers)


Item = tuple[bytes, bytes, Any]  # (placement key, id in the digest, what an offer carries)


def group_key(members: Iterable[bytes]) -> bytes:
    """Names a set of members the same way on every node: BLAKE3 of their sorted ids."""
    return _native.hash(b"".join(sorted(members)))[:16]


def table(items: Iterable[Item], present: set[bytes], replicas: int) -> dict[GroupKey, Group]:
    """Items grouped by (partition, responsible members): the first byte of their key,
    and the ``replicas`` present members XOR-closest to it."""
    groups: dict[GroupKey, Group] = {}
    for key, item_id, offer in items:
        members = tuple(placement.closest(key, present, replicas))
        gkey = (key[0], group_key(members))
        group = groups.get(gkey)
        if group is None:
            group = groups[gkey] = Group(members)
        group.add(item_id, offer)
    return groups


def blob_items(addresses: Iterable[bytes]) -> list[Item]:
    return [(a, a, a) for a in addresses]


def record_items(records: Iterable[tuple[bytes, bytes, Version]]) -> list[Item]:
    """A record's id binds its locator and version: a newer version is a difference."""
    return [
        (loc, _native.hash(loc + clock.to_bytes(8, "big") + node), [loc, clock, node])
        for loc, _, (clock, node) in records
    ]


def offer_max(kind: str) -> int:
    """Items in one offer: 1024 addresses (35 KiB), or 512 records (at most 40 KiB)."""
    return OFFER_MAX if kind == "blob" else OFFER_MAX // 2


class Repair:
    def __init__(
        self,
        peers: Peers,
        local: LocalBlobs,
        reader: Reader,
        names: Names,
        replicas: int,
        metrics: NodeMetrics,
        *,
        foreground: Callable[[], int],
        interval: float = REPAIR_INTERVAL,
        rate_mb: float = REPAIR_RATE,
        on_pulled: Callable[[bytes], Awaitable[None]] | None = None,
    ) -> None:
        self.peers = peers
        self._on_pulled = on_pulled  # told the address of every copy pulled here
        self.local = local
        self.reader = reader
        self.names = names
        self.replicas = replicas
        self.metrics = metrics
        self.interval = interval
        self.rate = rate_mb * 1e6
        self._foreground = foreground
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._queued: set[bytes] = set()
        self._record_pulls: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._tables: dict[str, tuple[float, dict[GroupKey, Group]]] = {}
        self._lost: set[bytes] = set()
        self._healing: dict[bytes, tuple[float, int, int]] = {}  # lost member → start, blobs, bytes
        self._missing_elsewhere: set[bytes] = set()
        self._allowance = 0.0
        self._allowance_at = time.monotonic()

    # --- state for status and metrics -----------------------------------------------------

    @property
    def queue_length(self) -> int:
        return len(self._queued)

    @property
    def under_replicated(self) -> int:
        """Blobs known to lack a copy on a responsible member: pulls here, or offers refused."""
        return len(self._queued | self._missing_elsewhere)

    # --- the loops ------------------------------------------------------------------------

    async def run(self) -> None:
        pullers = [asyncio.create_task(self._pull_forever()) for _ in range(PULLERS)]
        try:
            while True:
                try:
                    await self.round()
                except FstoreError as e:
                    log.warning("repair round failed: %s", e)
                self._wake.clear()
                await woken_or_after(self._wake, self.interval)
        finally:
            for task in [*pullers, *self._record_pulls]:
                task.cancel()
            await asyncio.gather(*pullers, *self._record_pulls, return_exceptions=True)

    def trigger(self) -> None:
        """Run a round soon: after a store that made fewer copies than wanted."""
        self._wake.set()

    async def round(self) -> None:
        self.metrics.repair_rounds.inc()
        present = self.peers.present()
        self._note_lost()
        missing: set[bytes] = set()
        for kind in KINDS:
            groups = await self._groups(kind, present, fresh=True)
            by_peer: dict[bytes, list[GroupKey]] = {}
            for key, group in groups.items():
                for member in group.members:
                    if member != self.peers.node_id:
                        by_peer.setdefault(member, []).append(key)
            results = await asyncio.gather(
                *(self._sync_with(kind, p, keys, groups) for p, keys in by_peer.items()),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, set):
                    missing |= result
                elif isinstance(result, BaseException):
                    log.debug("repair: comparing %ss with a peer failed: %s", kind, result)
            if kind == "blob":
                await self._hand_off(groups)
        self._missing_elsewhere = missing
        self._note_healed()

    async def _groups(
        self, kind: str, present: set[bytes], *, fresh: bool
    ) -> dict[GroupKey, Group]:
        """This node's table of ``kind``; reused for a peer's digest within a round."""
        made, groups = self._tables.get(kind, (0.0, {}))
        if fresh or time.monotonic() - made > self.interval:
            items = await asyncio.to_thread(self._items, kind)
            groups = await asyncio.to_thread(table, items, present, self.replicas)
            self._tables[kind] = (time.monotonic(), groups)
        return groups

    def _items(self, kind: str) -> list[Item]:
        if kind == "blob":
            # Blobs whose leases all lapsed are not offered: collection is taking them.
            expired = self.local.expired()
            return blob_items(a for a in self.local.blobs.addresses() if a not in expired)
        return record_items(self.local.catalog.records())

    async def _sync_with(
        self, kind: str, peer: bytes, keys: list[GroupKey], groups: dict[GroupKey, Group]
    ) -> set[bytes]:
        """Digests to one peer, offers for the groups that differ; the blobs it lacks."""
        link = await self.peers.connect(peer)
        lacking: set[bytes] = set()
        for start in range(0, len(keys), DIGEST_MAX):
            batch = keys[start : start + DIGEST_MAX]
            entries = [[p, g, *groups[(p, g)].summary()] for p, g in batch]
            response = await link.request("sync_digest", {"kind": kind, "entries": entries})
            differ = response.meta.get("differ")
            if not isinstance(differ, list):
                continue
            for entry in differ[: len(batch)]:
                if isinstance(entry, list) and len(entry) == 2:
                    group = groups.get((entry[0], entry[1]))
                    if group is not None:
                        lacking |= await self._offer(link, kind, group.offers)
        return lacking

    async def _offer(self, link: PeerLink, kind: str, offers: list[Any]) -> set[bytes]:
        lacking: set[bytes] = set()
        size = offer_max(kind)
        for start in range(0, len(offers), size):
            batch = offers[start : start + size]
            response = await link.request("sync_offer", {"kind": kind, "items": batch})
            wanted = response.meta.get("wanted")
            if kind == "blob" and isinstance(wanted, list):
                lacking.update(a for a, w in zip(batch, wanted, strict=False) if w is True)
        return lacking

    # --- the peer side: digests compared, offers taken --------------------------------------

    async def compare(
        self, kind: str, entries: list[tuple[int, bytes, bytes, int]]
    ) -> list[list[object]]:
        """The (partition, group) entries whose digest here differs from the peer's."""
        groups = await self._groups(kind, self.peers.present(), fresh=False)
        differ: list[list[object]] = []
        for partition, key, digest, count in entries:
            mine = groups.get((partition, key))
            if mine is None or mine.summary() != (digest, count):
                differ.append([partition, key])
        return differ

    def offered_blobs(self, addresses: list[bytes]) -> list[bool]:
        """Which offered blobs this node should hold and lacks: those are pulled."""
        present = self.peers.present()
        wanted = []
        for address in addresses:
            responsible = self.peers.node_id in placement.closest(address, present, self.replicas)
            want = responsible and not self.local.has(address)
            if want:
                self.enqueue(address)
            wanted.append(want)
        return wanted

    def offered_records(self, source: bytes, records: list[tuple[bytes, Version]]) -> list[bool]:
        """Which offered records this node should hold, and holds older or not at all."""
        present = self.peers.present()
        wanted_locators = []
        wanted = []
        for locator, version in records:
            held = self.local.catalog.get_record(locator)
            want = self.peers.node_id in placement.closest(locator, present, self.replicas) and (
                held is None or held[1] < version
            )
            if want:
                wanted_locators.append(locator)
            wanted.append(want)
        if wanted_locators:
            task = asyncio.create_task(self._pull_records(source, wanted_locators))
            self._record_pulls.add(task)
            task.add_done_callback(self._record_pulls.discard)
        return wanted

    def enqueue(self, address: bytes) -> None:
        """Make a copy of ``address`` here (from whichever holder answers first)."""
        if address not in self._queued:
            self._queued.add(address)
            self._queue.put_nowait(address)

    # --- pulling --------------------------------------------------------------------------

    async def _pull_records(self, source: bytes, locators: list[bytes]) -> None:
        try:
            link = await self.peers.connect(source)
        except FstoreError as e:
            log.info("could not copy records here yet: %s", e)
            return
        for locator in locators:
            try:
                response = await link.request("get_record", {"loc": locator})
            except FstoreError as e:
                log.info("could not copy record %s here yet: %s", locator.hex()[:12], e)
                continue
            record = record_from_meta(response.meta)
            if record is not None:
                await self.names.keep(locator, record[0], record[1], link.describe())

    async def _pull_forever(self) -> None:
        while True:
            address = await self._queue.get()
            try:
                await self._yield_to_foreground()
                if not self.local.has(address):
                    blob = await self.reader.fetch_blob(address, background=True)
                    await self.local.put(address, blob, verified=True)
                    if self._on_pulled is not None:
                        await self._on_pulled(address)
                    self.metrics.repaired_bytes.inc(len(blob))
                    self.metrics.repaired_blobs.inc()
                    for lost, (started, blobs, size) in self._healing.items():
                        self._healing[lost] = (started, blobs + 1, size + len(blob))
                    await self._throttle(len(blob))
            except FstoreError as e:
                log.info("could not copy blob %s here yet: %s", address.hex()[:12], e)
            finally:
                self._queued.discard(address)

    async def _yield_to_foreground(self) -> None:
        waited = 0.0
        while self._foreground() and waited < FOREGROUND_MAX_WAIT:
            await asyncio.sleep(FOREGROUND_PAUSE)
            waited += FOREGROUND_PAUSE

    async def _throttle(self, size: int) -> None:
        """Keep pulls under ``rate`` bytes per second on average (a token bucket, 1 s deep)."""
        now = time.monotonic()
        self._allowance = min(self.rate, self._allowance + (now - self._allowance_at) * self.rate)
        self._allowance_at = now
        self._allowance -= size
        if self._allowance < 0:
            await asyncio.sleep(-self._allowance / self.rate)

    # --- copies no longer needed here -----------------------------------------------------

    async def _hand_off(self, groups: dict[GroupKey, Group]) -> None:
        """Drop copies this node is not responsible for, once every responsible one has it."""
        for group in groups.values():
            if self.peers.node_id in group.members:
                continue
            confirmed = set(group.offers)
            for member in group.members:
                confirmed &= await self._held_by(member, group.offers)
            for address in confirmed:
                await self.local.discard(address)
                self.metrics.handed_off_blobs.inc()

    async def _held_by(self, member: bytes, addresses: list[bytes]) -> set[bytes]:
        """The addresses ``member`` confirms it holds (none if it cannot be asked)."""
        try:
            link = await self.peers.connect(member)
        except FstoreError:
            return set()
        held: set[bytes] = set()
        for start in range(0, len(addresses), OFFER_MAX):
            batch = addresses[start : start + OFFER_MAX]
            try:
                response = await link.request("has_blobs", {"addrs": batch})
            except FstoreError:
                return set()
            have = response.meta.get("have")
            if not isinstance(have, list):
                return set()
            held |= {a for a, h in zip(batch, have, strict=False) if h is True}
        return held

    # --- lost members, logged -------------------------------------------------------------

    def _note_lost(self) -> None:
        lost = self.peers.lost()
        for node in lost - self._lost:
            log.warning(
                "member %s unseen for over %.0fs: counted as lost; repairing its copies",
                node.hex()[:12],
                self.peers.repair_after,
            )
            self._healing[node] = (time.monotonic(), 0, 0)
        self._lost = lost

    def _note_healed(self) -> None:
        if not self._healing or self._queued or self._missing_elsewhere:
            return
        for node, (started, blobs, size) in self._healing.items():
            log.warning(
                "repair after losing member %s finished in %.1fs: %d blobs (%d bytes) copied here",
                node.hex()[:12],
                time.monotonic() - started,
                blobs,
                size,
            )
        self._healing.clear()
