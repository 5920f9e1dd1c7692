"""How a link ends, on plain asyncio (the loop a program embedding a ``Node`` may run)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from netutil import MemberLink, credentials

from fstore import Node

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
