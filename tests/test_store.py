"""The node's local storage, ``fstore.storage.blobs``: blob files and the SQLite catalog.

Everything runs on real files in ``tmp_path``. The crash tests SIGKILL a real
writer process (``store_crash_child.py``); the disk-full tests mount a 1 MiB tmpfs.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import pytest
from netutil import blob_path

from fstore import _native
from fstore.errors import (
    AddressMismatchError,
    DiskFullError,
    InvalidArgumentError,
    StorageError,
)
from fstore.storage.blobs import BlobStore
from fstore.storage.catalog import CATALOG_NAME, Catalog
from fstore.storage.smallblobs import SmallBlobs

KiB = 1024
MiB = 1024 * KiB

CHILD = Path(__file__).with_name("store_crash_child.py")
CHILD_DEADLINE = 30.0  # seconds for the child to report its writes; normally well under 1


# --- helpers -----------------------------------------------------------------------


def make_blob(rng: random.Random, size: int) -> tuple[bytes, bytes]:
    """(address, blob) for ``size`` random bytes."""
    data = rng.randbytes(size)
    return _native.hash(data), data


def temp_files(root: Path) -> list[str]:
    return os.listdir(root / "blobs" / "tmp")


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


def assert_every_blob_valid(root: Path) -> int:
    """Every file under ``blobs/ab/cd/`` is a complete blob under its own address."""
    checked = 0
    for path in (root / "blobs").rglob("*"):
        if path.is_dir() or path.parent.name in ("tmp", "corrupt"):
            continue
        assert path.relative_to(root / "blobs").parts == (path.name[:2], path.name[2:4], path.name)
        assert _native.hash(path.read_bytes()).hex() == path.name, f"corrupt or partial: {path}"
        checked += 1
    return checked


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path)


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    with Catalog(tmp_path / CATALOG_NAME) as opened:
        yield opened


# --- blobs: basics -----------------------------------------------------------------


def test_round_trip(store: BlobStore, tmp_path: Path, rng: random.Random) -> None:
    address, data = make_blob(rng, 300 * KiB)
    assert not store.has(address)
    assert store.get(address) is None
    assert store.size(address) is None

    assert store.put(address, data) is True

    assert store.get(address) == data
    assert store.has(address)
    assert store.size(address) == len(data)
    assert blob_path(tmp_path, address).read_bytes() == data
    assert temp_files(tmp_path) == []


def test_put_accepts_any_buffer(store: BlobStore, rng: random.Random) -> None:
    address, data = make_blob(rng, 10 * KiB)
    assert store.put(bytearray(address), memoryview(bytearray(data))) is True
    assert store.get(memoryview(address)) == data


def test_empty_blob(store: BlobStore) -> None:
    address = _native.hash(b"")
    assert store.put(address, b"") is True
    assert store.get(address) == b""
    assert store.size(address) == 0


def test_put_is_idempotent(store: BlobStore, tmp_path: Path, rng: random.Random) -> None:
    address, data = make_blob(rng, 5 * KiB)
    assert store.put(address, data) is True
    inode = blob_path(tmp_path, address).stat().st_ino
    assert store.put(address, data) is False
    assert store.put(address, bytes(data)) is False
    assert blob_path(tmp_path, address).stat().st_ino == inode  # not rewritten
    assert store.count() == 1
    assert temp_files(tmp_path) == []


def test_wrong_hash_is_rejected_and_nothing_written(
    store: BlobStore, tmp_path: Path, rng: random.Random
) -> None:
    address, data = make_blob(rng, 64 * KiB)
    before = files_under(tmp_path)
    tampered = bytearray(data)
    tampered[100] ^= 1
    with pytest.raises(AddressMismatchError):
        store.put(address, tampered)
    # One bad item rejects the whole batch before anything is written.
    good_address, good = make_blob(rng, 1 * KiB)
    with pytest.raises(AddressMismatchError):
        store.put_many([(good_address, good), (address, tampered)])
    assert files_under(tmp_path) == before
    assert not store.has(address)
    assert not store.has(good_address)


def test_verified_put_skips_only_the_hash(
    store: BlobStore, tmp_path: Path, rng: random.Random
) -> None:
    """``verified=True`` trusts the caller's address (no re-hash) and is otherwise a put:
    durable, idempotent, and read back verified (so a wrong claim is caught on read)."""
    address, data = make_blob(rng, 64 * KiB)
    assert store.put(address, data, verified=True)
    assert not store.put(address, data, verified=True)
    assert store.get(address) == data
    wrong_address, _ = make_blob(rng, 1 * KiB)
    assert store.put(wrong_address, data, verified=True)
    assert store.get(wrong_address) is None  # quarantined on read, never served
    assert temp_files(tmp_path) == []


BAD_ADDRESSES: list[Any] = [
    b"\x01" * 31,
    b"\x01" * 33,
    b"",
    "ab" * 32,  # the hex form, as a str: refused, addresses are bytes
    "../" * 11,
    "/etc/passwd",
    None,
    12345,
]


@pytest.mark.parametrize("bad", BAD_ADDRESSES, ids=repr)
def test_addresses_must_be_32_bytes(store: BlobStore, tmp_path: Path, bad: Any) -> None:
    """Nothing from outside becomes a path component: anything but 32 bytes is refused."""
    before = files_under(tmp_path)
    calls: list[Callable[[Any], object]] = [
        store.get,
        store.has,
        store.size,
        store.delete,
        lambda a: store.put(a, b"x"),
        lambda a: store.put_many([(_native.hash(b"y"), b"y"), (a, b"x")]),
    ]
    for call in calls:
        with pytest.raises(InvalidArgumentError):
            call(bad)
    assert files_under(tmp_path) == before


def test_address_bytes_are_only_ever_hex(store: BlobStore, tmp_path: Path) -> None:
    """A 32-byte address that spells a path is just 64 hex characters on disk."""
    sneaky = b"../../../../../../etc/passwd\x00\x00\x00\x00"
    assert len(sneaky) == 32
    with pytest.raises(AddressMismatchError):
        store.put(sneaky, b"root::0:0")
    assert store.get(sneaky) is None
    assert not store.has(sneaky)
    assert store.delete(sneaky) is False


def test_delete(store: BlobStore, tmp_path: Path, rng: random.Random) -> None:
    address, data = make_blob(rng, 2 * KiB)
    other, other_data = make_blob(rng, 2 * KiB)
    store.put_many([(address, data), (other, other_data)])
    assert store.delete(address) is True
    assert store.delete(address) is False
    assert not store.has(address)
    assert store.get(address) is None
    assert not blob_path(tmp_path, address).exists()
    assert store.get(other) == other_data
    assert store.put(address, data) is True  # can come back


def test_listing(store: BlobStore, tmp_path: Path, rng: random.Random) -> None:
    blobs = dict(make_blob(rng, rng.randrange(0, 20 * KiB)) for _ in range(20))
    store.put_many(blobs.items())
    # Things that are not blobs are never listed.
    some = next(iter(blobs))
    (blob_path(tmp_path, some).parent / "not-a-blob").write_bytes(b"junk")
    (blob_path(tmp_path, some).parent / ("f" * 64)).write_bytes(b"wrong directory")
    (tmp_path / "blobs" / "corrupt" / ("0" * 64)).write_bytes(b"quarantined")
    (tmp_path / "blobs" / "zz").mkdir()

    assert sorted(store.addresses()) == sorted(blobs)
    assert store.count() == len(blobs)
    assert store.total_bytes() == sum(len(data) for data in blobs.values())


def test_durable_false_works_the_same(tmp_path: Path, rng: random.Random) -> None:
    store = BlobStore(tmp_path, durable=False)
    blobs = dict(make_blob(rng, 4 * KiB) for _ in range(5))
    assert store.put_many(blobs.items()) == [True] * 5
    assert all(store.get(address) == data for address, data in blobs.items())
    assert BlobStore(tmp_path).count() == 5


# --- blobs: batches, threads, damage, restarts ----------------------------------------


def test_put_many(store: BlobStore, tmp_path: Path, rng: random.Random) -> None:
    a, a_data = make_blob(rng, 8 * KiB)
    b, b_data = make_blob(rng, 300 * KiB)
    c, c_data = make_blob(rng, 1)
    assert store.put(a, a_data) is True

    # In order: already present, new, new, repeated in the batch, new spread over dirs.
    more = [make_blob(rng, 100) for _ in range(30)]
    results = store.put_many([(a, a_data), (b, b_data), (c, c_data), (b, b_data), *more])

    assert results == [False, True, True, False] + [True] * 30
    for address, data in [(a, a_data), (b, b_data), (c, c_data), *more]:
        assert store.get(address) == data
    assert store.count() == 33
    assert store.put_many([]) == []
    assert temp_files(tmp_path) == []


def test_concurrent_puts_from_16_threads(
    store: BlobStore, tmp_path: Path, rng: random.Random
) -> None:
    """16 threads each put the same 16 blobs, starting at different ones, alone or in
    batches: every blob is written exactly once and every put sees it intact."""
    blobs = [make_blob(rng, rng.randrange(1, 256 * KiB)) for _ in range(16)]
    start = threading.Barrier(16)

    def worker(n: int) -> list[bytes]:
        mine = blobs[n:] + blobs[:n]
        start.wait()
        if n % 2:
            won = [address for address, data in mine if store.put(address, data)]
        else:
            won = []
            for i in range(0, 16, 4):
                batch = mine[i : i + 4]
                results = store.put_many(batch)
                won += [address for (address, _), ok in zip(batch, results, strict=True) if ok]
        assert all(store.get(address) == data for address, data in mine)
        return won

    with ThreadPoolExecutor(16) as pool:
        wins = Counter(address for won in pool.map(worker, range(16)) for address in won)

    assert wins == Counter(address for address, _ in blobs)  # each exactly once
    assert store.count() == 16
    assert assert_every_blob_valid(tmp_path) == 16
    assert temp_files(tmp_path) == []


def test_corrupt_blob_is_quarantined(
    store: BlobStore, tmp_path: Path, rng: random.Random, caplog: pytest.LogCaptureFixture
) -> None:
    address, data = make_blob(rng, 200 * KiB)
    store.put(address, data)
    path = blob_path(tmp_path, address)
    damaged = bytearray(path.read_bytes())
    damaged[123_456] ^= 0x20
    path.write_bytes(damaged)

    with caplog.at_level(logging.WARNING, logger="fstore.storage.blobs"):
        assert store.get(address) is None

    assert address.hex() in caplog.text
    assert not path.exists()
    assert not store.has(address)
    (quarantined,) = (tmp_path / "blobs" / "corrupt").iterdir()
    assert quarantined.name.startswith(address.hex())
    assert quarantined.read_bytes() == damaged
    # The node fetches a good copy from a peer and stores it again.
    assert store.put(address, data) is True
    assert store.get(address) == data


def test_truncated_blob_is_replaced_by_put(
    store: BlobStore, tmp_path: Path, rng: random.Random
) -> None:
    """A file of the wrong size under an address is damage: put replaces it."""
    address, data = make_blob(rng, 50 * KiB)
    store.put(address, data)
    blob_path(tmp_path, address).write_bytes(data[:1000])
    assert store.size(address) == 1000
    assert store.put(address, data) is True
    assert store.get(address) == data
    assert len(list((tmp_path / "blobs" / "corrupt").iterdir())) == 1


def test_leftover_temp_files_are_removed_on_open(tmp_path: Path, rng: random.Random) -> None:
    address, data = make_blob(rng, 1 * KiB)
    BlobStore(tmp_path).put(address, data)
    tmp = tmp_path / "blobs" / "tmp"
    (tmp / "0123456789abcdef.xyz.tmp").write_bytes(data[:500])
    (tmp / "stray").write_bytes(b"")

    reopened = BlobStore(tmp_path)

    assert temp_files(tmp_path) == []
    assert reopened.get(address) == data


def test_restart_keeps_everything(tmp_path: Path, rng: random.Random) -> None:
    blobs = dict(make_blob(rng, rng.randrange(1, 64 * KiB)) for _ in range(10))
    node = _native.hash(b"node")
    locator, chunk_id = _native.hash(b"locator"), _native.hash(b"chunk")
    first = next(iter(blobs))
    BlobStore(tmp_path).put_many(blobs.items())
    with Catalog(tmp_path / CATALOG_NAME) as catalog:
        catalog.put_record(locator, b"record", (7, node))
        catalog.add_chunk(chunk_id, first)
        catalog.mark_kept(first)
        catalog.remember_peer(node, "10.0.0.1:5000", 1234.5)

    store = BlobStore(tmp_path)
    assert sorted(store.addresses()) == sorted(blobs)
    assert all(store.get(address) == data for address, data in blobs.items())
    with Catalog(tmp_path / CATALOG_NAME) as catalog:
        assert catalog.get_record(locator) == (b"record", (7, node))
        assert catalog.chunk_address(chunk_id) == first
        assert catalog.kept() == [first]
        assert catalog.known_peers() == [(node, "10.0.0.1:5000", 1234.5)]


# --- the catalog --------------------------------------------------------------------

NODE_A = b"\xaa" * 32
NODE_B = b"\xbb" * 32


def test_catalog_file_is_wal_with_a_schema_version(catalog: Catalog, tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / CATALOG_NAME) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (3,)


def test_catalog_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / CATALOG_NAME
    Catalog(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(StorageError, match="schema version 99"):
        Catalog(path)


def test_record_versions_highest_wins(catalog: Catalog) -> None:
    locator = _native.hash(b"name")
    assert catalog.get_record(locator) is None

    assert catalog.put_record(locator, b"v5a", (5, NODE_A)) is True
    assert catalog.put_record(locator, b"older", (4, NODE_B)) is False
    assert catalog.put_record(locator, b"same", (5, NODE_A)) is False  # a tie keeps what is held
    assert catalog.get_record(locator) == (b"v5a", (5, NODE_A))
    assert catalog.put_record(locator, b"v5b", (5, NODE_B)) is True  # node id breaks the tie
    assert catalog.put_record(locator, b"v5a again", (5, NODE_A)) is False
    assert catalog.put_record(locator, b"v6", (6, NODE_A)) is True
    assert catalog.put_record(locator, b"big clock", (2**62, NODE_A)) is True
    assert catalog.put_record(locator, b"v7", (7, NODE_B)) is False
    assert catalog.get_record(locator) == (b"big clock", (2**62, NODE_A))

    other = _native.hash(b"other name")
    catalog.put_record(other, b"x", (1, NODE_B))
    assert catalog.records() == sorted(
        [(locator, b"big clock", (2**62, NODE_A)), (other, b"x", (1, NODE_B))]
    )


@pytest.mark.parametrize(
    "version",
    [(-1, NODE_A), (2**63, NODE_A), (1, b"short"), (1, "node"), (True, NODE_A), (1,), 5, None],
    ids=repr,
)
def test_record_version_is_checked(catalog: Catalog, version: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        catalog.put_record(_native.hash(b"n"), b"r", version)
    assert catalog.records() == []


def test_chunk_index(catalog: Catalog) -> None:
    chunk_id, address, newer = (_native.hash(bytes([i])) for i in range(3))
    assert catalog.chunk_address(chunk_id) is None
    catalog.add_chunk(chunk_id, address)
    assert catalog.chunk_address(chunk_id) == address
    catalog.add_chunk(chunk_id, newer)
    assert catalog.chunk_address(chunk_id) == newer
    with pytest.raises(InvalidArgumentError):
        catalog.add_chunk(chunk_id, address.hex().encode())


def test_pins(catalog: Catalog) -> None:
    a, b = sorted(_native.hash(bytes([i])) for i in range(2))
    assert not catalog.is_kept(a)
    assert catalog.mark_kept(b) is True
    assert catalog.mark_kept(a) is True
    assert catalog.mark_kept(a) is False
    assert catalog.is_kept(a)
    assert catalog.kept() == [a, b]
    assert catalog.unmark_kept(a) is True
    assert catalog.unmark_kept(a) is False
    assert not catalog.is_kept(a)
    assert catalog.kept() == [b]


def test_peers(catalog: Catalog) -> None:
    assert catalog.known_peers() == []
    catalog.remember_peer(NODE_A, "10.0.0.1:5000", 100.0)
    catalog.remember_peer(NODE_B, "[::1]:5001", 200.0)
    assert catalog.known_peers() == [
        (NODE_B, "[::1]:5001", 200.0),
        (NODE_A, "10.0.0.1:5000", 100.0),
    ]
    catalog.remember_peer(NODE_A, "10.0.0.9:5000", 300.0)  # moved, seen again
    assert catalog.known_peers()[0] == (NODE_A, "10.0.0.9:5000", 300.0)
    assert catalog.forget_peer(NODE_A) is True
    assert catalog.forget_peer(NODE_A) is False
    assert catalog.known_peers() == [(NODE_B, "[::1]:5001", 200.0)]
    with pytest.raises(InvalidArgumentError):
        catalog.remember_peer(NODE_A, b"10.0.0.1:5000", 1.0)  # type: ignore[arg-type]


def test_transaction_is_atomic(catalog: Catalog) -> None:
    a, b = _native.hash(b"a"), _native.hash(b"b")
    with pytest.raises(RuntimeError), catalog.transaction():
        catalog.mark_kept(a)
        with catalog.transaction():  # nested: joins the outer one
            catalog.mark_kept(b)
        raise RuntimeError("abort")
    assert catalog.kept() == []
    with catalog.transaction():
        catalog.mark_kept(a)
        catalog.mark_kept(b)
    assert len(catalog.kept()) == 2


def test_catalog_from_threads(catalog: Catalog) -> None:
    def worker(n: int) -> None:
        for i in range(25):
            catalog.put_record(_native.hash(bytes([n, i])), bytes([i]), (i, NODE_A))
            catalog.mark_kept(_native.hash(bytes([n, i])))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    assert len(catalog.records()) == 200
    assert len(catalog.kept()) == 200


def test_closed_catalog_raises_storage_error(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / CATALOG_NAME)
    catalog.close()
    catalog.close()  # idempotent
    with pytest.raises(StorageError):
        catalog.kept()


def test_catalog_ids_must_be_32_bytes(catalog: Catalog) -> None:
    for bad in BAD_ADDRESSES:
        with pytest.raises(InvalidArgumentError):
            catalog.get_record(bad)
        with pytest.raises(InvalidArgumentError):
            catalog.mark_kept(bad)
        with pytest.raises(InvalidArgumentError):
            catalog.chunk_address(bad)
        with pytest.raises(InvalidArgumentError):
            catalog.remember_peer(bad, "h:1", 0.0)


# --- crash consistency: SIGKILL a real writer -------------------------------------------


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)
    lines.put("")  # end of output


def run_child_until_killed(mode: str, root: Path, want: int) -> list[str]:
    """Start the writer, SIGKILL it once it has reported ``want`` writes, and return
    every line it reported completely (a line is printed only after its write returned)."""
    with subprocess.Popen(
        [sys.executable, str(CHILD), mode, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(child.stdout, lines), daemon=True)
        reader.start()
        deadline = time.monotonic() + CHILD_DEADLINE
        got: list[str] = []
        try:
            while len(got) < want:
                try:
                    line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    pytest.fail(f"the writer reported {len(got)} writes in {CHILD_DEADLINE} s")
                if not line:
                    pytest.fail(f"the writer exited early:\n{child.stderr.read()}")
                got.append(line)
        finally:
            child.kill()  # SIGKILL: no cleanup, no flushing, no atexit
            child.wait()
            reader.join()
        assert child.returncode == -9
    while not lines.empty():
        got.append(lines.get())
    return [line.strip() for line in got if line.endswith("\n")]


def test_blobs_survive_sigkill(tmp_path: Path) -> None:
    """Three rounds of write-and-kill: every reported blob is there and intact (as a
    file or, if small, as a catalog row), no file under an address is partial, and
    the crash's temp files go on open."""
    reported: list[bytes] = []
    for _ in range(3):
        reported += [bytes.fromhex(line) for line in run_child_until_killed("blobs", tmp_path, 12)]
        (tmp_path / "blobs" / "tmp" / "planted.tmp").write_bytes(b"partial")

        with Catalog(tmp_path / CATALOG_NAME) as catalog:
            store = BlobStore(tmp_path, small=SmallBlobs(catalog))
            assert temp_files(tmp_path) == []
            in_files = assert_every_blob_valid(tmp_path)
            rows = catalog.query("SELECT address FROM small_blobs")
            assert in_files + len(rows) >= len(reported)
            assert rows and in_files  # both kinds were written
            for address in reported:
                assert store.get(address) is not None, f"reported blob {address.hex()} is missing"
            assert list((tmp_path / "blobs" / "corrupt").iterdir()) == []


