"""The ``fstore-node`` command: run one node in the foreground (``fstore`` is in client.py).

``fstore-node init`` prepares a data directory (identity, network) and prints
the network's join token. Heavy modules are imported inside the commands so
``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import itertools
import logging
import os
import re
import shutil
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fstore.net.identity import Identity
    from fstore.net.trust import NetworkKey

DEFAULT_ADDR = ":3000"
HTTP_PORT_OFFSET = 10000
HTTP_ADDR_FILE = "http.addr"
"""Where a running node writes its HTTP address (``HOST:PORT``), in its data directory."""


class ListenError(Exception):
    """A socket could not be bound; the message is one line for the user."""


def default_http(port: int) -> str:
    """The HTTP API's default address for a node on ``port``: loopback, ``port`` + 10000.

    Ephemeral (port 0) when the node's port is, or when ``port`` + 10000 is not a port.
    """
    http_port = port + HTTP_PORT_OFFSET if 0 < port <= 65535 - HTTP_PORT_OFFSET else 0
    return f"127.0.0.1:{http_port}"


def default_data_dir(port: int) -> Path:
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "fstore" / f"node-{port}"


def _add_place_options(p: argparse.ArgumentParser) -> None:
    """The options that say which node: its address and data directory, and its network."""
    p.add_argument(
        "--addr",
        default=DEFAULT_ADDR,
        help="where to listen: :PORT listens on loopback only, HOST:PORT on HOST "
        f"(default {DEFAULT_ADDR})",
    )
    p.add_argument("--data-dir", type=Path, help="default: ~/.local/share/fstore/node-PORT")
    p.add_argument(
        "--join",
        metavar="TOKEN",
        help="the join token of the network to belong to (printed by `fstore-node init` "
        "on a member), or - to read it from standard input (it stays out of the process "
        "list); needed once, it is kept in the data directory",
    )


def node_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fstore-node",
        description="Run an fstore node in the foreground (Ctrl-C or SIGTERM stops it). "
        "The first start makes a new network unless --join is given; "
        "`fstore-node init` prepares a data directory and prints its join token.",
    )
    _add_place_options(p)
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a node to join through; repeatable; dialled until it answers",
    )
    p.add_argument("--replicas", type=int, default=3, help="copies of every blob (default 3)")
    p.add_argument(
        "--max-links",
        type=_positive_int,
        default=32,
        metavar="N",
        help="links to other members kept open at most; more are opened when needed "
        "and the least recently used idle ones closed (default 32)",
    )
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
    p.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="where the local HTTP API listens: :PORT on loopback, HOST:PORT on HOST "
        f"(default 127.0.0.1 at the node's port + {HTTP_PORT_OFFSET}; an ephemeral port "
        "if the node's is, or if that is past 65535)",
    )
    _add_durability_options(p)
    _add_space_options(p)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _add_durability_options(p: argparse.ArgumentParser) -> None:
    """Write quorum, repair and scrub (docs/ARCHITECTURE.md, "Durability")."""
    p.add_argument(
        "--allow-degraded",
        action="store_true",
        help="accept a store with a single durable copy when fewer than a majority of "
        "--replicas members can take one (it is repaired when they return)",
    )
    p.add_argument(
        "--repair-after",
        type=_seconds,
        default=600.0,
        metavar="SECONDS",
        help="a member unreachable this long counts as lost and its copies are made "
        "again elsewhere (default 600)",
    )
    p.add_argument(
        "--repair-interval",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="seconds between repair rounds, each comparing digests with the members "
        "that share responsibility for blobs (default 30)",
    )
    p.add_argument(
        "--repair-rate",
        type=_seconds,
        default=64.0,
        metavar="MB/S",
        help="cap on the bytes per second repair copies to this node (default 64)",
    )
    p.add_argument(
        "--scrub-rate",
        type=_seconds,
        default=4.0,
        metavar="MB/S",
        help="cap on the bytes per second the scrubber re-hashes (default 4)",
    )
    p.add_argument(
        "--scrub-interval",
        type=_seconds,
        default=7 * 24 * 3600.0,
        metavar="SECONDS",
        help="seconds from the start of one scrub pass to the next (default a week)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text!r}")
    return value


# fstore.node.local's defaults, written out: importing the node here would slow every command.
GC_GRACE = 6 * 3600.0
LEASE_PERIOD = 30 * 24 * 3600.0


def _add_space_options(p: argparse.ArgumentParser) -> None:
    """Leases, collection and the storage limit (docs/ARCHITECTURE.md, "Space")."""
    p.add_argument(
        "--gc-grace",
        type=_seconds,
        default=GC_GRACE,
        metavar="SECONDS",
        help="blobs of a deleted or overwritten file, or of an upload that never finished, "
        f"are collected this long after nothing holds them (default {GC_GRACE:.0f}, 6 hours)",
    )
    p.add_argument(
        "--gc-interval",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="seconds between reference and collection passes (default a quarter of --gc-grace)",
    )
    p.add_argument(
        "--lease-period",
        type=_seconds,
        default=LEASE_PERIOD,
        metavar="SECONDS",
        help="a blob no node of its namespace renewed for this long is collected "
        f"(default {LEASE_PERIOD:.0f}, 30 days)",
    )
    p.add_argument(
        "--max-storage",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="the most blob bytes this node keeps, e.g. 50G, 512M or 1000000 (default: "
        "no limit); past it, puts are refused and go to other members",
    )


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``50G``, ``512M``, ``1.5T`` or a number of bytes (binary units)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if match is None:
        raise argparse.ArgumentTypeError(f"a size is a number with K, M, G or T, not {text!r}")
    return int(float(match[1]) * _SIZE_UNITS[match[2].upper()])


def _seconds(text: str) -> float:
    value = float(text)
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return value


def node_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``Node`` keyword arguments that ``fstore-node``'s options set."""
    return {
        "replicas": args.replicas,
        "max_links": args.max_links,
        "durable": not args.no_fsync,
        "namespace_file": args.namespace_file,
        "allow_degraded": args.allow_degraded,
        "repair_after": args.repair_after,
        "repair_interval": args.repair_interval,
        "repair_rate": args.repair_rate,
        "scrub_rate": args.scrub_rate,
        "scrub_interval": args.scrub_interval,
        "gc_grace": args.gc_grace,
        "gc_interval": args.gc_interval,
        "lease_period": args.lease_period,
        "max_storage": args.max_storage,
    }


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def init_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fstore-node init",
        description="Prepare a node's data directory: its identity, and its network (a new "
        "one, or the one of --join). Prints the node id and the network's join token; "
        "run it again to print them again (on the directory of a running node too: "
        "it then only reads it).",
    )
    _add_place_options(p)
    return p


