"""Directory trees end to end: node processes on loopback, the ``fstore`` command, curl, GNU tar.

One network serves the module: three ``fstore-node`` holders (``a``, ``b``,
``c``, R = 3, one namespace) and a ``node_agent.py`` agent (``d``) for the
Python API. Trees are put through one node and read through another; every
comparison is entry by entry (kind, mode, mtime in ns, BLAKE3 by the ``blake3``
package, link target), and hostile input is checked on the file system.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import blake3
import msgpack
import pytest
from netutil import (
    Agent,
    AgentError,
    Cluster,
    MiB,
    NodeProcess,
    http_server_in_thread,
    stored_blobs,
    wait_for_mesh,
    wait_until,
    wire_client,
)
from treeutil import (
    file_blake3,
    files_outside,
    make_tree,
    many_files,
    snapshot,
    stored_view,
    tree_blobs,
)

from fstore import _native
from fstore.faces import client
from fstore.formats import directory
from fstore.formats.capability import DirCapability

CLIENT = [sys.executable, "-m", "fstore.faces.client"]
RUN_DEADLINE = 300.0
MESH_DEADLINE = 30.0


# --- the network ---------------------------------------------------------------------------


@dataclass
class Network:
    a: NodeProcess
    b: NodeProcess
    c: NodeProcess
    d: Agent
    cluster: Cluster

    @property
    def holders(self) -> list[NodeProcess]:
        return [self.a, self.b, self.c]

    @property
    def data_dirs(self) -> list[Path]:
        return [p.data_dir for p in (self.a, self.b, self.c, self.d)]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    root = tmp_path_factory.mktemp("trees-net")
    cluster = Cluster(root)
    try:
        namespace = root / "namespace"
        namespace.write_bytes(os.urandom(32))
        a = cluster.holder("a", namespace_file=namespace)
        b = cluster.holder("b", namespace_file=namespace, peers=[a.address])
        c = cluster.holder("c", namespace_file=namespace, peers=[a.address, b.address])
        d = cluster.agent("d", namespace_file=namespace, peers=[a.address], replicas=3)
        wait_for_mesh([d], [a, b, c, d], MESH_DEADLINE)
        wait_for_holders([a, b, c], [a, b, c, d])
        yield Network(a, b, c, d, cluster)
    finally:
        cluster.close()


def wait_for_holders(holders: list[NodeProcess], everyone: list[NodeProcess]) -> None:
    """Wait until each holder's HTTP API lists every other node of ``everyone`` as a peer."""
    for node in holders:
        others = {p.node_id for p in everyone if p is not node}

        def linked(node: NodeProcess = node, others: set[bytes] = others) -> bool:
            return others <= node.http_peers()

        wait_until(linked, MESH_DEADLINE, f"{node.name} to link with every other node")


def url(node: NodeProcess) -> str:
    return f"http://{node.http_address}"


def fstore(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSTORE_")}
    return subprocess.run(
        [*CLIENT, *args],
        capture_output=True,
        env=env,
        cwd=cwd,
        timeout=RUN_DEADLINE,
        check=False,
    )


def ok_json(*args: str) -> Any:
    result = fstore(*args, "--json")
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def http_get(address: str, path: str) -> bytes:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=60) as answer:
        body: bytes = answer.read()
        return body


def http_error(address: str, path: str, method: str = "GET", body: bytes | None = None) -> Any:
    """The JSON error of a request that must fail, and its status."""
    request = urllib.request.Request(f"http://{address}{path}", data=body, method=method)
    with pytest.raises(urllib.error.HTTPError) as failure:
        urllib.request.urlopen(request, timeout=60)
    return failure.value.code, json.loads(failure.value.read())["error"]


# --- round trips -------------------------------------------------------------------------------


def test_round_trip_from_one_node_to_another(net: Network, tmp_path: Path, rng: Any) -> None:
    """Nested levels, empty directories and files, unicode names, links, modes, mtimes and a
    50 MiB file: put -r through a, get -r through b, compared entry by entry."""
    source = tmp_path / "source"
    make_tree(source, rng, big=50 * MiB)
    os.mkfifo(source / "a fifo")
    put = fstore("put", "-r", str(source), "--name", "round trip", "--node", url(net.a), "--json")
    assert put.returncode == 0, put.stderr.decode()
    assert "skipped a fifo: a FIFO, not stored" in put.stderr.decode()
    stored = json.loads(put.stdout)
    expected = stored_view(snapshot(source))
    files = [e for e in expected.values() if e[0] == "file"]
    assert stored["files"] == len(files)
    assert stored["symlinks"] == sum(e[0] == "symlink" for e in expected.values())
    assert stored["copies"] == stored["replicas"] == 3
    assert stored["capability"].startswith("fsd1:")

    target = tmp_path / "restored"
    got = ok_json("get", "-r", "round trip", "-o", str(target), "--node", url(net.b))
    assert got["files"] == len(files)
    assert snapshot(target) == expected

    # Every blob of the tree has its three copies among the four nodes.
    blobs = tree_blobs(stored["capability"], net.data_dirs)
    nodes = [*net.holders, net.d]
    assert all(sum(n.has_blob(a) for n in nodes) == 3 for a in blobs.addresses)


