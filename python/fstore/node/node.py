"""The fstore node: its lifecycle and public API, delegating to one object per role.

A ``Node`` keeps blobs for its peers and stores and fetches files for its own
user. The roles (``writer``, ``reader``, ``names``, ``service``) each get only
what they need; this class wires them together and owns what they share.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fstore.errors import FstoreError, InvalidArgumentError, WrongKindError
from fstore.formats.capability import Capability, DirCapability
from fstore.formats.directory import TreeEntry
from fstore.formats.leases import LeaseKeys
from fstore.formats.manifest import Manifest
from fstore.formats.names import check_name
from fstore.formats.records import NameKeys
from fstore.net.gossip import Gossip, GossipConfig
from fstore.net.gossip_driver import GossipDriver, gossip_config_from_env, random_source
from fstore.net.gossip_messages import Member
from fstore.net.identity import Identity, load_namespace_secret, load_network_key
from fstore.net.link import LinkLimits, Listener, PeerLink, Reply, parse_hostport
from fstore.net.membership import MAX_LINKS, Membership
from fstore.net.trust import LinkCredentials, NetworkKey
from fstore.node import memory
from fstore.node.local import GC_GRACE, LEASE_PERIOD, LocalBlobs
from fstore.node.metrics import NodeMetrics, NodeStats
from fstore.node.names import FileEntry, Names
from fstore.node.peers import REPAIR_AFTER, Peers
from fstore.node.reader import Reader
from fstore.node.repair import REPAIR_INTERVAL, REPAIR_RATE, Repair
from fstore.node.replication import Replicator
from fstore.node.scrub import SCRUB_INTERVAL, SCRUB_RATE, Scrub
from fstore.node.service import Service
from fstore.node.space import Space
from fstore.node.trees import FileView, Located, TreeRestoreResult, Trees, TreeStoreResult
from fstore.node.writer import Source, StoreResult, Writer
from fstore.storage.blobs import BlobStore
from fstore.storage.catalog import Catalog
from fstore.storage.lock import DataDirLock
from fstore.storage.smallblobs import SmallBlobs

log = logging.getLogger(__name__)

STOP_FLUSH_SECONDS = 5.0


@dataclass(frozen=True)
class PeerInfo:
    """A member this node has a link open to."""

    node_id: bytes
    addr: str | None
    outbound: bool


@dataclass(frozen=True)
class MemberInfo:
    """A member of the gossiped list: its claimed address and its state."""

    node_id: bytes
    addr: str | None
    state: str  # "alive", "suspect", "dead" or "left"
    incarnation: int


class Node:
    """One fstore node. Use as ``async with Node(...) as node:``.

    ``network`` is the network to join (from its join token,
    ``NetworkKey.from_token``); without it the data directory's network is used,
    or a new network is made on first start (``created_network`` tells which).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        listen: str = "127.0.0.1:0",
        peers: Iterable[str] = (),
        network: NetworkKey | None = None,
        replicas: int = 3,
        durable: bool = True,
        namespace_file: str | os.PathLike[str] | None = None,
        ping_interval: float = 5.0,
        limits: LinkLimits | None = None,
        max_links: int = MAX_LINKS,
        gossip: GossipConfig | None = None,
        allow_degraded: bool = False,
        repair_after: float = REPAIR_AFTER,
        repair_interval: float = REPAIR_INTERVAL,
        repair_rate: float = REPAIR_RATE,
        scrub_rate: float = SCRUB_RATE,
        scrub_interval: float = SCRUB_INTERVAL,
        gc_grace: float = GC_GRACE,
        gc_interval: float | None = None,
        lease_period: float = LEASE_PERIOD,
        max_storage: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if replicas < 1:
            raise InvalidArgumentError("replicas must be at least 1")
        if max_links < 1:
            raise InvalidArgumentError("max_links must be at least 1")
        if not 0 < gc_grace < lease_period:
            raise InvalidArgumentError("the GC grace must be positive and below the lease period")
        if max_storage is not None and max_storage < 0:
            raise InvalidArgumentError("max_storage must not be negative")
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # One node per data directory: held until stop(), released here if __init__ fails.
        self._lock = DataDirLock(self.data_dir)
        try:
            self.replicas = replicas
            self._listen = parse_hostport(listen)
            self._bootstrap = list(peers)
            self.identity = Identity.load_or_create(self.data_dir)
            self.node_id = self.identity.node_id
            self.network, self.created_network = load_network_key(self.data_dir, network)
            self._credentials = LinkCredentials(
                self.identity.private_key, self.network, self.data_dir
            )
            secret = load_namespace_secret(
                self.data_dir, Path(namespace_file) if namespace_file else None
            )
            self.catalog = Catalog(self.data_dir / "fstore.db")
            self.blobs = BlobStore(self.data_dir, durable=durable, small=SmallBlobs(self.catalog))
            self._ping_interval = ping_interval
            # Per-link timeouts and rate: the defaults, or FSTORE_* environment overrides.
            self._limits = limits if limits is not None else LinkLimits.from_env()
            self._max_links = max_links
            # Gossip timing: the defaults, or FSTORE_GOSSIP_* environment overrides.
            self._gossip_config = gossip if gossip is not None else gossip_config_from_env()
            self._server: Listener | None = None
            self.address = ""
            self.metrics = NodeMetrics()

            self.allow_degraded = allow_degraded
            self._foreground = 0  # stores and gets of this node's user in progress
            self._background: list[asyncio.Task[None]] = []
            self._peers = Peers(self.node_id, repair_after)
            self._local = LocalBlobs(
                self.blobs,
                self.catalog,
                grace=gc_grace,
                lease_period=lease_period,
                max_storage=max_storage,
                clock=clock,
                metrics=self.metrics,
            )
            replicator = Replicator(self._peers, self._local, replicas, self.metrics)
            self.names = Names(NameKeys(secret), self._local, self._peers, replicator)
            self.reader = Reader(self._peers, self._local, self.metrics)
            self.space = Space(
                self._peers,
                self._local,
                self.names,
                self.reader,
                LeaseKeys(secret),
                replicas,
                self.metrics,
                interval=gc_grace / 4 if gc_interval is None else gc_interval,
            )
            self.writer = Writer(
                secret,
                self.catalog,
                self._local,
                replicator,
                self.names,
                self.metrics,
                on_stored=self.space.stored,
            )
            self.repair = Repair(
                self._peers,
                self._local,
                self.reader,
                self.names,
                replicas,
                self.metrics,
                foreground=lambda: self._foreground,
                interval=repair_interval,
                rate_mb=repair_rate,
                on_pulled=self.space.adopt_leases,
            )
            self.scrub = Scrub(
                self._local, self.repair, self.metrics, rate_mb=scrub_rate, interval=scrub_interval
            )
            self.trees = Trees(
                secret,
                self.writer,
                self.reader,
                self.names,
                self.catalog,
                self.metrics,
                self.data_dir,
            )
            self.space.tree_blobs = self.trees.blobs
            self.service = Service(
                self._peers,
                self._local,
                self.names,
                self.metrics,
                self.repair,
                lambda: self.address,
                self._in_foreground,
            )
        except BaseException:
            self._lock.release()
            raise

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        host, port = self._listen
        await self._local.count_used()
        members = Membership(
            self._credentials,
            None,
            self._handle,
            on_seed=lambda node, addr: self._peers.driver.join(node, addr),
            on_link=self._on_link,
            on_rejected=lambda link, reason: self.metrics.peers_rejected.inc(),
            ping_interval=self._ping_interval,
            limits=self._limits,
            max_links=self._max_links,
        )
        self._server = await Listener.bind(host, port, members.accept)
        self.address = self._server.address
        # Advertised in every hello and gossiped from now on; known only once bound (port 0).
        members.listen_addr = self.address
        # A life starts at an incarnation above any earlier life's (the time, in ms):
        # the member list takes a restart's new address at once instead of waiting until
        # the old one is found dead.
        gossip = Gossip(
            self.node_id,
            self.address,
            random_source(),
            time.monotonic(),
            self._gossip_config,
            incarnation=time.time_ns() // 1_000_000,
        )
        driver = GossipDriver(gossip, members, on_member=self._on_member)
        self._peers.attach(members, driver)
        driver.start()
        known = self.catalog.known_peers()
        self._peers.remember(node for node, _, _ in known)
        remembered = [addr for _, addr, _ in known]
        members.start(self._bootstrap + [a for a in remembered if a not in self._bootstrap])
        self._background = [
            asyncio.create_task(self.repair.run()),
            asyncio.create_task(self.scrub.run()),
            asyncio.create_task(self.space.run()),
            asyncio.create_task(memory.trim_periodically()),
        ]
        log.info("node %s listening on %s", self.node_id.hex(), self.address)

    async def stop(self) -> None:
        self.trees.close()
        # The holds of the last stores, if they go quickly; else a reference pass sends them.
        with contextlib.suppress(TimeoutError, FstoreError):
            async with asyncio.timeout(STOP_FLUSH_SECONDS):
                await self.space.flushed()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._server is not None:
            await self._server.close()
        if self._peers.started:
            await self._peers.driver.stop()
            await self.members.stop()
        await self._local.close()
        self.catalog.close()
        self._lock.release()

    async def __aenter__(self) -> Node:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def members(self) -> Membership:
        return self._peers.members

    async def _handle(
        self, link: PeerLink, op: str, meta: dict[str, Any], body: memoryview
    ) -> Reply:
        return await self.service.handle(link, op, meta, body)

    def _on_link(self, link: PeerLink) -> None:
        """A member proved itself on a link: remembered (and dialled after a restart)."""
        node = link.peer_node
        assert node is not None
        if self._peers.prove(node):
            addr = link.peer_addr or self._peers.driver.address_of(node)
            if addr:
                self.catalog.remember_peer(node, addr, time.time())
            self.members.notify()

    def _on_member(self, member: Member) -> None:
        """Gossip tells of a member alive (new, back, or moved): proven by a link to it."""
        if not self._peers.proven(member.node):
            self.members.reach(member.node, member.addr)

    # --- the public API ---------------------------------------------------------------

    def peers(self) -> list[PeerInfo]:
        """The members this node has a link open to now (at most about ``max_links``)."""
        return [
            PeerInfo(node, link.peer_addr, link.outbound)
            for node, link in sorted(self.members.live().items())
        ]

    def member_list(self) -> list[MemberInfo]:
        """Every member the gossiped list holds, this node included, by node id."""
        return [
            MemberInfo(m.node, m.addr, m.state.name.lower(), m.incarnation)
            for m in sorted(self._peers.member_list(), key=lambda m: m.node)
        ]

    async def stats(self) -> NodeStats:
        """Blobs held (counted on disk, in a worker thread) and peers linked."""
        peers = len(self.members.live()) if self._peers.started else 0
        blobs, blob_bytes = await asyncio.to_thread(self.blobs.totals)
        space = await self.space.stats()
        return NodeStats(
            blobs,
            blob_bytes,
            peers,
            under_replicated=self.repair.under_replicated,
            repair_queue=self.repair.queue_length,
            last_scrub=self.scrub.last_pass,
            used_bytes=space.used_bytes,
            max_storage=space.max_storage,
            reclaimable_bytes=space.reclaimable_bytes,
            reclaimed_bytes=space.reclaimed_bytes,
            pinned_bytes=space.pinned_bytes,
            last_collection=space.last_collection,
        )

    async def wait_for_peers(self, count: int, timeout: float = 30.0) -> None:
        """Wait until the member list holds at least ``count`` other members alive."""
        await self.members.wait_for(lambda: len(self._peers.alive()) >= count, timeout)

    async def store(
        self,
        name: str,
        source: Source,
        *,
        meta: dict[str, Any] | None = None,
        allow_degraded: bool | None = None,
    ) -> StoreResult:
        """Store ``source`` under ``name`` with ``replicas`` durable copies of every blob.

        Each blob needs a write quorum (a majority of ``replicas``) of durable
        copies, or :class:`InsufficientReplicasError` and no name is written.
        ``allow_degraded`` (default: the node's setting) accepts one copy; blobs
        with fewer than ``replicas`` are then first in line for repair.
        """
        check_name(name)
        degraded = self.allow_degraded if allow_degraded is None else allow_degraded
        with self._in_foreground():
            result = await self.writer.store(name, source, meta=meta, allow_degraded=degraded)
        if result.replicas < self.replicas:
            self.repair.trigger()
        return result

    async def delete(self, name: str) -> None:
        """Delete ``name``: a tombstone record that outranks every earlier version."""
        check_name(name)
        value = await self.names.delete(name)
        await self.space.dropped(value)
        log.info("deleted %r (%d bytes)", name, value.size)

    async def pin(self, capability: str) -> FileEntry:
        """Keep the file ``capability`` names alive under this node's namespace."""
        return await self.space.pin(capability)

    async def unpin(self, capability: str) -> None:
        """Stop keeping a pinned file; its blobs are collected once nothing else uses them."""
        await self.space.unpin(capability)

    async def pins(self) -> list[FileEntry]:
        """Every file this node's namespace pins."""
        return await self.space.pins()

    async def list(self) -> list[FileEntry]:
        """Every live name of this node's namespace that the network holds."""
        return await self.names.list()

    async def manifest(self, name_or_capability: str) -> tuple[Capability, Manifest]:
        """A file's capability and opened manifest: its size, BLAKE3 and chunk list."""
        text = name_or_capability
        if not Capability.looks_like(text):
            text = (await self.names.resolve(name_or_capability)).capability or ""
        if DirCapability.looks_like(text):
            raise WrongKindError(f"{name_or_capability!r} is a directory")
        cap = Capability.parse(text)
        return cap, await self.reader.manifest(cap)

    async def get(self, name_or_capability: str) -> AsyncIterator[bytes]:
        """Stream a file's plaintext, every blob verified, the whole file checked at the end."""
        _, manifest = await self.manifest(name_or_capability)
        async with contextlib.aclosing(self.read_range(manifest)) as pieces:
            async for piece in pieces:
                yield piece

    @contextlib.contextmanager
    def _in_foreground(self) -> Iterator[None]:
        """Mark this node's user as busy: repair waits (briefly) while it is."""
        self._foreground += 1
        try:
            yield
        finally:
            self._foreground -= 1

    def read_range(
        self, manifest: Manifest, start: int = 0, end: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Stream bytes ``start`` up to ``end`` (exclusive; default the end) of a file.

        ``manifest`` comes from :meth:`manifest`; see :meth:`Reader.read_range`.
        """
        return self._foreground_stream(self.reader.read_range(manifest, start, end))

    async def _foreground_stream(
        self, pieces: AsyncGenerator[bytes, None]
    ) -> AsyncGenerator[bytes, None]:
        with self._in_foreground():
            async with contextlib.aclosing(pieces):
                async for piece in pieces:
                    yield piece

    async def read(self, name_or_capability: str) -> bytes:
        """The whole file in memory: for small files and tests."""
        return b"".join([piece async for piece in self.get(name_or_capability)])

    # --- directory trees ------------------------------------------------------------------

    async def store_tree(self, name: str, path: str | os.PathLike[str]) -> TreeStoreResult:
        """Store the local directory at ``path`` under ``name``, one ``fsd1:`` capability.

        Links in it are stored as links, never followed; special files and
        entries whose names break the name rules are skipped (``skipped``).
        Storing a tree again sends only what changed, and replaces the name in
        one step: readers see the old tree or the new one.
        """
        return await self.trees.store_path(name, path)

    async def store_tar(self, name: str, pieces: AsyncIterable[bytes]) -> TreeStoreResult:
        """Store the tree a tar stream holds under ``name``, read as it arrives.

        A member with an absolute path or ``..`` refuses the whole tree
        (:class:`UnsafePathError`); nothing is stored under the name.
        """
        return await self.trees.store_tar(name, pieces)

    async def locate(self, target: str, inner: tuple[str, ...] = ()) -> Located:
        """What ``target`` names: a name, ``name/path/inside``, or a capability (``fsd1:…``
        with the path ``inner`` below it). See :meth:`Trees.locate` for the ``/`` rule."""
        if DirCapability.looks_like(target) and "/" in target:
            target, _, rest = target.partition("/")
            inner = (*(s for s in rest.split("/") if s), *inner)
        return await self.trees.locate(target, inner)

    async def list_tree(self, target: str) -> builtins.list[TreeEntry]:
        """The entries of one directory level of a tree (``name``, ``name/sub``, ``fsd1:…``)."""
        located = await self.locate(target)
        if located.directory is None:
            raise WrongKindError(f"{located.label} is not a directory")
        return [entry async for entry in self.trees.entries(located.directory)]

    async def get_tree(self, target: str, destination: str | os.PathLike[str]) -> TreeRestoreResult:
        """Restore the tree ``target`` names into the local directory ``destination``.

        Modes (without setuid and setgid) and mtimes are restored; files appear
        atomically. Nothing is written outside ``destination``: an entry that
        would be (a link leaving the tree, a link already there in the way) is
        refused, and :class:`UnsafePathError` names it once the rest is restored.
        """
        located = await self.locate(target)
        if located.directory is None:
            raise WrongKindError(f"{located.label} is not a directory")
        return await self.trees.restore(located.directory, Path(destination))

    async def open_file(self, target: str) -> FileView:
        """A file by name, ``name/path/inside`` a tree, or capability: its size, BLAKE3, reader."""
        return await self.trees.file(await self.locate(target))
