"""Storing a tree, the loop's side: entries collected by directory, directories sealed into nodes.

Each directory is sealed into leaves and index nodes cut at content-defined
boundaries (``directory.split``), every node handed to a ``put`` coroutine.
Sealing starts as soon as the stream of entries leaves a directory (a tar or
a walk lists each directory's entries together, depth first), so nodes are
replicated while later entries are still being read. A directory that
changes after its seal began (an entry arriving later: a tar in another
order, a hard link resolved at the end) is sealed again in :meth:`finish`,
deepest first, and so is every directory above it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from fstore.errors import InvalidArgumentError
from fstore.formats import directory
from fstore.formats.directory import (
    Child,
    Inline,
    Ref,
    Totals,
    TreeDir,
    TreeEntry,
    TreeFile,
    TreeLink,
    display,
)
from fstore.node.treestore import Spill, dir_entry

IMPLICIT_DIR_MODE = 0o755
NODES_IN_FLIGHT = 16  # nodes being stored at once, over every directory
PACK_BATCH = 256  # entries packed per worker-thread call

PutNode = Callable[[bytes, bytes], Awaitable[Ref]]
_Packed = tuple[str, bytes, bytes, TreeEntry]  # name, packed entry, packed identity, entry
Path = tuple[str, ...]


@dataclass
class _Pending:
    entry: TreeEntry
    spill: tuple[int, int] = (0, 0)


@dataclass
class _Sealing:
    """A directory's top node and totals, and which version of its entries they hold."""

    ref: Ref
    totals: Totals
    version: int


@dataclass
class _Dir:
    entries: dict[str, _Pending] = field(default_factory=dict)
    version: int = 0  # bumped by every change of its entries
    storing: int = 0  # large files of it still being stored
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    implicit: bool = False  # only implied by its entries' paths
    seal: asyncio.Task[_Sealing] | None = None

    def __post_init__(self) -> None:
        self.settled.set()


@dataclass(frozen=True)
class Sealed:
    """A sealed tree: its top node, what it holds, and counts of the whole tree."""

    ref: Ref
    totals: Totals
    dirs: int
    symlinks: int


