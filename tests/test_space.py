"""Space that comes back, with real node processes: deletes, overwrites, abandoned uploads,
pins, kills during collection, and storage limits.

Nodes run with a grace of two seconds and passes every half second, so that what
takes hours in use takes seconds here; every wait polls a condition with a deadline.
"""

from __future__ import annotations

import functools
import json
import os
import random
import socket
import urllib.error
import urllib.request
from pathlib import Path

from netutil import (
    Agent,
    Cluster,
    KiB,
    MiB,
    NodeProcess,
    blake3_file,
    good_copies,
    read_manifest,
    stored_blobs,
    wait_for_mesh,
    wait_until,
    wire_client,
    write_random_file,
)

from fstore import _native
from fstore.formats.leases import LeaseKeys

MESH_TIMEOUT = 30.0
SETTLE_TIMEOUT = 90.0
GC = ["--gc-grace", "2", "--gc-interval", "0.5", "--repair-interval", "0.5"]


def blobs_on(node: NodeProcess) -> dict[bytes, int]:
    """Every blob a node holds (files and rows), with its size."""
    return stored_blobs(node.data_dir)


def file_blobs(capability: str, nodes: list[NodeProcess]) -> list[bytes]:
    manifest, chunks = read_manifest(capability, [n.data_dir for n in nodes])
    return [manifest, *(c.address for c in chunks)]


def network(
    cluster: Cluster, holders: int, options: list[str], **agent_options: object
) -> tuple[Agent, list[NodeProcess]]:
    s = cluster.agent("s", options=options)
    nodes: list[NodeProcess] = [s]
    nodes += [cluster.holder(f"h{i}", peers=[s.address], options=options) for i in range(holders)]
    wait_for_mesh([s], nodes, MESH_TIMEOUT)
    return s, nodes


def store(agent: Agent, tmp_path: Path, name: str, size: int, seed: bytes) -> tuple[str, str]:
    """Store a random file under ``name``: (capability, BLAKE3 hex)."""
    path = tmp_path / f"{name}.{seed.hex()}"
    digest = write_random_file(path, size, seed)
    return agent.call("store", name=name, path=str(path))["capability"], digest


def read_back(agent: Agent, tmp_path: Path, capability: str) -> str:
    out = tmp_path / "read.bin"
    agent.call("get", target=capability, out=str(out))
    return blake3_file(out)


def only_needed_blobs_remain(nodes: list[NodeProcess], needed: set[bytes]) -> bool:
    return all(set(blobs_on(n)) <= needed for n in nodes)


def test_deleted_and_overwritten_files_free_their_space_on_every_node(
    cluster: Cluster, tmp_path: Path
) -> None:
    """100 files on 5 nodes; 50 deleted, 10 overwritten. After the grace every node
    holds only blobs of the remaining files, in all R times their bytes (within 5%), and
    every remaining file reads back byte-identical."""
    s, nodes = network(cluster, 4, GC)
    rng = random.Random(14)
    sizes = [rng.choice([0, 1000, 40 * KiB, 300 * KiB, MiB + 7, 3 * MiB]) for _ in range(100)]
    files = {f"f{i}": store(s, tmp_path, f"f{i}", size, b"%d" % i) for i, size in enumerate(sizes)}
    for i in range(50):
        s.call("delete", name=f"f{i}")
    for i in range(50, 60):
        files[f"f{i}"] = store(s, tmp_path, f"f{i}", 2 * MiB, b"new %d" % i)
    live = {name: files[name] for name in (f"f{i}" for i in range(50, 100))}
    needed = {a for cap, _ in live.values() for a in file_blobs(cap, nodes)}

    wait_until(
        lambda: only_needed_blobs_remain(nodes, needed),
        SETTLE_TIMEOUT,
        "only the remaining files' blobs on every node",
    )
    sizes_of = {a: size for n in nodes for a, size in blobs_on(n).items()}
    wanted = 3 * sum(sizes_of[a] for a in needed)
    held = sum(sum(blobs_on(n).values()) for n in nodes)
    assert abs(held - wanted) <= 0.05 * wanted, (held, wanted)
    assert all(good_copies(a, nodes) >= 3 for a in needed)
    for capability, digest in live.values():
        assert read_back(s, tmp_path, capability) == digest
    assert metric_sum(nodes, "fstore_space_reclaimed_blobs_total") > 0


def metric_sum(nodes: list[NodeProcess], name: str) -> float:
    total = 0.0
    for node in nodes:
        if isinstance(node, Agent):
            total += float(node.call("metric", name=name)["value"])
        else:
            total += node.metric(name)
    return total