def test_python_api_round_trip(net: Network, tmp_path: Path, rng: Any) -> None:
    source = tmp_path / "source"
    make_tree(source, rng)
    stored = net.d.call("store_tree", name="api tree", path=str(source))
    assert stored["skipped"] == []
    assert stored["capability"].startswith("fsd1:")
    listing = net.d.call("list_tree", target="api tree/a/b")
    names = {e["name"]: e["kind"] for e in listing["entries"]}
    assert names == {"c": "dir", "private": "file", "up two": "symlink"}
    target = tmp_path / "restored"
    got = net.d.call("get_tree", target=stored["capability"], out=str(target))
    assert got["files"] == stored["files"]
    assert snapshot(target) == snapshot(source)
    # And the same tree through another node's HTTP API, by name.
    other = tmp_path / "through b"
    ok_json("get", "-r", "api tree", "-o", str(other), "--node", url(net.b))
    assert snapshot(other) == snapshot(source)


def test_many_files_listing_fetches_only_that_level(net: Network, tmp_path: Path, rng: Any) -> None:
    """10,000 files: listing one level fetches that level's nodes, not the tree's; get -r
    restores all of them."""
    source = tmp_path / "ten thousand"
    many_files(source, rng, dirs=8, per_dir=1000, size=64)
    for i in range(2000):
        (source / f"top{i:04}").write_bytes(rng.randbytes(16))
    stored = ok_json("put", "-r", str(source), "--node", url(net.a))
    assert stored["files"] == 10_000
    blobs = tree_blobs(stored["capability"], net.data_dirs)
    total_nodes = sum(len(nodes) for nodes in blobs.nodes.values())
    assert len(blobs.nodes[""]) >= 2  # the top level is big enough to need an index

    fetched = "fstore_tree_nodes_fetched_total"
    before = net.c.metric(fetched)
    listing = ok_json("ls", "ten thousand/", "--node", url(net.c))
    assert len(listing["entries"]) == listing["count"] == 2008
    assert net.c.metric(fetched) - before == len(blobs.nodes[""])

    before = net.c.metric(fetched)
    listing = ok_json("ls", "ten thousand/d003/", "--node", url(net.c))
    assert [e["name"] for e in listing["entries"]] == [f"f{i:04}" for i in range(1000)]
    used = net.c.metric(fetched) - before
    # Its own nodes, and at most the top's index and one of its leaves on the way there.
    assert len(blobs.nodes["d003"]) <= used <= len(blobs.nodes["d003"]) + 2
    assert used < total_nodes / 4

    target = tmp_path / "restored"
    got = ok_json("get", "-r", "ten thousand", "-o", str(target), "--node", url(net.b))
    assert got["files"] == 10_000
    assert snapshot(target) == snapshot(source)