class TreeBuilder:
    """Every directory's entries as a store receives them, sealed as soon as each is complete.

    A later entry of the same path replaces an earlier one (as extracting the
    tar would), except that a directory holding entries cannot be replaced by
    a file or a link.
    """

    def __init__(self, spill: Spill, put: PutNode, keys: directory.TreeKeys) -> None:
        self._spill = spill
        self._put = put
        self._keys = keys
        self._dirs: dict[Path, _Dir] = {(): _Dir()}
        self._cursor: Path = ()  # the directory the last streamed entry went into
        self._slots = asyncio.Semaphore(NODES_IN_FLIGHT)
        self._failure: BaseException | None = None

    # --- receiving ------------------------------------------------------------------------

    def arrive(self, path: Path) -> None:
        """The stream reached ``path``: directories it has left are complete, so seal them."""
        parent = path[:-1]
        common = 0
        while common < min(len(parent), len(self._cursor)) and (
            parent[common] == self._cursor[common]
        ):
            common += 1
        for depth in range(len(self._cursor), common, -1):
            self._start(self._cursor[:depth])
        self._cursor = parent
        self._raise_failure()

    def add(self, path: Path, entry: TreeEntry, spill: tuple[int, int] = (0, 0)) -> None:
        parent = self._directory(path[:-1])
        held = self._dirs.get(path)
        if isinstance(entry, TreeDir):
            if held is None:
                self._dirs[path] = _Dir()
            else:
                held.implicit = False
        elif held is not None and held.entries:
            raise InvalidArgumentError(
                f"{display(path)} is a directory of other entries and, later, not a directory"
            )
        else:
            self._dirs.pop(path, None)
        parent.entries[path[-1]] = _Pending(entry, spill)
        parent.version += 1

    def expect(self, path: Path) -> None:
        """A large file of ``path`` is being stored: its directory waits for it before sealing."""
        parent = self._directory(path[:-1])
        parent.storing += 1
        parent.settled.clear()

    def stored(self, path: Path, entry: TreeFile) -> None:
        """The large file :meth:`expect` announced is stored."""
        self.add(path, entry)
        parent = self._dirs[path[:-1]]
        parent.storing -= 1
        if not parent.storing:
            parent.settled.set()

    def link(self, path: Path, linked: Path) -> bool:
        """Add ``path`` as another name of the file at ``linked``; False if there is none."""
        held = self._dirs.get(linked[:-1]) if linked else None
        pending = held.entries.get(linked[-1]) if held is not None else None
        if pending is None or not isinstance(pending.entry, TreeFile):
            return False
        self.add(path, replace(pending.entry, name=path[-1]), pending.spill)
        return True

    def _directory(self, path: Path) -> _Dir:
        """The directory at ``path``, made (with its parents) if missing."""
        held = self._dirs.get(path)
        if held is not None:
            return held
        parent = self._directory(path[:-1])
        existing = parent.entries.get(path[-1])
        if existing is not None and not isinstance(existing.entry, TreeDir):
            raise InvalidArgumentError(
                f"{display(path)} is not a directory, and, later, holds other entries"
            )
        if existing is None:
            parent.entries[path[-1]] = _Pending(dir_entry(path[-1], IMPLICIT_DIR_MODE, 0))
            parent.version += 1
        held = self._dirs[path] = _Dir(implicit=existing is None)
        return held

    # --- sealing --------------------------------------------------------------------------

    async def finish(self) -> Sealed:
        """Seal what is left, and again whatever changed since its seal; the top's."""
        for path in self._dirs:
            if self._dirs[path].seal is None:
                self._start(path)
        for path in sorted(self._dirs, key=len, reverse=True):
            held = self._dirs[path]
            assert held.seal is not None
            if (await held.seal).version != held.version:
                self._start(path)
                await held.seal
                if path:
                    self._dirs[path[:-1]].version += 1  # it holds this directory's new node
        top = await self._sealing(())
        entries = [p.entry for held in self._dirs.values() for p in held.entries.values()]
        symlinks = sum(isinstance(entry, TreeLink) for entry in entries)
        return Sealed(top.ref, top.totals, len(self._dirs) - 1, symlinks)

    async def cancel(self) -> None:
        tasks = [held.seal for held in self._dirs.values() if held.seal is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, path: Path) -> None:
        held = self._dirs.get(path)
        if held is not None:
            held.seal = asyncio.create_task(self._seal(path, held))
            held.seal.add_done_callback(self._note_failure)

    def _note_failure(self, task: asyncio.Task[_Sealing]) -> None:
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    async def _sealing(self, path: Path) -> _Sealing:
        held = self._dirs[path]
        if held.seal is None:
            self._start(path)
        assert held.seal is not None
        return await held.seal

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def _seal(self, path: Path, held: _Dir) -> _Sealing:
        await held.settled.wait()
        while True:
            version = held.version
            names = sorted(held.entries)
            below: dict[str, _Sealing] = {}
            for name in names:
                if isinstance(held.entries[name].entry, TreeDir):
                    below[name] = await self._sealing((*path, name))
            if held.version == version:
                break  # else entries changed while those were sealed: look again
        entries = [self._final(path, held.entries[name], below.get(name)) for name in names]
        children = await self._leaves(entries)
        height = 1
        while len(children) > 1:
            items = [(c.first, directory.pack_child(c), c) for c in children]
            groups_up = directory.split(items, lambda p: p[0], lambda p: len(p[1]), height)
            storing = [await self._spawn(self._index(height, group)) for group in groups_up]
            children = list(await asyncio.gather(*storing))
            height += 1
        top = children[0]
        return _Sealing(top.ref, Totals(top.entries, top.files, top.size), version)

    def _final(self, path: Path, pending: _Pending, sealed: _Sealing | None) -> _Pending:
        """The entry as it is stored: a subdirectory with its node and counts."""
        entry = pending.entry
        if isinstance(entry, TreeDir) and sealed is not None:
            entry = replace(entry, files=sealed.totals.files, size=sealed.totals.size)
            entry = replace(entry, ref=sealed.ref)
            below = self._dirs.get((*path, entry.name))
            if below is not None and below.implicit:
                # Its newest entry's mtime: deterministic, so a second store reuses it.
                newest = max((p.entry.mtime_ns for p in below.entries.values()), default=0)
                entry = replace(entry, mtime_ns=newest)
        return _Pending(entry, pending.spill)

    async def _leaves(self, entries: list[_Pending]) -> list[Child]:
        """Pack the entries a batch at a time and store each leaf as soon as it is cut.

        At most NODES_IN_FLIGHT nodes wait to be stored, so a directory of a
        million small files is never in memory whole.
        """
        splitter = directory.Splitter(0)
        leaves: list[asyncio.Task[Child]] = []
        group: list[_Packed] = []
        try:
            for start in range(0, len(entries), PACK_BATCH):
                batch = entries[start : start + PACK_BATCH]
                for item in await asyncio.to_thread(self._pack_entries, batch):
                    before, after = splitter.place(item[0], len(item[1]))
                    if before:
                        leaves.append(await self._spawn(self._leaf(group)))
                        group = []
                    group.append(item)
                    if after:
                        leaves.append(await self._spawn(self._leaf(group)))
                        group = []
            if group or not leaves:
                leaves.append(await self._spawn(self._leaf(group)))
            return list(await asyncio.gather(*leaves))
        finally:
            for task in leaves:
                task.cancel()

    async def _spawn(self, storing: Coroutine[Any, Any, Child]) -> asyncio.Task[Child]:
        """A task storing one node, once fewer than NODES_IN_FLIGHT are being stored."""
        await self._slots.acquire()
        task = asyncio.create_task(storing)
        task.add_done_callback(lambda _: self._slots.release())
        return task

    def _pack_entries(self, entries: Iterable[_Pending]) -> list[_Packed]:
        """(name, packed entry, packed identity, entry), sealed bytes read back from the spill."""
        packed: list[_Packed] = []
        for pending in entries:
            entry = pending.entry
            if isinstance(entry, TreeFile) and isinstance(entry.content, Inline):
                sealed_bytes = self._spill.read(pending.spill)
                entry = replace(entry, content=Inline(entry.content.key, sealed_bytes))
                plain = directory.pack_entry(entry)
                packed.append((entry.name, plain, directory.pack_entry_identity(entry), entry))
            else:
                plain = directory.pack_entry(entry)  # its identity is itself
                packed.append((entry.name, plain, plain, entry))
        return packed

    async def _leaf(self, group: list[_Packed]) -> Child:
        plain = directory.pack_leaf([p[1] for p in group])
        identity = directory.pack_leaf([p[2] for p in group])
        ref = await self._put(plain, identity)
        totals = directory.totals(directory.Leaf(tuple(p[3] for p in group)))
        first = group[0][0] if group else ""
        return Child(first, ref, totals.entries, totals.files, totals.size)

    async def _index(self, height: int, group: list[tuple[str, bytes, Child]]) -> Child:
        plain = directory.pack_index(height, [p[1] for p in group])
        ref = await self._put(plain, plain)
        totals = directory.totals(directory.Index(height, tuple(p[2] for p in group)))
        return Child(group[0][0], ref, totals.entries, totals.files, totals.size)