def passes_after(nodes: list[NodeProcess], count: int) -> None:
    """Wait until every node has run ``count`` more collection passes."""
    for _ in range(count):
        marks = [n.metric(LAST_COLLECTION) for n in nodes]
        wait_until(
            functools.partial(collected_since, nodes, marks),
            SETTLE_TIMEOUT,
            "a collection pass on every node",
        )


LAST_COLLECTION = "fstore_space_last_collection_timestamp_seconds"


def collected_since(nodes: list[NodeProcess], marks: list[float]) -> bool:
    return all(n.metric(LAST_COLLECTION) > m for n, m in zip(nodes, marks, strict=True))


def test_deleting_one_of_two_files_sharing_chunks_keeps_every_chunk_of_the_other(
    cluster: Cluster, tmp_path: Path
) -> None:
    s, nodes = network(cluster, 3, GC)
    original = random.Random(3).randbytes(12 * MiB)
    edited = original[: 6 * MiB] + b"a few bytes" + original[6 * MiB :]
    (tmp_path / "a").write_bytes(original)
    (tmp_path / "b").write_bytes(edited)
    a = s.call("store", name="a", path=str(tmp_path / "a"))["capability"]
    b = s.call("store", name="b", path=str(tmp_path / "b"))["capability"]
    a_blobs, b_blobs = set(file_blobs(a, nodes)), set(file_blobs(b, nodes))
    assert len(a_blobs & b_blobs) >= 4  # the chunks away from the edit are shared
    s.call("delete", name="a")
    wait_until(
        lambda: only_needed_blobs_remain(nodes, b_blobs),
        SETTLE_TIMEOUT,
        "the blobs only the deleted file used to be collected",
    )
    passes_after(nodes, 2)
    assert all(good_copies(x, nodes) >= 3 for x in b_blobs)
    assert read_back(s, tmp_path, b) == _native.hash(edited).hex()


