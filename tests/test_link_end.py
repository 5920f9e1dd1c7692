"""How a link ends, on plain asyncio (the loop a program embedding a ``Node`` may run)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from netutil import MemberLink, credentials

from fstore import Node
from fstore.net import wire
from fstore.net.trust import NetworkKey

DEADLINE = 10.0


def test_a_link_closed_twice_before_hello_still_ends(tmp_path: Path) -> None:
    """asyncio's TLS transport forgets its connection when closed a second time; the
    link's end must not ask it for the peer's address then. It did: the question raised
    inside ``connection_lost``, the link never counted as closed, and a node's stop
    waited for it for ever."""

    async def scenario() -> None:
        node = Node(tmp_path / "n", listen="127.0.0.1:0")
        await node.start()
        try:
            member = await asyncio.to_thread(MemberLink, node.address, credentials(node.network))
            try:
                async with asyncio.timeout(DEADLINE):
                    while not (links := [k for k in list(node.members._all_links) if k.connected]):
                        await asyncio.sleep(0.01)
                link = links[0]
                link.close()
                link.close()
                async with asyncio.timeout(DEADLINE):
                    await link.closed
                assert link.describe().startswith("peer ?@127.0.0.1:")
            finally:
                member.sock.close()
        finally:
            async with asyncio.timeout(DEADLINE):
                await node.stop()

    asyncio.run(scenario())


def test_a_busy_answer_to_a_keepalive_ping_keeps_the_link(tmp_path: Path) -> None:
    """A peer at its request rate answers a node's keepalive pings "busy". That answer
    shows the peer alive: the node must keep the link. It dropped it at the first one,
    failing every request then in flight on it (seen as "connection to peer lost"
    during a burst of small files)."""
    busy_pings = 5

    def member_answering_busy(address: str, network: NetworkKey) -> bool:
        """Answer every request "busy"; then whether the node still answers a ping."""
        member = MemberLink(address, credentials(network))
        try:
            member.sock.sendall(member.hello())
            deadline = time.monotonic() + DEADLINE
            pinged = 0
            while pinged < busy_pings:
                event = member.next_event(deadline)
                if isinstance(event, wire.RequestReceived):
                    pinged += event.op == "ping"
                    frames = member.conn.respond_error(event.stream, "busy", "request rate limit")
                    member.sock.sendall(b"".join(bytes(f) for f in frames))
            try:
                return member.request("ping", {}).ok
            except (ConnectionError, OSError):
                return False
        finally:
            member.close()

    async def scenario() -> None:
        node = Node(tmp_path / "n", listen="127.0.0.1:0", ping_interval=0.05)
        await node.start()
        try:
            alive = await asyncio.to_thread(member_answering_busy, node.address, node.network)
            assert alive, "the node dropped a link whose peer answered its pings"
        finally:
            async with asyncio.timeout(DEADLINE):
                await node.stop()

    asyncio.run(scenario())