def node_main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from fstore.node.memory import tune_allocator

    tune_allocator()
    if argv[:1] == ["init"]:
        return init_main(argv[1:])
    args = node_parser().parse_args(argv)
    from fstore.net.identity import has_network
    from fstore.net.link import parse_hostport

    try:
        host, port = parse_hostport(args.addr)
        http = parse_hostport(args.http or default_http(port))
        for peer in args.peer:
            parse_hostport(peer)
        network = _join_network(args.join)
    except ValueError as e:
        print(f"fstore-node: {e}", file=sys.stderr)
        return 2
    data_dir = args.data_dir or default_data_dir(port)
    if args.peer and network is None and not has_network(data_dir):
        print(
            "fstore-node: --peer needs --join TOKEN the first time, to say which network "
            "to join (`fstore-node init` on a member prints its token); without --peer a "
            "first start makes a new network",
            file=sys.stderr,
        )
        return 2
    import uvloop

    from fstore.errors import FstoreError
    from fstore.faces.http import format_hostport
    from fstore.storage.lock import check_not_in_use

    listen = format_hostport(host, port)
    try:
        # Nothing is created before these checks: the directory, then both ports.
        check_not_in_use(data_dir)
        with _claimed([(host, port, listen), (*http, f"{format_hostport(*http)} (HTTP)")]) as ports:
            setup_logging(args.verbose)
            uvloop.run(_run_node(args, listen, http, data_dir, network, ports))
    except (ListenError, OSError, FstoreError) as e:
        print(f"fstore-node: {e}", file=sys.stderr)
        return 1
    return 0


def _join_network(token: str | None) -> NetworkKey | None:
    """The network of ``--join``; ValueError (InvalidJoinTokenError) if the token is bad."""
    from fstore.errors import InvalidJoinTokenError
    from fstore.net.trust import NetworkKey

    if token == "-":
        token = sys.stdin.readline()
    try:
        return NetworkKey.from_token(token) if token is not None else None
    except InvalidJoinTokenError as e:
        raise InvalidJoinTokenError(f"--join: {e}") from None


def init_main(argv: list[str]) -> int:
    args = init_parser().parse_args(argv)
    from fstore.errors import FstoreError
    from fstore.net.link import parse_hostport

    try:
        _, port = parse_hostport(args.addr)
        network = _join_network(args.join)
    except ValueError as e:
        print(f"fstore-node init: {e}", file=sys.stderr)
        return 2
    data_dir = args.data_dir or default_data_dir(port)
    try:
        with _ProvisionalDataDir(data_dir) as provisional:
            identity, (key, created) = _prepare(data_dir, network)
            provisional.keep()
    except (OSError, FstoreError) as e:
        print(f"fstore-node init: {e}", file=sys.stderr)
        return 1
    how = "a new network" if created else "joined" if network is not None else "its network"
    _say(
        f"data directory  {data_dir}\n"
        f"node id         {identity.node_id.hex()}\n"
        f"network         {key.network_id} ({how})\n"
        f"join token      {key.token}\n"
        "Keep the token secret: whoever has it can join the network and store on it.\n"
        f"Others join with:  fstore-node --join {key.token} --peer THIS_HOST:{port}"
    )
    return 0


