"""Name records against a hostile member, across real node processes.

A member holds the network key but not the namespace secret: it cannot read or
forge a record, but it can send ``put_record`` with any bytes and any version
for a locator it has seen, and nodes outside the namespace keep whatever has
the highest version (they have no key to check it with). Records are sealed
with their locator and version in the context, so:

- garbage sent with a higher version does not make the name unreadable;
- a genuine record of another name, moved under this name's locator, does not
  answer for it;
- the record from before a delete, sent again with a version above the
  tombstone's, does not bring the name back;
- a name whose every copy fails its check is an ``IntegrityError`` naming it,
  not "not found".

The hostile member sends its records to every node, the writer included; nodes
of the namespace, which can check, keep the genuine record they hold.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from netutil import (
    Agent,
    Cluster,
    KiB,
    NodeProcess,
    blake3_file,
    closest,
    wait_for_mesh,
    wire_client,
    write_random_file,
)

from fstore.formats.records import NameKeys, Version
from fstore.net.trust import NetworkKey

MESH_TIMEOUT = 20.0
GET_TIMEOUT = 60.0

Held = tuple[bytes, Version]


def shared_namespace(root: Path) -> Path:
    path = root / "namespace.key"
    path.write_bytes(os.urandom(32))
    path.chmod(0o600)
    return path


def held_record(node: NodeProcess, network: NetworkKey, locator: bytes) -> Held | None:
    """What ``node`` answers a member's ``get_record`` for ``locator``."""
    with wire_client(node.address, network) as client:
        response = client.request("get_record", {"loc": locator})
    if not response.ok:
        assert response.meta["code"] == "not_found", (node.name, response.meta)
        return None
    clock, node_id = response.meta["ver"]
    return bytes(response.meta["rec"]), (clock, bytes(node_id))


def highest_version(nodes: Sequence[NodeProcess], network: NetworkKey, locator: bytes) -> Version:
    versions = [held[1] for n in nodes if (held := held_record(n, network, locator)) is not None]
    assert versions, "no node holds the record"
    return max(versions)


def put_everywhere(
    nodes: Sequence[NodeProcess],
    network: NetworkKey,
    locator: bytes,
    record: bytes,
    version: Version,
) -> None:
    """As a hostile member: ``put_record`` on every node. Each acknowledges it (a
    put it does not keep is acknowledged and ignored)."""
    for node in nodes:
        with wire_client(node.address, network) as client:
            meta = {"loc": locator, "rec": record, "ver": [version[0], version[1]]}
            response = client.request("put_record", meta)
        assert response.ok, (node.name, response.meta)


def store(writer: Agent, root: Path, name: str, size: int) -> tuple[str, str]:
    """Store a new random file under ``name``: (capability, BLAKE3)."""
    source = root / f"source-{name}"
    digest = write_random_file(source, size, name.encode())
    stored = writer.call("store", timeout=GET_TIMEOUT, name=name, path=str(source))
    assert (stored["size"], stored["blake3"]) == (size, digest)
    return str(stored["capability"]), digest


def assert_reads(reader: Agent, name: str, digest: str, out: Path) -> None:
    got = reader.call("get", timeout=GET_TIMEOUT, target=name, out=str(out))
    assert got["blake3"] == digest, f"{reader.name} read the wrong bytes for {name!r}"
    assert blake3_file(out) == digest  # the bytes on disk, by an independent hash


def failed_get(reader: Agent, name: str, out: Path) -> dict[str, object]:
    answer = reader.wait(reader.send("get", target=name, out=str(out)), GET_TIMEOUT)
    assert not answer["ok"], f"{reader.name} read {name!r}"
    assert not out.exists() or out.stat().st_size == 0
    return answer


def listed(reader: Agent) -> dict[str, str]:
    return {f["name"]: f["capability"] for f in reader.call("list")["files"]}


@dataclass(frozen=True)
class Network:
    a: Agent  # the writer, namespace N
    c: Agent  # another node of namespace N
    h1: NodeProcess  # storage peers, each of its own namespace
    h2: NodeProcess
    everyone: tuple[NodeProcess, ...]
    network: NetworkKey
    keys: NameKeys
    root: Path


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    root = tmp_path_factory.mktemp("records-hostile")
    namespace = shared_namespace(root)
    cluster = Cluster(root)
    try:
        h1 = cluster.holder("h1", durable=False)
        a = cluster.agent("a", peers=[h1.address], namespace_file=namespace, durable=False)
        c = cluster.agent("c", peers=[a.address], namespace_file=namespace, durable=False)
        h2 = cluster.holder("h2", peers=[c.address], durable=False)
        everyone = (a, c, h1, h2)
        wait_for_mesh([a, c], everyone, MESH_TIMEOUT)
        keys = NameKeys(namespace.read_bytes())
        yield Network(a, c, h1, h2, everyone, cluster.network, keys, root)
    finally:
        cluster.close()


