"""Nothing of a file's plaintext or name reaches any disk in the clear: real node processes.

One agent stores a structured, recognisable text of a few MiB (in the second
test, a directory tree of such texts) on a network of three nodes with R=3, so
every node holds every blob and the name record. Then every file of every
node's data directory (blobs, ``fstore.db`` and its WAL) is
scanned: none of the file's distinct 64-byte windows occurs anywhere, and its
name occurs nowhere on the other two nodes nor in any node's blobs.

The text repeats a block of numbered lines, so its distinct 64-byte windows are
few enough to hold in a set (each one checked exactly, none sampled), while
every window is still plain English a leak would show.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from netutil import Cluster, MiB, stored_blobs, wait_for_mesh

WINDOW = 64
MESH_TIMEOUT = 20.0
STORE_TIMEOUT = 120.0


def structured_text(size: int) -> bytes:
    """Numbered lines of plain text (1000 distinct ones), repeated to ``size`` bytes."""
    lines = [
        f"{i:04d} | The quick brown fox jumps over the lazy dog; fstore secret ledger entry.\n"
        for i in range(1000)
    ]
    block = "".join(lines).encode()
    return (block * (size // len(block) + 1))[:size]


def windows(data: bytes) -> set[bytes]:
    """Every distinct ``WINDOW``-byte substring of ``data``."""
    return {data[i : i + WINDOW] for i in range(len(data) - WINDOW + 1)}


def leaked_window(data: bytes, plain: set[bytes]) -> int | None:
    """The offset of the first ``WINDOW`` bytes of ``data`` that are in ``plain``, or None."""
    for i in range(len(data) - WINDOW + 1):
        if data[i : i + WINDOW] in plain:
            return i
    return None


def files_under(directory: Path) -> Iterator[Path]:
    for root, _, names in os.walk(directory):
        for name in names:
            yield Path(root, name)


def test_no_plaintext_window_or_name_on_any_disk(cluster: Cluster, tmp_path: Path) -> None:
    plaintext = structured_text(3 * MiB + 12345)
    plain_windows = windows(plaintext)
    assert 50_000 < len(plain_windows) < 100_000  # one block's worth: all of them checked
    name = "quarterly-ledger-7f3a9c.txt"
    source = tmp_path / "source" / name
    source.parent.mkdir()
    source.write_bytes(plaintext)

    a = cluster.agent("a", durable=False)
    b = cluster.holder("b", peers=[a.address], durable=False)
    c = cluster.holder("c", peers=[a.address], durable=False)
    wait_for_mesh([a], [a, b, c], MESH_TIMEOUT)
    stored = a.call("store", timeout=STORE_TIMEOUT, name=name, path=str(source))
    assert stored["replicas"] == 3
    cluster.close()  # stopped: every byte they will write is on disk

    # The scan must be able to see a leak: the plaintext itself is caught.
    assert leaked_window(b"\0" * 10 + plaintext[5000:5200], plain_windows) == 10

    scanned = 0
    for node in (a, b, c):
        assert len(stored_blobs(node.data_dir)) >= 2, f"{node.name} holds no copy: R=3 on 3 nodes"
        blob_files = [p for p in files_under(node.data_dir / "blobs") if p.is_file()]
        db_files = sorted(node.data_dir.glob("fstore.db*"))
        assert node.data_dir / "fstore.db" in db_files
        for path in [*blob_files, *db_files]:
            data = path.read_bytes()
            offset = leaked_window(data, plain_windows)
            assert offset is None, f"{path} holds plaintext at {offset}: {data[offset:][:64]!r}"
            scanned += len(data)
            in_blob = path.is_relative_to(node.data_dir / "blobs")
            if node is not a or in_blob:
                assert name.encode() not in data, f"{path} holds the file name"
        if node is not a:
            for path in files_under(node.data_dir):  # identity, secrets, anything else
                assert name.encode() not in path.read_bytes(), f"{path} holds the file name"
    assert scanned > 3 * len(plaintext)  # three full copies were looked at


def test_no_plaintext_window_or_entry_name_of_a_tree_on_any_disk(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A stored tree: small files (sealed inside their directory's nodes), a larger one (its
    own chunks), and the entries' names (sealed inside the nodes) are on no disk in the clear."""
    plaintext = structured_text(2 * MiB)
    plain_windows = windows(plaintext)
    root = tmp_path / "tree"
    folder = root / "secret-projects-d41c"
    folder.mkdir(parents=True)
    names = ["quarterly-ledger-7f3a9c.txt", "payroll-9b2e11.txt", "secret-projects-d41c"]
    for i, offset in enumerate(range(0, 200_000, 10_000)):
        (folder / f"{names[i % 2]}.{i}").write_bytes(plaintext[offset : offset + 9_000])
    (root / "big-notes-5a7c.txt").write_bytes(plaintext)

    a = cluster.agent("a", durable=False)
    b = cluster.holder("b", peers=[a.address], durable=False)
    c = cluster.holder("c", peers=[a.address], durable=False)
    wait_for_mesh([a], [a, b, c], MESH_TIMEOUT)
    stored = a.call("store_tree", timeout=STORE_TIMEOUT, name="tree", path=str(root))
    assert stored["files"] == 21 and stored["replicas"] == 3
    cluster.close()

    for node in (a, b, c):
        assert len(stored_blobs(node.data_dir)) >= 3, f"{node.name} holds no copy: R=3 on 3 nodes"
        blob_files = [p for p in files_under(node.data_dir / "blobs") if p.is_file()]
        for path in [*blob_files, *sorted(node.data_dir.glob("fstore.db*"))]:
            data = path.read_bytes()
            leak = leaked_window(data, plain_windows)
            assert leak is None, f"{path} holds plaintext at {leak}: {data[leak:][:64]!r}"
            for name in [*names, "big-notes-5a7c.txt"]:
                assert name.encode() not in data, f"{path} holds the entry name {name}"