def _say(text: str) -> None:
    """Print ``text`` now; a reader that has gone (``| head -1``) is no failure."""
    from fstore.faces.client import silence_stdout

    try:
        print(text, flush=True)
    except BrokenPipeError:
        silence_stdout()


def _prepare(
    data_dir: Path, network: NetworkKey | None
) -> tuple[Identity, tuple[NetworkKey, bool]]:
    """The identity and network of ``data_dir``, made if missing, under the directory's lock.

    A directory a node is running on is only read: its node made both at its
    start, so they are printed as they are (DataDirInUseError if they are not
    there yet).
    """
    from fstore.errors import DataDirInUseError
    from fstore.net.identity import IDENTITY_FILE, Identity, has_network, load_network_key
    from fstore.storage.lock import DataDirLock

    try:
        lock = DataDirLock(data_dir)
    except DataDirInUseError:
        if not ((data_dir / IDENTITY_FILE).exists() and has_network(data_dir)):
            raise
        return Identity.load_or_create(data_dir), load_network_key(data_dir, network)
    with lock:
        return Identity.load_or_create(data_dir), load_network_key(data_dir, network)


class _ProvisionalDataDir:
    """A data directory made if missing, and removed again if what the block does fails.

    :meth:`keep` ends the provisional time (the start succeeded). A directory that
    existed before is never touched, nor one that another node holds by the time
    of the failure; parent directories made with it go too, if they are empty.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._made = list(
            itertools.takewhile(lambda p: not p.exists(), [data_dir, *data_dir.parents])
        )
        self._kept = not self._made

    def keep(self) -> None:
        self._kept = True

    def __enter__(self) -> _ProvisionalDataDir:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is not None and not self._kept:
            self._remove()

    def _remove(self) -> None:
        from fstore.errors import FstoreError
        from fstore.storage.lock import DataDirLock

        try:
            with DataDirLock(self.data_dir):
                shutil.rmtree(self.data_dir, ignore_errors=True)
        except FstoreError:
            return  # another node has it now (it made it at the same moment): it is theirs
        for parent in self._made[1:]:
            try:
                parent.rmdir()
            except OSError:
                return  # not empty: something else lives there too


def _claimed(places: Iterable[tuple[str, int, str]]) -> contextlib.ExitStack:
    """Bind every ``(host, port, where)`` as its listener will, held until the stack closes.

    Finds a port in use before anything is created; :class:`ListenError` names it.
    Port 0 needs no check: any free port will do.
    """
    stack = contextlib.ExitStack()
    try:
        for host, port, where in places:
            if port != 0:
                _claim(stack, host, port, where)
    except BaseException:
        stack.close()
        raise
    return stack


def _claim(stack: contextlib.ExitStack, host: str, port: int, where: str) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, address in dict.fromkeys((info[0], info[4][:2]) for info in infos):
            stack.enter_context(socket.create_server(address, family=family))
    except OSError as e:
        raise _listen_error(e, where) from e


def _listen_error(error: OSError, where: str) -> ListenError:
    reason = "address in use" if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
    return ListenError(f"cannot listen on {where}: {reason}")


async def _listen(start: Callable[[], Awaitable[object]], where: str) -> None:
    """Run ``start``; a socket that cannot be bound becomes a :class:`ListenError`."""
    try:
        await start()
    except OSError as e:
        raise _listen_error(e, where) from e


@contextlib.contextmanager
def _published(path: Path, text: str) -> Iterator[None]:
    """``text`` in the file ``path`` while the block runs; replaced atomically, then removed."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text + "\n")
    os.replace(partial, path)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


async def _run_node(
    args: argparse.Namespace,
    listen: str,
    http: tuple[str, int],
    data_dir: Path,
    network: NetworkKey | None,
    ports: contextlib.ExitStack,
) -> None:
    """Run the node until a signal; ``ports`` holds its ports until it binds them itself."""
    from fstore.faces.http import HttpServer, format_hostport
    from fstore.node import Node

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with _ProvisionalDataDir(data_dir) as provisional:
        async with contextlib.AsyncExitStack() as running:
            node = Node(
                data_dir,
                listen=listen,
                peers=args.peer,
                network=network,
                **node_settings(args),
            )
            running.push_async_callback(node.stop)
            server = HttpServer(node, *http)
            ports.close()
            await _listen(node.start, listen)
            await _listen(server.start, f"{format_hostport(*http)} (HTTP)")
            running.push_async_callback(server.stop)
            provisional.keep()
            if node.created_network:
                _say(
                    f"made a new network {node.network.network_id}; others join it with\n"
                    f"  fstore-node --join {node.network.token} --peer {node.address}"
                )
            _say(f"fstore-node {node.node_id.hex()} listening on {node.address}")
            running.enter_context(_published(data_dir / HTTP_ADDR_FILE, server.address))
            _say(f"http on {server.address}")
            await stop.wait()
            logging.getLogger("fstore.node").info("stopping")
