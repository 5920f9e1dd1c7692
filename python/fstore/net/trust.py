"""Who belongs to a network, and how every link proves it (docs/SECURITY.md).

A network is a 32-byte network key, shared as a join token. Every member
derives two things from it:

- The network's certificate authority: an Ed25519 key and a self-signed CA
  certificate, the same bytes on every member. A node's TLS certificate
  carries the node's own identity key and is signed by that CA, so a TLS 1.3
  handshake with mutual authentication completes only between members.
  (Python's ``ssl`` has no certificate-verify callback, so it cannot accept a
  peer's unknown self-signed certificate and check it afterwards; the network
  CA is how a certificate says "a member made me".)
- A proof key. After the handshake each side's HELLO carries BLAKE3, keyed by
  the proof key, of its role and the hashes of both certificates of the link.
  A relay that terminates TLS on each side presents other certificates, so a
  proof taken from one link never verifies on another.

A peer's node id is BLAKE3 of its certificate's public key; the id it claims
in HELLO must be that one.
"""

from __future__ import annotations

import contextlib
import datetime
import hmac
import os
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fstore import _native
from fstore.errors import InvalidJoinTokenError, PeerRejectedError
from fstore.formats import textcode

NETWORK_KEY_LEN = 32
TOKEN_PREFIX = "fsn1:"
CA_KEY_CONTEXT = "fstore 2026-11 network CA key v1"
PROOF_KEY_CONTEXT = "fstore 2026-11 hello proof key v1"
PROOF_LABEL = b"fstore hello proof v1\x00"
PROOF_LEN = 32
# Roles in a proof: a proof made by the dialling side never verifies as the
# listening side's, so a peer's own proof cannot be reflected back to it.
DIALER = b"D"
LISTENER = b"L"
# Certificates do not expire: a node's identity lives as long as its key, and
# a clock that is wrong must not split a network.
_NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
_DER = serialization.Encoding.DER
_PEM = serialization.Encoding.PEM


@dataclass(frozen=True)
class NetworkKey:
    """The secret that makes a network: whoever holds it may join."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != NETWORK_KEY_LEN:
            raise InvalidJoinTokenError(f"a network key is {NETWORK_KEY_LEN} bytes")

    @classmethod
    def generate(cls) -> NetworkKey:
        return cls(os.urandom(NETWORK_KEY_LEN))

    @classmethod
    def from_token(cls, token: str) -> NetworkKey:
        """Parse a join token; any altered, missing or extra character raises."""
        try:
            return cls(
                textcode.decode(TOKEN_PREFIX, token.strip(), NETWORK_KEY_LEN, "a join token")
            )
        except ValueError as e:
            raise InvalidJoinTokenError(str(e)) from None

    @property
    def token(self) -> str:
        """The join token: ``fsn1:`` and the key in checked base32 (``fstore.formats.textcode``)."""
        return textcode.encode(TOKEN_PREFIX, self.secret)

    @property
    def network_id(self) -> str:
        """A public name for the network: 16 hex digits of BLAKE3 of its CA key (not secret)."""
        return _native.hash(public_bytes(self._ca_key().public_key()))[:8].hex()

    def _ca_key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(_native.derive_key(CA_KEY_CONTEXT, self.secret))

    def ca_certificate(self) -> x509.Certificate:
        """The network's CA certificate; byte-identical on every member."""
        key = self._ca_key()
        name = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, f"fstore network {self.network_id}")]
        )
        public = key.public_key()
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(1)
            .not_valid_before(_NOT_BEFORE)
            .not_valid_after(_NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, None)
        )

    def node_certificate(self, identity: Ed25519PrivateKey) -> x509.Certificate:
        """A certificate for the node with this identity key, signed by the network CA."""
        ca_key = self._ca_key()
        ca_public = ca_key.public_key()
        public = identity.public_key()
        node_id = _native.hash(public_bytes(public))
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id.hex())]))
            .issuer_name(self.ca_certificate().subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_NOT_BEFORE)
            .not_valid_after(_NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False
            )
            .sign(ca_key, None)
        )

    def proof_key(self) -> bytes:
        return _native.derive_key(PROOF_KEY_CONTEXT, self.secret)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def node_id_of(certificate_der: bytes) -> bytes:
    """The node id a certificate stands for: BLAKE3 of its Ed25519 public key."""
    try:
        key = x509.load_der_x509_certificate(certificate_der).public_key()
    except ValueError as e:
        raise PeerRejectedError(f"unreadable certificate: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise PeerRejectedError("the certificate's key is not an Ed25519 key")
    return _native.hash(public_bytes(key))


def make_proof(proof_key: bytes, role: bytes, sender_cert: bytes, receiver_cert: bytes) -> bytes:
    """What the ``role`` side of a link sends to show it holds the network key."""
    message = PROOF_LABEL + role + _native.hash(sender_cert) + _native.hash(receiver_cert)
    return _native.keyed_hash(proof_key, message)


class LinkCredentials:
    """One node's side of every link: its TLS contexts, certificate and proofs."""

    def __init__(self, identity: Ed25519PrivateKey, network: NetworkKey, scratch_dir: Path) -> None:
        """``scratch_dir`` briefly holds the private key as PEM (``ssl`` loads keys only
        from files): created readable by the owner only, deleted once loaded."""
        self.network_id = network.network_id
        certificate = network.node_certificate(identity)
        self.certificate_der = certificate.public_bytes(_DER)
        self.node_id = node_id_of(self.certificate_der)
        self._proof_key = network.proof_key()
        ca_pem = network.ca_certificate().public_bytes(_PEM).decode("ascii")
        key_pem = identity.private_bytes(
            _PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        with _private_file(scratch_dir, key_pem + certificate.public_bytes(_PEM)) as chain:
            self.server_context = _tls_context(ca_pem, chain, server=True)
            self.client_context = _tls_context(ca_pem, chain, server=False)

    def proof(self, *, outbound: bool, peer_certificate: bytes) -> bytes:
        """The proof this node sends on a link with the peer holding ``peer_certificate``."""
        role = DIALER if outbound else LISTENER
        return make_proof(self._proof_key, role, self.certificate_der, peer_certificate)

    def check_peer(
        self, *, outbound: bool, peer_certificate: bytes, claimed_node: bytes, proof: bytes
    ) -> None:
        """Raise PeerRejectedError unless the peer's HELLO matches its certificate and
        proves the network key; ``outbound`` is whether this node dialled."""
        node = node_id_of(peer_certificate)
        if claimed_node != node:
            raise PeerRejectedError(
                f"claims node id {claimed_node.hex()[:12]} but its certificate is {node.hex()[:12]}"
            )
        role = LISTENER if outbound else DIALER
        expected = make_proof(self._proof_key, role, peer_certificate, self.certificate_der)
        if not hmac.compare_digest(expected, proof):
            raise PeerRejectedError("no valid proof of the network key")


def _tls_context(ca_pem: str, chain_file: Path, *, server: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    # Peers are named by node id, not host name: the id is checked against the
    # certificate's key after the handshake (LinkCredentials.check_peer).
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=ca_pem)
    context.load_cert_chain(chain_file)
    if server:
        context.num_tickets = 0  # links are long-lived: session resumption buys nothing
    return context


@contextlib.contextmanager
def _private_file(directory: Path, data: bytes) -> Iterator[Path]:
    fd, name = tempfile.mkstemp(prefix=".tls-", dir=directory)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield Path(name)
    finally:
        os.unlink(name)
