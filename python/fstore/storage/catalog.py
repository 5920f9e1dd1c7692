"""The node's SQLite catalog (``fstore.db``, WAL): name records, chunk index, blobs kept,
their leases, the namespace's references, peers, and the small blobs themselves
(``fstore.storage.smallblobs``).

Catalog writes are durable when the method returns (``synchronous=FULL``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

from typing_extensions import Buffer

from fstore.errors import DiskFullError, InvalidArgumentError, StorageError
from fstore.formats.leases import ANONYMOUS_TAG
from fstore.storage.common import Version, check_id, os_error

__all__ = ["CATALOG_NAME", "HELD", "RELEASED", "UPLOAD", "Catalog"]

log = logging.getLogger(__name__)

CATALOG_NAME = "fstore.db"
"""The catalog's file name inside a node's data directory."""


_MAX_CLOCK = (1 << 63) - 1  # SQLite INTEGER is a signed 64-bit number

_SCHEMA_VERSION = 3

# Lease states (docs/FORMAT.md, section 13).
UPLOAD, HELD, RELEASED = 0, 1, 2
# Blobs kept by a catalog of schema version 1 are held this long from the upgrade.
UPGRADE_LEASE = 30 * 24 * 3600.0
_SCHEMA_V2 = """
CREATE TABLE leases (
    address BLOB NOT NULL,
    tag BLOB NOT NULL,
    stamp INTEGER NOT NULL,
    state INTEGER NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (address, tag)
) WITHOUT ROWID;
CREATE TABLE refs (
    name TEXT NOT NULL,
    capability TEXT NOT NULL,
    blobs BLOB NOT NULL,
    PRIMARY KEY (name, capability)
) WITHOUT ROWID;
"""

# Blobs of at most smallblobs.SMALL_BLOB_MAX bytes (docs/FORMAT.md, section 9), and
# their count and bytes, kept by triggers: a node's status must not read every row.
_SCHEMA_V3 = """
CREATE TABLE small_blobs (
    address BLOB PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE small_blob_totals (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
INSERT INTO small_blob_totals VALUES (0, 0, 0);
"""
_TRIGGERS_V3 = (
    """CREATE TRIGGER small_blob_added AFTER INSERT ON small_blobs BEGIN
        UPDATE small_blob_totals
            SET count = count + 1, bytes = bytes + length(NEW.data) WHERE id = 0;
    END""",
    """CREATE TRIGGER small_blob_removed AFTER DELETE ON small_blobs BEGIN
        UPDATE small_blob_totals
            SET count = count - 1, bytes = bytes - length(OLD.data) WHERE id = 0;
    END""",
    """CREATE TRIGGER small_blob_changed AFTER UPDATE OF data ON small_blobs BEGIN
        UPDATE small_blob_totals
            SET bytes = bytes - length(OLD.data) + length(NEW.data) WHERE id = 0;
    END""",
)

_SCHEMA = """
CREATE TABLE records (
    locator BLOB PRIMARY KEY,
    record BLOB NOT NULL,
    clock INTEGER NOT NULL,
    node BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE chunks (
    chunk_id BLOB PRIMARY KEY,
    address BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE kept (
    address BLOB PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE peers (
    node_id BLOB PRIMARY KEY,
    addr TEXT NOT NULL,
    last_seen REAL NOT NULL
) WITHOUT ROWID;
"""

# Row values compare like Python tuples; BLOBs compare like Python bytes
# (memcmp, then the shorter first). Equal versions keep the record already held.
_PUT_RECORD = """
INSERT INTO records (locator, record, clock, node) VALUES (?, ?, ?, ?)
ON CONFLICT (locator) DO UPDATE
    SET record = excluded.record, clock = excluded.clock, node = excluded.node
    WHERE (excluded.clock, excluded.node) > (records.clock, records.node)
"""

# An upload lease never shortens a lease (a hold, or an earlier upload).
_LEASE_UPLOAD = """
INSERT INTO leases (address, tag, stamp, state, expires) VALUES (?, ?, 0, 0, ?)
ON CONFLICT (address, tag) DO UPDATE SET expires = max(leases.expires, excluded.expires)
"""
# A hold or a release replaces the lease unless the one held has a higher stamp.
_LEASE_HOLD = """
INSERT INTO leases (address, tag, stamp, state, expires) VALUES (?, ?, ?, 1, ?)
ON CONFLICT (address, tag) DO UPDATE
    SET stamp = excluded.stamp, state = 1, expires = excluded.expires
    WHERE excluded.stamp >= leases.stamp
"""
# A lease copied from another holder (repair): kept if newer, or as new and lasting longer.
_LEASE_ADOPT = """
INSERT INTO leases (address, tag, stamp, state, expires) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (address, tag) DO UPDATE
    SET stamp = excluded.stamp, state = excluded.state, expires = excluded.expires
    WHERE (excluded.stamp, excluded.expires) > (leases.stamp, leases.expires)
"""
# A release of a lease already released keeps its earlier end: a release sent again
# (a namespace node retrying) never puts off the collection the first one started.
_LEASE_RELEASE = """
UPDATE leases
    SET stamp = ?1, state = 2, expires = CASE WHEN state = 2 THEN min(expires, ?2) ELSE ?2 END
    WHERE address = ?3 AND tag = ?4 AND stamp < ?1
"""
_EXPIRED_KEPT = """
SELECT address FROM kept WHERE NOT EXISTS
    (SELECT 1 FROM leases WHERE leases.address = kept.address AND leases.expires > ?)
"""
_LIVE_LEASE = "SELECT 1 FROM leases WHERE address = ? AND expires > ? LIMIT 1"


def _db_error(exc: sqlite3.Error, doing: str) -> StorageError:
    """The fstore error for a SQLite error; the caller chains ``exc`` as its cause."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
        return DiskFullError(f"disk full while {doing} ({exc})")
    return StorageError(f"{doing} failed: {exc}")


def _check_version(version: object) -> Version:
    match version:
        case (int() as clock, bytes() as node) if not isinstance(clock, bool):
            if not 0 <= clock <= _MAX_CLOCK:
                raise InvalidArgumentError(f"version clock must fit in 63 bits, got {clock}")
            return clock, check_id(node, "version node id")
    raise InvalidArgumentError("version must be a (clock: int, node id: bytes) tuple")


class Catalog:
    """The node's SQLite catalog: name records, chunk index, pins and peers.

    Safe from any thread: one connection for writes, guarded by a lock, and one
    for reads, which (in WAL mode) see the last commit without waiting for a
    transaction in progress. Every write is committed (and durable) when its
    method returns; use :meth:`transaction` to group writes into one commit.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._depth = 0  # nesting of transaction()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, f"creating {self.path.parent}") from exc
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
        except sqlite3.Error as exc:
            raise _db_error(exc, f"opening the catalog {self.path}") from exc
        try:
            self._configure()
            self._migrate()
            # Reads go through a connection of their own: in WAL mode they then see the
            # last commit without waiting for a writer's transaction (and its fsync).
            self._reader = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
        except sqlite3.Error as exc:
            self._db.close()
            raise _db_error(exc, f"opening the catalog {self.path}") from exc
        except BaseException:
            self._db.close()
            raise
        self._read_lock = threading.Lock()
        self._writer_thread: int | None = None  # the thread inside transaction()

    def _configure(self) -> None:
        with self._guard("configuring the catalog"):
            # Space freed by collected small blobs goes back to the file system
            # (vacuum_freed); settable only before the first table exists, so a
            # catalog created by an earlier version reuses its free pages instead.
            if self._db.execute("PRAGMA page_count").fetchone()[0] == 0:
                self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StorageError(f"the catalog {self.path} cannot use WAL mode (got {mode!r})")
            # FULL, not NORMAL: in WAL mode NORMAL only survives a process crash;
            # after a power loss the last commits may vanish. Records, pins and
            # peers are acknowledged to users and peers, so every commit fsyncs
            # the WAL. Catalog writes are small and rare next to blob writes;
            # transaction() lets a batch share one fsync.
            self._db.execute("PRAGMA synchronous=FULL")

    def _migrate(self) -> None:
        with self.transaction():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == _SCHEMA_VERSION:
                return
            if version not in (0, 1, 2):
                raise StorageError(
                    f"the catalog {self.path} has schema version {version}; this fstore "
                    f"knows version {_SCHEMA_VERSION}"
                )
            if version == 0:
                self._run_script(_SCHEMA + _SCHEMA_V2)
            if version == 1:
                self._upgrade_from_v1()
            self._run_script(_SCHEMA_V3)
            for trigger in _TRIGGERS_V3:  # one statement each: they hold semicolons
                self._db.execute(trigger)
            self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    def _run_script(self, script: str) -> None:
        for statement in script.split(";"):
            if statement.strip():
                self._db.execute(statement)

    def _upgrade_from_v1(self) -> None:
        """Version 1 had no leases: every blob kept is held for a while under the
        anonymous tag, so the namespaces that use it have time to hold it themselves."""
        self._db.execute("ALTER TABLE pins RENAME TO kept")
        self._run_script(_SCHEMA_V2)
        self._db.execute(
            "INSERT INTO leases SELECT address, ?, 0, 1, ? FROM kept",
            (ANONYMOUS_TAG, time.time() + UPGRADE_LEASE),
        )

    @contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        """Hold the lock and turn SQLite errors into :class:`StorageError`."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise _db_error(exc, doing) from exc

    @contextmanager
    def writer_if_free(self) -> Iterator[bool]:
        """True, holding the write lock for this block, if no other thread holds it; else
        False at once. ``transaction()`` inside a True block never waits for another thread."""
        free = self._lock.acquire(blocking=False)
        try:
            yield free
        finally:
            if free:
                self._lock.release()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one atomic commit; nested uses join the outer one.

        If the block raises, everything written in it is rolled back.
        """
        with self._guard(f"writing to the catalog {self.path}"):
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            self._writer_thread = threading.get_ident()
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # also when COMMIT itself failed
                    self._db.rollback()
                raise
            finally:
                self._depth = 0
                self._writer_thread = None

    def _write(self, sql: str, params: tuple[object, ...] = ()) -> int:
        """Run one write statement in a transaction; the number of rows it changed."""
        with self.transaction():
            return self._db.execute(sql, params).rowcount

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Committed rows; inside a transaction of this thread, its own writes too."""
        if self._writer_thread == threading.get_ident():
            with self._guard("reading the catalog"):
                return self._db.execute(sql, params).fetchall()
        with self._read_lock:
            try:
                return self._reader.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise _db_error(exc, "reading the catalog") from exc

    # --- name records ---

    def put_record(self, locator: Buffer, record: Buffer, version: Version) -> bool:
        """Keep ``record`` if ``version`` is higher than the one held; True if kept."""
        clock, node = _check_version(version)
        params = (check_id(locator, "locator"), bytes(record), clock, node)
        return self._write(_PUT_RECORD, params) == 1

    def get_record(self, locator: Buffer) -> tuple[bytes, Version] | None:
        """The record held for ``locator`` and its version, or None."""
        rows = self._read(
            "SELECT record, clock, node FROM records WHERE locator = ?",
            (check_id(locator, "locator"),),
        )
        if not rows:
            return None
        record, clock, node = rows[0]
        assert isinstance(record, bytes) and isinstance(clock, int) and isinstance(node, bytes)
        return record, (clock, node)

    def records(self) -> list[tuple[bytes, bytes, Version]]:
        """Every (locator, record, version), ordered by locator."""
        result: list[tuple[bytes, bytes, Version]] = []
        for locator, record, clock, node in self._read(
            "SELECT locator, record, clock, node FROM records ORDER BY locator"
        ):
            assert isinstance(locator, bytes) and isinstance(record, bytes)
            assert isinstance(clock, int) and isinstance(node, bytes)
            result.append((locator, record, (clock, node)))
        return result

    # --- chunk index (dedup within the namespace) ---

    def chunk_address(self, chunk_id: Buffer) -> bytes | None:
        """The address of the blob holding the sealed chunk ``chunk_id``, if known."""
        rows = self._read(
            "SELECT address FROM chunks WHERE chunk_id = ?", (check_id(chunk_id, "chunk id"),)
        )
        return _only_bytes(rows[0]) if rows else None

    def add_chunk(self, chunk_id: Buffer, address: Buffer) -> None:
        """Remember where a chunk went; a newer address replaces an older one."""
        self._write(
            "INSERT OR REPLACE INTO chunks (chunk_id, address) VALUES (?, ?)",
            (check_id(chunk_id, "chunk id"), check_id(address)),
        )

    # --- blobs this node keeps (placement target or owner) ---

    def mark_kept(self, address: Buffer) -> bool:
        """Note that this node keeps a blob; True if it was not noted before."""
        sql = "INSERT OR IGNORE INTO kept (address) VALUES (?)"
        return self._write(sql, (check_id(address),)) == 1

    def unmark_kept(self, address: Buffer) -> bool:
        """Forget that this node keeps a blob; True if it was noted."""
        return self._write("DELETE FROM kept WHERE address = ?", (check_id(address),)) == 1

    def is_kept(self, address: Buffer) -> bool:
        return bool(self._read("SELECT 1 FROM kept WHERE address = ?", (check_id(address),)))

    def kept(self) -> list[bytes]:
        """Every address kept, in order."""
        return [_only_bytes(row) for row in self._read("SELECT address FROM kept ORDER BY address")]

    # --- leases on the blobs kept (docs/FORMAT.md, section 13) ---

    def lease_upload(self, address: Buffer, tag: Buffer, expires: float) -> None:
        """An upload lease lapsing at ``expires``; never shortens a lease already held."""
        self._write(_LEASE_UPLOAD, (check_id(address), check_id(tag, "tag"), float(expires)))

    def lease_hold(self, address: Buffer, tag: Buffer, stamp: int, expires: float) -> None:
        """Hold a blob under ``tag`` until ``expires``, unless a later stamp says otherwise."""
        params = (check_id(address), check_id(tag, "tag"), _check_stamp(stamp), float(expires))
        self._write(_LEASE_HOLD, params)

    def lease_release(self, address: Buffer, tag: Buffer, stamp: int, expires: float) -> bool:
        """Release the lease of ``tag`` (lapsing at ``expires``) unless a later stamp holds
        it; True if a lease was released."""
        stamp = _check_stamp(stamp)
        params = (stamp, float(expires), check_id(address), check_id(tag, "tag"))
        return self._write(_LEASE_RELEASE, params) == 1

    def lease_adopt(self, address: Buffer, leases: list[tuple[bytes, int, int, float]]) -> None:
        """Take (tag, stamp, state, expires) leases another holder has, in one commit."""
        address = check_id(address)
        with self.transaction():
            for tag, stamp, state, expires in leases:
                if state not in (UPLOAD, HELD, RELEASED):
                    raise InvalidArgumentError(f"no lease state {state}")
                params = (address, check_id(tag, "tag"), _check_stamp(stamp), state, expires)
                self._db.execute(_LEASE_ADOPT, params)

    def leases(self, address: Buffer) -> list[tuple[bytes, int, int, float]]:
        """Every (tag, stamp, state, expires) held on a blob, by tag."""
        rows = self._read(
            "SELECT tag, stamp, state, expires FROM leases WHERE address = ? ORDER BY tag",
            (check_id(address),),
        )
        result = []
        for tag, stamp, state, expires in rows:
            assert isinstance(tag, bytes) and isinstance(stamp, int) and isinstance(state, int)
            assert isinstance(expires, float)
            result.append((tag, stamp, state, expires))
        return result

    def expired_kept(self, now: float) -> list[bytes]:
        """The blobs kept whose leases have all lapsed at ``now`` (or that have none)."""
        return [_only_bytes(row) for row in self._read(_EXPIRED_KEPT, (float(now),))]

    def forget_expired_leases(self, addresses: list[bytes], now: float) -> list[bytes]:
        """Drop the leases of each blob among ``addresses`` none of whose leases is live
        at ``now``, in one transaction; those blobs, in order."""
        lapsed = []
        with self.transaction():
            for address in addresses:
                address = check_id(address)
                if not self._db.execute(_LIVE_LEASE, (address, float(now))).fetchone():
                    self._db.execute("DELETE FROM leases WHERE address = ?", (address,))
                    lapsed.append(address)
        return lapsed

    def unmark_kept_many(self, addresses: list[bytes]) -> None:
        """:meth:`unmark_kept` of each, in one transaction."""
        with self.transaction():
            self._db.executemany(
                "DELETE FROM kept WHERE address = ?", [(check_id(a),) for a in addresses]
            )

    def forget_stray_leases(self, now: float) -> int:
        """Drop lapsed leases on blobs not kept here; how many."""
        return self._write(
            "DELETE FROM leases WHERE expires <= ? AND NOT EXISTS "
            "(SELECT 1 FROM kept WHERE kept.address = leases.address)",
            (float(now),),
        )

    # --- references of this node's namespace (files and pins seen live) ---

    def add_ref(self, name: str, capability: str, blobs: list[bytes]) -> None:
        self._write(
            "INSERT OR REPLACE INTO refs (name, capability, blobs) VALUES (?, ?, ?)",
            (name, capability, b"".join(check_id(b) for b in blobs)),
        )

    def refs(self) -> list[tuple[str, str, list[bytes]]]:
        """Every (name, capability, blob addresses) referenced."""
        result = []
        for name, capability, blobs in self._read("SELECT name, capability, blobs FROM refs"):
            assert isinstance(name, str) and isinstance(capability, str)
            assert isinstance(blobs, bytes)
            result.append((name, capability, [blobs[i : i + 32] for i in range(0, len(blobs), 32)]))
        return result

    def capabilities_of(self, name: str) -> list[str]:
        """The capabilities referenced under ``name`` (the primary key's prefix: no scan)."""
        rows = self._read("SELECT capability FROM refs WHERE name = ?", (name,))
        return [str(capability) for (capability,) in rows]

    def drop_ref(self, name: str, capability: str) -> None:
        self._write("DELETE FROM refs WHERE name = ? AND capability = ?", (name, capability))

    # --- peers ---

    def remember_peer(self, node_id: Buffer, addr: str, last_seen: float) -> None:
        """Insert or update a peer's address and the time it was last seen."""
        if not isinstance(addr, str):
            raise InvalidArgumentError(f"peer address must be a str, not {type(addr).__name__}")
        self._write(
            "INSERT OR REPLACE INTO peers (node_id, addr, last_seen) VALUES (?, ?, ?)",
            (check_id(node_id, "node id"), addr, float(last_seen)),
        )

    def known_peers(self) -> list[tuple[bytes, str, float]]:
        """Every (node id, address, last seen), most recently seen first."""
        result: list[tuple[bytes, str, float]] = []
        for node_id, addr, last_seen in self._read(
            "SELECT node_id, addr, last_seen FROM peers ORDER BY last_seen DESC, node_id"
        ):
            assert isinstance(node_id, bytes) and isinstance(addr, str)
            assert isinstance(last_seen, float)
            result.append((node_id, addr, last_seen))
        return result

    def forget_peer(self, node_id: Buffer) -> bool:
        """Drop a peer; True if it was known."""
        sql = "DELETE FROM peers WHERE node_id = ?"
        return self._write(sql, (check_id(node_id, "node id"),)) == 1

    # --- statements of the modules that keep tables here (storage/smallblobs.py) ---

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> int:
        """One write statement, committed (or joining this thread's transaction);
        the number of rows it changed."""
        return self._write(sql, params)

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """The rows of one read statement (see :meth:`_read`)."""
        return self._read(sql, params)

    def vacuum_freed(self) -> None:
        """Give the pages freed by deletes back to the file system (a catalog created
        with incremental auto-vacuum; others keep them for later inserts)."""
        with self._guard(f"vacuuming the catalog {self.path}"):
            if self._depth == 0:
                # executescript steps the pragma to its end; execute frees one page.
                self._db.executescript("PRAGMA incremental_vacuum;")

    # --- lifetime ---

    def close(self) -> None:
        """Close the database (idempotent). Later calls raise :class:`StorageError`."""
        with self._guard("closing the catalog"), self._read_lock:
            self._reader.close()
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _check_stamp(stamp: object) -> int:
    if type(stamp) is not int or not 0 <= stamp <= _MAX_CLOCK:
        raise InvalidArgumentError("a lease stamp is an int of at most 63 bits")
    return stamp


def _only_bytes(row: tuple[object, ...]) -> bytes:
    (value,) = row
    assert isinstance(value, bytes)
    return value
