"""Small blobs, kept as rows of the catalog instead of files.

A blob file costs a new inode, a directory entry or two and three fsyncs (the
file, its directory, the new directory's parent), which is most of what a
holder spends on a small file. A blob of at most SMALL_BLOB_MAX bytes is a row
of the catalog's ``small_blobs`` table instead: it joins the transaction that
records its kept mark and its lease, so a group commit of many small blobs
costs one fsync of the catalog's WAL (docs/FORMAT.md, section 9).

The rows are reached only through :class:`fstore.storage.blobs.BlobStore`,
which looks for a blob here first and then in its file. Statements here are
single SQL statements, atomic on their own: no claim of the blob store is
needed (or taken, which could deadlock against the catalog's lock).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from typing_extensions import Buffer

from fstore.storage.catalog import Catalog

__all__ = ["SMALL_BLOB_MAX", "SmallBlobs"]

SMALL_BLOB_MAX = 16 * 1024
"""The largest blob kept as a row: a small file's manifest (which carries the file),
a directory node, the manifest of a file of a few hundred chunks."""

_LISTING_PAGE = 10_000  # addresses read per query when listing


class SmallBlobs:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def insert(self, items: Sequence[tuple[bytes, Buffer]]) -> list[bool]:
        """Add each (address, bytes) in one commit (or the caller's transaction); True
        where a row was added, False where the blob was there already."""
        with self.catalog.transaction():
            return [
                self.catalog.execute(
                    "INSERT OR IGNORE INTO small_blobs (address, data) VALUES (?, ?)",
                    (address, data),
                )
                == 1
                for address, data in items
            ]

    def get(self, address: bytes) -> bytes | None:
        rows = self.catalog.query("SELECT data FROM small_blobs WHERE address = ?", (address,))
        if not rows:
            return None
        data = rows[0][0]
        assert isinstance(data, bytes)
        return data

    def size(self, address: bytes) -> int | None:
        rows = self.catalog.query(
            "SELECT length(data) FROM small_blobs WHERE address = ?", (address,)
        )
        if not rows:
            return None
        size = rows[0][0]
        assert isinstance(size, int)
        return size

    def delete(self, address: bytes) -> bool:
        return self.catalog.execute("DELETE FROM small_blobs WHERE address = ?", (address,)) == 1

    def delete_if(self, address: bytes, data: bytes) -> bool:
        """Delete the row if it still holds ``data`` (a quarantine: not a good copy
        written since the bad one was read)."""
        sql = "DELETE FROM small_blobs WHERE address = ? AND data = ?"
        return self.catalog.execute(sql, (address, data)) == 1

    def addresses(self) -> Iterator[bytes]:
        """Every address, in order, read a page at a time."""
        after = b""
        while True:
            rows = self.catalog.query(
                "SELECT address FROM small_blobs WHERE address > ? ORDER BY address LIMIT ?",
                (after, _LISTING_PAGE),
            )
            for (address,) in rows:
                assert isinstance(address, bytes)
                yield address
                after = address
            if len(rows) < _LISTING_PAGE:
                return

    def totals(self) -> tuple[int, int]:
        """(how many rows, their bytes), kept up to date by the catalog's triggers."""
        ((count, total),) = self.catalog.query(
            "SELECT count, bytes FROM small_blob_totals WHERE id = 0"
        )
        assert isinstance(count, int) and isinstance(total, int)
        return count, total
