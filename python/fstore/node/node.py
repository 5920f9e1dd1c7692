"""The fstore node: local storage, membership, and the replicated store and get.

A ``Node`` keeps blobs for its peers and stores and fetches files for its own
user. Everything that touches bulk bytes runs in the Rust extension on a
worker thread (it releases the GIL); this module decides where bytes go.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgpack

from fstore import _native
from fstore.errors import (
    AddressMismatchError,
    DiskFullError,
    FileTooLargeError,
    FstoreError,
    InsufficientReplicasError,
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
    PeerUnavailableError,
    RemoteError,
)
from fstore.formats.capability import Capability
from fstore.formats.manifest import ChunkRef, Manifest
from fstore.formats.records import HybridClock, NameKeys, NameValue, Version
from fstore.net import placement, wire
from fstore.net.identity import Identity, load_namespace_secret, load_network_key
from fstore.net.link import LinkLimits, Listener, PeerLink, Reply, parse_hostport
from fstore.net.membership import Membership
from fstore.net.trust import LinkCredentials, NetworkKey
from fstore.node.metrics import NodeMetrics, NodeStats
from fstore.storage.blobs import BlobStore
from fstore.storage.catalog import Catalog
from fstore.storage.lock import DataDirLock

log = logging.getLogger(__name__)

PIECE_SIZE = 8 * 1024 * 1024
# Chunks being replicated at once during a store, and fetched ahead during a
# get: bounds a transfer's memory to about this many 4 MiB blobs.
STORE_WINDOW = 6
GET_WINDOW = 4
RECORD_MAX = 64 * 1024
LIST_PAGE_BYTES = 1024 * 1024
BUSY_RETRIES = 4
MAX_PEERS_LISTED = 256
MAX_HAS_BLOBS = 1024
MAX_LIARS_REMEMBERED = 4096

Source = bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes] | AsyncIterable[bytes]


@dataclass(frozen=True)
class StoreResult:
    name: str
    size: int
    blake3: bytes
    capability: str
    chunks: int
    replicas: int
    stored_at: float


@dataclass(frozen=True)
class PeerInfo:
    node_id: bytes
    addr: str | None
    outbound: bool


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int
    blake3: bytes
    stored_at: float
    capability: str


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
    ) -> None:
        if replicas < 1:
            raise InvalidArgumentError("replicas must be at least 1")
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
            self._namespace_secret = secret
            self._names = NameKeys(secret)
            self._clock = HybridClock()
            self.blobs = BlobStore(self.data_dir, durable=durable)
            self.catalog = Catalog(self.data_dir / "fstore.db")
            self._ping_interval = ping_interval
            # Per-link timeouts and rate: the defaults, or FSTORE_* environment overrides.
            self._limits = limits if limits is not None else LinkLimits.from_env()
            # Verification failures per peer (in memory): a peer that served bytes not
            # matching their address is asked last in _fetch_blob from then on.
            self._lies: dict[bytes, int] = {}
            self._server: Listener | None = None
            self._members: Membership | None = None
            self.address = ""
            self.metrics = NodeMetrics()
            self._pins_pending: set[bytes] = set()
            self._pin_flush: asyncio.Task[None] | None = None
        except BaseException:
            self._lock.release()
            raise

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        host, port = self._listen
        members = Membership(
            self._credentials,
            None,
            self._handle,
            on_peer=self._remember_peer,
            on_rejected=lambda link, reason: self.metrics.peers_rejected.inc(),
            ping_interval=self._ping_interval,
            limits=self._limits,
        )
        self._members = members
        self._server = await Listener.bind(host, port, members.accept)
        self.address = self._server.address
        # Advertised in every hello from now on; known only once bound (port 0).
        members.listen_addr = self.address
        remembered = [addr for _, addr, _ in self.catalog.known_peers()]
        self.members.start(self._bootstrap + [a for a in remembered if a not in self._bootstrap])
        log.info("node %s listening on %s", self.node_id.hex(), self.address)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.close()
        if self._members is not None:
            await self._members.stop()
        if self._pin_flush is not None:
            await self._pin_flush
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
        if self._members is None:
            raise FstoreError("the node is not started")
        return self._members

    def _remember_peer(self, node: bytes, addr: str | None) -> None:
        if addr:
            self.catalog.remember_peer(node, addr, time.time())

    def peers(self) -> list[PeerInfo]:
        return [
            PeerInfo(node, link.peer_addr, link.outbound)
            for node, link in sorted(self.members.live().items())
        ]

    async def stats(self) -> NodeStats:
        """Blobs held (counted on disk, in a worker thread) and peers linked."""
        peers = len(self.members.live()) if self._members is not None else 0
        blobs, blob_bytes = await asyncio.to_thread(
            lambda: (self.blobs.count(), self.blobs.total_bytes())
        )
        return NodeStats(blobs, blob_bytes, peers)

    async def wait_for_peers(self, count: int, timeout: float = 30.0) -> None:
        """Wait until at least ``count`` peers are linked."""
        await self.members.wait_for(lambda: len(self.members.live()) >= count, timeout)

    # --- placement ------------------------------------------------------------------

    def _members_by_distance(self, target: bytes) -> list[bytes]:
        return placement.closest(target, [self.node_id, *self.members.live()], 1 << 30)

    async def _replicate(
        self, key: bytes, what: str, put_on: Callable[[bytes], Awaitable[None]]
    ) -> int:
        """Put something on the ``replicas`` live members closest to ``key``.

        Members are tried in XOR order, a failed target replaced by the next
        one. It fails unless every target still live at the end acknowledged
        (and never fewer than min(2, network size), capped at ``replicas``).
        Returns the number of durable copies.
        """
        ranked = self._members_by_distance(key)
        wanted = min(self.replicas, len(ranked))
        done = 0
        failed: list[tuple[bytes, BaseException]] = []
        candidates = iter(ranked)
        while done < wanted:
            batch = [n for _, n in zip(range(wanted - done), candidates, strict=False)]
            if not batch:
                break
            results = await asyncio.gather(*(put_on(n) for n in batch), return_exceptions=True)
            for node, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    failed.append((node, result))
                else:
                    done += 1
        self.metrics.replication_failures.inc(len(failed))
        live = self.members.live()
        still_live_failures = sum(1 for node, _ in failed if node in live)
        required = min(wanted, max(done + still_live_failures, min(2, len(live) + 1)))
        if done < required:
            reasons = "; ".join(f"{n.hex()[:12]}: {e}" for n, e in failed)
            message = f"{what}: {done} durable copies, {required} required ({reasons})"
            own_disk = [e for n, e in failed if n == self.node_id and isinstance(e, DiskFullError)]
            if own_disk:
                raise DiskFullError(f"this node's disk is full; {message}") from own_disk[0]
            raise InsufficientReplicasError(message)
        return done

    # --- store ----------------------------------------------------------------------

    async def store(
        self, name: str, source: Source, *, meta: dict[str, Any] | None = None
    ) -> StoreResult:
        """Store ``source`` under ``name`` with ``replicas`` durable copies of every blob."""
        if not name or len(name.encode("utf-8")) > 4096:
            raise InvalidArgumentError("a name is 1 to 4096 bytes of UTF-8")
        pipeline = _native.StorePipeline(self._namespace_secret)
        refs: dict[int, ChunkRef] = {}
        window = asyncio.Semaphore(STORE_WINDOW)
        uploads: set[asyncio.Task[None]] = set()
        failure: list[Exception] = []
        copies = self.replicas

        async def upload(chunk: _native.SealedChunk) -> None:
            nonlocal copies
            try:
                known = self.catalog.chunk_address(chunk.chunk_id)
                if known is not None and self.blobs.has(known):
                    # Same chunk already stored by this node: reuse its blob.
                    address = known
                    refs[chunk.offset] = ChunkRef(address, chunk.key, chunk.plain_length)
                    return
                written = await self._put_blob(chunk.address, chunk.sealed)
                copies = min(copies, written)
                self.catalog.add_chunk(chunk.chunk_id, chunk.address)
                refs[chunk.offset] = ChunkRef(chunk.address, chunk.key, chunk.plain_length)
            except Exception as e:
                failure.append(e)
            finally:
                window.release()

        async def dispatch(chunks: list[_native.SealedChunk]) -> None:
            for chunk in chunks:
                await window.acquire()
                if failure:
                    window.release()
                    raise failure[0]
                task = asyncio.create_task(upload(chunk))
                uploads.add(task)
                task.add_done_callback(uploads.discard)

        try:
            async for piece in _pieces(source):
                await dispatch(await asyncio.to_thread(pipeline.feed, piece))
            await dispatch(await asyncio.to_thread(pipeline.finish))
            await asyncio.gather(*uploads)
        finally:
            for task in uploads:
                task.cancel()
        if failure:
            raise failure[0]

        manifest = Manifest(
            pipeline.size,
            pipeline.blake3,
            tuple(refs[offset] for offset in sorted(refs)),
            meta or {},
        )
        file_key = _native.generate_key()
        sealed = manifest.seal(file_key)
        if len(sealed) > wire.MAX_BODY:
            raise FileTooLargeError(
                f"{name!r} has {len(manifest.chunks)} chunks: its manifest exceeds one "
                f"{wire.MAX_BODY}-byte blob (files up to about 70 GB are supported)"
            )
        manifest_address = _native.hash(sealed)
        copies = min(copies, await self._put_blob(manifest_address, sealed))
        capability = str(Capability(manifest_address, file_key))
        stored_at = time.time()
        await self._put_name(NameValue(name, capability, manifest.size, manifest.blake3, stored_at))
        self.metrics.stored_bytes.inc(manifest.size)
        log.info(
            "stored %r: %d bytes in %d chunks, %d copies",
            name,
            manifest.size,
            len(manifest.chunks),
            copies,
        )
        return StoreResult(
            name,
            manifest.size,
            manifest.blake3,
            capability,
            len(manifest.chunks),
            copies,
            stored_at,
        )

    async def _put_blob(self, address: bytes, blob: bytes | memoryview) -> int:
        return await self._replicate(
            address,
            f"blob {address.hex()}",
            lambda node: self._put_blob_on(node, address, blob),
        )

    async def _put_blob_on(self, node: bytes, address: bytes, blob: bytes | memoryview) -> None:
        if node == self.node_id:
            # The address was computed from these bytes in this process.
            await asyncio.to_thread(functools.partial(self.blobs.put, verified=True), address, blob)
            self._pin(address)
            return
        link = self.members.live().get(node)
        if link is None:
            raise PeerUnavailableError("not linked")
        await link.request("put_blob", {"addr": address}, blob)
        self.metrics.blob_bytes_sent.inc(len(blob))

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

    # --- names ----------------------------------------------------------------------

    async def _put_name(self, value: NameValue) -> None:
        locator = self._names.locator(value.name)
        version: Version = (self._clock.now(self._latest_version(locator)), self.node_id)
        record = self._names.seal(value, locator, version)
        # The writer always keeps its own names too, so `list` works offline.
        self.catalog.put_record(locator, record, version)
        await self._replicate(
            locator,
            f"name record for {value.name!r}",
            lambda node: self._put_record_on(node, locator, record, version),
        )

    def _latest_version(self, locator: bytes) -> int:
        held = self.catalog.get_record(locator)
        return held[1][0] if held else 0

    async def _put_record_on(
        self, node: bytes, locator: bytes, record: bytes, version: Version
    ) -> None:
        if node == self.node_id:
            self.catalog.put_record(locator, record, version)
            return
        link = self.members.live().get(node)
        if link is None:
            raise PeerUnavailableError("not linked")
        await link.request("put_record", {"loc": locator, "rec": record, "ver": list(version)})

    async def _resolve(self, name: str) -> NameValue:
        """The newest record of ``name`` that opens, from this node's copy and its peers'.

        Any member can send any bytes with any version for a locator it has seen,
        and a holder outside the namespace cannot tell (see ``_serve_put_record``):
        so candidates are tried from the highest version down, and one that does
        not open under its locator and version, or names another name, is skipped.
        """
        locator = self._names.locator(name)
        candidates: list[tuple[bytes, Version, bytes | None]] = []
        held = self.catalog.get_record(locator)
        if held is not None:
            candidates.append((held[0], held[1], None))
        ranked = [n for n in self._members_by_distance(locator) if n != self.node_id]
        asked = ranked[: self.replicas + 2]
        results = await asyncio.gather(
            *(self._get_record_from(n, locator) for n in asked), return_exceptions=True
        )
        for node, result in zip(asked, results, strict=True):
            if isinstance(result, tuple):
                candidates.append((result[0], result[1], node))
            elif isinstance(result, BaseException):
                log.debug("get_record for %r from %s: %s", name, node.hex()[:12], result)
        if not candidates:
            raise NotFoundError(f"no file named {name!r}")
        tried: set[tuple[bytes, Version]] = set()
        failed = 0
        for record, version, source in sorted(candidates, key=lambda c: c[1], reverse=True):
            if (record, version) in tried:
                failed += 1  # the same bytes as a copy that already failed
                continue
            tried.add((record, version))
            try:
                value = self._names.open(record, locator, version)
                if value.name != name:
                    raise IntegrityError(f"it names {value.name!r}")
            except IntegrityError as e:
                failed += 1
                log.warning(
                    "skipped a copy of the record for %r at version %d/%s from %s: "
                    "it failed its check (%s)",
                    name,
                    version[0],
                    version[1].hex()[:12],
                    self._describe_source(source),
                    e,
                )
                continue
            if value.capability is None:
                raise NotFoundError(f"{name!r} was deleted")
            return value
        raise IntegrityError(
            f"every copy of the record for {name!r} failed its check ({failed} copies, "
            "none of which opens under the namespace's key)"
        )

    def _describe_source(self, node: bytes | None) -> str:
        if node is None:
            return "this node's catalog"
        link = self.members.live().get(node)
        return link.describe() if link is not None else f"peer {node.hex()[:12]}"

    async def _get_record_from(self, node: bytes, locator: bytes) -> tuple[bytes, Version] | None:
        link = self.members.live().get(node)
        if link is None:
            return None
        try:
            response = await link.request("get_record", {"loc": locator})
        except RemoteError as e:
            if e.code == "not_found":
                return None
            raise
        return _record_from_meta(response.meta)

    async def delete(self, name: str) -> None:
        """Delete ``name``: a tombstone record that outranks every earlier version."""
        value = await self._resolve(name)
        await self._put_name(NameValue(name, None, 0, b"", time.time()))
        log.info("deleted %r (%d bytes)", name, value.size)

    async def list(self) -> list[FileEntry]:
        """Every live name of this node's namespace that the network holds."""
        # Every copy of every record, by locator: a copy that does not open (garbage,
        # or a record moved to another version) must not hide an older one that does.
        records: dict[bytes, set[tuple[Version, bytes]]] = {}
        for loc, rec, ver in self.catalog.records():
            records.setdefault(loc, set()).add((ver, rec))
        links = list(self.members.live().values())
        results = await asyncio.gather(
            *(_records_held_by(link) for link in links), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                log.debug("listing records: %s", result)
                continue
            for loc, rec, ver in result:
                records.setdefault(loc, set()).add((ver, rec))
        entries = []
        for loc, copies in records.items():
            for ver, rec in sorted(copies, key=lambda c: c[0], reverse=True):
                try:
                    value = self._names.open(rec, loc, ver)
                except FstoreError:
                    # Another namespace's record (ciphertext to us), or a bad copy:
                    # the two cannot be told apart without the name.
                    continue
                if value.capability is not None:
                    entries.append(
                        FileEntry(
                            value.name, value.size, value.blake3, value.stored_at, value.capability
                        )
                    )
                break
        return sorted(entries, key=lambda e: e.name)

    # --- get ------------------------------------------------------------------------

    async def manifest(self, name_or_capability: str) -> tuple[Capability, Manifest]:
        """A file's capability and opened manifest: its size, BLAKE3 and chunk list."""
        if Capability.looks_like(name_or_capability):
            cap = Capability.parse(name_or_capability)
        else:
            cap = Capability.parse((await self._resolve(name_or_capability)).capability or "")
        sealed = await self._fetch_blob(cap.manifest_address)
        return cap, Manifest.open(cap.file_key, sealed)

    async def get(self, name_or_capability: str) -> AsyncIterator[bytes]:
        """Stream a file's plaintext, every blob verified, the whole file checked at the end."""
        _, manifest = await self.manifest(name_or_capability)
        async with contextlib.aclosing(self.read_range(manifest)) as pieces:
            async for piece in pieces:
                yield piece

    async def read_range(
        self, manifest: Manifest, start: int = 0, end: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Stream bytes ``start`` up to ``end`` (exclusive; default the end) of a file.

        ``manifest`` comes from :meth:`manifest`. Only the chunks that overlap the
        range are fetched. Each blob is still checked against its address and
        opened with its key (every record authenticated); the whole file's size
        and BLAKE3 can be checked only when the range is the whole file, and then are.
        """
        end = manifest.size if end is None else end
        if not 0 <= start <= end <= manifest.size:
            raise InvalidArgumentError(
                f"bytes {start} to {end} are not within a file of {manifest.size} bytes"
            )
        spans = _overlapping(manifest.chunks, start, end)
        # One core: chunks are opened one at a time here, and rayon workers that
        # idle-spin between 1 MiB jobs cost the network path more than they save.
        restore = _native.RestorePipeline(parallel=False)
        blobs = self._fetch_ahead([ref for _, ref in spans])
        async with contextlib.aclosing(blobs):
            for offset, ref in spans:
                blob = await anext(blobs)
                plain = await asyncio.to_thread(
                    restore.open_chunk, ref.address, ref.key, blob, ref.length
                )
                piece = plain[max(0, start - offset) : end - offset]
                self.metrics.served_bytes.inc(len(piece))
                yield piece
        if (start, end) == (0, manifest.size):
            restore.finish(manifest.size, manifest.blake3)

    async def read(self, name_or_capability: str) -> bytes:
        """The whole file in memory: for small files and tests."""
        return b"".join([piece async for piece in self.get(name_or_capability)])

    async def _fetch_ahead(
        self, refs: Sequence[ChunkRef]
    ) -> AsyncGenerator[bytes | memoryview, None]:
        """The blobs of ``refs`` in order, fetched up to GET_WINDOW ahead."""
        ahead: asyncio.Queue[asyncio.Task[bytes | memoryview]] = asyncio.Queue(GET_WINDOW)

        async def prefetch() -> None:
            for ref in refs:
                await ahead.put(asyncio.create_task(self._fetch_blob(ref.address)))

        feeder = asyncio.create_task(prefetch())
        try:
            for _ in refs:
                yield await (await ahead.get())
        finally:
            feeder.cancel()
            while not ahead.empty():
                ahead.get_nowait().cancel()

    async def _fetch_blob(self, address: bytes) -> bytes | memoryview:
        """A blob whose bytes match its address: local first, then the closest holders.

        Holders are tried in XOR order; one that fails, lies or is gone is
        skipped. Holders that answered ``busy`` are tried again, a few rounds
        with a growing pause, before the blob is declared unavailable: an
        :class:`IntegrityError` if a copy was found that failed its check (here,
        or served by a peer), else :class:`NotFoundError`.
        """
        bad_copies = 0
        try:
            local = await asyncio.to_thread(self.blobs.load, address)
        except AddressMismatchError:
            self.metrics.verification_failed("disk")
            bad_copies += 1
        else:
            if local is not None:
                return local
        candidates = [n for n in self._members_by_distance(address) if n != self.node_id]
        # Stable: peers that lied before go last, in XOR order among themselves.
        candidates.sort(key=lambda n: self._lies.get(n, 0))
        for attempt in range(BUSY_RETRIES + 1):
            busy: list[bytes] = []
            for node in candidates:
                link = self.members.live().get(node)
                if link is None:
                    continue
                try:
                    response = await link.request("get_blob", {"addr": address})
                except RemoteError as e:
                    if e.code == "busy":
                        busy.append(node)
                    log.debug("get_blob %s from %s: %s", address.hex()[:12], link.describe(), e)
                    continue
                except PeerUnavailableError as e:
                    log.debug("get_blob %s from %s: %s", address.hex()[:12], link.describe(), e)
                    continue
                self.metrics.blob_bytes_received.inc(len(response.body))
                if await asyncio.to_thread(_native.hash, response.body) == address:
                    return response.body
                self.metrics.verification_failed("peer")
                self._record_lie(node)
                bad_copies += 1
                log.warning(
                    "%s served bytes that do not match blob %s; trying another holder",
                    link.describe(),
                    address.hex(),
                )
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

    def _record_lie(self, node: bytes) -> None:
        self._lies[node] = self._lies.pop(node, 0) + 1  # re-inserted: the newest last
        if len(self._lies) > MAX_LIARS_REMEMBERED:
            del self._lies[next(iter(self._lies))]  # forget the least recent liar

    # --- serving peers --------------------------------------------------------------

    async def _handle(
        self, link: PeerLink, op: str, meta: dict[str, Any], body: memoryview
    ) -> Reply:
        handler = _HANDLERS.get(op)
        if handler is None:
            raise RemoteError("bad_request", f"unknown op {op!r}")
        return await handler(self, link, meta, body)

    async def _serve_ping(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        return Reply({})

    async def _serve_peers(self, link: PeerLink, meta: dict[str, Any], body: memoryview) -> Reply:
        known = self.members.known_addresses()[:MAX_PEERS_LISTED]
        return Reply({"peers": [[n, a] for n, a in known]})

    async def _serve_put_blob(
        self, link: PeerLink, meta: dict[str, Any], body: memoryview
    ) -> Reply:
        address = _address(meta, "addr")
        self.metrics.blob_bytes_received.inc(len(body))
        try:
            await asyncio.to_thread(self.blobs.put, address, body)
        except AddressMismatchError as e:
            self.metrics.verification_failed("peer")
            raise RemoteError("bad_address", str(e)) from e
        except DiskFullError as e:
            raise RemoteError("disk_full", str(e)) from e
        self._pin(address)
        return Reply({})

    async def _serve_get_blob(
        self, link: PeerLink, meta: dict[str, Any], body: memoryview
    ) -> Reply:
        try:
            blob = await asyncio.to_thread(self.blobs.load, _address(meta, "addr"))
        except AddressMismatchError:
            self.metrics.verification_failed("disk")
            blob = None
        if blob is None:
            raise RemoteError("not_found", "no such blob here")
        self.metrics.blob_bytes_sent.inc(len(blob))
        return Reply({}, blob)

    async def _serve_has_blobs(
        self, link: PeerLink, meta: dict[str, Any], body: memoryview
    ) -> Reply:
        addrs = meta.get("addrs")
        if not isinstance(addrs, list) or len(addrs) > MAX_HAS_BLOBS:
            raise RemoteError(
                "bad_request", f"addrs must be a list of at most {MAX_HAS_BLOBS} addresses"
            )
        return Reply({"have": [self.blobs.has(_checked_address(a)) for a in addrs]})

    async def _serve_put_record(
        self, link: PeerLink, meta: dict[str, Any], body: memoryview
    ) -> Reply:
        parsed = _record_entry([meta.get("loc"), meta.get("rec"), meta.get("ver")])
        if parsed is None:
            raise RemoteError("bad_request", "malformed record")
        locator, record, version = parsed
        # Storage is "highest version wins": a holder outside the record's namespace
        # has no key to check it with, so any member can replace a record with
        # garbage or with a genuine record under a higher version it was not sealed
        # with. Readers skip such copies (_resolve). A node of the namespace can
        # check, and does not give up a record that opens for one that does not;
        # the put is acknowledged and ignored, like any put it does not keep.
        held = self.catalog.get_record(locator)
        if (
            held is not None
            and version > held[1]
            and self._opens(locator, held[0], held[1])
            and not self._opens(locator, record, version)
        ):
            log.warning(
                "%s sent a record at version %d/%s that does not open over one of this "
                "namespace that does; kept the one held",
                link.describe(),
                version[0],
                version[1].hex()[:12],
            )
            return Reply({})
        self.catalog.put_record(locator, record, version)
        return Reply({})

    def _opens(self, locator: bytes, record: bytes, version: Version) -> bool:
        """Whether ``record`` is one of this namespace's, sealed for ``locator`` at ``version``."""
        try:
            self._names.open(record, locator, version)
        except IntegrityError:
            return False
        return True

    async def _serve_get_record(
        self, link: PeerLink, meta: dict[str, Any], body: memoryview
    ) -> Reply:
        held = self.catalog.get_record(_address(meta, "loc"))
        if held is None:
            raise RemoteError("not_found", "no such record here")
        return Reply({"rec": held[0], "ver": list(held[1])})

    async def _serve_list_records(
        self, link: PeerLink, meta: dict[str, Any], body: memoryview
    ) -> Reply:
        after = meta.get("after")
        if after is not None:
            after = _checked_address(after)
        page: list[list[Any]] = []
        size = 0
        more = False
        for loc, rec, ver in sorted(self.catalog.records()):
            if after is not None and loc <= after:
                continue
            if size + len(rec) + 128 > LIST_PAGE_BYTES:
                more = True
                break
            page.append([loc, rec, list(ver)])
            size += len(rec) + 128
        return Reply({"more": more}, msgpack.packb(page, use_bin_type=True))

    async def _serve_find_node(
        self, link: PeerLink, meta: dict[str, Any], body: memoryview
    ) -> Reply:
        target = _address(meta, "target")
        known = dict(self.members.known_addresses())
        if self.address:
            known[self.node_id] = self.address
        nearest = placement.closest(target, known, 20)
        return Reply({"peers": [[n, known[n]] for n in nearest]})


_HANDLERS = {
    "ping": Node._serve_ping,
    "peers": Node._serve_peers,
    "put_blob": Node._serve_put_blob,
    "get_blob": Node._serve_get_blob,
    "has_blobs": Node._serve_has_blobs,
    "put_record": Node._serve_put_record,
    "get_record": Node._serve_get_record,
    "list_records": Node._serve_list_records,
    "find_node": Node._serve_find_node,
}


def _checked_address(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise RemoteError("bad_request", "an address is 32 bytes")
    return value


def _address(meta: dict[str, Any], key: str) -> bytes:
    return _checked_address(meta.get(key))


def _record_entry(entry: object) -> tuple[bytes, bytes, Version] | None:
    """``[locator, sealed record, [clock, node id]]`` from a peer, validated."""
    if not isinstance(entry, list | tuple) or len(entry) != 3:
        return None
    loc, rec, ver = entry
    if not isinstance(ver, list | tuple) or len(ver) != 2:
        return None
    clock, node = ver
    if (
        isinstance(loc, bytes)
        and len(loc) == 32
        and isinstance(rec, bytes)
        and len(rec) <= RECORD_MAX
        and type(clock) is int  # not bool, which msgpack also decodes into an int subclass
        and 0 <= clock < 1 << 63
        and isinstance(node, bytes)
        and len(node) == 32
    ):
        return loc, rec, (clock, node)
    return None


async def _records_held_by(link: PeerLink) -> list[tuple[bytes, bytes, Version]]:
    """Every name record a peer holds, page by page."""
    records: list[tuple[bytes, bytes, Version]] = []
    after: bytes | None = None
    while True:
        response = await link.request("list_records", {"after": after})
        # unpackb takes no max_buffer_size (only Unpacker does); its length limits
        # default to the body's size, which the wire already bounds by MAX_BODY.
        page = msgpack.unpackb(response.body, raw=False)
        if not isinstance(page, list):
            raise RemoteError("bad_request", "list_records body is not a list")
        for entry in page:
            parsed = _record_entry(entry)
            if parsed is not None:
                records.append(parsed)
                after = max(after or parsed[0], parsed[0])
        if not response.meta.get("more") or not page:
            return records


def _record_from_meta(meta: dict[str, Any]) -> tuple[bytes, Version] | None:
    parsed = _record_entry([b"\0" * 32, meta.get("rec"), meta.get("ver")])
    return (parsed[1], parsed[2]) if parsed else None


def _overlapping(chunks: Sequence[ChunkRef], start: int, end: int) -> list[tuple[int, ChunkRef]]:
    """(offset in the file, chunk) of every chunk holding some of bytes ``start`` to ``end``."""
    spans = []
    offset = 0
    for ref in chunks:
        if offset < end and offset + ref.length > start:
            spans.append((offset, ref))
        offset += ref.length
    return spans


async def _pieces(source: Source) -> AsyncIterator[bytes | memoryview]:
    """Any accepted source as pieces of at most PIECE_SIZE, never the whole file."""
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source)
        for start in range(0, len(view), PIECE_SIZE):
            yield view[start : start + PIECE_SIZE]
    elif isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            async for piece in _read_file(f):
                yield piece
    elif isinstance(source, AsyncIterable):
        async for piece in source:
            yield piece
    else:
        async for piece in _read_file(source):
            yield piece


async def _read_file(f: IO[bytes]) -> AsyncIterator[bytes]:
    while piece := await asyncio.to_thread(f.read, PIECE_SIZE):
        yield piece
