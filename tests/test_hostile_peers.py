"""Hostile members against real node processes: slowloris, unread responses, floods, liars.

These peers hold the network key (outsiders are in test_membership.py): they get
past TLS and HELLO, and then misbehave. The per-link limits
(``fstore.net.link.LinkLimits``) are shortened for these nodes through their
``FSTORE_*`` environment variables, so each test runs in seconds.
Every wait has a deadline; a closed connection is seen as ``recv`` returning
``b""``, a reset, or a send failing.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from netutil import (
    Cluster,
    KiB,
    MemberLink,
    MiB,
    connect,
    credentials,
    encode,
    proc_status,
    read_manifest,
    read_until_closed,
    wait_for_mesh,
    wait_until,
    wire_client,
    write_random_file,
)

from fstore import _native
from fstore.net import placement, wire
from fstore.net.gossip_messages import Ack, Broadcast, Member, Message, Ping, State, decode
from fstore.net.link import MAX_SERVING, MAX_UNSENT
from fstore.net.trust import LinkCredentials, NetworkKey

MESH_TIMEOUT = 20.0
SHORT = 1.0  # the shortened timeouts, in seconds
CLOSE_DEADLINE = 8 * SHORT  # well above SHORT, well below the 10 s and 60 s defaults


def closed_within(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the node closed ``sock`` (reading and dropping what it sends), or None."""
    start = time.monotonic()
    _, closed = read_until_closed(sock, timeout)
    return time.monotonic() - start if closed else None


# --- 1. slowloris and silent peers ---------------------------------------------------------


def test_silent_stalled_and_trickling_peers_are_dropped_but_idle_links_are_kept(
    cluster: Cluster,
) -> None:
    env = {"FSTORE_HANDSHAKE_TIMEOUT": str(SHORT), "FSTORE_FRAME_TIMEOUT": str(SHORT)}
    node = cluster.holder("a", env=env)

    # Nothing at all after connecting, or the start of a TLS handshake and then
    # nothing: the handshake timeout.
    client_hello_start = bytes.fromhex("160301020001") + bytes(40)
    for opening in (b"", client_hello_start):
        with connect(node.address) as silent:
            silent.sendall(opening)
            elapsed = closed_within(silent, CLOSE_DEADLINE)
            assert elapsed is not None, f"a connection silent after {opening!r} was not closed"
            assert elapsed >= 0.8 * SHORT

    # A member's TLS handshake, and then no HELLO: the same timeout.
    silent_member = MemberLink(node.address, credentials(cluster.network))
    with silent_member.sock:
        elapsed = closed_within(silent_member.sock, CLOSE_DEADLINE)
        assert elapsed is not None, "a member that never said HELLO was not closed"
        assert elapsed >= 0.8 * SHORT

    # A HELLO, then a header promising a 1000-byte frame, then nothing.
    stalled = MemberLink(node.address, credentials(cluster.network))
    with stalled.sock:
        stalled.sock.sendall(stalled.hello() + struct.pack(">IBII", 1000, 2, 1, 10))
        elapsed = closed_within(stalled.sock, CLOSE_DEADLINE)
        assert elapsed is not None, "a connection stopped mid-frame was not closed"
        assert elapsed >= 0.8 * SHORT

    # A valid ping request, one byte every 0.2 s (it would take seconds to complete).
    link = MemberLink(node.address, credentials(cluster.network))
    hello_bytes = link.hello()
    _, frames = link.conn.request("ping", {"pad": "x" * 100})
    request = encode(frames)
    with link.sock as trickle:
        trickle.sendall(hello_bytes)
        start = time.monotonic()
        closed = False
        for byte in request:
            try:
                trickle.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            # Paces the trickle, and notices the close as soon as it comes.
            _, closed = read_until_closed(trickle, 0.2)
            if closed:
                break
        assert closed, "a trickling connection was not closed"
        assert time.monotonic() - start < CLOSE_DEADLINE

    # A polite peer idle between frames for longer than the frame timeout stays linked.
    with wire_client(node.address, cluster.network) as client:
        assert client.request("ping", {}).ok
        assert closed_within(client.sock, 3 * SHORT) is None, "an idle link was closed"
        assert client.request("ping", {}).ok


# --- 2. a peer that never reads what it asked for ------------------------------------------


