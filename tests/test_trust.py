"""Network membership without sockets: join tokens, certificates, HELLO proofs, key files.

Certificates are checked with ``cryptography``'s own verification of the CA's
signature, and node ids with the independent ``blake3`` package; the TLS
handshakes themselves run against real nodes in test_membership.py.
"""

from __future__ import annotations

import stat
from pathlib import Path

import blake3
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from netutil import credentials

from fstore.errors import (
    InvalidJoinTokenError,
    NetworkMismatchError,
    PeerRejectedError,
    StorageError,
)
from fstore.net.identity import NETWORK_FILE, has_network, load_network_key
from fstore.net.trust import DIALER, LISTENER, LinkCredentials, NetworkKey, make_proof, node_id_of

NETWORK = NetworkKey(bytes(range(32)))
RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


# --- join tokens ---------------------------------------------------------------------------


def test_join_token_round_trip() -> None:
    for _ in range(20):
        network = NetworkKey.generate()
        token = network.token
        assert token.startswith("fsn1:") and token == token.lower()
        assert NetworkKey.from_token(token) == network
        assert NetworkKey.from_token(f"  {token}\n") == network  # as pasted from a terminal


def test_every_altered_character_of_a_join_token_is_refused() -> None:
    token = NETWORK.token
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    for i in range(len("fsn1:"), len(token)):
        nearby = {alphabet[(alphabet.index(token[i]) + 1) % 32], token[i].upper()}
        for replacement in nearby - {token[i]}:
            altered = token[:i] + replacement + token[i + 1 :]
            with pytest.raises(InvalidJoinTokenError):
                NetworkKey.from_token(altered)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "fs1:" + NETWORK.token[5:],  # a capability's prefix
        NETWORK.token[:-1],
        NETWORK.token + "a",
        NETWORK.token + "=",
        NETWORK.token.replace("fsn1:", "fsn2:"),
        "fsn1:!!!!",
    ],
    ids=["empty", "wrong prefix", "short", "long", "padded", "version 2", "not base32"],
)
def test_malformed_join_tokens_are_refused(text: str) -> None:
    with pytest.raises(InvalidJoinTokenError):
        NetworkKey.from_token(text)


def test_network_key_never_appears_in_its_repr() -> None:
    assert NETWORK.secret.hex() not in repr(NETWORK)
    assert str(NETWORK.secret) not in repr(NETWORK)


# --- certificates --------------------------------------------------------------------------


def test_the_network_ca_is_the_same_on_every_member_and_differs_between_networks() -> None:
    der = serialization.Encoding.DER
    first = NETWORK.ca_certificate().public_bytes(der)
    assert NetworkKey(NETWORK.secret).ca_certificate().public_bytes(der) == first
    assert NetworkKey.generate().ca_certificate().public_bytes(der) != first
    ca = NETWORK.ca_certificate()
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca.verify_directly_issued_by(ca)  # self-signed


def test_a_node_certificate_carries_its_identity_and_is_signed_by_the_network() -> None:
    identity = Ed25519PrivateKey.generate()
    cert = NETWORK.node_certificate(identity)
    public = identity.public_key().public_bytes(*RAW)
    assert cert.public_key().public_bytes(*RAW) == public
    cert.verify_directly_issued_by(NETWORK.ca_certificate())
    with pytest.raises((InvalidSignature, ValueError)):
        cert.verify_directly_issued_by(NetworkKey.generate().ca_certificate())
    der = cert.public_bytes(serialization.Encoding.DER)
    assert node_id_of(der) == blake3.blake3(public).digest()
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_a_certificate_with_another_kind_of_key_names_no_node() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "not fstore")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NETWORK.ca_certificate().not_valid_before_utc)
        .not_valid_after(NETWORK.ca_certificate().not_valid_after_utc)
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(PeerRejectedError, match="not an Ed25519 key"):
        node_id_of(cert.public_bytes(serialization.Encoding.DER))
    with pytest.raises(PeerRejectedError, match="unreadable"):
        node_id_of(b"\x30\x03\x02\x01\x01")


