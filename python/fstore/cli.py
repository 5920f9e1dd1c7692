"""Command-line entry points: ``fstore-node`` runs a node; ``fstore demo`` tells the story.

Heavy modules are imported inside the commands so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import sys
from pathlib import Path

DEFAULT_ADDR = ":3000"


def default_data_dir(port: int) -> Path:
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "fstore" / f"node-{port}"


def node_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fstore-node",
        description="Run an fstore node in the foreground (Ctrl-C or SIGTERM stops it).",
    )
    p.add_argument(
        "--addr",
        default=DEFAULT_ADDR,
        help="where to listen: :PORT listens on loopback only, HOST:PORT on HOST "
        f"(default {DEFAULT_ADDR})",
    )
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a node to join through; repeatable; dialled until it answers",
    )
    p.add_argument("--data-dir", type=Path, help="default: ~/.local/share/fstore/node-PORT")
    p.add_argument("--replicas", type=int, default=3, help="copies of every blob (default 3)")
    p.add_argument(
        "--namespace-file",
        type=Path,
        help="a 32-byte namespace secret shared with other nodes (default: the node's own)",
    )
    p.add_argument(
        "--no-fsync",
        action="store_true",
        help="acknowledge blobs before they are durable: for benchmarks only, never in use",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def node_main(argv: list[str] | None = None) -> int:
    args = node_parser().parse_args(argv)
    from fstore.net import parse_hostport

    try:
        host, port = parse_hostport(args.addr)
        for peer in args.peer:
            parse_hostport(peer)
    except ValueError as e:
        print(f"fstore-node: {e}", file=sys.stderr)
        return 2
    setup_logging(args.verbose)
    import uvloop

    try:
        uvloop.run(_run_node(args, f"{host}:{port}", args.data_dir or default_data_dir(port)))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            print(f"fstore-node: cannot listen on {host}:{port}: address in use", file=sys.stderr)
        else:
            print(f"fstore-node: {e}", file=sys.stderr)
        return 1
    return 0


async def _run_node(args: argparse.Namespace, listen: str, data_dir: Path) -> None:
    from fstore.node import Node

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    node = Node(
        data_dir,
        listen=listen,
        peers=args.peer,
        replicas=args.replicas,
        durable=not args.no_fsync,
        namespace_file=args.namespace_file,
    )
    async with node:
        print(f"fstore-node {node.node_id.hex()} listening on {node.address}", flush=True)
        await stop.wait()
        logging.getLogger("fstore.node").info("stopping")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fstore", description="fstore: an encrypted P2P file store")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run three nodes in this process and show the story")
    demo.add_argument("--size", type=int, default=6 << 20, help="picture size in bytes")
    demo.add_argument("-v", "--verbose", action="store_true", help="show the nodes' logs")
    args = p.parse_args(argv)
    if args.command == "demo":
        from fstore.demo import run_demo

        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="    %(name)s: %(message)s",
        )
        return run_demo(args.size)
    return 2
