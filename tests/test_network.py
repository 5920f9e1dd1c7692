"""The node as a network: real node processes on 127.0.0.1, real sockets, nothing mocked.

Nodes are ``fstore-node`` processes (holders) and ``node_agent.py`` processes
(nodes the test drives with JSON commands); see ``netutil.py``. Every wait has
a deadline; no test sleeps to synchronise.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from netutil import (
    Agent,
    Cluster,
    MemberLink,
    MiB,
    NodeProcess,
    blake3_file,
    blob_path,
    closest,
    credentials,
    decode_frames,
    free_port,
    quarantined,
    read_manifest,
    read_until_closed,
    wait_for_mesh,
    wait_until,
    wire_client,
    write_random_file,
)

from fstore import _native
from fstore.formats.records import NameKeys
from fstore.net import wire
from fstore.net.link import HANDSHAKE_TIMEOUT, REQUEST_TIMEOUT
from fstore.net.trust import NetworkKey

MESH_TIMEOUT = 20.0  # links form in well under a second on loopback
LINK_TIMEOUT = 20.0
GET_TIMEOUT = 60.0


def shared_namespace(tmp_path: Path) -> Path:
    """A namespace secret file, for nodes that must resolve each other's names."""
    path = tmp_path / "namespace.key"
    path.write_bytes(os.urandom(32))
    path.chmod(0o600)
    return path


def assert_get(
    reader: Agent, target: str, out: Path, size: int, digest: str, timeout: float = GET_TIMEOUT
) -> None:
    """``reader`` gets ``target`` into ``out``: the right size, and the right BLAKE3 twice
    (as the node streamed it, and of the file on disk by an independent implementation)."""
    got = reader.call("get", timeout=timeout, target=target, out=str(out))
    assert (got["size"], got["blake3"]) == (size, digest), f"{reader.name} read {target!r}"
    assert out.stat().st_size == size
    assert blake3_file(out) == digest


def file_blobs(capability: str, nodes: list[NodeProcess]) -> list[bytes]:
    """Every blob address of a file: its manifest first, then its chunks in order."""
    manifest, chunks = read_manifest(capability, [n.data_dir for n in nodes])
    return [manifest, *(c.address for c in chunks)]


# --- 1. replication -----------------------------------------------------------------------


