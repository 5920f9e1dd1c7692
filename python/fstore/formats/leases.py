"""Lease tags and secrets: how a namespace names its hold on a blob (docs/FORMAT.md, section 13).

A tag is derived from the namespace secret and the blob's address, so the tags
a holder sees are unlinkable (it cannot group blobs by namespace or file), yet
every node of the namespace computes the same one. A release proves the right
to drop a lease by sending the secret whose BLAKE3 is the tag.
"""

from __future__ import annotations

from fstore import _native

LEASE_KEY_CONTEXT = "fstore 2026-11-30 blob lease key v1"
ANONYMOUS_TAG = bytes(32)


def tag_of(lease_secret: bytes) -> bytes:
    """The tag a lease secret proves."""
    return _native.hash(lease_secret, parallel=False)


class LeaseKeys:
    """The namespace's lease secrets and tags."""

    def __init__(self, namespace_secret: bytes) -> None:
        self._key = _native.derive_key(LEASE_KEY_CONTEXT, namespace_secret)

    def secret(self, address: bytes) -> bytes:
        return _native.keyed_hash(self._key, address, parallel=False)

    def tag(self, address: bytes) -> bytes:
        return tag_of(self.secret(address))
