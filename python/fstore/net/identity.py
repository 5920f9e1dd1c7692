"""A node's persistent secrets: its Ed25519 identity, namespace secret and network key.

All live in the data directory as files readable only by the owner. The node
id is BLAKE3 of the raw Ed25519 public key; it is also the node's place in the
XOR keyspace. The network key (``fstore.net.trust``) decides which network the
node belongs to: one, for the life of the data directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fstore import _native
from fstore.errors import NetworkMismatchError, StorageError
from fstore.net.trust import NETWORK_KEY_LEN, NetworkKey

IDENTITY_FILE = "identity.key"
NAMESPACE_FILE = "namespace.key"
NETWORK_FILE = "network.key"
NAMESPACE_SECRET_LEN = 32


def write_secret_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 and ``data``, durably; never overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_or_create(path: Path, create: bytes) -> bytes:
    """The contents of ``path``, creating it with ``create`` the first time."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        write_secret_file(path, create)
        return create


@dataclass(frozen=True)
class Identity:
    private_key: Ed25519PrivateKey
    node_id: bytes

    @classmethod
    def load_or_create(cls, data_dir: Path) -> Identity:
        fresh = Ed25519PrivateKey.generate().private_bytes_raw()
        raw = load_or_create(data_dir / IDENTITY_FILE, fresh)
        key = Ed25519PrivateKey.from_private_bytes(raw)
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(key, _native.hash(public))


def load_namespace_secret(data_dir: Path, secret_file: Path | None = None) -> bytes:
    """The namespace secret: from ``secret_file`` if given (shared namespaces),
    else the node's own, created on first start."""
    path = secret_file or data_dir / NAMESPACE_FILE
    secret = load_or_create(path, os.urandom(NAMESPACE_SECRET_LEN))
    if len(secret) != NAMESPACE_SECRET_LEN:
        raise StorageError(f"{path}: a namespace secret is {NAMESPACE_SECRET_LEN} bytes")
    return secret


def has_network(data_dir: Path) -> bool:
    """Whether this data directory already belongs to a network."""
    return (data_dir / NETWORK_FILE).exists()


def load_network_key(data_dir: Path, join: NetworkKey | None = None) -> tuple[NetworkKey, bool]:
    """The node's network key and whether it was created just now (a new network).

    ``join`` is the network to belong to: kept the first time, and it must be the
    same network on every later start (NetworkMismatchError otherwise). Without
    it, the directory's network is used, or a new network is made on first start.
    """
    path = data_dir / NETWORK_FILE
    created = not path.exists() and join is None
    chosen = join or NetworkKey.generate()
    secret = load_or_create(path, chosen.secret)
    if len(secret) != NETWORK_KEY_LEN:
        raise StorageError(f"{path} is damaged: a network key is {NETWORK_KEY_LEN} bytes")
    network = NetworkKey(secret)
    if join is not None and network != join:
        raise NetworkMismatchError(
            f"{data_dir} belongs to network {network.network_id}, not to the network "
            f"{join.network_id} of this join token (a data directory is in one network)"
        )
    return network, created
