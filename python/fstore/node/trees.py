"""Directory trees: store one (from a local directory or a tar stream), find, list, read, restore.

A tree is stored as directory nodes (``fstore.formats.directory``): small
files sealed inside their directory's leaves, larger ones as ordinary
manifests and chunks through the writer. Node and manifest blobs get
content-derived ids and keys (``TreeKeys``), so storing a tree again finds
every unchanged part in the catalog and sends only what changed; the name
record is written last, in one step, so readers see the old tree or the new
one, never a mix.

Reading walks nodes from a top node (a ``fsd1:`` capability, or a name's
record) down: listing one level fetches that directory's nodes only, a lookup
one node per level of its index. Everything fetched is checked
(``open_node``, ``check_child``) before it is used.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fstore import _native
from fstore.errors import (
    FileTooLargeError,
    IntegrityError,
    InvalidArgumentError,
    InvalidNameError,
    NotFoundError,
    UnsafePathError,
    WrongKindError,
)
from fstore.formats import directory, tar
from fstore.formats.capability import Capability, DirCapability
from fstore.formats.directory import (
    DirNode,
    Index,
    Leaf,
    Ref,
    Skipped,
    Totals,
    TreeDir,
    TreeEntry,
    TreeFile,
    TreeLink,
    display,
    kind_of,
)
from fstore.formats.manifest import Manifest
from fstore.formats.names import check_name
from fstore.formats.records import NameValue
from fstore.net import wire
from fstore.node.bridge import Closed, FromLoop, ToLoop
from fstore.node.metrics import NodeMetrics
from fstore.node.names import Names
from fstore.node.reader import Reader
from fstore.node.treebuild import TreeBuilder
from fstore.node.treestore import (
    MAX_DEPTH,
    Added,
    Emitter,
    Event,
    HardLink,
    LargeFile,
    Spill,
    produce,
    produce_local,
    produce_tar,
)
from fstore.node.writer import STORE_WINDOW, BlobTally, Writer
from fstore.storage.catalog import Catalog
from fstore.storage.localtree import TreeWriter

log = logging.getLogger(__name__)

FILES_IN_FLIGHT = 32  # larger files being stored at once, at most...
BYTES_IN_FLIGHT = 64 * 1024 * 1024  # ...holding about this much (a file's window at most)
PRODUCERS = 8  # tree stores reading their entries at once; more wait their turn
# Files from this size are sealed on every core; smaller ones on one, which costs a quarter of
# the CPU for a file of 100 KB (handing work to the other cores costs more than it saves).
PARALLEL_FROM = 16 * 1024 * 1024
BATCHES_AHEAD = 8  # batches of entries a producer may get ahead of the loop
BODY_PIECES_AHEAD = 8  # request body pieces waiting for the tar reader
NODES_AHEAD = 4  # index children fetched ahead while listing
CACHED_NODES = 64
OUTPUT_PIECE = 1024 * 1024  # bytes of tar gathered before they are handed on
RENDER_BATCH = 128  # small entries turned into tar (or files) per worker-thread call


@dataclass(frozen=True)
class TreeStoreResult:
    name: str
    capability: str
    files: int
    dirs: int
    symlinks: int
    size: int  # bytes of every file
    new_bytes: int  # blob bytes this store put on the network (each blob once)
    reused_bytes: int  # blob bytes it found already stored
    replicas: int  # durable copies of the least-copied blob
    skipped: tuple[Skipped, ...]
    stored_at: float


@dataclass(frozen=True)
class TreeRestoreResult:
    path: Path
    files: int
    dirs: int
    symlinks: int
    size: int


@dataclass(frozen=True)
class Located:
    """What a target names: a directory (its top node), a file, or a link inside a tree."""

    label: str  # the name or capability, and the path inside, as text
    directory: Ref | None = None
    entry: TreeEntry | None = None  # the path's entry inside a tree; None at a tree's top
    file_capability: Capability | None = None  # a file stored on its own

    @property
    def is_directory(self) -> bool:
        return self.directory is not None

    @property
    def capability(self) -> str | None:
        """The capability that reads exactly this (None for a small file or a link in a tree)."""
        if self.directory is not None:
            return str(DirCapability(self.directory.address, self.directory.key))
        if self.file_capability is not None:
            return str(self.file_capability)
        return capability_of(self.entry) if self.entry is not None else None


def capability_of(entry: TreeEntry) -> str | None:
    """The capability that reads exactly this entry: a subdirectory's ``fsd1:``, a large
    file's ``fs1:``; None for a small file (sealed inside its directory) or a link."""
    if isinstance(entry, TreeDir):
        return str(DirCapability(entry.ref.address, entry.ref.key))
    if isinstance(entry, TreeFile) and isinstance(entry.content, Ref):
        return str(Capability(entry.content.address, entry.content.key))
    return None


