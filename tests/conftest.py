"""Shared fixtures: seeded randomness, ``b3sum``, and the node processes of the network tests."""

from __future__ import annotations

import random
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from netutil import Cluster


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """A generator seeded from the test's id: random inputs, yet every failure reproduces."""
    return random.Random(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(scope="session")
def b3sum() -> str:
    """The path of the ``b3sum`` command. Missing is a failure, never a skip: CI installs it."""
    path = shutil.which("b3sum")
    if path is None:
        pytest.fail(
            "the `b3sum` command is not installed, but hash_file is checked against it: "
            "install it with `apt-get install -y b3sum` (CI does)",
            pytrace=False,
        )
    return path


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Starts node processes under ``tmp_path``; every one is killed at teardown, pass or fail."""
    nodes = Cluster(tmp_path)
    try:
        yield nodes
    finally:
        nodes.close()