def test_records_survive_sigkill(tmp_path: Path) -> None:
    reported: dict[bytes, bytes] = {}
    for _ in range(3):
        for line in run_child_until_killed("catalog", tmp_path, 20):
            locator_hex, record_hex = line.split()
            reported[bytes.fromhex(locator_hex)] = bytes.fromhex(record_hex)

        with Catalog(tmp_path / CATALOG_NAME) as catalog:
            for locator, record in reported.items():
                held = catalog.get_record(locator)
                assert held is not None, f"reported record {locator.hex()} is missing"
                assert held[0] == record
        with sqlite3.connect(tmp_path / CATALOG_NAME) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# --- a full disk ---------------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a disk that really fills up."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 1 MiB tmpfs to fill needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_disk_full_blob(tiny_fs: Path, rng: random.Random) -> None:
    store = BlobStore(tiny_fs)
    address, data = make_blob(rng, 2 * MiB)

    with pytest.raises(DiskFullError) as caught:
        store.put(address, data)

    assert isinstance(caught.value, StorageError)
    assert isinstance(caught.value.__cause__, OSError)
    assert not store.has(address)
    assert not blob_path(tiny_fs, address).exists()
    assert temp_files(tiny_fs) == []
    small, small_data = make_blob(rng, 100 * KiB)  # the space came back
    assert store.put(small, small_data) is True


def test_disk_full_batch_publishes_nothing(tiny_fs: Path, rng: random.Random) -> None:
    store = BlobStore(tiny_fs)
    batch = [make_blob(rng, 400 * KiB) for _ in range(3)]  # two fit, the third does not

    with pytest.raises(DiskFullError):
        store.put_many(batch)

    assert store.count() == 0
    assert temp_files(tiny_fs) == []
    assert store.put_many(batch[:2]) == [True, True]


def test_disk_full_catalog(tiny_fs: Path) -> None:
    with Catalog(tiny_fs / CATALOG_NAME) as catalog:
        kept = _native.hash(b"kept")
        catalog.put_record(kept, b"before", (1, NODE_A))
        filler = tiny_fs / "filler"
        with open(filler, "wb", buffering=0) as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * (16 * KiB))

        lost = _native.hash(b"lost")
        with pytest.raises(DiskFullError):
            catalog.put_record(lost, os.urandom(256 * KiB), (1, NODE_A))

        filler.unlink()
        assert catalog.get_record(lost) is None
        assert catalog.get_record(kept) == (b"before", (1, NODE_A))
        assert catalog.put_record(lost, b"after", (2, NODE_A)) is True