def put_blob(address: str, network: NetworkKey, blob: bytes) -> bytes:
    addr = _native.hash(blob)
    with wire_client(address, network) as client:
        response = client.request("put_blob", {"addr": addr}, blob)
        assert response.ok, response.meta
        return addr


def test_peer_that_never_reads_responses_is_dropped_with_bounded_memory(
    cluster: Cluster,
) -> None:
    """64 get_blob requests of a 4 MiB blob (the most the protocol allows unanswered),
    and never a byte read: the node writes responses one at a time up to its
    high-water mark, then drops the peer once its writes stall for the timeout."""
    node = cluster.holder("a", env={"FSTORE_WRITE_STALL_TIMEOUT": str(2 * SHORT)})
    blob = os.urandom(4 * MiB)
    addr = put_blob(node.address, cluster.network, blob)
    baseline = proc_status(node.pid, "VmRSS")

    link = MemberLink(node.address, credentials(cluster.network), rcvbuf=64 * KiB)
    greedy_id = link.creds.node_id
    hello_bytes = link.hello()
    with link.sock as greedy:
        requests = [
            encode(
                wire.encode_frame(wire.FrameKind.REQUEST, stream, {"op": "get_blob", "addr": addr})
            )
            for stream in range(1, wire.MAX_INFLIGHT + 1)
        ]
        greedy.sendall(hello_bytes + b"".join(requests))
        wait_until(
            lambda: greedy_id in node.http_peers(), CLOSE_DEADLINE, "the greedy peer to link"
        )
        # Another peer is served meanwhile.
        with wire_client(node.address, cluster.network) as other:
            response = other.request("get_blob", {"addr": addr})
            assert response.ok and bytes(response.body) == blob
        wait_until(
            lambda: greedy_id not in node.http_peers(),
            CLOSE_DEADLINE + 2 * SHORT,
            "the node to drop the greedy peer",
        )

    # Each of MAX_SERVING requests holds its blob until written; the transport holds
    # less than MAX_UNSENT. Allow that much growth, and 64 MiB for the rest.
    growth = proc_status(node.pid, "VmHWM") - baseline
    assert growth < MAX_SERVING * len(blob) + MAX_UNSENT + 64 * MiB, growth
    with wire_client(node.address, cluster.network) as after:
        assert after.request("get_blob", {"addr": addr}).ok


# --- 3. a request flood --------------------------------------------------------------------


