"""One node per data directory, in the Python API too: ``Node`` holds ``DATA_DIR/lock``.

The command-line side (a second ``fstore-node`` refused, a failed start leaving
nothing behind) is in test_node_cli.py.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import uvloop

from fstore.errors import DataDirInUseError, NetworkMismatchError, StorageError
from fstore.net.trust import NetworkKey
from fstore.node import Node
from fstore.storage.lock import LOCK_FILE, DataDirLock, check_not_in_use


def in_use_message(data_dir: Path) -> str:
    return f"the data directory {data_dir} is in use by another node (PID {os.getpid()})"


def test_second_node_in_one_process_is_refused_until_the_first_stops(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Node(tmp_path / "a", durable=False) as first:
            with pytest.raises(DataDirInUseError) as refused:
                Node(tmp_path / "a", durable=False)
            assert str(refused.value) == in_use_message(tmp_path / "a")
            assert isinstance(refused.value, StorageError)
            node_id = first.node_id
        async with Node(tmp_path / "a", durable=False) as again:
            assert again.node_id == node_id

    uvloop.run(scenario())


def test_a_node_that_fails_to_open_lets_the_directory_go(tmp_path: Path) -> None:
    """__init__ failing after the lock (another network's token) releases it."""
    made = Node(tmp_path / "a", durable=False)
    uvloop.run(made.stop())
    with pytest.raises(NetworkMismatchError):
        Node(tmp_path / "a", network=NetworkKey.generate())
    uvloop.run(Node(tmp_path / "a", durable=False).stop())


def test_a_node_that_fails_to_start_lets_the_directory_go(tmp_path: Path) -> None:
    """``async with Node(...)`` whose port is taken releases the directory."""

    async def scenario(listen: str) -> None:
        async with Node(tmp_path / "a", listen=listen, durable=False):
            pass

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        with pytest.raises(OSError):
            uvloop.run(scenario(f"127.0.0.1:{holder.getsockname()[1]}"))
    uvloop.run(scenario("127.0.0.1:0"))


def test_the_lock_file_names_its_holder_and_a_check_writes_nothing(tmp_path: Path) -> None:
    check_not_in_use(tmp_path)  # no lock file: free, and none is made
    assert list(tmp_path.iterdir()) == []
    with DataDirLock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        with pytest.raises(DataDirInUseError, match=f"PID {os.getpid()}"):
            check_not_in_use(tmp_path)
        with pytest.raises(DataDirInUseError):
            DataDirLock(tmp_path)
    check_not_in_use(tmp_path)
    with DataDirLock(tmp_path):
        pass