# --- proofs --------------------------------------------------------------------------------


def refused(
    checker: LinkCredentials,
    peer: LinkCredentials,
    proof: bytes,
    *,
    outbound: bool = False,
    claim: bytes | None = None,
) -> str:
    """``checker`` refuses ``peer``'s HELLO (``claim`` or its own id, and ``proof``): why."""
    with pytest.raises(PeerRejectedError) as refusal:
        checker.check_peer(
            outbound=outbound,
            peer_certificate=peer.certificate_der,
            claimed_node=claim or peer.node_id,
            proof=proof,
        )
    return str(refusal.value)


def test_a_proof_verifies_only_on_its_own_link_in_its_own_role() -> None:
    dialer, listener, relay = (credentials(NETWORK) for _ in range(3))
    proof = dialer.proof(outbound=True, peer_certificate=listener.certificate_der)

    listener.check_peer(
        outbound=False,
        peer_certificate=dialer.certificate_der,
        claimed_node=dialer.node_id,
        proof=proof,
    )
    # Relayed: the relay forwards the dialer's proof on its own link to the listener.
    assert "no valid proof" in refused(listener, relay, proof)
    # Relayed the other way: the relay dialled the dialer and shows it the listener's proof.
    assert "no valid proof" in refused(relay, dialer, proof)
    # Reflected: the listener's own role, so the dialer's proof is not the listener's.
    assert "no valid proof" in refused(listener, dialer, proof, outbound=True)


def test_a_proof_needs_the_network_key() -> None:
    dialer, listener = credentials(NETWORK), credentials(NETWORK)
    other = NetworkKey.generate()
    forged = make_proof(other.proof_key(), DIALER, dialer.certificate_der, listener.certificate_der)
    assert "no valid proof" in refused(listener, dialer, forged)
    # The right key makes the same proof the dialer would.
    assert make_proof(
        NETWORK.proof_key(), DIALER, dialer.certificate_der, listener.certificate_der
    ) == dialer.proof(outbound=True, peer_certificate=listener.certificate_der)
    assert DIALER != LISTENER


def test_a_peer_must_claim_the_node_its_certificate_names() -> None:
    dialer, listener, victim = (credentials(NETWORK) for _ in range(3))
    proof = dialer.proof(outbound=True, peer_certificate=listener.certificate_der)
    assert "claims node id" in refused(listener, dialer, proof, claim=victim.node_id)


# --- key files -----------------------------------------------------------------------------


def test_a_data_directory_makes_a_network_once_then_keeps_it(tmp_path: Path) -> None:
    assert not has_network(tmp_path)
    network, created = load_network_key(tmp_path)
    assert created and has_network(tmp_path)
    assert stat.S_IMODE((tmp_path / NETWORK_FILE).stat().st_mode) == 0o600
    assert load_network_key(tmp_path) == (network, False)
    assert load_network_key(tmp_path, network) == (network, False)


def test_joining_keeps_the_token_and_another_network_is_refused(tmp_path: Path) -> None:
    joined, created = load_network_key(tmp_path, NETWORK)
    assert (joined, created) == (NETWORK, False)
    assert (tmp_path / NETWORK_FILE).read_bytes() == NETWORK.secret
    with pytest.raises(NetworkMismatchError, match="belongs to network"):
        load_network_key(tmp_path, NetworkKey.generate())
    assert load_network_key(tmp_path) == (NETWORK, False)


def test_a_damaged_network_key_file_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / NETWORK_FILE).write_bytes(b"short")
    with pytest.raises(StorageError, match="damaged"):
        load_network_key(tmp_path)


def test_the_private_key_file_for_tls_does_not_outlive_loading(tmp_path: Path) -> None:
    from fstore.net.trust import LinkCredentials

    LinkCredentials(Ed25519PrivateKey.generate(), NETWORK, tmp_path)
    assert list(tmp_path.iterdir()) == []
