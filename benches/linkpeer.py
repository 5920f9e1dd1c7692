"""The receiving end of the link benchmark, run as its own process.

``python -m benches.linkpeer MODE TOTAL [TOKEN]`` listens on 127.0.0.1 (``tcp``: plain
TCP; ``tls``: fstore's TLS 1.3 server context for the network of ``TOKEN``), prints its
port, then for every connection receives ``TOTAL`` bytes into one reused page-aligned
buffer (as ``PeerLink`` does into the decoder's) and answers one byte. It runs until killed.
"""

from __future__ import annotations

import asyncio
import mmap
import sys
import tempfile
from pathlib import Path
from typing import cast

import uvloop
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fstore.net.trust import LinkCredentials, NetworkKey

BUFFER = 1 << 20


class Receiver(asyncio.BufferedProtocol):
    def __init__(self, total: int) -> None:
        self.total = total
        self.got = 0
        self.buffer = memoryview(mmap.mmap(-1, BUFFER))
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.got += nbytes
        if self.got >= self.total and self.transport is not None:
            self.got = 0
            self.transport.write(b"k")


async def serve(mode: str, total: int, token: str | None) -> None:
    context = None
    if mode == "tls":
        assert token is not None
        with tempfile.TemporaryDirectory() as scratch:
            creds = LinkCredentials(
                Ed25519PrivateKey.generate(), NetworkKey.from_token(token), Path(scratch)
            )
        context = creds.server_context
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Receiver(total), "127.0.0.1", 0, ssl=context)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None))
