"""Outsiders and impostors against real node processes (docs/SECURITY.md).

Links are mutual TLS 1.3 with certificates from the network's CA, then a HELLO
that must name the node of the certificate and prove the network key, bound to
both certificates. Every outsider here tries to store, read and list, and must
learn nothing: no response frame ever comes back, the connection is closed,
the attempt is in the node's log with the address it came from, and members
keep being served.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from netutil import (
    Agent,
    Cluster,
    MemberLink,
    MiB,
    NodeProcess,
    connect,
    credentials,
    decode_frames,
    encode,
    read_until_closed,
    wait_for_mesh,
    wait_until,
    write_random_file,
)

from fstore import _native
from fstore.net import wire
from fstore.net.link import HANDSHAKE_TIMEOUT
from fstore.net.membership import MAX_UNAUTHENTICATED_PER_HOST
from fstore.net.trust import DIALER, NetworkKey, make_proof

MESH_TIMEOUT = 20.0
CLOSE_DEADLINE = 5.0  # a rejected peer is closed at once, well within this
LOG_DEADLINE = 5.0


@pytest.fixture
def network(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[NodeProcess, Agent, str]]:
    """A holder and a member agent that stored a file on it: (holder, agent, capability)."""
    holder = cluster.holder("holder", replicas=2)
    agent = cluster.agent("member", peers=[holder.address], replicas=2)
    wait_for_mesh([agent], [agent, holder], MESH_TIMEOUT)
    source = tmp_path / "secret.bin"
    write_random_file(source, 3 * MiB, b"membership")
    capability = agent.call("store", name="secret", path=str(source))["capability"]
    yield holder, agent, capability


def intrusion(claim: bytes, proof: bytes) -> tuple[bytes, bytes]:
    """A HELLO and requests to store, read and list: (bytes to send, the blob's address)."""
    conn = wire.Connection(claim, None)
    blob = os.urandom(64 * 1024)
    address = _native.hash(blob)
    data = encode(conn.hello(proof))
    data += encode(conn.request("put_blob", {"addr": address}, blob)[1])
    data += encode(conn.request("get_blob", {"addr": address})[1])
    data += encode(conn.request("peers", {})[1])
    data += encode(conn.request("list_names", {})[1])
    return data, address


def assert_learned_nothing(
    holder: NodeProcess, sock: socket.socket, address: bytes, *, tls: bool
) -> None:
    """The node closes ``sock`` without a single response frame, and stored nothing."""
    received, closed = read_until_closed(sock, CLOSE_DEADLINE)
    assert closed, "the node did not close the outsider's connection"
    if tls:
        kinds = [f.kind for f in decode_frames(received)]
        assert wire.FrameKind.RESPONSE not in kinds, kinds
    else:  # plain TCP: nothing readable, at most a TLS alert record
        assert received == b"" or received[0] == 0x15, received[:16]
    assert not holder.has_blob(address)


def hello_refused(holder: NodeProcess, link: MemberLink, claim: bytes, proof: bytes) -> str:
    """Over ``link``, a HELLO (``claim``, ``proof``) and the intrusion requests: the node
    answers only with its HELLO and GOAWAY ``rejected``, closes, and stores nothing.
    Returns the GOAWAY's message."""
    data, address = intrusion(claim, proof)
    with link.sock:
        link.sock.sendall(data)
        received, closed = read_until_closed(link.sock, CLOSE_DEADLINE)
    assert closed
    frames = decode_frames(received)
    assert [f.kind for f in frames] == [wire.FrameKind.HELLO, wire.FrameKind.GOAWAY]
    assert frames[-1].meta["code"] == "rejected"
    assert not holder.has_blob(address)
    return str(frames[-1].meta["msg"])


def wait_for_log(node: NodeProcess, needle: str) -> None:
    wait_until(lambda: needle in node.log_text(), LOG_DEADLINE, f"{needle!r} in {node.name}'s log")


def outsider_context(directory: Path, network: NetworkKey | None) -> ssl.SSLContext:
    """A TLS client that checks nothing about the server, with a certificate of
    ``network`` (another network's valid certificate) or with none at all."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if network is not None:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ) + network.node_certificate(key).public_bytes(serialization.Encoding.PEM)
        chain = directory / f"outsider-{os.urandom(4).hex()}.pem"
        chain.write_bytes(pem)
        context.load_cert_chain(chain)
    return context


def test_outsiders_can_neither_store_read_list_nor_stay(
    cluster: Cluster, network: tuple[NodeProcess, Agent, str], tmp_path: Path
) -> None:
    holder, agent, capability = network
    rejected_before = holder.metric("fstore_peers_rejected_total")
    attempts = 0

    # 1. Plain TCP speaking the wire protocol, as before TLS.
    data, address = intrusion(os.urandom(32), bytes(32))
    with connect(holder.address) as sock:
        port = sock.getsockname()[1]
        sock.sendall(data)
        assert_learned_nothing(holder, sock, address, tls=False)
    wait_for_log(holder, f"rejected peer ?@127.0.0.1:{port}: TLS handshake failed")
    attempts += 1

    # 2. TLS without a certificate; 3. TLS with a valid certificate of another network.
    # In TLS 1.3 the client's handshake ends before the server has checked the
    # client's certificate, so the outsider gets to send; it must get nothing back.
    for certificate_of in (None, NetworkKey.generate()):
        context = outsider_context(tmp_path, certificate_of)
        tcp = connect(holder.address)
        port = tcp.getsockname()[1]
        with context.wrap_socket(tcp) as sock:
            data, address = intrusion(os.urandom(32), bytes(32))
            with contextlib.suppress(OSError):  # closed while sending: checked below
                sock.sendall(data)
            assert_learned_nothing(holder, sock, address, tls=True)
        wait_for_log(holder, f"rejected peer ?@127.0.0.1:{port}: TLS handshake failed")
        attempts += 1

    # 4. A certificate of this network (as if leaked), but no network key for the proof.
    link = MemberLink(holder.address, credentials(cluster.network))
    forged = make_proof(
        NetworkKey.generate().proof_key(),
        DIALER,
        link.creds.certificate_der,
        link.peer_certificate,
    )
    port = link.sock.getsockname()[1]
    assert "no valid proof" in hello_refused(holder, link, link.creds.node_id, forged)
    wait_for_log(holder, f"@127.0.0.1:{port}: no valid proof of the network key")
    attempts += 1

    # The node counted every attempt, kept none as a peer, and serves its member.
    wait_until(
        lambda: holder.metric("fstore_peers_rejected_total") >= rejected_before + attempts,
        LOG_DEADLINE,
        "every rejection to be counted",
    )
    assert holder.http_peers() == {agent.node_id}
    agent.call("delete_local", target=capability)
    out = tmp_path / "secret.out"
    got = agent.call("get", target=capability, out=str(out))
    assert got["blake3"] == _native.hash_file(tmp_path / "secret.bin").hex()


def test_a_node_of_another_network_is_refused_both_ways(
    cluster: Cluster, network: tuple[NodeProcess, Agent, str]
) -> None:
    """A real fstore-node of another network dials a member: TLS fails on both
    sides, each logs it, and neither ever lists the other as a peer."""
    holder, agent, _ = network
    other = NetworkKey.generate().token
    stranger = cluster.holder("stranger", join=other, peers=[holder.address])
    wait_for_log(stranger, f"{holder.address} TLS handshake failed")
    wait_for_log(holder, "TLS handshake failed: it closed the connection")
    assert "its certificate is not from this network" in stranger.log_text()
    assert stranger.http_peers() == set()
    assert holder.http_peers() == {agent.node_id}


def test_a_node_claiming_another_nodes_id_is_rejected(
    cluster: Cluster, network: tuple[NodeProcess, Agent, str]
) -> None:
    """A member certificate and a valid proof, but the HELLO names the agent's id."""
    holder, agent, _ = network
    link = MemberLink(holder.address, credentials(cluster.network), claim=agent.node_id)
    assert "claims node id" in hello_refused(holder, link, agent.node_id, link.proof())
    wait_for_log(holder, f"claims node id {agent.node_id.hex()[:12]}")
    # The real owner of the id is still linked.
    assert holder.http_peers() == {agent.node_id}


def test_a_proof_from_another_link_is_rejected(
    cluster: Cluster, network: tuple[NodeProcess, Agent, str]
) -> None:
    """A relay replays a member's valid proof on its own link: bound to other certificates."""
    holder, _, _ = network
    member = MemberLink(holder.address, credentials(cluster.network))
    relay = MemberLink(holder.address, credentials(cluster.network))
    with member.sock:
        assert "no valid proof" in hello_refused(holder, relay, relay.creds.node_id, member.proof())
        # The member whose proof it was is served on its own link.
        member.sock.sendall(member.hello())
        assert member.request("ping", {}).ok


def test_a_flood_of_silent_connections_from_one_host_does_not_lock_out_members(
    cluster: Cluster, network: tuple[NodeProcess, Agent, str]
) -> None:
    """Up to MAX_UNAUTHENTICATED_PER_HOST silent connections from one host wait for their
    handshake timeout; more from that host are closed at once; a member from
    another host is served throughout; once the flood ends, the host is served again."""
    holder, _, _ = network
    flooder = "127.0.0.2"
    silent = [connect(holder.address, source=flooder) for _ in range(MAX_UNAUTHENTICATED_PER_HOST)]
    try:
        refused = connect(holder.address, source=flooder)
        with refused:
            start = time.monotonic()
            _, closed = read_until_closed(refused, HANDSHAKE_TIMEOUT / 2)
            assert closed, "a connection beyond the per-host limit was kept"
            assert time.monotonic() - start < HANDSHAKE_TIMEOUT / 2
        link = MemberLink(holder.address, credentials(cluster.network))
        with link.sock:
            link.sock.sendall(link.hello())
            assert link.request("ping", {}).ok
    finally:
        for sock in silent:
            sock.close()

    def accepted_again() -> bool:
        with connect(holder.address, source=flooder) as sock:
            _, closed = read_until_closed(sock, 0.5)
            return not closed

    wait_until(accepted_again, CLOSE_DEADLINE, "connections from the flooding host to be taken")


def test_members_link_only_after_both_proved_membership(cluster: Cluster) -> None:
    """A first node makes a network (printing its join token); a second joins with the
    token; they link, and each lists the other."""
    first = cluster.holder("first", join=None)
    assert first.join_token.startswith("fsn1:")
    second = cluster.holder("second", join=first.join_token, peers=[first.address])
    wait_until(lambda: first.node_id in second.http_peers(), MESH_TIMEOUT, "second to link")
    wait_until(lambda: second.node_id in first.http_peers(), MESH_TIMEOUT, "first to link")
    for node in (first, second):
        assert "rejected" not in node.log_text()
