"""Namespaces and capabilities across real node processes.

Three ``node_agent.py`` processes, R=3, so every node holds every blob and
every name record: ``a`` and ``c`` share a ``--namespace-file``; ``b`` has its
own namespace (created in its data directory). ``a`` stores one file.

- A capability is a namespace-independent read right: ``b`` reads the file
  with it, bytes equal.
- A capability altered in any one character is refused with a clear error:
  ``InvalidCapabilityError`` (its check digits, or its canonical form); an
  altered ``fs1:`` prefix makes it a name, which is not found.
- ``c`` resolves ``a``'s names (``list`` and ``get`` by name).
- ``b`` cannot: the name is not in its ``list``, a get by name is not found,
  and the record it holds is ciphertext (the name is nowhere in its catalog).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from netutil import Agent, Cluster, MiB, blake3_file, wait_for_mesh, write_random_file

from fstore.storage.catalog import Catalog

MESH_TIMEOUT = 20.0
GET_TIMEOUT = 60.0
BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


@dataclass(frozen=True)
class Network:
    a: Agent  # namespace N (shared file)
    b: Agent  # its own namespace
    c: Agent  # namespace N (shared file)
    name: str
    capability: str
    size: int
    digest: str
    out: Path


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    root = tmp_path_factory.mktemp("namespaces")
    secret = root / "namespace.key"
    secret.write_bytes(os.urandom(32))
    secret.chmod(0o600)
    cluster = Cluster(root)
    try:
        a = cluster.agent("a", namespace_file=secret, durable=False)
        b = cluster.agent("b", peers=[a.address], durable=False)
        c = cluster.agent("c", peers=[a.address], namespace_file=secret, durable=False)
        wait_for_mesh([a, b, c], [a, b, c], MESH_TIMEOUT)
        name = "shared-notes-4d1e.txt"
        source = root / "source.bin"
        digest = write_random_file(source, 5 * MiB + 321, b"namespaces")
        stored = a.call("store", timeout=GET_TIMEOUT, name=name, path=str(source))
        assert stored["replicas"] == 3
        assert stored["blake3"] == digest
        out = root / "out"
        out.mkdir()
        yield Network(a, b, c, name, stored["capability"], stored["size"], digest, out)
    finally:
        cluster.close()


def assert_reads(reader: Agent, target: str, net: Network, out_name: str) -> None:
    out = net.out / out_name
    got = reader.call("get", timeout=GET_TIMEOUT, target=target, out=str(out))
    assert (got["size"], got["blake3"]) == (net.size, net.digest)
    assert blake3_file(out) == net.digest  # the bytes on disk, by an independent hash


def test_capability_reads_across_namespaces(network: Network) -> None:
    assert_reads(network.b, network.capability, network, "b-by-capability")


def altered(capability: str, position: int, rng: random.Random) -> str:
    old = capability[position]
    alphabet = BASE32 if position >= 4 else BASE32 + "FS:;0189"
    new = rng.choice([ch for ch in alphabet if ch != old])
    return capability[:position] + new + capability[position + 1 :]


def test_altered_capability_is_refused(network: Network) -> None:
    capability = network.capability
    assert capability.startswith("fs1:")
    rng = random.Random(20240611)
    # Every prefix position, the first and last body characters, and a spread between.
    positions = sorted(
        {0, 1, 2, 3, 4, len(capability) - 1} | set(rng.sample(range(5, len(capability) - 1), 22))
    )
    assert len(positions) >= 20
    requests = {}
    for position in positions:
        target = altered(capability, position, rng)
        out = network.out / f"altered-{position}"
        requests[position] = (target, out, network.b.send("get", target=target, out=str(out)))
    for position, (target, out, request) in requests.items():
        answer = network.b.wait(request, GET_TIMEOUT)
        assert not answer["ok"], f"altered at {position}, {target!r} was read"
        if position >= len("fs1:"):
            assert answer["error"] == "InvalidCapabilityError", (position, answer)
            assert answer["message"], answer
        else:
            # Without the "fs1:" prefix the text is not a capability but a name (names
            # are any text), so the node looks it up by name: not found, named in the error.
            assert answer["error"] == "NotFoundError", (position, answer)
            assert target in answer["message"], answer
        assert not out.exists() or out.stat().st_size == 0


def test_shared_namespace_resolves_names(network: Network) -> None:
    listed = {f["name"]: f for f in network.c.call("list")["files"]}
    assert network.name in listed
    assert listed[network.name]["capability"] == network.capability
    assert listed[network.name]["size"] == network.size
    assert_reads(network.c, network.name, network, "c-by-name")


def test_other_namespace_cannot_list_or_read(network: Network) -> None:
    names = [f["name"] for f in network.b.call("list")["files"]]
    assert network.name not in names
    answer = network.b.wait(
        network.b.send("get", target=network.name, out=str(network.out / "b-by-name"))
    )
    assert not answer["ok"]
    assert answer["error"] == "NotFoundError", answer
    # b is a placement target of the record (R=3 on 3 nodes): it holds it, as ciphertext.
    db_files = [p for p in network.b.data_dir.glob("fstore.db*") if p.is_file()]
    assert network.b.data_dir / "fstore.db" in db_files
    for path in db_files:
        assert network.name.encode() not in path.read_bytes(), f"{path} holds the name"
    # ...and it does hold the record: the same locator and sealed bytes as a's copy.
    with Catalog(network.a.data_dir / "fstore.db") as catalog:
        (record,) = catalog.records()
    with Catalog(network.b.data_dir / "fstore.db") as catalog:
        held = catalog.records()
    assert record in held
    assert network.name.encode() not in record[1]