@dataclass
class FileView:
    """A file found by a target: its size and BLAKE3, and a way to read any range of it."""

    size: int
    blake3: bytes
    capability: str | None
    read: Callable[[int, int | None], AsyncGenerator[bytes, None]]


@dataclass
class _Store:
    """What one store counts as it goes."""

    tally: BlobTally
    copies: int
    skipped: list[Skipped] = field(default_factory=list)


class Trees:
    def __init__(
        self,
        namespace_secret: bytes,
        writer: Writer,
        reader: Reader,
        names: Names,
        catalog: Catalog,
        metrics: NodeMetrics,
        spill_dir: Path,
    ) -> None:
        self._secret = namespace_secret
        self.keys = directory.TreeKeys(namespace_secret)
        self.writer = writer
        self.reader = reader
        self.names = names
        self.catalog = catalog
        self.metrics = metrics
        self._spill_dir = spill_dir
        self._cache: OrderedDict[tuple[bytes, bytes], DirNode] = OrderedDict()
        self._producers = ThreadPoolExecutor(PRODUCERS, thread_name_prefix="fstore-tree")
        self._running: set[Callable[[], None]] = set()  # how to wake each store's producer

    def close(self) -> None:
        """End every producer thread: a store still running fails at its next hand-over."""
        for wake in list(self._running):
            wake()
        self._producers.shutdown(wait=False, cancel_futures=True)

    # --- storing ------------------------------------------------------------------------

    async def store_path(self, name: str, path: str | os.PathLike[str]) -> TreeStoreResult:
        """Store the local directory at ``path`` (never following a link in it) as ``name``."""
        root = os.fspath(path)
        return await self._store(name, lambda emit: produce_local(root, emit))

    async def store_tar(self, name: str, pieces: AsyncIterable[bytes]) -> TreeStoreResult:
        """Store the tree a tar stream holds as ``name``, reading it as it arrives."""
        body = FromLoop(BODY_PIECES_AHEAD)
        feeding = asyncio.create_task(body.feed(pieces))
        try:
            return await self._store(
                name, lambda emit: produce_tar(body, emit), unblock=body.close_input
            )
        except BaseException as e:
            body.close_input()
            why = await _settle(feeding)
            if why is not None and isinstance(e, Exception):
                raise why from None  # the body ended early: that is what went wrong
            raise
        finally:
            await _settle(feeding)

    async def _store(
        self,
        name: str,
        run: Callable[[Emitter], None],
        unblock: Callable[[], None] = lambda: None,
    ) -> TreeStoreResult:
        check_name(name)
        spill = await asyncio.to_thread(Spill, str(self._spill_dir))
        events: ToLoop[list[Event]] = ToLoop(BATCHES_AHEAD)
        emit = Emitter(self._secret, spill, events)
        loop = asyncio.get_running_loop()
        # Threads of their own: a producer waits on the loop for as long as the store runs,
        # and must never hold a worker the loop's own hand-offs (sealing, disk writes) need.
        producer = loop.run_in_executor(self._producers, produce, run, emit, events)
        state = _Store(BlobTally(defer_index=True), self.writer.replicator.replicas)
        builder = TreeBuilder(spill, functools.partial(self._put_node, state), self.keys)

        def wake() -> None:
            events.close()
            unblock()

        self._running.add(wake)
        try:
            await self._receive(events, builder, state)
            await producer
            sealed = await builder.finish()
        except BaseException:
            wake()
            await _settle(producer)
            await builder.cancel()
            raise
        finally:
            self._running.discard(wake)
            await asyncio.to_thread(spill.close)
        await asyncio.gather(*(self.writer.local.add_chunk(i, a) for i, a in state.tally.new_ids))
        capability = str(DirCapability(sealed.ref.address, sealed.ref.key))
        stored_at = time.time()
        size = sealed.totals.size
        await self.names.put(NameValue(name, capability, size, b"", stored_at))
        if self.writer.on_stored is not None:
            await self.writer.on_stored(
                name, capability, list(dict.fromkeys(state.tally.addresses))
            )
        self.metrics.stored_bytes.inc(size)
        log.info(
            "stored the tree %r: %d files, %d bytes, %d bytes of new blobs",
            name,
            sealed.totals.files,
            size,
            state.tally.new,
        )
        return TreeStoreResult(
            name,
            capability,
            sealed.totals.files,
            sealed.dirs,
            sealed.symlinks,
            size,
            state.tally.new,
            state.tally.reused,
            state.copies,
            tuple(state.skipped),
            stored_at,
        )

    async def _receive(
        self, events: ToLoop[list[Event]], builder: TreeBuilder, state: _Store
    ) -> None:
        """Collect every entry; large files are stored (a few at once) as they stream in."""
        budget = Budget(BYTES_IN_FLIGHT, FILES_IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()
        streams: set[ToLoop[bytes]] = set()
        failures: list[BaseException] = []
        hard_links: list[HardLink] = []

        async def store_file(event: LargeFile) -> None:
            try:
                builder.stored(event.path, await self._store_file(event, state))
            except BaseException as e:
                failures.append(e)
                event.pieces.close()  # the producer stops at its next piece
            finally:
                streams.discard(event.pieces)
                await budget.release(_held_by(event))

        try:
            async for batch in events:
                for event in batch:
                    if isinstance(event, Added):
                        builder.arrive(event.path)
                        builder.add(event.path, event.entry, event.spill)
                    elif isinstance(event, Skipped):
                        state.skipped.append(event)
                    elif isinstance(event, HardLink):
                        hard_links.append(event)
                    else:
                        builder.arrive(event.path)
                        builder.expect(event.path)
                        streams.add(event.pieces)
                        await budget.acquire(_held_by(event))
                        if failures:
                            raise failures[0]
                        task = asyncio.create_task(store_file(event))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
        except Closed:
            if failures:
                raise failures[0] from None
            raise
        finally:
            for stream in streams:
                stream.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if failures:
            raise failures[0]
        for link in hard_links:
            if not builder.link(link.path, link.linked):
                reason = f"a hard link to {display(link.linked)}, which is no file before it"
                state.skipped.append(Skipped(display(link.path), reason))

    async def _store_file(self, event: LargeFile, state: _Store) -> TreeFile:
        """A file's chunks and manifest; the manifest's id and key derived from its content."""
        parallel = event.size >= PARALLEL_FROM
        manifest, copies = await self.writer.store_chunks(
            event.pieces, tally=state.tally, parallel=parallel
        )
        packed = manifest.pack()
        manifest_id = self.keys.manifest_id(packed)
        key = self.keys.manifest_key(manifest_id)
        sealed = manifest.seal(key)
        if len(sealed) > wire.MAX_BODY:
            raise FileTooLargeError(
                f"{display(event.path)} has {len(manifest.chunks)} chunks: its manifest "
                f"exceeds one {wire.MAX_BODY}-byte blob (files up to about 70 GB are supported)"
            )
        address, written = await self.writer.put_deduplicated(
            manifest_id, _native.hash(sealed), sealed, state.tally
        )
        state.copies = min(state.copies, copies, written)
        ref = Ref(address, key)
        name = event.path[-1]
        return TreeFile(name, event.mode, event.mtime_ns, manifest.size, manifest.blake3, ref)

    async def _put_node(self, state: _Store, plain: bytes, identity: bytes) -> Ref:
        node_id, key, sealed = await asyncio.to_thread(self._seal_node, plain, identity)
        address, written = await self.writer.put_deduplicated(
            node_id, _native.hash(sealed), sealed, state.tally
        )
        state.copies = min(state.copies, written)
        return Ref(address, key)

    def _seal_node(self, plain: bytes, identity: bytes) -> tuple[bytes, bytes, bytes]:
        node_id = self.keys.node_id(identity)
        key = self.keys.node_key(node_id)
        return node_id, key, directory.seal_node(key, plain)

    # --- finding ----------------------------------------------------------------------------

    async def locate(self, target: str, inner: tuple[str, ...] = ()) -> Located:
        """What ``target`` (a name, a capability) and the path ``inner`` below it name.

        A name may contain ``/``: the longest prefix of ``target`` ending before a
        ``/`` (or all of it) that is a stored name wins, and the rest of it is a
        path inside that name's tree. So a name that exists exactly always wins.
        """
        if DirCapability.looks_like(target):
            cap = DirCapability.parse(target)
            return await self._walk_path(target, Ref(cap.address, cap.key), inner)
        if Capability.looks_like(target):
            if inner:
                raise WrongKindError("a file capability names a file, not a directory")
            return Located(target, file_capability=Capability.parse(target))
        check_name(target)
        missing: NotFoundError | None = None
        for prefix, rest in _name_candidates(target):
            try:
                value = await self.names.resolve(prefix)
            except NotFoundError as e:
                missing = missing or e
                continue
            except InvalidNameError:
                continue  # a prefix that is no name ("" before a leading "/")
            path = directory.split_path(rest) + inner
            capability = value.capability or ""
            if DirCapability.looks_like(capability):
                cap = DirCapability.parse(capability)
                return await self._walk_path(prefix, Ref(cap.address, cap.key), path)
            if path:
                raise WrongKindError(f"{prefix!r} is a file, not a directory")
            return Located(prefix, file_capability=Capability.parse(capability))
        assert missing is not None  # the full target is always a candidate
        raise missing

    async def _walk_path(self, label: str, ref: Ref, path: tuple[str, ...]) -> Located:
        current = ref
        entry: TreeEntry | None = None
        for depth, segment in enumerate(path):
            where = display(path[: depth + 1])
            found = await self.lookup(current, segment)
            if found is None:
                raise NotFoundError(f"{label}: no {where} in the tree")
            entry = found
            if isinstance(found, TreeDir):
                current = found.ref
            elif depth < len(path) - 1:
                raise WrongKindError(f"{label}/{where} is a {kind_of(found)}, not a directory")
            else:
                return Located(f"{label}/{where}", entry=found)
        shown = f"{label}/{display(path)}" if path else label
        return Located(shown, directory=current, entry=entry)

    async def lookup(self, ref: Ref, name: str) -> TreeEntry | None:
        """The entry called ``name`` in the directory at ``ref``: one node per index level."""
        node = await self.node(ref)
        bound: str | None = None
        while isinstance(node, Index):
            position = bisect.bisect_right([c.first for c in node.children], name) - 1
            if position < 0:
                return None
            child = await self.node(node.children[position].ref)
            directory.check_child(node, position, bound, child)
            bound = directory.child_bound(node, position, bound)
            node = child
        names = [e.name for e in node.entries]
        position = bisect.bisect_left(names, name)
        found = position < len(names) and names[position] == name
        return node.entries[position] if found else None

    async def node(self, ref: Ref) -> DirNode:
        """The opened node at ``ref`` (a few recent ones are kept, by address and key)."""
        cached = self._cache.get((ref.address, ref.key))
        if cached is not None:
            self._cache.move_to_end((ref.address, ref.key))
            return cached
        blob = await self.reader.fetch_blob(ref.address)
        self.metrics.tree_nodes_fetched.inc()
        node = await asyncio.to_thread(directory.open_node, ref.key, blob)
        self._cache[(ref.address, ref.key)] = node
        if len(self._cache) > CACHED_NODES:
            self._cache.popitem(last=False)
        return node

    async def totals(self, ref: Ref) -> Totals:
        """What the directory at ``ref`` holds: from its top node alone."""
        return directory.totals(await self.node(ref))

    # --- listing and walking ------------------------------------------------------------------

    async def entries(
        self, ref: Ref, expected: TreeDir | None = None
    ) -> AsyncGenerator[TreeEntry, None]:
        """One level: the directory's entries in name order, each node checked on the way.

        ``expected``: the entry that led here, whose counts the directory must match.
        """
        top = await self.node(ref)
        if expected is not None:
            held = directory.totals(top)
            if (held.files, held.size) != (expected.files, expected.size):
                raise IntegrityError(
                    f"malformed directory: {expected.name!r} holds {held.files} files of "
                    f"{held.size} bytes, not the {expected.files} of {expected.size} its entry says"
                )
        async with contextlib.aclosing(self._leaves(top, None)) as leaves:
            async for leaf in leaves:
                for entry in leaf.entries:
                    yield entry

    async def _leaves(self, node: DirNode, bound: str | None) -> AsyncGenerator[Leaf, None]:
        if isinstance(node, Leaf):
            yield node
            return
        async with contextlib.aclosing(self._children(node)) as children:
            position = 0
            async for child in children:
                directory.check_child(node, position, bound, child)
                below = directory.child_bound(node, position, bound)
                async with contextlib.aclosing(self._leaves(child, below)) as leaves:
                    async for leaf in leaves:
                        yield leaf
                position += 1

    async def _children(self, index: Index) -> AsyncGenerator[DirNode, None]:
        """An index's children in order, up to NODES_AHEAD fetched ahead."""
        ahead: deque[asyncio.Task[DirNode]] = deque()
        waiting = iter(index.children)
        try:
            while True:
                while len(ahead) < NODES_AHEAD and (child := next(waiting, None)) is not None:
                    ahead.append(asyncio.create_task(self.node(child.ref)))
                if not ahead:
                    return
                yield await ahead.popleft()
        finally:
            for task in ahead:
                task.cancel()
            await asyncio.gather(*ahead, return_exceptions=True)

    async def walk(self, ref: Ref) -> AsyncGenerator[tuple[tuple[str, ...], TreeEntry], None]:
        """Every entry below ``ref`` with its path, a directory before what it holds."""
        stack: list[tuple[tuple[str, ...], AsyncGenerator[TreeEntry, None]]] = [
            ((), self.entries(ref))
        ]
        try:
            while stack:
                path, level = stack[-1]
                entry = await anext(level, None)
                if entry is None:
                    await stack.pop()[1].aclose()
                    continue
                full = (*path, entry.name)
                yield full, entry
                if isinstance(entry, TreeDir):
                    if len(full) >= MAX_DEPTH:
                        raise IntegrityError(
                            f"malformed directory: nested deeper than {MAX_DEPTH} levels"
                        )
                    stack.append((full, self.entries(entry.ref, entry)))
        finally:
            for _, level in reversed(stack):
                await level.aclose()

    async def blobs(self, ref: Ref) -> AsyncGenerator[bytes, None]:
        """The address of every blob the tree at ``ref`` uses: its directory nodes, and of
        each file not inline its manifest and chunks (a blob met twice is given twice)."""
        yield ref.address
        node = await self.node(ref)
        if isinstance(node, Index):
            for child in node.children:
                async for address in self.blobs(child.ref):
                    yield address
            return
        for entry in node.entries:
            if isinstance(entry, TreeDir):
                async for address in self.blobs(entry.ref):
                    yield address
            elif isinstance(entry, TreeFile) and isinstance(entry.content, Ref):
                cap = Capability(entry.content.address, entry.content.key)
                manifest = await self.reader.manifest(cap)
                yield cap.manifest_address
                for chunk in manifest.chunks:
                    yield chunk.address

    # --- reading files --------------------------------------------------------------------------

    async def file(self, located: Located) -> FileView:
        """The file ``located`` names, ready to read; WrongKindError for anything else."""
        if located.file_capability is not None:
            manifest = await self.reader.manifest(located.file_capability)
            return _manifest_view(self.reader, manifest, str(located.file_capability))
        entry = located.entry
        if located.is_directory:
            raise WrongKindError(f"{located.label} is a directory")
        if isinstance(entry, TreeLink):
            raise WrongKindError(f"{located.label} is a link to {entry.target}")
        assert isinstance(entry, TreeFile)
        return await self.tree_file(entry, located.capability)

    async def tree_file(self, entry: TreeFile, capability: str | None = None) -> FileView:
        if isinstance(entry.content, Ref):
            cap = Capability(entry.content.address, entry.content.key)
            manifest = await self.reader.manifest(cap)
            if (manifest.size, manifest.blake3) != (entry.size, entry.blake3):
                raise IntegrityError(f"the manifest of {entry.name!r} does not match its entry")
            return _manifest_view(self.reader, manifest, capability)
        plain = await asyncio.to_thread(directory.open_inline, entry)

        async def read(start: int, end: int | None) -> AsyncGenerator[bytes, None]:
            stop = entry.size if end is None else end
            if not 0 <= start <= stop <= entry.size:
                raise InvalidArgumentError(
                    f"bytes {start} to {stop} are not within a file of {entry.size} bytes"
                )
            self.metrics.served_bytes.inc(stop - start)
            yield plain[start:stop]

        return FileView(entry.size, entry.blake3, capability, read)

    # --- a tree as a tar stream, or restored to a local directory --------------------------------

    async def tar(self, ref: Ref) -> AsyncGenerator[bytes, None]:
        """The tree as a tar stream, in pieces of about OUTPUT_PIECE bytes; never held whole."""
        out = bytearray()
        small: list[tuple[tuple[str, ...], TreeEntry]] = []
        async with contextlib.aclosing(self.walk(ref)) as entries:
            async for path, entry in entries:
                if isinstance(entry, TreeFile) and isinstance(entry.content, Ref):
                    out += await asyncio.to_thread(_render_tar, small)
                    small.clear()
                    out += tar.header(path, "file", entry.mode, entry.mtime_ns, entry.size)
                    view = await self.tree_file(entry)
                    async with contextlib.aclosing(view.read(0, None)) as pieces:
                        async for piece in pieces:
                            out += piece
                            if len(out) >= OUTPUT_PIECE:
                                yield bytes(out)
                                out.clear()
                    out += tar.padding(entry.size)
                else:
                    small.append((path, entry))
                    if len(small) >= RENDER_BATCH:
                        out += await asyncio.to_thread(_render_tar, small)
                        small.clear()
                if len(out) >= OUTPUT_PIECE:
                    yield bytes(out)
                    out.clear()
        out += await asyncio.to_thread(_render_tar, small)
        yield bytes(out) + tar.END

    async def restore(self, ref: Ref, target: Path) -> TreeRestoreResult:
        """Write the tree into ``target`` (made if missing) with modes and mtimes.

        Nothing is written outside ``target``: a link that would point outside
        the tree, or a write through a link already in ``target``, is refused
        (the rest is restored, then :class:`UnsafePathError` names what was).
        """
        writer = await asyncio.to_thread(TreeWriter, target)
        refused: list[str] = []
        counts = {"file": 0, "dir": 0, "symlink": 0}
        size = 0
        small: list[tuple[tuple[str, ...], TreeEntry]] = []
        try:
            async with contextlib.aclosing(self.walk(ref)) as entries:
                async for path, entry in entries:
                    counts[kind_of(entry)] += 1
                    if isinstance(entry, TreeFile):
                        size += entry.size
                    if isinstance(entry, TreeFile) and isinstance(entry.content, Ref):
                        await asyncio.to_thread(_restore_small, writer, small, refused)
                        small.clear()
                        await self._restore_file(writer, path, entry, refused)
                    else:
                        small.append((path, entry))
                        if len(small) >= RENDER_BATCH:
                            await asyncio.to_thread(_restore_small, writer, small, refused)
                            small.clear()
            await asyncio.to_thread(_restore_small, writer, small, refused)
            await asyncio.to_thread(writer.finish)
        finally:
            await asyncio.to_thread(writer.close)
        if refused:
            more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
            raise UnsafePathError(f"refused {len(refused)} entries: {refused[0]}{more}")
        return TreeRestoreResult(target, counts["file"], counts["dir"], counts["symlink"], size)

    async def _restore_file(
        self, writer: TreeWriter, path: tuple[str, ...], entry: TreeFile, refused: list[str]
    ) -> None:
        try:
            sink = await asyncio.to_thread(writer.file, path)
        except UnsafePathError as e:
            refused.append(str(e))
            return
        try:
            view = await self.tree_file(entry)
            async with contextlib.aclosing(view.read(0, None)) as pieces:
                async for piece in pieces:
                    await asyncio.to_thread(sink.write, piece)
            await asyncio.to_thread(sink.commit, entry.mode, entry.mtime_ns)
        except BaseException:
            await asyncio.to_thread(sink.abort)
            raise


def _held_by(event: LargeFile) -> int:
    """The most memory a file's store holds: its size, or its window of chunks."""
    return min(event.size, STORE_WINDOW * _native.DEFAULT_MAX_SIZE)


class Budget:
    """At most ``limit`` units held by at most ``holders`` at once; one larger than the
    limit waits until nothing else is held."""

    def __init__(self, limit: int, holders: int) -> None:
        self._limit = limit
        self._most = holders
        self._used = 0
        self._holders = 0
        self._changed = asyncio.Condition()

    async def acquire(self, amount: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._fits(amount))
            self._used += amount
            self._holders += 1

    def _fits(self, amount: int) -> bool:
        if not self._holders:
            return True
        return self._holders < self._most and self._used + amount <= self._limit

    async def release(self, amount: int) -> None:
        async with self._changed:
            self._used -= amount
            self._holders -= 1
            self._changed.notify_all()


def _manifest_view(reader: Reader, manifest: Manifest, capability: str | None) -> FileView:
    def read(start: int, end: int | None) -> AsyncGenerator[bytes, None]:
        return reader.read_range(manifest, start, end)

    return FileView(manifest.size, manifest.blake3, capability, read)


def _render_tar(entries: list[tuple[tuple[str, ...], TreeEntry]]) -> bytes:
    """The tar members of directories, links and inline files (on a worker thread)."""
    parts: list[bytes] = []
    for path, entry in entries:
        if isinstance(entry, TreeDir):
            parts.append(tar.header(path, "dir", entry.mode, entry.mtime_ns))
        elif isinstance(entry, TreeLink):
            parts.append(tar.header(path, "symlink", entry.mode, entry.mtime_ns, 0, entry.target))
        else:
            assert isinstance(entry, TreeFile)
            parts.append(tar.header(path, "file", entry.mode, entry.mtime_ns, entry.size))
            parts.append(directory.open_inline(entry))
            parts.append(tar.padding(entry.size))
    return b"".join(parts)


def _restore_small(
    writer: TreeWriter, entries: list[tuple[tuple[str, ...], TreeEntry]], refused: list[str]
) -> None:
    """Directories, links and inline files (on a worker thread); unsafe ones refused."""
    for path, entry in entries:
        try:
            if isinstance(entry, TreeDir):
                writer.directory(path, entry.mode, entry.mtime_ns)
            elif isinstance(entry, TreeLink):
                writer.symlink(path, entry.target, entry.mtime_ns)
            else:
                assert isinstance(entry, TreeFile)
                plain = directory.open_inline(entry)
                sink = writer.file(path)
                try:
                    sink.write(plain)
                    sink.commit(entry.mode, entry.mtime_ns)
                except BaseException:
                    sink.abort()
                    raise
        except UnsafePathError as e:
            refused.append(str(e))


def _name_candidates(target: str) -> list[tuple[str, str]]:
    """(name, rest) for ``target`` whole, then cut before each ``/``, the longest name first."""
    candidates = [(target, "")]
    position = len(target)
    while (position := target.rfind("/", 0, position)) >= 0:
        candidates.append((target[:position], target[position + 1 :]))
    return candidates


async def _settle(task: asyncio.Future[Any]) -> BaseException | None:
    """Wait for ``task`` to end (cancelled if still running); the error it failed with."""
    if not task.done():
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return None if task.cancelled() else task.exception()