def test_file_stored_on_one_node_is_readable_from_every_other(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Five nodes; A stores. Every blob lands on exactly its 3 XOR-closest nodes; B (A's
    namespace, but not a holder of the name's record) lists the file and reads it by name
    and by capability, C (its own namespace) by capability; and still after A deletes its
    local copy, and after A is SIGKILLed."""
    namespace = shared_namespace(tmp_path)
    h1 = cluster.holder("h1")
    a = cluster.agent("a", peers=[h1.address], namespace_file=namespace)
    b = cluster.agent("b", peers=[h1.address], namespace_file=namespace)
    c = cluster.agent("c", peers=[a.address])
    h2 = cluster.holder("h2", peers=[c.address])
    everyone: list[NodeProcess] = [h1, a, b, c, h2]
    wait_for_mesh([a, b, c], everyone, MESH_TIMEOUT)

    ids = [n.node_id for n in everyone]
    # A name whose record B does not keep (it is not among the 3 nodes closest to the
    # record's locator), so B must find the name on its peers to list or resolve it.
    keys = NameKeys(namespace.read_bytes())
    name = next(
        name
        for name in (f"picture-{i}.bin" for i in itertools.count())
        if b.node_id not in closest(keys.locator(name), ids, 3)
    )

    size = 20 * MiB + 12345
    source = tmp_path / "picture.bin"
    digest = write_random_file(source, size, b"readable everywhere")
    stored = a.call("store", name=name, path=str(source))
    assert (stored["size"], stored["blake3"], stored["replicas"]) == (size, digest, 3)
    cap = stored["capability"]

    names = {n.node_id: n.name for n in everyone}
    blobs = file_blobs(cap, everyone)
    assert len(blobs) >= 6  # a manifest and several chunks
    for address in blobs:
        holders = {names[n.node_id] for n in everyone if n.has_blob(address)}
        expected = {names[n] for n in closest(address, ids, 3)}
        assert holders == expected, f"blob {address.hex()} is on the wrong nodes"
    held_by_a = [address for address in blobs if a.has_blob(address)]

    def readable_from(readers: list[Agent], stage: str) -> None:
        for reader in readers:
            targets = [cap] + ([name] if reader is not c else [])
            for n, target in enumerate(targets):
                assert_get(reader, target, tmp_path / f"{stage}-{reader.name}-{n}", size, digest)

    readable_from([b, c], "stored")
    # C has its own namespace: A's name means nothing there, and C does not list it.
    answer = c.wait(c.send("get", target=name, out=str(tmp_path / "c-by-name")))
    assert (answer["ok"], answer["error"]) == (False, "NotFoundError")
    assert [f["name"] for f in c.call("list")["files"]] == []
    listed = b.call("list")["files"]
    assert [(f["name"], f["size"], f["blake3"]) for f in listed] == [(name, size, digest)]

    removed = a.call("delete_local", target=cap)["removed"]
    assert removed == len(held_by_a)
    assert not any(a.has_blob(address) for address in blobs)
    readable_from([a, b, c], "deleted")

    a.kill()
    readable_from([b, c], "killed")


# --- 2. start order, crash and restart ----------------------------------------------------


def test_peer_started_later_links_and_relinks_after_restart(
    cluster: Cluster, tmp_path: Path
) -> None:
    """X dials a port where nothing listens yet; Y starts there later and they link. Y is
    SIGKILLed and restarted on the same port and data dir: the link comes back, and what
    Y stored before the crash is still readable, from Y by name and from X through Y."""
    y_addr = f"127.0.0.1:{free_port()}"
    x = cluster.agent("x", peers=[y_addr], replicas=2)
    assert x.peer_ids() == set()
    y = cluster.agent("y", addr=y_addr, replicas=2)
    wait_until(lambda: y.node_id in x.peer_ids(), LINK_TIMEOUT, "x to link with y")
    wait_until(lambda: x.node_id in y.peer_ids(), LINK_TIMEOUT, "y to link with x")

    size = 9 * MiB + 777
    source = tmp_path / "before-crash.bin"
    digest = write_random_file(source, size, b"before the crash")
    stored = y.call("store", name="before-crash", path=str(source))
    assert (stored["blake3"], stored["replicas"]) == (digest, 2)
    cap = stored["capability"]
    blobs = file_blobs(cap, [x, y])
    assert all(y.has_blob(address) and x.has_blob(address) for address in blobs)

    y.kill()
    wait_until(lambda: y.node_id not in x.peer_ids(), LINK_TIMEOUT, "x to notice y is gone")

    y2 = cluster.agent("y-restarted", addr=y_addr, data_dir=y.data_dir, replicas=2)
    assert (y2.node_id, y2.address) == (y.node_id, y_addr)
    wait_until(lambda: y2.node_id in x.peer_ids(), LINK_TIMEOUT, "x to link with y again")
    wait_until(lambda: x.node_id in y2.peer_ids(), LINK_TIMEOUT, "y to link with x again")

    # Both dialled each other; both must keep the same connection (one side's
    # outbound link is the other's inbound one), or the link would flap.
    def one_link() -> bool:
        to_y, to_x = x.call("peers")["peers"], y2.call("peers")["peers"]
        return len(to_y) == len(to_x) == 1 and to_y[0]["outbound"] != to_x[0]["outbound"]

    wait_until(one_link, LINK_TIMEOUT, "x and y to agree on one connection")

    assert all(y2.has_blob(address) for address in blobs)
    assert_get(y2, "before-crash", tmp_path / "y-by-name", size, digest)
    # X drops its copy, so its read can only come from Y's disk, through the new link.
    assert x.call("delete_local", target=cap)["removed"] == len(blobs)
    assert_get(x, cap, tmp_path / "x-through-y", size, digest)


# --- 3. a holder dies in the middle of a get ----------------------------------------------


def test_holder_killed_in_the_middle_of_a_get(cluster: Cluster, tmp_path: Path) -> None:
    """R=3 on 4 nodes; the reader first drops its own copy, so it fetches every blob from
    its closest peer holding it. The victim is the reader's first choice for a blob in the
    middle of the file: it is SIGSTOPped before the get, so the get stalls exactly at that
    blob with a request outstanding, then it is SIGKILLed. The get must complete from
    another holder, well before the request timeout could have rescued it."""
    s = cluster.agent("s")
    r = cluster.agent("r", peers=[s.address])
    h1 = cluster.holder("h1", peers=[s.address])
    h2 = cluster.holder("h2", peers=[r.address])
    everyone: list[NodeProcess] = [s, r, h1, h2]
    wait_for_mesh([s, r], everyone, MESH_TIMEOUT)

    size = 64 * MiB + 4321
    source = tmp_path / "big.bin"
    digest = write_random_file(source, size, b"killed mid-get")
    cap = s.call("store", name="big.bin", path=str(source))["capability"]
    assert r.call("delete_local", target=cap)["removed"] > 0

    manifest, chunks = read_manifest(cap, [n.data_dir for n in everyone])
    order = [manifest, *(c.address for c in chunks)]
    # Bytes the reader has written when it needs blob i (the manifest comes first).
    before = [0, 0]
    for chunk in chunks[:-1]:
        before.append(before[-1] + chunk.length)
    others = [n for n in everyone if n is not r]
    first_choice = [closest(a, [n.node_id for n in others], 1)[0] for a in order]

    def first_needed(node: NodeProcess) -> int | None:
        return next((i for i, n in enumerate(first_choice) if n == node.node_id), None)

    # A victim first needed from chunk 1 on, so the reader has made progress when it stalls.
    usable = [(i, n) for n in others if (i := first_needed(n)) is not None and i >= 2]
    assert usable, "no peer is the first choice for a blob after the first chunk"
    k, victim = min(usable, key=lambda pair: pair[0])
    assert victim.has_blob(order[k]), "the victim must hold the blob the reader needs"

    os.kill(victim.pid, signal.SIGSTOP)
    request = r.send("get", target=cap, out=str(tmp_path / "got.bin"), progress=True)
    while True:
        message = r.next_message(request, GET_TIMEOUT)
        assert "ok" not in message, f"the get ended before the victim was killed: {message}"
        if message["bytes"] >= before[k]:
            break
    assert message["bytes"] == before[k], "the reader did not wait for the stopped holder"
    victim.kill()  # SIGKILL ends a stopped process too
    # A request the victim never answered must fail at once when its connection dies,
    # not after REQUEST_TIMEOUT.
    answer = r.result(request, timeout=REQUEST_TIMEOUT / 2)
    assert (answer["size"], answer["blake3"]) == (size, digest)
    assert blake3_file(tmp_path / "got.bin") == digest


# --- 4. a corrupt blob on disk ------------------------------------------------------------


def test_corrupt_blob_is_never_accepted_and_is_quarantined(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Every node holds every blob (R=3, 3 nodes); the reader drops its copy. One byte is
    flipped in two chunks on disk at the reader's first-choice holder. Holders serve blobs
    as stored (the requester checks every copy): asked directly, that holder sends the bad
    bytes, and told with ``bad_blob`` it checks and quarantines its copy, while the same
    report about a good copy changes nothing. The reader's get of the whole file succeeds
    with good copies, and its own report has the other bad copy quarantined."""
    s = cluster.agent("s")
    r = cluster.agent("r", peers=[s.address])
    h = cluster.holder("h", peers=[s.address])
    everyone: list[NodeProcess] = [s, r, h]
    wait_for_mesh([s, r], everyone, MESH_TIMEOUT)

    size = 14 * MiB + 99
    source = tmp_path / "file.bin"
    digest = write_random_file(source, size, b"corruption")
    cap = s.call("store", name="file.bin", path=str(source))["capability"]
    assert r.call("delete_local", target=cap)["removed"] > 0
    _, chunks = read_manifest(cap, [n.data_dir for n in everyone])
    assert len(chunks) >= 3

    # A chunk whose first-choice holder (for the reader) is h, the node to corrupt.
    peers = [s.node_id, h.node_id]
    via_reader = next(c.address for c in chunks if closest(c.address, peers, 1)[0] == h.node_id)
    asked_directly = next(c.address for c in chunks if c.address != via_reader)
    intact = next(c.address for c in chunks if c.address not in (via_reader, asked_directly))
    damaged: dict[bytes, bytes] = {}
    for address in (via_reader, asked_directly):
        path = blob_path(h.data_dir, address)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        with open(path, "r+b") as f:  # in place, as a disk error would
            f.seek(len(data) // 2)
            f.write(data[len(data) // 2 : len(data) // 2 + 1])
        damaged[address] = bytes(data)
        assert _native.hash(path.read_bytes()) != address

    with wire_client(h.address, cluster.network) as client:
        served = client.request("get_blob", {"addr": asked_directly})
        assert served.ok and bytes(served.body) == damaged[asked_directly]
        told = client.request("bad_blob", {"addr": intact})
        assert told.ok and told.meta == {"bad": False}
        told = client.request("bad_blob", {"addr": asked_directly})
        assert told.ok and told.meta == {"bad": True}
        gone = client.request("get_blob", {"addr": asked_directly})
        assert not gone.ok and gone.meta["code"] == "not_found"
    assert h.has_blob(intact)

    assert_get(r, cap, tmp_path / "got.bin", size, digest)

    def all_quarantined_at_h() -> bool:
        return all(
            not h.has_blob(address) and quarantined(h.data_dir, address) for address in damaged
        )

    wait_until(all_quarantined_at_h, 10.0, "h to quarantine its bad copies")
    for address, bad in damaged.items():
        moved = quarantined(h.data_dir, address)
        assert [p.read_bytes() for p in moved] == [bad]
        good = blob_path(s.data_dir, address).read_bytes()
        assert _native.hash(good) == address, "the other holder's copy is intact"


# --- 5. one GiB with bounded memory -------------------------------------------------------


@pytest.mark.slow
def test_one_gib_round_trip_with_bounded_memory(cluster: Cluster, tmp_path: Path) -> None:
    """A 1 GiB file stored through A and read back through B (R=2 on 3 nodes, so both
    directions cross the network), with every node process's peak RSS (VmHWM) under
    300 MB. The nodes run with --no-fsync to keep the test's time sane: durability is
    tested elsewhere, this test is about memory and streaming."""
    a = cluster.agent("a", replicas=2, durable=False)
    b = cluster.agent("b", peers=[a.address], replicas=2, durable=False)
    c = cluster.holder("c", peers=[a.address], replicas=2, durable=False)
    everyone: list[NodeProcess] = [a, b, c]
    wait_for_mesh([a, b], everyone, MESH_TIMEOUT)

    size = 1 << 30
    source = tmp_path / "one-gib.bin"
    digest = write_random_file(source, size, b"one gibibyte")
    stored = a.call("store", timeout=600, name="one-gib.bin", path=str(source))
    assert (stored["size"], stored["blake3"], stored["replicas"]) == (size, digest, 2)
    out = tmp_path / "one-gib.out"
    got = b.call("get", timeout=600, target=stored["capability"], out=str(out))
    assert (got["size"], got["blake3"]) == (size, digest)
    assert blake3_file(out) == digest

    limit = 300 * 1000 * 1000
    peaks = {n.name: n.peak_rss() for n in everyone}
    report = ", ".join(f"{name} {peak / 1e6:.0f} MB" for name, peak in peaks.items())
    print(f"peak RSS after a 1 GiB store and get: {report}")
    assert all(peak < limit for peak in peaks.values()), f"peak RSS over 300 MB: {report}"

    # Passed: do not leave 4 GiB behind in pytest's kept temporary directories.
    cluster.close()
    for path in [source, out, *(n.data_dir for n in everyone)]:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


# --- 6. concurrency -----------------------------------------------------------------------


def test_32_concurrent_stores_and_gets_through_one_node(cluster: Cluster, tmp_path: Path) -> None:
    """32 stores at once through one node, then 32 gets at once of files it no longer holds
    locally: every file comes back intact, and the node lists all 32."""
    a = cluster.agent("a", replicas=2)
    b = cluster.holder("b", peers=[a.address], replicas=2)
    c = cluster.holder("c", peers=[a.address], replicas=2)
    wait_for_mesh([a], [a, b, c], MESH_TIMEOUT)

    files: dict[str, tuple[Path, int, str]] = {}
    for i in range(32):
        size = 512 * 1024 + i * 131 * 1024 + i * 7  # 0.5 to 4.5 MiB, all different
        path = tmp_path / f"file-{i:02}.bin"
        files[path.name] = (path, size, write_random_file(path, size, f"file {i}".encode()))

    stores = {name: a.send("store", name=name, path=str(p)) for name, (p, _, _) in files.items()}
    caps: dict[str, str] = {}
    for name, request in stores.items():
        stored = a.result(request, timeout=120)
        _, size, digest = files[name]
        assert (stored["size"], stored["blake3"]) == (size, digest), name
        caps[name] = stored["capability"]

    drops = [a.send("delete_local", target=cap) for cap in caps.values()]
    for request in drops:
        a.result(request)
    gets = {name: a.send("get", target=name, out=str(tmp_path / f"{name}.out")) for name in files}
    for name, request in gets.items():
        got = a.result(request, timeout=120)
        _, size, digest = files[name]
        assert (got["size"], got["blake3"]) == (size, digest), name
        assert blake3_file(tmp_path / f"{name}.out") == digest, name

    listed = {f["name"]: (f["size"], f["blake3"]) for f in a.call("list")["files"]}
    assert listed == {name: (size, digest) for name, (_, size, digest) in files.items()}


# --- 7. hostile bytes ---------------------------------------------------------------------


def frame(kind: int, stream: int, meta: bytes, body: bytes = b"") -> bytes:
    """A frame built by hand, so it can break the rules."""
    return struct.pack(">IBII", 9 + len(meta) + len(body), kind, stream, len(meta)) + meta + body


PING = frame(2, 1, b"\x81\xa2op\xa4ping")

# Bytes a member sends after TLS, given its own valid HELLO for that link.
VIOLATIONS: dict[str, Callable[[bytes], bytes]] = {
    "garbage": lambda hello: b"GET / HTTP/1.1\r\nHost: fstore\r\n\r\n",
    "huge length prefix": lambda hello: struct.pack(">IBII", 0xFFFFFFFF, 1, 0, 0),
    "unknown frame kind after HELLO": lambda hello: hello + frame(9, 1, b"\x80"),
    "request before HELLO": lambda hello: PING,
    "second HELLO": lambda hello: hello + hello,
}
TRUNCATED: dict[str, Callable[[bytes], bytes]] = {
    "truncated HELLO, then close": lambda hello: hello[:10],
    "truncated request after HELLO, then close": lambda hello: hello + PING[:15],
}
# Well under the node's handshake timeout: the node must close for the violation itself.
CLOSE_DEADLINE = HANDSHAKE_TIMEOUT / 3


def hostile(
    address: str, network: NetworkKey, make: Callable[[bytes], bytes], *, shut_write: bool
) -> tuple[list[wire.Frame], bool]:
    """As a member, send ``make(hello)`` (then end the TCP stream if asked, without a TLS
    close_notify); the node's frames, and whether it closed."""
    link = MemberLink(address, credentials(network))
    with link.sock as sock:
        sock.sendall(make(link.hello()))
        if shut_write:
            socket.socket.shutdown(sock, socket.SHUT_WR)  # TCP only: TLS stays usable
        received, closed = read_until_closed(sock, CLOSE_DEADLINE)
    return decode_frames(received), closed


def test_hostile_bytes_close_the_connection_and_the_node_keeps_serving(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Garbage, a 0xFFFFFFFF length, an unknown frame kind, and other violations: the node
    answers with its HELLO and GOAWAY protocol_error, then closes. A frame cut short by
    the peer's close: the node closes too. Meanwhile a connection that sent half a header
    stays open, and the node keeps storing and serving for its real peer."""
    a = cluster.agent("a", replicas=2)
    b = cluster.holder("b", peers=[a.address], replicas=2)
    wait_for_mesh([a], [a, b], MESH_TIMEOUT)

    idle = MemberLink(a.address, credentials(cluster.network))
    with idle.sock:
        idle.sock.sendall(idle.hello()[:6])  # and then nothing: must not hold up anyone else
        for case, make in VIOLATIONS.items():
            frames, closed = hostile(a.address, cluster.network, make, shut_write=False)
            assert closed, f"{case}: the node did not close the connection"
            kinds = [f.kind for f in frames]
            assert kinds[0] == wire.FrameKind.HELLO, f"{case}: {kinds}"
            assert wire.FrameKind.RESPONSE not in kinds, f"{case}: answered: {kinds}"
            assert kinds[-1] == wire.FrameKind.GOAWAY, f"{case}: no GOAWAY: {kinds}"
            assert frames[-1].meta["code"] == "protocol_error", f"{case}: {frames[-1].meta}"
        for case, make in TRUNCATED.items():
            frames, closed = hostile(a.address, cluster.network, make, shut_write=True)
            assert closed, f"{case}: the node did not close the connection"
            assert [f.kind for f in frames][:1] == [wire.FrameKind.HELLO], case

        size = 6 * MiB + 5
        source = tmp_path / "after.bin"
        digest = write_random_file(source, size, b"after the hostile bytes")
        cap = a.call("store", name="after", path=str(source))["capability"]
        assert a.call("delete_local", target=cap)["removed"] > 0
        assert_get(a, "after", tmp_path / "after.out", size, digest)
        # The hostile members above are not left behind as peers.
        wait_until(lambda: a.peer_ids() == {b.node_id}, LINK_TIMEOUT, "only b as a peer")
