"""A real fstore node in its own process, driven by the tests through JSON lines.

    python node_agent.py --data-dir DIR [--addr HOST:PORT] [--peer HOST:PORT]...
                         [--replicas R] [--no-fsync] [--namespace-file FILE]

It runs ``fstore.node.Node`` (the same arguments as ``fstore-node``) inside
``uvloop.run``, prints one ready line ``{"ready": true, "node_id": HEX,
"address": "127.0.0.1:PORT"}``, then reads one command per line on stdin and
answers one JSON line per command on stdout. Each command runs in its own task,
so many may be in flight; every answer carries the command's ``id``::

    {"id": 1, "op": "store", "name": "f", "path": "/tmp/f"}
    {"id": 1, "ok": true, "size": 6, "blake3": "…", "capability": "fs1:…", ...}

Ops (fields besides ``id`` and ``op``):

- ``store`` ``name``, ``path``: store the file; ``size``, ``blake3``, ``capability``,
  ``chunks``, ``replicas``.
- ``get`` ``target`` (name or capability), ``out`` (a path), optional ``progress``:
  stream the file into ``out``; ``size``, ``blake3`` (of the bytes written, hashed
  here as they arrive), ``peak_rss``. With ``progress`` true, an
  ``{"id", "event": "progress", "bytes": N}`` line is sent before the first piece
  (N = 0) and after each piece.
- ``delete_local`` ``target``: remove every blob of the file from this node's own
  BlobStore (as ``fstore demo`` does); ``removed``.
- ``store_tree`` ``name``, ``path``: ``Node.store_tree``; ``capability``, ``files``,
  ``dirs``, ``symlinks``, ``size``, ``new_bytes``, ``reused_bytes``, ``replicas``,
  ``skipped`` (``[path, reason]`` pairs).
- ``get_tree`` ``target``, ``out``: ``Node.get_tree``; ``files``, ``dirs``, ``symlinks``, ``size``.
- ``list_tree`` ``target``: ``Node.list_tree``; ``entries`` (``name``, ``kind``).
- ``delete`` ``name``; ``peers`` (linked now); ``members`` (the gossiped list: ``node_id``,
  ``addr``, ``state``); ``list``; ``rss`` (``peak_rss``, ``rss``).
- ``serve_http``: start the node's HTTP API on an ephemeral loopback port (once);
  ``http`` (``HOST:PORT``).

An error is ``{"id", "ok": false, "error": "<exception type>", "message": "…"}``.
End of stdin stops the node and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

from fstore import _native
from fstore.faces.cli import node_parser, node_settings, setup_logging
from fstore.faces.http import HttpServer
from fstore.formats.directory import kind_of
from fstore.net.trust import NetworkKey
from fstore.node import Node
from fstore.node.memory import tune_allocator


def proc_status(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == field:
                return int(value.split()[0]) * 1024
    raise KeyError(field)


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


Op = Callable[["Agent", int, dict[str, Any]], Awaitable[dict[str, Any]]]


class Agent:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.tasks: set[asyncio.Task[None]] = set()
        self.http: HttpServer | None = None

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            task = asyncio.create_task(self.handle(line))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.http is not None:
            await self.http.stop()

    async def handle(self, line: bytes) -> None:
        request_id = 0
        try:
            command = json.loads(line)
            request_id = int(command["id"])
            op = OPS.get(command["op"])
            if op is None:
                raise ValueError(f"unknown op {command['op']!r}")
            result = await op(self, request_id, command)
            emit({"id": request_id, "ok": True, **result})
        except Exception as e:
            logging.getLogger("agent").info("command %d failed", request_id, exc_info=True)
            emit({"id": request_id, "ok": False, "error": type(e).__name__, "message": str(e)})

    # --- ops ----------------------------------------------------------------------------

    async def op_store(self, request_id: int, command: dict[str, Any]) -> dict[str, Any]:
        result = await self.node.store(
            str(command["name"]),
            Path(command["path"]),
            allow_degraded=command.get("allow_degraded"),
        )
        return {
            "name": result.name,
            "size": result.size,
            "blake3": result.blake3.hex(),
            "capability": result.capability,
            "chunks": result.chunks,
            "replicas": result.replicas,
        }

    async def op_get(self, request_id: int, command: dict[str, Any]) -> dict[str, Any]:
        progress = bool(command.get("progress"))
        hasher = _native.Hasher()
        size = 0

        def write(f: Any, piece: bytes) -> None:
            # One core: rayon's workers spinning between pieces would cost the
            # get being measured more than the hash itself.
            hasher.update(piece, parallel=False)
            f.write(piece)

        with open(command["out"], "wb") as f:
            if progress:
                emit({"id": request_id, "event": "progress", "bytes": 0})
            async for piece in self.node.get(str(command["target"])):
                await asyncio.to_thread(write, f, piece)
                size += len(piece)
                if progress:
                    emit({"id": request_id, "event": "progress", "bytes": size})
        return {"size": size, "blake3": hasher.hexdigest(), "peak_rss": proc_status("VmHWM")}

    async def op_delete_local(self, request_id: int, command: dict[str, Any]) -> dict[str, Any]:
        cap, manifest = await self.node.manifest(str(command["target"]))
        addresses = [cap.manifest_address, *(ref.address for ref in manifest.chunks)]
        removed = sum(self.node.blobs.delete(address) for address in addresses)
        return {"removed": removed, "blobs": len(addresses)}

    async def op_store_tree(self, request_id: int, command: dict[str, Any]) -> dict[str, Any]:
        result = await self.node.store_tree(str(command["name"]), Path(command["path"]))
        return {
            "capability": result.capability,
            "files": result.files,
            "dirs": result.dirs,
            "symlinks": result.symlinks,
            "size": result.size,
            "new_bytes": result.new_bytes,
            "reused_bytes": result.reused_bytes,
            "replicas": result.replicas,
            "skipped": [[s.path, s.reason] for s in result.skipped],
        }

    async def op_get_tree(self, request_id: int, command: dict[str, Any]) -> dict[str, Any]:
        result = await self.node.get_tree(str(command["target"]), Path(command["out"]))
        return {
            "files": result.files,
            "dirs": result.dirs,
            "symlinks": result.symlinks,
            "size": result.size,
        }

    async def op_list_tree(self, request_id: int, command: dict[str, Any]) -> dict[str, Any]:
        entries = await self.node.list_tree(str(command["target"]))
        return {"entries": [{"name": e.name, "kind": kind_of(e)} for e in entries]}

    async def op_delete(self, request_id: int, command: dict[str, Any]) -> dict[str, Any]:
        await self.node.delete(str(command["name"]))
        return {}

    async def op_pin(self, request_id: int, command: dict[str, Any]) -> dict[str, Any]:
        entry = await self.node.pin(str(command["capability"]))
        return {"size": entry.size}

    async def op_unpin(self, request_id: int, command: dict[str, Any]) -> dict[str, Any]:
        await self.node.unpin(str(command["capability"]))
        return {}

    async def op_peers(self, request_id: int, command: dict[str, Any]) -> dict[str, Any]:
        return {
            "peers": [
                {"node_id": p.node_id.hex(), "addr": p.addr, "outbound": p.outbound}
                for p in self.node.peers()
            ]
        }

    async def op_members(self, request_id: int, command: dict[str, Any]) -> dict[str, Any]:
        return {
            "members": [
                {"node_id": m.node_id.hex(), "addr": m.addr, "state": m.state}
                for m in self.node.member_list()
            ]
        }

    async def op_list(self, request_id: int, command: dict[str, Any]) -> dict[str, Any]:
        return {
            "files": [
                {
                    "name": e.name,
                    "size": e.size,
                    "blake3": e.blake3.hex(),
                    "capability": e.capability,
                }
                for e in await self.node.list()
            ]
        }

    async def op_metric(self, request_id: int, command: dict[str, Any]) -> dict[str, Any]:
        """The value of one sample of the node's metrics (0 when it has none yet)."""
        value = self.node.metrics.registry.get_sample_value(str(command["name"]))
        return {"value": value or 0.0}

    async def op_serve_http(self, request_id: int, command: dict[str, Any]) -> dict[str, Any]:
        if self.http is None:
            self.http = HttpServer(self.node)
            await self.http.start()
        return {"http": self.http.address}

    async def op_rss(self, request_id: int, command: dict[str, Any]) -> dict[str, Any]:
        return {"peak_rss": proc_status("VmHWM"), "rss": proc_status("VmRSS")}


