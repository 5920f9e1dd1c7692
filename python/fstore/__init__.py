"""fstore: a peer-to-peer, content-addressed, end-to-end encrypted file store."""

from __future__ import annotations

from fstore._native import __version__

__all__ = ["__version__"]