def test_a_storer_holding_few_of_its_chunks_still_reuses_them(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Six nodes, R = 3: the storer holds about half of the chunks it stores. Storing the
    same bytes again reuses every chunk, wherever it is held, not only the ones it holds."""
    s, nodes = network(cluster, 5, GC)
    (tmp_path / "a").write_bytes(random.Random(5).randbytes(16 * MiB))
    first = s.call("store", name="a", path=str(tmp_path / "a"))["capability"]
    second = s.call("store", name="again", path=str(tmp_path / "a"))["capability"]
    first_chunks, second_chunks = file_blobs(first, nodes)[1:], file_blobs(second, nodes)[1:]
    held_by_storer = sum(s.has_blob(address) for address in first_chunks)
    assert held_by_storer < len(first_chunks), "the storer holds every chunk: nothing tested"
    assert second_chunks == first_chunks


def test_a_pin_from_another_namespace_outlives_the_owners_delete_until_unpinned(
    cluster: Cluster, tmp_path: Path
) -> None:
    s, nodes = network(cluster, 3, GC)
    other_namespace = tmp_path / "other.key"
    other_namespace.write_bytes(os.urandom(32))
    p = cluster.agent("p", peers=[s.address], namespace_file=other_namespace, options=GC)
    nodes.append(p)
    wait_for_mesh([s, p], nodes, MESH_TIMEOUT)
    capability, digest = store(s, tmp_path, "shared", 3 * MiB, b"shared")
    blobs = set(file_blobs(capability, nodes))
    p.call("pin", capability=capability)
    s.call("delete", name="shared")
    passes_after(nodes, 8)  # well past the grace
    assert all(good_copies(x, nodes) >= 3 for x in blobs)
    assert read_back(p, tmp_path, capability) == digest
    p.call("unpin", capability=capability)
    wait_until(
        lambda: only_needed_blobs_remain(nodes, set()),
        SETTLE_TIMEOUT,
        "the unpinned file's blobs to be collected everywhere",
    )


def test_a_store_killed_midway_leaves_nothing_after_the_grace(
    cluster: Cluster, tmp_path: Path
) -> None:
    """SIGKILL of the storing node during a store: the blobs it had sent are collected
    on every holder, and on itself once restarted."""
    s, nodes = network(cluster, 3, GC)
    big = tmp_path / "big.bin"
    write_random_file(big, 200 * MiB, b"big")
    s.send("store", name="big", path=str(big))
    holders = nodes[1:]
    wait_until(
        lambda: sum(len(blobs_on(h)) for h in holders) >= 6,
        SETTLE_TIMEOUT,
        "the store to have sent some chunks",
    )
    s.kill()
    assert any(blobs_on(h) for h in holders)
    wait_until(
        lambda: only_needed_blobs_remain(holders, set()),
        SETTLE_TIMEOUT,
        "the killed store's blobs to be collected on every holder",
    )
    back = cluster.agent("s2", data_dir=s.data_dir, peers=[holders[0].address], options=GC)
    wait_until(lambda: not blobs_on(back), SETTLE_TIMEOUT, "its own copies to be collected")


def test_a_client_gone_midway_through_an_upload_leaves_nothing_after_the_grace(
    cluster: Cluster, tmp_path: Path
) -> None:
    _, nodes = network(cluster, 3, GC)
    h = nodes[1]
    host, port = h.http_address.rsplit(":", 1)
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"PUT /v1/files/abandoned HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: %d\r\n\r\n" % (100 * MiB)
        )
        piece = random.Random(5).randbytes(MiB)
        while sent < 40 * MiB:
            sock.sendall(piece)
            sent += MiB
        wait_until(
            lambda: sum(len(blobs_on(n)) for n in nodes) >= 6,
            SETTLE_TIMEOUT,
            "the upload to have stored some chunks",
        )
    wait_until(
        lambda: only_needed_blobs_remain(nodes, set()),
        SETTLE_TIMEOUT,
        "the abandoned upload's blobs to be collected everywhere",
    )


def test_a_node_killed_during_collection_loses_nothing_referenced(
    cluster: Cluster, tmp_path: Path
) -> None:
    s, nodes = network(cluster, 3, GC)
    files = {f"g{i}": store(s, tmp_path, f"g{i}", 300 * KiB, b"g%d" % i) for i in range(40)}
    keep = {name: files[name] for name in list(files)[:8]}
    needed = {a for cap, _ in keep.values() for a in file_blobs(cap, nodes)}
    victim = nodes[1]
    held_before = set(blobs_on(victim)) & needed
    for name in list(files)[8:]:
        s.call("delete", name=name)
    wait_until(
        lambda: victim.metric("fstore_space_reclaimed_blobs_total") > 0,
        SETTLE_TIMEOUT,
        "the victim to start collecting",
    )
    victim.kill()
    assert held_before <= set(blobs_on(victim))
    back = cluster.holder("back", data_dir=victim.data_dir, peers=[s.address], options=GC)
    live_nodes = [n for n in nodes if n is not victim] + [back]
    wait_until(
        lambda: only_needed_blobs_remain(live_nodes, needed),
        SETTLE_TIMEOUT,
        "what the kill interrupted to be collected by a later pass",
    )
    assert held_before <= set(blobs_on(back))
    assert all(good_copies(a, live_nodes) >= 3 for a in needed)
    for capability, digest in keep.values():
        assert read_back(s, tmp_path, capability) == digest


def http_put(node: NodeProcess, name: str, data: bytes) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        f"http://{node.http_address}/v1/files/{name}", data=data, method="PUT"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_full_node_is_passed_over_and_a_full_network_answers_507(
    cluster: Cluster, tmp_path: Path
) -> None:
    limit = ["--max-storage", "2M"]
    s = cluster.agent("s", options=GC)
    full = cluster.holder("full", peers=[s.address], options=GC + limit)
    others = [cluster.holder(f"h{i}", peers=[s.address], options=GC) for i in range(3)]
    nodes: list[NodeProcess] = [s, full, *others]
    wait_for_mesh([s], nodes, MESH_TIMEOUT)
    stored = [store(s, tmp_path, f"f{i}", 3 * MiB, b"f%d" % i) for i in range(3)]
    assert sum(blobs_on(full).values()) <= 2 * MiB
    assert "storage_full" in full.log_text() or sum(blobs_on(full).values()) < 2 * MiB
    for capability, _ in stored:
        assert all(good_copies(a, nodes) >= 3 for a in file_blobs(capability, nodes))
    status = json.loads(full.http_get("/v1/status"))
    assert status["max_storage"] == 2 * MiB
    assert status["used_bytes"] == sum(blobs_on(full).values())

    # Every node small: a store that finds fewer than W members with room is refused.
    tight = ["--max-storage", "4M"]
    a = cluster.holder("a", options=GC + tight)
    b = cluster.holder("b", peers=[a.address], options=GC + tight)
    c = cluster.holder("c", peers=[a.address], options=GC + tight)
    small = [a, b, c]
    wait_until(lambda: len(a.http_peers()) == 2, MESH_TIMEOUT, "a small network")
    kept = random.Random(1).randbytes(MiB)
    status, answer = http_put(a, "kept", kept)
    assert status == 201
    status, refused = http_put(a, "too-big", random.Random(2).randbytes(6 * MiB))
    assert status == 507
    assert refused["error"]["code"] == "storage_full"  # type: ignore[index]
    for node in small:
        url = f"http://{node.http_address}/v1/caps/{answer['capability']}"
        with urllib.request.urlopen(url) as got:
            assert got.read() == kept


def test_lease_ops_from_a_peer_are_checked_and_a_release_needs_the_secret(
    cluster: Cluster,
) -> None:
    """A member that is not of the namespace cannot release a blob by its tag (only the
    lease secret, whose BLAKE3 the tag is, releases); malformed lease ops are refused."""
    node = cluster.holder("h", options=GC)
    blob = random.Random(9).randbytes(1000)
    address = _native.hash(blob)
    keys = LeaseKeys(os.urandom(32))
    with wire_client(node.address, cluster.network) as client:
        put = client.request("put_blob", {"addr": address, "tag": keys.tag(address)}, blob)
        assert put.ok, put.meta
        assert client.request(
            "hold_blobs", {"items": [[address, keys.tag(address)]], "stamp": 5}
        ).ok
        # The tag itself is no proof: "releasing" by it changes nothing.
        fake = client.request(
            "release_blobs", {"items": [[address, keys.tag(address)]], "stamp": 9}
        )
        assert fake.ok
        for meta in (
            {"items": [[address]], "stamp": 1},
            {"items": [[address, b"short"]], "stamp": 1},
            {"items": [[address, address]], "stamp": -1},
            {"items": "no", "stamp": 1},
            {"items": [[address, address]] * 513, "stamp": 1},
        ):
            refused = client.request("hold_blobs", meta)
            assert not refused.ok and refused.meta["code"] == "bad_request", meta
        refused = client.request("put_blob", {"addr": address, "tag": b"short"}, blob)
        assert not refused.ok and refused.meta["code"] == "bad_request"
    passes_after([node], 6)  # past the 2 s grace: the hold keeps it
    assert node.has_blob(address)
    with wire_client(node.address, cluster.network) as client:
        released = client.request(
            "release_blobs", {"items": [[address, keys.secret(address)]], "stamp": 10}
        )
        assert released.ok
    wait_until(lambda: not node.has_blob(address), SETTLE_TIMEOUT, "the released blob to go")


def test_a_directory_tree_is_kept_while_named_and_collected_once_deleted(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A tree's blobs (directory nodes, a large file's manifest and chunks) outlive
    many collection passes while it is named, and are collected once it is deleted."""
    s, nodes = network(cluster, 2, GC)
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    for i in range(50):
        (root / "sub" / f"small {i}").write_bytes(os.urandom(300))
    write_random_file(root / "big.bin", 3 * MiB, b"big")
    stored = s.call("store_tree", name="tree", path=str(root))
    assert stored["capability"].startswith("fsd1:")
    tree_blobs = set().union(*(blobs_on(n) for n in nodes))
    assert len(tree_blobs) >= 4  # nodes, a manifest and chunks
    passes_after(nodes, 8)  # well past the grace
    assert all(good_copies(x, nodes) >= 3 for x in tree_blobs)
    restored = tmp_path / "restored"
    s.call("get_tree", target="tree", out=str(restored))
    assert blake3_file(restored / "big.bin") == blake3_file(root / "big.bin")
    s.call("delete", name="tree")
    wait_until(
        lambda: only_needed_blobs_remain(nodes, set()),
        SETTLE_TIMEOUT,
        "the deleted tree's blobs to be collected everywhere",
    )


def test_a_tree_outlives_its_storer_through_the_namespaces_other_nodes(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The node that stored a tree is gone for good: another node of the namespace
    finds the tree's blobs by walking it and renews their holds past the lease period."""
    namespace = tmp_path / "namespace.key"
    namespace.write_bytes(os.urandom(32))
    options = [*GC, "--lease-period", "6"]
    s = cluster.agent("s", namespace_file=namespace, options=options)
    t = cluster.agent("t", peers=[s.address], namespace_file=namespace, options=options)
    holders = [cluster.holder(f"h{i}", peers=[s.address], options=options) for i in range(2)]
    wait_for_mesh([s, t], [s, t, *holders], MESH_TIMEOUT)
    root = tmp_path / "tree"
    root.mkdir()
    write_random_file(root / "big.bin", 3 * MiB, b"big")
    (root / "small").write_bytes(b"small")
    s.call("store_tree", name="tree", path=str(root))
    passes_after([t], 2)  # t has seen the tree in a reference pass
    s.kill()
    survivors: list[NodeProcess] = [t, *holders]
    tree_blobs = set().union(*(blobs_on(n) for n in survivors))
    passes_after(survivors, 30)  # 15 s: well past the 6 s lease period
    assert all(good_copies(x, survivors) >= 2 for x in tree_blobs)
    restored = tmp_path / "restored"
    t.call("get_tree", target="tree", out=str(restored))
    assert blake3_file(restored / "big.bin") == blake3_file(root / "big.bin")