def test_ping_flood_is_answered_busy_beyond_the_rate(cluster: Cluster) -> None:
    rate, burst = 200.0, 400
    env = {"FSTORE_REQUEST_RATE": str(rate), "FSTORE_REQUEST_BURST": str(burst)}
    node = cluster.holder("a", env=env)
    answers: Counter[str] = Counter()
    batch, total = 25, 2000  # a batch stays below MAX_SERVING: busy is the rate's doing
    with wire_client(node.address, cluster.network) as client:
        start = time.monotonic()
        for _ in range(total // batch):
            streams = set()
            data = []
            for _ in range(batch):
                stream, frames = client.conn.request("ping", {})
                streams.add(stream)
                data.append(encode(frames))
            client.sock.sendall(b"".join(data))
            deadline = time.monotonic() + 10
            while streams:
                event = client.next_event(deadline)
                if isinstance(event, wire.ResponseReceived) and event.stream in streams:
                    streams.remove(event.stream)
                    answers["ok" if event.ok else f"{event.meta['code']}: {event.meta['msg']}"] += 1
        elapsed = time.monotonic() - start
        assert set(answers) == {"ok", "busy: request rate limit"}, answers
        assert answers["ok"] <= burst + rate * elapsed + batch, (answers, elapsed)
        assert answers["ok"] >= burst, answers
        # The link survives, and tokens come back.
        wait_until(lambda: client.request("ping", {}).ok, 5, "a ping to succeed again")


# --- 4. a lying peer -----------------------------------------------------------------------


def identity_closest_to(target: bytes, others: set[bytes], network: NetworkKey) -> LinkCredentials:
    """Credentials whose node id is XOR-closer to ``target`` than every id in ``others``.

    Ids are BLAKE3 of a public key, so they cannot be chosen, only ground: among
    n nodes a fresh key is the closest one time in n + 1.
    """
    while True:
        key = Ed25519PrivateKey.generate()
        creds = credentials(network, key)
        if placement.closest(target, [creds.node_id, *others], 1) == [creds.node_id]:
            return creds


class Liar:
    """A member that dials a node and answers get_blob of ``target`` with wrong bytes.

    It gossips just enough to be in the node's member list: it announces itself
    alive and acknowledges the node's probes.
    """

    def __init__(self, address: str, creds: LinkCredentials, target: bytes) -> None:
        self.node_id = creds.node_id
        self.target = target
        self.asked: Counter[bytes] = Counter()
        link = MemberLink(address, creds)
        self.sock, self.conn = link.sock, link.conn
        self.sock.sendall(link.hello())
        me = Member(self.node_id, None, 0, State.ALIVE)
        self._gossip(Broadcast((me,)))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(None)
        try:
            while data := self.sock.recv(1 << 20):
                for event in self.conn.feed(data):
                    if isinstance(event, wire.RequestReceived):
                        self.sock.sendall(encode(self._answer(event)))
                        self._acknowledge(event)
        except OSError:
            pass

    def _gossip(self, message: Message) -> None:
        _, frames = self.conn.request("gossip", {"m": message.to_wire()})
        self.sock.sendall(encode(frames))

    def _acknowledge(self, event: wire.RequestReceived) -> None:
        if event.op == "gossip":
            message = decode(event.meta["m"])
            if isinstance(message, Ping):
                self._gossip(Ack(message.seq, ()))

    def _answer(self, event: wire.RequestReceived) -> wire.Writes:
        meta: dict[str, Any] = {}
        if event.op == "get_blob":
            addr = bytes(event.meta["addr"])
            self.asked[addr] += 1
            if addr != self.target:
                return self.conn.respond_error(event.stream, "not_found", "no")
            return self.conn.respond(event.stream, {}, os.urandom(64 * KiB))
        if event.op in ("peers", "find_node"):
            meta = {"peers": []}
        elif event.op not in ("ping", "gossip"):
            return self.conn.respond_error(event.stream, "bad_request", "no")
        return self.conn.respond(event.stream, meta)

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


def test_lying_peer_is_asked_once_then_last(cluster: Cluster, tmp_path: Path) -> None:
    reader = cluster.agent("reader", replicas=3)
    holders = [cluster.holder(n, peers=[reader.address], replicas=3) for n in "bcd"]
    others = {h.node_id for h in holders}
    wait_until(lambda: others <= reader.peer_ids(), MESH_TIMEOUT, "the reader to link")

    source = tmp_path / "f.bin"
    digest = write_random_file(source, 300 * KiB, b"lying peer")
    cap = reader.call("store", name="f", path=str(source))["capability"]
    _, chunks = read_manifest(cap, [reader.data_dir, *(h.data_dir for h in holders)])
    target = chunks[0].address
    # Closer to the chunk than any real node, so asked first.
    creds = identity_closest_to(target, {reader.node_id, *others}, cluster.network)
    liar = Liar(reader.address, creds, target)
    try:
        wait_until(
            lambda: liar.node_id in reader.member_ids(), MESH_TIMEOUT, "the liar to be a member"
        )
        for round_ in range(2):
            reader.call("delete_local", target=cap)
            out = tmp_path / f"out{round_}"
            got = reader.call("get", target=cap, out=str(out))
            assert got["blake3"] == digest
            # Asked on the first get (and lied); not asked again: honest holders go first.
            assert liar.asked[target] == 1, (round_, liar.asked)
    finally:
        liar.close()


# --- 5. false gossip ------------------------------------------------------------------------


def test_gossiped_member_counts_only_once_it_answers_as_itself(cluster: Cluster) -> None:
    """A member gossips a node id it made up, at a real node's address: the node that
    dials there gets another id, drops the link, and never lists or places on it."""
    a = cluster.agent("a")
    b = cluster.holder("b", peers=[a.address])
    wait_for_mesh([a], [a, b], MESH_TIMEOUT)
    invented = os.urandom(32)
    with wire_client(a.address, cluster.network) as gossiper:
        claim = Member(invented, b.address, 0, State.ALIVE)
        gossiper.request("gossip", {"m": Broadcast((claim,)).to_wire()})
        wait_until(
            lambda: f"{b.address}, claimed by {invented.hex()[:12]}, answered as" in a.log_text(),
            MESH_TIMEOUT,
            "a to dial the claimed address and drop the link",
        )
    # The list (and placement, which reads the same view) holds only proven members.
    assert invented not in a.member_ids(("alive", "suspect", "dead", "left"))
    assert a.member_ids() == {a.node_id, b.node_id}
