"""What the kernel says of a connection's outgoing bytes, and how a link reads it.

A probe's PING may wait seconds behind a blob on a slow path; the member then
shows itself alive by taking in what lies ahead of the PING
(``GossipDriver._watch``). These tests check the kernel's counters against a
count of our own, and ``PeerLink.taking_in`` on a real TLS link to a member
that reads only when told to.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop
from netutil import MemberLink, MiB, credentials, wait_until

from fstore import Node
from fstore.net import tcp_queue, wire
from fstore.net.link import PeerLink

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the counters are Linux's"
)

DEADLINE = 10.0
SMALL_WINDOW = 64 * 1024


def test_acked_and_queued_bytes_add_up_to_what_was_sent() -> None:
    """Acknowledged plus queued is what we sent (the SYN counts one acknowledged
    byte), whether the reader has read nothing, some, or everything."""
    listener = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(listener.getsockname())
    reader, _ = listener.accept()
    try:
        sender.setblocking(False)
        sent = 0
        chunk = b"x" * 65536
        while True:  # fill both sides' buffers: the reader reads nothing yet
            try:
                sent += sender.send(chunk)
            except BlockingIOError:
                break

        def balance() -> int:
            acked, queued = tcp_queue.acked_bytes(sender), tcp_queue.queued_bytes(sender)
            assert acked is not None and queued is not None
            return acked - 1 + queued

        before = tcp_queue.acked_bytes(sender)
        queued = tcp_queue.queued_bytes(sender)
        assert before is not None and queued is not None
        assert queued > 0, "a reader that reads nothing leaves our bytes queued"
        assert balance() == sent
        received = 0
        while received < sent // 2:
            received += len(reader.recv(1 << 20))
        wait_until(lambda: (tcp_queue.acked_bytes(sender) or 0) > before, DEADLINE, "an ACK")
        assert balance() == sent
        while received < sent:
            received += len(reader.recv(1 << 20))
        wait_until(lambda: tcp_queue.queued_bytes(sender) == 0, DEADLINE, "all acknowledged")
        assert tcp_queue.acked_bytes(sender) == sent + 1
    finally:
        for sock in (sender, reader, listener):
            sock.close()


def test_no_socket_no_figures() -> None:
    assert tcp_queue.acked_bytes(None) is None
    assert tcp_queue.queued_bytes(None) is None


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_a_link_credits_a_member_only_while_it_takes_in_the_backlog(
    tmp_path: Path, run: Callable[..., None]
) -> None:
    """A member with megabytes queued for it is taking them in while it reads, and gets
    no credit once it has them all: then only an answer would show it alive."""
    requests = 4
    go_on = threading.Semaphore(0)  # released: the member reads on, to its next stop
    read_some = threading.Event()

    def run_member(address: str, node: Node) -> None:
        """HELLO, then read only when told: first half a megabyte, then every request;
        then close when told."""
        member = MemberLink(address, credentials(node.network), rcvbuf=SMALL_WINDOW)
        try:
            member.sock.sendall(member.hello())
            member.sock.settimeout(DEADLINE)
            events: list[wire.Event] = []
            assert go_on.acquire(timeout=DEADLINE)
            received = 0
            while received < MiB // 2:
                data = member.sock.recv(65536)
                received += len(data)
                events += member.conn.feed(data)
            read_some.set()
            assert go_on.acquire(timeout=DEADLINE)
            while sum(isinstance(e, wire.RequestReceived) for e in events) < requests:
                events += member.conn.feed(member.sock.recv(1 << 20))
            assert go_on.acquire(timeout=DEADLINE)  # kept open until the node has looked
        finally:
            member.close()

    async def until(condition: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(DEADLINE):
                while not condition():
                    await asyncio.sleep(0.01)
        except TimeoutError:
            raise AssertionError(f"no {what} within {DEADLINE}s") from None

    async def scenario() -> None:
        node = Node(tmp_path / "n", listen="127.0.0.1:0")
        await node.start()
        member = asyncio.create_task(asyncio.to_thread(run_member, node.address, node))
        sends: list[asyncio.Task[wire.ResponseReceived]] = []
        try:

            def the_link() -> PeerLink | None:
                ready = [k for k in list(node.members._all_links) if k.peer_node is not None]
                return ready[0] if ready else None

            await until(lambda: the_link() is not None, "HELLO from the member")
            link = the_link()
            assert link is not None
            idle = link.send_mark()
            assert idle is not None, "the TLS transport shows its socket"
            assert not link.taking_in(idle), "nothing queued: nothing to take in"
            body = b"\0" * MiB
            sends = [asyncio.create_task(link.request("bulk", {}, body)) for _ in range(requests)]
            await until(
                lambda: (m := link.send_mark()) is not None and m.end - m.acked > 2 * MiB,
                "megabytes queued for the member",
            )
            mark = link.send_mark()
            assert mark is not None
            go_on.release()
            await until(lambda: link.taking_in(mark), "sign of the member taking in the backlog")
            go_on.release()
            await until(
                lambda: (m := link.send_mark()) is not None and m.acked >= mark.end,
                "end of the backlog acknowledged",
            )
            assert read_some.is_set()
            assert not link.taking_in(mark), "a member that has it all must answer"
            go_on.release()
            await member
        finally:
            for send in sends:
                send.cancel()
            await asyncio.gather(*sends, member, return_exceptions=True)
            async with asyncio.timeout(DEADLINE):
                await node.stop()

    run(scenario())