def test_a_second_put_sends_only_what_changed(cluster: Cluster, tmp_path: Path, rng: Any) -> None:
    """1,000 files, 3 changed: the new blobs are those files' chunks and manifests and the
    directory nodes above them, each sent to the two other holders, and nothing else.

    On a network of its own, three holders with R = 3, so every node holds every blob
    and nothing but this store moves blobs while it is measured.
    """
    a = cluster.holder("a")
    b = cluster.holder("b", peers=[a.address])
    c = cluster.holder("c", peers=[a.address, b.address])
    wait_for_holders([a, b, c], [a, b, c])
    data_dirs = [a.data_dir, b.data_dir, c.data_dir]
    source = tmp_path / "thousand"
    for d in range(10):
        folder = source / f"dir{d}"
        folder.mkdir(parents=True)
        for i in range(100):
            size = rng.randrange(100, 20_000) if i % 20 else rng.randrange(40_000, 1_500_000)
            (folder / f"file{i:03}").write_bytes(rng.randbytes(size))
    first = ok_json("put", "-r", str(source), "--name", "incremental", "--node", url(a))
    held_before = set(_held(a))
    sent_before = a.metric("fstore_blob_bytes_sent_total")

    changed = ["dir2/file007", "dir5/file040", "dir9/file099"]  # small, large, small
    for rel in changed:
        path = source / rel
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    second = ok_json("put", "-r", str(source), "--name", "incremental", "--node", url(a))
    new = set(_held(a)) - held_before
    sent = a.metric("fstore_blob_bytes_sent_total") - sent_before

    blobs = tree_blobs(second["capability"], data_dirs)
    node_blobs = {a for nodes in blobs.nodes.values() for a in nodes}
    changed_blobs = {blobs.manifests[r] for r in changed if r in blobs.manifests}
    changed_blobs |= {c for r in changed for c in blobs.chunks.get(r, [])}
    assert new <= node_blobs | changed_blobs, "a blob of an unchanged file was stored again"
    new_bytes = sum(blobs.sizes[a] for a in new)
    assert second["new_bytes"] == new_bytes
    assert sent == 2 * new_bytes  # to the two other holders, each blob once
    assert new_bytes < first["new_bytes"] / 10
    assert second["new_bytes"] + second["reused_bytes"] >= first["new_bytes"]


def _held(node: NodeProcess) -> Iterator[bytes]:
    yield from stored_blobs(node.data_dir)