def test_garbage_with_a_higher_version_does_not_deny_a_name(net: Network) -> None:
    name = "quarterly-report.pdf"
    capability, digest = store(net.a, net.root, name, 300 * KiB + 7)
    locator = net.keys.locator(name)
    genuine = held_record(net.a, net.network, locator)
    assert genuine is not None

    top = highest_version(net.everyone, net.network, locator)
    garbage = os.urandom(len(genuine[0]))
    version = (top[0] + 1, os.urandom(32))
    put_everywhere(net.everyone, net.network, locator, garbage, version)
    # The attack landed where it can: the storage peers cannot check the record and
    # keep the highest version. The writer, which can, kept its genuine record.
    for holder in (net.h1, net.h2):
        assert held_record(holder, net.network, locator) == (garbage, version)
    assert held_record(net.a, net.network, locator) == genuine

    assert_reads(net.a, name, digest, net.root / "garbage-a")
    assert_reads(net.c, name, digest, net.root / "garbage-c")
    assert listed(net.a).get(name) == capability
    assert listed(net.c).get(name) == capability
    # The copy skipped is named in the reader's log, with the peer it came from.
    skipped = [line for line in net.a.log_text().splitlines() if "skipped a copy" in line]
    assert skipped and all("WARNING" in line for line in skipped), skipped
    holder_ids = {net.h1.node_id.hex()[:12], net.h2.node_id.hex()[:12]}
    assert any(node_id in line for line in skipped for node_id in holder_ids), skipped


def test_a_record_moved_under_another_names_locator_does_not_answer_for_it(
    net: Network,
) -> None:
    target, other = "budget.xlsx", "holiday.jpg"
    capability, digest = store(net.a, net.root, target, 200 * KiB + 3)
    store(net.a, net.root, other, 100 * KiB + 5)
    locator = net.keys.locator(target)
    moved = held_record(net.a, net.network, net.keys.locator(other))
    assert moved is not None
    # Written later by the same node, the other name's record already has a higher
    # version: moved as it is, it outranks the target's record everywhere.
    assert moved[1] > highest_version(net.everyone, net.network, locator)
    put_everywhere(net.everyone, net.network, locator, *moved)
    for holder in (net.h1, net.h2):
        assert held_record(holder, net.network, locator) == moved

    assert_reads(net.a, target, digest, net.root / "moved-a")
    assert_reads(net.c, target, digest, net.root / "moved-c")
    assert listed(net.c).get(target) == capability


def test_a_deleted_name_is_not_resurrected_by_a_replayed_record(net: Network) -> None:
    name = "draft-contract.txt"
    store(net.a, net.root, name, 150 * KiB + 1)
    locator = net.keys.locator(name)
    before_delete = held_record(net.h1, net.network, locator) or held_record(
        net.h2, net.network, locator
    )
    assert before_delete is not None

    net.a.call("delete", name=name)
    tombstone = highest_version(net.everyone, net.network, locator)
    assert tombstone > before_delete[1]
    replayed = (tombstone[0] + 1, before_delete[1][1])  # just above the tombstone
    put_everywhere(net.everyone, net.network, locator, before_delete[0], replayed)
    for holder in (net.h1, net.h2):
        assert held_record(holder, net.network, locator) == (before_delete[0], replayed)

    for reader in (net.a, net.c):
        answer = failed_get(reader, name, net.root / f"replayed-{reader.name}")
        assert answer["error"] == "NotFoundError", answer
        assert "was deleted" in str(answer["message"]), answer
        assert name not in listed(reader)


def test_a_name_whose_every_copy_fails_is_an_integrity_error(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The writer gone, and every copy left of its record replaced by the hostile
    member: the reader names the failure, it does not claim the name is unknown."""
    namespace = shared_namespace(tmp_path)
    h1 = cluster.holder("h1", durable=False)
    a = cluster.agent("a", peers=[h1.address], namespace_file=namespace, durable=False)
    c = cluster.agent("c", peers=[a.address], namespace_file=namespace, durable=False)
    h2 = cluster.holder("h2", peers=[c.address], durable=False)
    everyone: list[NodeProcess] = [a, c, h1, h2]
    wait_for_mesh([a, c], everyone, MESH_TIMEOUT)
    keys = NameKeys(namespace.read_bytes())
    ids = [n.node_id for n in everyone]
    # A name whose record c does not hold (c is not among the 3 closest to its
    # locator), so that c has no genuine copy of its own.
    name = next(
        name
        for name in (f"ledger-{i}.csv" for i in itertools.count())
        if c.node_id not in closest(keys.locator(name), ids, 3)
    )
    store(a, tmp_path, name, 64 * KiB)
    locator = keys.locator(name)
    genuine = held_record(h1, cluster.network, locator)
    assert genuine is not None
    assert held_record(c, cluster.network, locator) is None

    top = highest_version(everyone, cluster.network, locator)
    # Garbage on one storage peer, the genuine record re-versioned on the other.
    put_everywhere([h1], cluster.network, locator, os.urandom(200), (top[0] + 1, os.urandom(32)))
    put_everywhere([h2], cluster.network, locator, genuine[0], (top[0] + 2, genuine[1][1]))
    a.kill()  # the writer, which still holds the genuine record, is gone

    answer = failed_get(c, name, tmp_path / "every-copy-fails")
    assert answer["error"] == "IntegrityError", answer
    assert "every copy" in str(answer["message"]) and name in str(answer["message"]), answer
    # A name nobody ever stored is still simply not found.
    answer = failed_get(c, "never-stored.txt", tmp_path / "never-stored")
    assert answer["error"] == "NotFoundError", answer
