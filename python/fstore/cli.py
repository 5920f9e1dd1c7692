"""Command-line entry points: ``fstore`` and ``fstore-node``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """The ``fstore`` client command. The node it talks to is not built yet."""
    del argv
    print("fstore: the client is not yet implemented; see the README.", file=sys.stderr)
    return 2


def node_main(argv: list[str] | None = None) -> int:
    """The ``fstore-node`` daemon. Not built yet."""
    del argv
    print("fstore-node: the node is not yet implemented; see the README.", file=sys.stderr)
    return 2
