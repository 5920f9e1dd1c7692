"""The reader role in-process: a get that fails ends cleanly, with one error and no stray tasks."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from pathlib import Path

import pytest

from fstore import Node
from fstore.errors import NotFoundError

MiB = 1024 * 1024


def test_a_failed_get_leaves_no_unretrieved_task_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every chunk of a file is gone, so each fetch ahead fails: the get raises one
    NotFoundError, and none of the other failed fetches is left for asyncio to log as
    "Task exception was never retrieved"."""

    async def main() -> None:
        async with Node(tmp_path / "node", replicas=1, durable=False) as node:
            stored = await node.store("file.bin", os.urandom(16 * MiB))
            _, manifest = await node.manifest(stored.capability)
            assert len(manifest.chunks) > 4  # more than the fetch-ahead window
            for ref in manifest.chunks:
                assert node.blobs.delete(ref.address)
            with pytest.raises(NotFoundError):
                await node.read(stored.capability)

    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())
        gc.collect()  # a task whose exception nobody retrieved is reported when collected
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
