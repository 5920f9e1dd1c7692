"""What TLS costs a link: 1 GiB from one process to another over loopback, plain TCP and TLS.

The sender (this process) writes 4 MiB views of one buffer with uvloop, waiting whenever the
transport pauses it, as ``PeerLink`` does; the receiver (``benches/linkpeer.py``, its own
process) reads into a reused page-aligned buffer and answers one byte at the end. ``tls`` uses
fstore's own TLS 1.3 contexts (``fstore.net.trust.LinkCredentials``: mutual authentication with
the network's certificates); ``tcp`` is the same transfer without TLS, the obvious
alternative. The difference is what encryption and authentication of links cost on this
machine; the end-to-end figures with TLS on are in test_network_throughput.py.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from benches.measure import Bench
from fstore.net.trust import LinkCredentials, NetworkKey

TOTAL = 1 << 30
PIECE = 4 << 20
REPO = Path(__file__).resolve().parent.parent


class Sender(asyncio.Protocol):
    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()
        self.acknowledged = asyncio.get_running_loop().create_future()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        if not self.acknowledged.done():
            self.acknowledged.set_result(None)


async def send(port: int, context: ssl.SSLContext | None, piece: memoryview) -> None:
    loop = asyncio.get_running_loop()
    transport, sender = await loop.create_connection(
        Sender, "127.0.0.1", port, ssl=context, server_hostname="" if context else None
    )
    transport.set_write_buffer_limits(high=8 << 20)
    for _ in range(TOTAL // len(piece)):
        await sender.writable.wait()
        transport.write(piece)
    await sender.acknowledged
    transport.close()


@pytest.fixture(scope="module")
def network() -> NetworkKey:
    return NetworkKey.generate()


@pytest.fixture(params=["tcp", "tls"])
def receiver(request: pytest.FixtureRequest, network: NetworkKey) -> Iterator[tuple[str, int]]:
    mode = str(request.param)
    process = subprocess.Popen(
        [sys.executable, "-m", "benches.linkpeer", mode, str(TOTAL), network.token],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield mode, port
    finally:
        process.kill()
        process.wait(10)


@pytest.mark.benchmark(group="link, 1 GiB over loopback: sender and receiver processes")
def test_link(bench: Bench, receiver: tuple[str, int], network: NetworkKey) -> None:
    mode, port = receiver
    context = None
    if mode == "tls":
        with tempfile.TemporaryDirectory() as scratch:
            context = LinkCredentials(
                Ed25519PrivateKey.generate(), network, Path(scratch)
            ).client_context
    piece = memoryview(os.urandom(PIECE))
    bench(TOTAL, lambda: uvloop.run(send(port, context, piece)))
