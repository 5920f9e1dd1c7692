"""The node's SQLite catalog (``fstore.db``, WAL): name records, chunk index, pins, peers.

Catalog writes are durable when the method returns (``synchronous=FULL``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

from typing_extensions import Buffer

from fstore.errors import DiskFullError, InvalidArgumentError, StorageError
from fstore.storage.common import Version, check_id, os_error

__all__ = ["CATALOG_NAME", "Catalog"]

log = logging.getLogger(__name__)

CATALOG_NAME = "fstore.db"
"""The catalog's file name inside a node's data directory."""


_MAX_CLOCK = (1 << 63) - 1  # SQLite INTEGER is a signed 64-bit number

_SCHEMA_VERSION = 1

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
CREATE TABLE pins (
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
            if version != 0:
                raise StorageError(
                    f"the catalog {self.path} has schema version {version}; this fstore "
                    f"knows version {_SCHEMA_VERSION}"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    @contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        """Hold the lock and turn SQLite errors into :class:`StorageError`."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise _db_error(exc, doing) from exc

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

    # --- pins: blobs this node keeps (placement target or owner) ---

    def mark_kept(self, address: Buffer) -> bool:
        """Pin a blob; True if it was not pinned before."""
        sql = "INSERT OR IGNORE INTO pins (address) VALUES (?)"
        return self._write(sql, (check_id(address),)) == 1

    def unmark_kept(self, address: Buffer) -> bool:
        """Unpin a blob; True if it was pinned."""
        return self._write("DELETE FROM pins WHERE address = ?", (check_id(address),)) == 1

    def is_kept(self, address: Buffer) -> bool:
        return bool(self._read("SELECT 1 FROM pins WHERE address = ?", (check_id(address),)))

    def kept(self) -> list[bytes]:
        """Every pinned address, in order."""
        return [_only_bytes(row) for row in self._read("SELECT address FROM pins ORDER BY address")]

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


def _only_bytes(row: tuple[object, ...]) -> bytes:
    (value,) = row
    assert isinstance(value, bytes)
    return value