OPS: dict[str, Op] = {
    "store": Agent.op_store,
    "get": Agent.op_get,
    "delete_local": Agent.op_delete_local,
    "store_tree": Agent.op_store_tree,
    "get_tree": Agent.op_get_tree,
    "list_tree": Agent.op_list_tree,
    "delete": Agent.op_delete,
    "pin": Agent.op_pin,
    "unpin": Agent.op_unpin,
    "peers": Agent.op_peers,
    "members": Agent.op_members,
    "list": Agent.op_list,
    "rss": Agent.op_rss,
    "metric": Agent.op_metric,
    "serve_http": Agent.op_serve_http,
}


async def run(args: argparse.Namespace) -> None:
    node = Node(
        args.data_dir,
        listen=args.addr,
        peers=args.peer,
        network=NetworkKey.from_token(args.join) if args.join else None,
        **node_settings(args),
    )
    async with node:
        emit({"ready": True, "node_id": node.node_id.hex(), "address": node.address})
        await Agent(node).serve()


def main() -> int:
    # fstore-node's allocator settings and options, so an agent runs exactly like a node.
    tune_allocator()
    p = node_parser()
    p.set_defaults(addr="127.0.0.1:0")
    args = p.parse_args()
    setup_logging(verbose=False)
    uvloop.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
