"""``fstore demo``: the original three-node story, with real sockets, in one process.

Three nodes start on loopback: the first makes a new network, the others
join it with its join token, and the third bootstraps from the first two. It
stores ``picture_1.png``, deletes its own local copy, and gets the file back
from the network, checking the BLAKE3 of what came back.
"""

from __future__ import annotations

import os
import struct
import tempfile
import time
import zlib
from pathlib import Path

import uvloop

from fstore import _native
from fstore.net.trust import NetworkKey
from fstore.node import Node


def make_png(size: int) -> bytes:
    """A valid PNG of random pixels, about ``size`` bytes (noise does not compress)."""
    width = 1024
    height = max(1, size // (width * 3))
    rows = b"".join(b"\x00" + os.urandom(width * 3) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 1))
        + chunk(b"IEND", b"")
    )


def say(text: str) -> None:
    print(text, flush=True)


async def demo(size: int, root: Path) -> bool:
    picture = make_png(size)
    (root / "picture_1.png").write_bytes(picture)
    a = Node(root / "node-a", listen="127.0.0.1:0")
    token = a.network.token
    b = Node(root / "node-b", listen="127.0.0.1:0", network=NetworkKey.from_token(token))
    await a.start()
    await b.start()
    c = Node(
        root / "node-c",
        listen="127.0.0.1:0",
        peers=[a.address, b.address],
        network=NetworkKey.from_token(token),
    )
    await c.start()
    try:
        say(f"node A made network {a.network.network_id}; B and C joined with its join token")
        for node, name in ((a, "A"), (b, "B"), (c, "C")):
            say(f"node {name}  {node.node_id.hex()[:16]}…  listening on {node.address}")
        await c.wait_for_peers(2)
        await a.wait_for_peers(2)
        await b.wait_for_peers(2)
        say("node C bootstrapped from A and B; A and B found each other through C")
        say("every link is mutual TLS 1.3, and each node proved it holds the network key")

        started = time.perf_counter()
        result = await c.store("picture_1.png", root / "picture_1.png")
        took = time.perf_counter() - started
        say(
            f"stored picture_1.png on C: {result.size:,} bytes in {result.chunks} chunks, "
            f"{result.replicas} copies each ({took * 1000:.0f} ms)"
        )
        say(f"  BLAKE3      {result.blake3.hex()}")
        say(f"  capability  {result.capability}")

        cap, manifest = await c.manifest(result.capability)
        removed = sum(
            c.blobs.delete(address)
            for address in [cap.manifest_address, *(ref.address for ref in manifest.chunks)]
        )
        say(f"deleted C's local copy ({removed} blobs); C now holds {c.blobs.count()} blobs")

        started = time.perf_counter()
        got = await c.read("picture_1.png")
        took = time.perf_counter() - started
        digest = _native.hash(got)
        matched = got == picture and digest == result.blake3
        say(f"got picture_1.png back from the network: {len(got):,} bytes ({took * 1000:.0f} ms)")
        say(f"  BLAKE3      {digest.hex()}  {'matches' if matched else 'DOES NOT MATCH'}")
        return matched
    finally:
        await c.stop()
        await b.stop()
        await a.stop()


def run_demo(size: int) -> int:
    with tempfile.TemporaryDirectory(prefix="fstore-demo-") as tmp:
        ok = uvloop.run(demo(size, Path(tmp)))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(run_demo(6 << 20))
