"""Helpers for the directory-tree tests: generated trees, snapshots of them, and their blobs.

A :func:`snapshot` describes every entry below a directory as the file system
has it (kind, mode, mtime in ns, BLAKE3 of a file by the independent ``blake3``
package, a link's target), so two trees compare entry by entry. :func:`tree_nodes`
reads a stored tree's directory nodes straight from a node's blob files with
the format module, independently of the node's own code.
"""

from __future__ import annotations

import os
import random
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import blake3
from netutil import MiB, stored_copy, write_random_file

from fstore.formats import directory
from fstore.formats.capability import Capability, DirCapability
from fstore.formats.directory import Index, Leaf, Ref, TreeDir, TreeFile
from fstore.formats.manifest import Manifest

Entry = tuple[str, int, int, str]  # kind, mode, mtime_ns, BLAKE3 hex or link target


def snapshot(root: Path) -> dict[str, Entry]:
    """Every entry below ``root`` (never following a link), by its path relative to it."""
    found: dict[str, Entry] = {}
    for parent, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = Path(parent, name)
            st = path.lstat()
            rel = str(path.relative_to(root))
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("symlink", 0, st.st_mtime_ns, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", mode, st.st_mtime_ns, "")
            elif stat.S_ISREG(st.st_mode):
                found[rel] = ("file", mode, st.st_mtime_ns, file_blake3(path))
            else:
                found[rel] = ("special", mode, st.st_mtime_ns, "")
    return found


def file_blake3(path: Path) -> str:
    digest = blake3.blake3()
    if path.stat().st_size:
        digest.update_mmap(path)
    return digest.hexdigest()


def stored_view(tree: dict[str, Entry]) -> dict[str, Entry]:
    """What a store keeps of a snapshot: no special files (they are skipped)."""
    return {path: entry for path, entry in tree.items() if entry[0] != "special"}


def set_mtimes(root: Path, rng: random.Random) -> None:
    """Give every entry below ``root`` a random mtime with nanoseconds, deepest first."""
    paths = sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True)
    for path in paths:
        ns = rng.randrange(10**17, 2 * 10**18)
        os.utime(path, ns=(ns, ns), follow_symlinks=False)


def make_tree(root: Path, rng: random.Random, *, big: int = 0) -> None:
    """A tree with nested levels, empty directories and files, unicode names, links, modes.

    With ``big`` a file of that many random bytes too (``large/big.bin``).
    """
    root.mkdir(parents=True)
    (root / "empty dir").mkdir()
    (root / "empty file").write_bytes(b"")
    deep = root / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    (deep / "leaf.txt").write_bytes(b"deep down\n")
    for name in ("ünïcödé", "日本語", "emoji 🎉", "spaces and 'quotes'"):
        (root / name).mkdir()
        (root / name / f"{name}.txt").write_bytes(rng.randbytes(rng.randrange(1, 3000)))
    small = root / "small"
    small.mkdir()
    for i in range(40):
        (small / f"f{i:02}").write_bytes(rng.randbytes(rng.randrange(0, 40_000)))
    (root / "medium.bin").write_bytes(rng.randbytes(300_000))
    (root / "a" / "read-only").write_bytes(b"r")
    (root / "a" / "read-only").chmod(0o444)
    (root / "a" / "script.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "a" / "script.sh").chmod(0o755)
    (root / "a" / "b" / "private").write_bytes(b"p")
    (root / "a" / "b" / "private").chmod(0o600)
    (root / "a" / "b" / "c").chmod(0o700)
    os.symlink("a/b/c/d/leaf.txt", root / "link to leaf")
    os.symlink("../../medium.bin", root / "a" / "b" / "up two")
    os.symlink("d", root / "a" / "b" / "c" / "dir link")
    os.symlink("nowhere", root / "dangling")
    if big:
        (root / "large").mkdir()
        write_random_file(root / "large" / "big.bin", big, b"big")
    set_mtimes(root, rng)


def many_files(root: Path, rng: random.Random, dirs: int, per_dir: int, size: int) -> None:
    """``dirs`` directories of ``per_dir`` random files of ``size`` bytes."""
    for d in range(dirs):
        folder = root / f"d{d:03}"
        folder.mkdir(parents=True)
        for i in range(per_dir):
            (folder / f"f{i:04}").write_bytes(rng.randbytes(size))


def blob(data_dirs: Iterable[Path], address: bytes) -> bytes:
    for data_dir in data_dirs:
        copy = stored_copy(data_dir, address)
        if copy is not None:
            return copy
    raise FileNotFoundError(f"no node holds blob {address.hex()}")


@dataclass
class TreeBlobs:
    """A stored tree's blobs as the format describes them, read from nodes' disks."""

    nodes: dict[str, list[bytes]] = field(default_factory=dict)  # directory path -> its nodes
    manifests: dict[str, bytes] = field(default_factory=dict)  # file path -> manifest
    chunks: dict[str, list[bytes]] = field(default_factory=dict)  # file path -> chunks
    sizes: dict[bytes, int] = field(default_factory=dict)  # every blob -> its size

    @property
    def addresses(self) -> set[bytes]:
        return set(self.sizes)


def tree_blobs(capability: str, data_dirs: list[Path]) -> TreeBlobs:
    """Every blob of the tree ``capability`` names, by what it is for."""
    cap = DirCapability.parse(capability)
    found = TreeBlobs()
    pending = [("", Ref(cap.address, cap.key))]
    while pending:
        path, ref = pending.pop()
        for entry in _directory_entries(ref, data_dirs, found, path):
            inner = f"{path}/{entry.name}" if path else entry.name
            if isinstance(entry, TreeDir):
                pending.append((inner, entry.ref))
            elif isinstance(entry, TreeFile) and isinstance(entry.content, Ref):
                cap_of = Capability(entry.content.address, entry.content.key)
                sealed = blob(data_dirs, cap_of.manifest_address)
                found.manifests[inner] = cap_of.manifest_address
                found.sizes[cap_of.manifest_address] = len(sealed)
                manifest = Manifest.open(cap_of.file_key, sealed)
                found.chunks[inner] = [c.address for c in manifest.chunks]
                for chunk in manifest.chunks:
                    found.sizes[chunk.address] = len(blob(data_dirs, chunk.address))
    return found


def _directory_entries(
    ref: Ref, data_dirs: list[Path], found: TreeBlobs, path: str
) -> Iterator[directory.TreeEntry]:
    stack = [ref]
    while stack:
        current = stack.pop()
        sealed = blob(data_dirs, current.address)
        found.nodes.setdefault(path, []).append(current.address)
        found.sizes[current.address] = len(sealed)
        node = directory.open_node(current.key, sealed)
        if isinstance(node, Index):
            stack.extend(child.ref for child in reversed(node.children))
        else:
            assert isinstance(node, Leaf)
            yield from node.entries


def files_outside(root: Path, inside: Path) -> set[Path]:
    """Every path below ``root`` that is not ``inside`` or below it."""
    return {p for p in root.rglob("*") if p != inside and inside not in p.parents}


__all__ = [
    "MiB",
    "TreeBlobs",
    "file_blake3",
    "files_outside",
    "make_tree",
    "many_files",
    "set_mtimes",
    "snapshot",
    "stored_view",
    "tree_blobs",
]
