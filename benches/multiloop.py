"""Does receiving TLS links on more than one event loop help on this machine?

Not a test: a measurement run by hand (docs/PERFORMANCE.md, "Receiving on more than one core")::

    .venv/bin/python -m benches.multiloop [--mib 1024] [--rounds 3] [--senders 3]

One receiver process accepts ``--senders`` TLS links (fstore's own contexts) and reads each
into a reused page-aligned buffer, as ``PeerLink`` does, with the links spread over
``loops`` uvloop event loops, each on its own thread (1 is how a node receives today). The
senders are separate processes (like the holders of a get), each sending its share of
``--mib`` MiB in 4 MiB writes. Each round runs 1 loop, then 2, on the same file sizes; it
prints the wall-clock MB/s, and the CPU-seconds per GiB of the receiver and of all processes
(the senders' counted from their first write).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import mmap
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import uvloop
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fstore.net.trust import LinkCredentials, NetworkKey

BUFFER = 1 << 20
PIECE = 4 << 20


def credentials(token: str) -> LinkCredentials:
    with tempfile.TemporaryDirectory() as scratch:
        return LinkCredentials(
            Ed25519PrivateKey.generate(), NetworkKey.from_token(token), Path(scratch)
        )


class Receiver(asyncio.BufferedProtocol):
    def __init__(self, total: int, done: threading.Event) -> None:
        self.total = total
        self.got = 0
        self.done = done
        self.buffer = memoryview(mmap.mmap(-1, BUFFER))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.got += nbytes
        if self.got >= self.total:
            self.done.set()


def receive(loops: int, links: list[socket.socket], share: int, context: ssl.SSLContext) -> None:
    """Take the accepted sockets on ``loops`` event-loop threads; return when all have arrived."""
    finished = [threading.Event() for _ in links]

    async def take(mine: list[int]) -> None:
        loop = asyncio.get_running_loop()
        for i in mine:
            await loop.connect_accepted_socket(
                functools.partial(Receiver, share, finished[i]), links[i], ssl=context
            )
        while not all(finished[i].is_set() for i in mine):
            await asyncio.sleep(0.005)

    threads = [
        threading.Thread(target=uvloop.run, args=(take(list(range(n, len(links), loops))),))
        for n in range(loops)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def sender(port: int, share: int, token: str) -> None:
    """One sender process: connect with TLS, send ``share`` bytes, exit."""

    async def send() -> None:
        context = credentials(token).client_context
        loop = asyncio.get_running_loop()
        writable = asyncio.Event()
        writable.set()

        class Sending(asyncio.Protocol):
            def pause_writing(self) -> None:
                writable.clear()

            def resume_writing(self) -> None:
                writable.set()

        transport, _ = await loop.create_connection(
            Sending, "127.0.0.1", port, ssl=context, server_hostname=""
        )
        transport.set_write_buffer_limits(high=8 << 20)
        piece = memoryview(os.urandom(PIECE))
        before = cpu()
        for _ in range(share // PIECE):
            await writable.wait()
            transport.write(piece)
        await writable.wait()
        used = cpu() - before
        await asyncio.sleep(0.5)  # let the receiver read the rest before closing
        transport.close()
        print(used, flush=True)

    uvloop.run(send())


def cpu() -> float:
    times = os.times()
    return times.user + times.system


def one_round(loops: int, senders: int, total: int, token: str) -> tuple[float, float, float]:
    """(MB/s, receiver CPU-s per GiB, all processes' CPU-s per GiB)."""
    share = total // senders // PIECE * PIECE
    context = credentials(token).server_context
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        argv = [sys.executable, "-m", "benches.multiloop", "--send", str(port), str(share), token]
        processes = [
            subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(senders)
        ]
        links = [listener.accept()[0] for _ in range(senders)]
    for link in links:
        link.setblocking(False)
    mine = cpu()
    started = time.perf_counter()
    receive(loops, links, share, context)
    seconds = time.perf_counter() - started
    receiver = cpu() - mine
    sending = 0.0
    for process in processes:
        out, _ = process.communicate(timeout=30)
        sending += float(out)
    everything = receiver + sending
    size = share * senders
    gib = size / (1 << 30)
    return size / seconds / 1e6, receiver / gib, everything / gib


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--send":
        sender(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--senders", type=int, default=3)
    args = parser.parse_args()
    token = NetworkKey.generate().token
    print(f"{'loops':>5} {'MB/s':>7} {'receiver CPU-s/GiB':>19} {'all CPU-s/GiB':>14}")
    for _ in range(args.rounds):
        for loops in (1, 2):
            mbps, receiver, everything = one_round(loops, args.senders, args.mib << 20, token)
            print(f"{loops:>5} {mbps:>7.0f} {receiver:>19.2f} {everything:>14.2f}", flush=True)


if __name__ == "__main__":
    main()