def test_replacing_a_tree_shows_readers_the_old_or_the_new(
    net: Network, tmp_path: Path, rng: Any
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    many_files(old, rng, dirs=2, per_dir=50, size=100)
    many_files(new, rng, dirs=20, per_dir=200, size=3000)
    ok_json("put", "-r", str(old), "--name", "replaced", "--node", url(net.a))
    old_names = _listing_names(net.b, "replaced")
    putting = subprocess.Popen(
        [*CLIENT, "put", "-r", str(new), "--name", "replaced", "--node", url(net.a)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    seen = set()
    try:
        while putting.poll() is None:
            seen.add(_listing_names(net.b, "replaced"))
    finally:
        putting.wait(timeout=RUN_DEADLINE)
    assert putting.returncode == 0
    assert seen, "the put ended before any read: nothing was observed during it"
    new_names = _listing_names(net.b, "replaced")
    assert new_names != old_names
    assert seen <= {old_names, new_names}
    target = tmp_path / "restored"
    ok_json("get", "-r", "replaced", "-o", str(target), "--node", url(net.c))
    assert snapshot(target) == snapshot(new)


def _listing_names(node: NodeProcess, name: str) -> tuple[str, ...]:
    """Every file of the tree and its BLAKE3, from one read of the whole tree (as a tar)."""
    body = http_get(node.http_address, f"/v1/files/{name}/?format=tar")
    found = []
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        for member in archive:
            data = archive.extractfile(member) if member.isreg() else None
            digest = blake3.blake3(data.read()).hexdigest() if data is not None else ""
            found.append(f"{member.name}:{digest}")
    return tuple(found)


# --- reading inside a tree -----------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(net: Network, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A generated tree stored as ``sample`` through a: (its source, the put's answer)."""
    import random

    source = tmp_path_factory.mktemp("sample") / "sample"
    make_tree(source, random.Random(7))
    return source, ok_json("put", "-r", str(source), "--node", url(net.a))


def test_get_one_file_inside_a_tree(
    net: Network, sample: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    source, _ = sample
    got = fstore("get", "sample/a/b/c/d/leaf.txt", "-o", "-", "--node", url(net.b))
    assert got.returncode == 0, got.stderr.decode()
    assert got.stdout == b"deep down\n"
    ok_json("get", "sample/medium.bin", "-o", str(tmp_path / "m"), "--node", url(net.c))
    assert file_blake3(tmp_path / "m") == file_blake3(source / "medium.bin")

    # HTTP: a range of a file inside a tree, with its BLAKE3 as the ETag.
    request = urllib.request.Request(
        f"{url(net.b)}/v1/files/sample/small/f03", headers={"Range": "bytes=2-9"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 206
        assert answer.headers["ETag"] == f'"{file_blake3(source / "small" / "f03")}"'
        assert answer.read() == (source / "small" / "f03").read_bytes()[2:10]
    status, error = http_error(net.b.http_address, "/v1/files/sample/a")
    assert (status, error["code"]) == (400, "wrong_kind")
    status, error = http_error(net.b.http_address, "/v1/files/sample/nothing/")
    assert (status, error["code"]) == (404, "not_found")
    result = fstore("get", "sample", "-o", str(tmp_path / "x"), "--node", url(net.b))
    assert result.returncode == client.EXIT_NODE
    assert "is a directory" in result.stderr.decode() and "get -r" in result.stderr.decode()


def test_a_name_that_exists_exactly_wins(
    net: Network, sample: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Names may contain "/": the longest prefix that is a stored name is the tree's."""
    plain = tmp_path / "plain"
    plain.write_bytes(b"a file stored under a name with slashes")
    ok_json("put", str(plain), "--name", "sample/a/script.sh", "--node", url(net.a))
    got = fstore("get", "sample/a/script.sh", "-o", "-", "--node", url(net.b))
    assert got.stdout == plain.read_bytes()
    # A path below the tree's own name (literal slashes) still reads the tree's file.
    assert http_get(net.b.http_address, "/v1/files/sample/a/script.sh") == b"#!/bin/sh\necho hi\n"
    got = fstore("get", "sample/a/b/private", "-o", "-", "--node", url(net.b))
    assert got.stdout == b"p"


def test_ls_lists_one_level(net: Network, sample: tuple[Path, dict[str, Any]]) -> None:
    source, stored = sample
    listing = ok_json("ls", "sample/a/", "--node", url(net.c))
    assert listing["target"] == "sample/a"
    names = {e["name"]: e for e in listing["entries"]}
    assert set(names) == {p.name for p in (source / "a").iterdir()}
    assert names["b"]["kind"] == "dir" and names["b"]["capability"].startswith("fsd1:")
    assert names["script.sh"]["mode"] == 0o755
    assert names["script.sh"]["mtime_ns"] == (source / "a" / "script.sh").stat().st_mtime_ns
    assert names["script.sh"]["capability"] is None  # small: sealed inside its directory
    shown = fstore("ls", "sample/a/", "--node", url(net.c))
    lines = shown.stdout.decode().splitlines()
    assert any(line.startswith("drwxr-xr-x") and line.endswith("  b/") for line in lines)
    assert any(line.startswith("-rwxr-xr-x") and line.endswith("script.sh") for line in lines)
    every = ok_json("ls", "--node", url(net.c))
    assert "sample" in {f["name"] for f in every["files"]}
    assert "sample/" in fstore("ls", "--node", url(net.c)).stdout.decode().split()
    assert stored["capability"] in {f["capability"] for f in every["files"]}


def test_a_subdirectory_capability_reads_that_subtree_only(
    net: Network, sample: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    source, stored = sample
    listing = ok_json("ls", "sample/a/", "--node", url(net.b))
    sub = {e["name"]: e for e in listing["entries"]}["b"]["capability"]
    target = tmp_path / "b only"
    restore = fstore("get", "-r", sub, "-o", str(target), "--node", url(net.c))
    # Its link "up two" -> ../../medium.bin points above the subtree: refused, the rest kept.
    assert restore.returncode == client.EXIT_NODE
    assert "refused the link up two -> ../../medium.bin" in restore.stderr.decode()
    expected = snapshot(source / "a" / "b")
    del expected["up two"]
    assert snapshot(target) == expected
    assert {e["name"] for e in ok_json("ls", sub, "--node", url(net.c))["entries"]} == {
        "c",
        "private",
        "up two",
    }
    got = fstore("get", f"{sub}/c/d/leaf.txt", "-o", "-", "--node", url(net.c))
    assert got.stdout == b"deep down\n"
    # Nothing above it: no path climbs out, and its blobs are the subtree's alone.
    status, error = http_error(net.c.http_address, f"/v1/caps/{sub}/%2E%2E/")
    assert (status, error["code"]) == (400, "unsafe_path")
    whole = tree_blobs(stored["capability"], net.data_dirs)
    part = tree_blobs(sub, net.data_dirs)
    above = {a for path, nodes in whole.nodes.items() if not path.startswith("a/b") for a in nodes}
    assert part.addresses <= whole.addresses
    assert part.addresses.isdisjoint(above)


def test_curl_streams_a_tar_gnu_tar_reads(
    net: Network, sample: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    source, _ = sample
    fetch = f"curl -sSf '{url(net.b)}/v1/files/sample/?format=tar'"
    listed = subprocess.run(
        f"{fetch} | tar -t", shell=True, capture_output=True, timeout=120, check=True
    )
    names = {line.rstrip("/") for line in listed.stdout.decode().splitlines()}
    assert names == set(snapshot(source))
    # GNU tar restores it with the same modes, mtimes and contents.
    out = tmp_path / "gnu"
    out.mkdir()
    subprocess.run(
        f"{fetch} | tar -x -C '{out}'", shell=True, capture_output=True, timeout=120, check=True
    )
    assert snapshot(out) == snapshot(source)


def test_a_tar_from_gnu_tar_is_stored(net: Network, tmp_path: Path, rng: Any) -> None:
    source = tmp_path / "source"
    make_tree(source, rng)
    put = subprocess.run(
        # posix (pax): GNU tar's default format keeps whole seconds of mtimes only.
        f"tar --format=posix -C '{source}' -cf - . "
        f"| curl -sSf -T - '{url(net.a)}/v1/files/from%20gnu?format=tar'",
        shell=True,
        capture_output=True,
        timeout=120,
        check=True,
    )
    stored = json.loads(put.stdout)
    assert stored["kind"] == "dir" and stored["skipped"] == []
    target = tmp_path / "restored"
    ok_json("get", "-r", "from gnu", "-o", str(target), "--node", url(net.c))
    assert snapshot(target) == snapshot(source)


# --- hostile trees -------------------------------------------------------------------------------


def _tar(members: list[tuple[str, str, str]]) -> bytes:
    """A tar of (kind, name, link target or content) members, made by tarfile."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for kind, name, value in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(value)
                archive.addfile(info, io.BytesIO(value.encode()))
                continue
            info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
            info.linkname = value
            archive.addfile(info)
    return out.getvalue()


@pytest.mark.parametrize(
    "member",
    ["../evil", "/tmp/evil-absolute", "a/../../evil", "./a/../../evil"],
)
def test_a_tar_put_with_an_escaping_member_stores_nothing(net: Network, member: str) -> None:
    body = _tar([("file", "fine.txt", "ok"), ("file", member, "evil")])
    status, error = http_error(
        net.a.http_address, "/v1/files/hostile?format=tar", method="PUT", body=body
    )
    assert (status, error["code"]) == (400, "unsafe_path")
    assert member in error["message"]
    status, _ = http_error(net.b.http_address, "/v1/files/hostile/")
    assert status == 404


class TarServer(BaseHTTPRequestHandler):
    """Serves one tar stream for any GET: a node that lies, for the client's restore."""

    body: ClassVar[bytes] = b""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-tar")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


@pytest.fixture
def tar_server() -> Iterator[str]:
    with http_server_in_thread(TarServer) as url:
        yield url


def test_get_r_refuses_whatever_would_land_outside(tar_server: str, tmp_path: Path) -> None:
    area = tmp_path / "area"
    outside = area / "outside"
    outside.mkdir(parents=True)
    target = area / "target"
    target.mkdir()
    os.symlink(str(outside), target / "already here")  # a link in the target before the restore
    TarServer.body = _tar(
        [
            ("file", "fine.txt", "fine"),
            ("file", "../evil-up", "x"),
            ("file", str(outside / "evil-absolute"), "x"),
            ("file", "sub/../../evil-climb", "x"),
            ("symlink", "escape", "../outside"),
            ("file", "escape/evil-through-new-link", "x"),
            ("symlink", "absolute", str(outside)),
            ("file", "already here/evil-through-old-link", "x"),
            ("hardlink", "hard", "../outside/x"),
            ("file", "sub/fine too", "fine"),
        ]
    )
    before = files_outside(area, target)
    result = fstore("get", "-r", "tree", "-o", str(target), "--force", "--node", tar_server)
    assert result.returncode == client.EXIT_NODE
    errors = result.stderr.decode()
    assert "unsafe_path: refused 7 entries" in errors
    assert "points outside the tree" in errors and "nothing is written through it" in errors
    assert files_outside(area, target) == before
    assert list(outside.iterdir()) == []
    assert (target / "fine.txt").read_bytes() == b"fine"
    assert (target / "sub" / "fine too").read_bytes() == b"fine"
    assert (target / "already here").is_symlink()  # left as it was
    assert not (target / "absolute").exists()
    # The refused link was never made, so the file below its name went into a directory.
    assert not (target / "escape").is_symlink()
    assert (target / "escape" / "evil-through-new-link").read_bytes() == b"x"


def _put_blob(net: Network, sealed: bytes) -> bytes:
    address = _native.hash(sealed)
    for node in net.holders:
        with wire_client(node.address, net.cluster.network) as link:
            link.request("put_blob", {"addr": address}, sealed)
    return address


def _crafted(net: Network, node: dict[str, Any]) -> str:
    """The capability of a directory node built by hand (bypassing every check)."""
    key = _native.generate_key()
    address = _put_blob(net, directory.seal_node(key, msgpack.packb(node, use_bin_type=True)))
    return str(DirCapability(address, key))


def _link(name: str, target: str) -> dict[str, Any]:
    return {"name": name, "kind": "symlink", "mode": 0o777, "mtime": 0, "target": target}


def _small(name: str, data: bytes) -> dict[str, Any]:
    secret = os.urandom(32)
    digest, inline = directory.seal_inline(secret, data)
    return {
        "name": name,
        "kind": "file",
        "mode": 0o644,
        "mtime": 0,
        "size": len(data),
        "blake3": digest,
        "data": [inline.key, inline.sealed],
    }


@pytest.mark.parametrize(
    "entries",
    [
        [_small("..", b"up")],
        [_small("a/b", b"slash")],
        [_small("b", b"1"), _small("a", b"2")],  # not sorted
        [_small("a", b"1"), _small("a", b"2")],  # twice
        [{**_small("a", b"1"), "size": 2}],  # not what its data holds
    ],
    ids=["dot-dot", "slash", "unsorted", "duplicate", "wrong-size"],
)
def test_a_malformed_directory_node_is_refused(
    net: Network, tmp_path: Path, entries: list[dict[str, Any]]
) -> None:
    capability = _crafted(net, {"v": 1, "entries": entries})
    (tmp_path / "area").mkdir()
    target = tmp_path / "area" / "target"
    result = fstore("get", "-r", capability, "-o", str(target), "--node", url(net.b))
    assert result.returncode == client.EXIT_NODE
    assert "integrity: malformed directory node" in result.stderr.decode()
    assert list((tmp_path / "area").iterdir()) == []
    with pytest.raises(AgentError, match="malformed directory node"):
        net.d.call("get_tree", target=capability, out=str(target))
    assert list(target.rglob("*")) == []


def test_a_directory_whose_links_leave_it_restores_the_rest(net: Network, tmp_path: Path) -> None:
    inner = _crafted(
        net, {"v": 1, "entries": [_link("up", "../../../../outside"), _small("x", b"x")]}
    )
    cap = DirCapability.parse(inner)
    sub = {
        "name": "sub",
        "kind": "dir",
        "mode": 0o755,
        "mtime": 0,
        "files": 1,
        "size": 1,
        "ref": [cap.address, cap.key],
    }
    top = _crafted(net, {"v": 1, "entries": [_link("abs", "/etc"), _small("ok", b"ok"), sub]})
    area = tmp_path / "area"
    area.mkdir()
    by_cli = fstore("get", "-r", top, "-o", str(area / "cli"), "--node", url(net.c))
    assert by_cli.returncode == client.EXIT_NODE
    assert "refused 2 entries" in by_cli.stderr.decode()
    by_api = net.d.wait(net.d.send("get_tree", target=top, out=str(area / "api")))
    assert by_api["error"] == "UnsafePathError"
    assert "refused 2 entries" in by_api["message"]
    for target in (area / "cli", area / "api"):
        assert (target / "ok").read_bytes() == b"ok"
        assert (target / "sub" / "x").read_bytes() == b"x"
        assert not (target / "abs").is_symlink() and not (target / "sub" / "up").is_symlink()
    assert {p.name for p in area.iterdir()} == {"cli", "api"}


def test_the_blobs_of_a_tree_are_every_blob_its_store_wrote(tmp_path: Path, rng: Any) -> None:
    """``Trees.blobs`` (what space reclamation keeps) names exactly the blobs a tree put."""
    import uvloop

    from fstore.node import Node

    source = tmp_path / "source"
    make_tree(source, rng, big=3 * 1024 * 1024)  # a file in chunks, with a manifest
    (source / "many").mkdir()
    for i in range(1500):  # enough entries to split the directory into several nodes
        (source / "many" / f"file {i:04}").write_bytes(rng.randbytes(200))

    async def run() -> tuple[set[bytes], list[bytes]]:
        async with Node(tmp_path / "node", replicas=1, durable=False) as node:
            stored = await node.store_tree("tree", source)
            ref = DirCapability.parse(stored.capability)
            named = [a async for a in node.trees.blobs(directory.Ref(ref.address, ref.key))]
            return set(node.blobs.addresses()), named

    on_disk, named = uvloop.run(run())
    assert len(on_disk) > 5
    assert set(named) == on_disk
