"""Child process of the crash tests in ``test_store.py``: writes until it is killed.

``python store_crash_child.py blobs DIR`` puts blobs into a node's kind of
``BlobStore(DIR)`` (small blobs as catalog rows, the others as files), alone and
in batches, and prints each address (hex) once the call that stored it has
returned. ``python store_crash_child.py catalog DIR`` does the same with name
records in ``Catalog(DIR/fstore.db)``, printing ``locator record`` (hex). A line on
stdout is therefore a promise that the write is durable.
"""

from __future__ import annotations

import os
import random
import sys
import threading
from pathlib import Path

from fstore import _native
from fstore.storage.blobs import BlobStore
from fstore.storage.catalog import CATALOG_NAME, Catalog
from fstore.storage.smallblobs import SMALL_BLOB_MAX, SmallBlobs

MAX_BLOB = 1 << 20
WRITERS = 4


_print_lock = threading.Lock()


def _report(*fields: bytes) -> None:
    with _print_lock:
        print(" ".join(field.hex() for field in fields), flush=True)


def write_blobs(root: Path) -> None:
    """Several threads, as in the node: when one reports, the others are mid-write,
    so the kill (which follows a report) lands inside a put."""
    store = BlobStore(root, small=SmallBlobs(Catalog(root / CATALOG_NAME)))
    pool = os.urandom(2 * MAX_BLOB)
    writers = [
        threading.Thread(target=_blob_writer, args=(store, pool), daemon=True)
        for _ in range(WRITERS)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()


def _blob_writer(store: BlobStore, pool: bytes) -> None:
    rng = random.Random()
    while True:
        # Random slices of one pool, made unique by a random prefix: cheap to
        # make, so the writers spend their time writing.
        blobs = []
        for _ in range(rng.choice((1, 1, 4))):
            start = rng.randrange(MAX_BLOB)
            size = rng.randrange(rng.choice((SMALL_BLOB_MAX, MAX_BLOB)))  # rows and files
            blobs.append(os.urandom(16) + pool[start : start + size])
        addresses = [_native.hash(blob) for blob in blobs]
        store.put_many(zip(addresses, blobs, strict=True))
        for address in addresses:
            _report(address)


def write_records(root: Path) -> None:
    catalog = Catalog(root / CATALOG_NAME)
    node = _native.hash(b"crash test node")
    clock = 0
    while True:
        clock += 1
        batch = [(os.urandom(32), os.urandom(200)) for _ in range(1 + clock % 3)]
        with catalog.transaction():
            for locator, record in batch:
                catalog.put_record(locator, record, (clock, node))
        for locator, record in batch:
            _report(locator, record)


def main() -> None:
    mode, root = sys.argv[1], Path(sys.argv[2])
    {"blobs": write_blobs, "catalog": write_records}[mode](root)


if __name__ == "__main__":
    main()
