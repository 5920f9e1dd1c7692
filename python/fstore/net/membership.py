"""The links of this node: opened on demand, at most ``max_links`` kept.

A link to a member is opened when something needs one (a gossip message, a
put, a fetch) and kept while there is room; above ``max_links`` the idle links
least recently used are closed, each once unused for ``IDLE_GRACE`` seconds.
The member list itself is gossiped (``fstore.net.gossip``); this module only
carries it. A link opened to an address must present the node id expected
there, else it is dropped: an address is a claim, the certificate is proof.

Bootstrap addresses are dialled with exponential backoff and jitter until they
answer; each one that does is handed to ``on_seed`` (gossip joins through it).
Live links are pinged; a link that does not answer is dropped. Between two
nodes at most one link survives: when both dialled each other, both keep the
link dialled by the node with the smaller id, so they agree without talking.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
import weakref
from collections.abc import Callable

from fstore.errors import FstoreError, PeerRejectedError, PeerUnavailableError, RemoteError
from fstore.net.link import (
    DEFAULT_LIMITS,
    LinkLimits,
    PeerLink,
    RequestHandler,
    accept,
    dial,
    format_peer,
    parse_hostport,
)
from fstore.net.trust import LinkCredentials

log = logging.getLogger(__name__)

BACKOFF_INITIAL = 0.2
BACKOFF_MAX = 30.0
PING_INTERVAL = 5.0
PING_TIMEOUT = 10.0
MAX_LINKS = 32
# A link over the cap is closed only once unused this long: a link just opened
# for a probe or a put is about to carry its answer.
IDLE_GRACE = 2.0
# Links opened at once only to see members' HELLOs (``reach``): a node that
# hears of many members at once (a join) does not open a link to each at once.
MAX_REACHING = 4
# Inbound connections still in the TLS handshake or waiting for HELLO: more are
# closed at once, so strangers cannot use up the node's file descriptors and
# memory. The limit per host keeps one flooding host from locking members out.
MAX_UNAUTHENTICATED = 256
MAX_UNAUTHENTICATED_PER_HOST = 16


class Membership:
    def __init__(
        self,
        credentials: LinkCredentials,
        listen_addr: str | None,
        handler: RequestHandler,
        *,
        on_seed: Callable[[bytes, str], None] = lambda node, addr: None,
        on_link: Callable[[PeerLink], None] = lambda link: None,
        on_rejected: Callable[[PeerLink, str], None] = lambda link, reason: None,
        ping_interval: float = PING_INTERVAL,
        limits: LinkLimits = DEFAULT_LIMITS,
        max_links: int = MAX_LINKS,
    ) -> None:
        self.credentials = credentials
        self.node_id = credentials.node_id
        self.limits = limits
        self.listen_addr = listen_addr
        self._handler = handler
        self._on_seed = on_seed
        self._on_link = on_link
        self._on_rejected = on_rejected
        self._ping_interval = ping_interval
        self.max_links = max_links
        self.links: dict[bytes, PeerLink] = {}
        self._dialing: dict[str, asyncio.Task[None]] = {}
        # Links being opened on demand, by the node id expected at the other end.
        self._opening: dict[bytes, asyncio.Task[PeerLink]] = {}
        self._reaching = asyncio.Semaphore(MAX_REACHING)
        self._tasks: set[asyncio.Task[None]] = set()
        # Weak: a failed dial leaves a link object that nothing else references.
        self._all_links: weakref.WeakSet[PeerLink] = weakref.WeakSet()
        # Inbound links whose HELLO is not verified yet, and the host each came from.
        self._unauthenticated: dict[PeerLink, str] = {}
        self._changed = asyncio.Condition()
        self._stopping = False

    # --- lifecycle ------------------------------------------------------------------

    def start(self, bootstrap: list[str]) -> None:
        for addr in bootstrap:
            self.learn(addr)
        self._spawn(self._keepalive())
        self._spawn(self._close_idle_forever())

    async def stop(self) -> None:
        self._stopping = True
        pending = [*self._dialing.values(), *self._opening.values(), *self._tasks]
        for task in pending:
            task.cancel()
        for link in list(self._all_links):
            link.close()
        await asyncio.gather(*pending, return_exceptions=True)
        opened = [link.closed for link in self._all_links if link.connected]
        await asyncio.gather(*opened, return_exceptions=True)

    def link_factory(self, *, outbound: bool) -> PeerLink:
        link = PeerLink(
            self.credentials,
            self.listen_addr,
            self._handler,
            outbound=outbound,
            on_ready=self._on_ready,
            on_closed=self._on_closed,
            on_rejected=self._on_rejected,
            limits=self.limits,
        )
        self._all_links.add(link)
        return link

    def accept(self, sock: socket.socket) -> None:
        """Take a connection the node's listener accepted: TLS, then HELLO."""
        peer = format_peer(sock)
        host = peer.rpartition(":")[0]
        waiting = list(self._unauthenticated.values())
        if (
            self._stopping
            or len(waiting) >= MAX_UNAUTHENTICATED
            or waiting.count(host) >= MAX_UNAUTHENTICATED_PER_HOST
        ):
            log.debug("refusing a connection from %s: too many not yet authenticated", peer)
            sock.close()
            return
        link = self.link_factory(outbound=False)
        self._unauthenticated[link] = host
        context = self.credentials.server_context
        self._spawn(accept(sock, link, context, timeout=self.limits.handshake_timeout))

    # --- queries --------------------------------------------------------------------

    def live(self) -> dict[bytes, PeerLink]:
        return {n: link for n, link in self.links.items() if not link.is_closed()}

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until ``predicate()`` holds after a change of links or members."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    # --- links on demand --------------------------------------------------------------

    async def connect(self, node: bytes, addr: str | None) -> PeerLink:
        """The link to ``node``: the live one, or one opened now to its claimed ``addr``.

        Raises PeerUnavailableError if it cannot be reached, PeerRejectedError if
        whoever answers at ``addr`` is not ``node``.
        """
        link = self.links.get(node)
        if link is not None and not link.is_closed():
            link.used_at = time.monotonic()
            return link
        if self._stopping:
            raise PeerUnavailableError("this node is stopping")
        if addr is None:
            raise PeerUnavailableError(f"no address known for {node.hex()[:12]}")
        opening = self._opening.get(node)
        if opening is None:
            opening = asyncio.create_task(self._open(node, addr))
            self._opening[node] = opening
            opening.add_done_callback(lambda task: self._opened(node, task))
        return await asyncio.shield(opening)

    def reach(self, node: bytes, addr: str | None) -> None:
        """Open a link to ``node`` in the background if there is none (its HELLO proves it)."""
        if self._stopping or node in self._opening or node in self.live():
            return
        self._spawn(self._reach(node, addr))

    async def _reach(self, node: bytes, addr: str | None) -> None:
        async with self._reaching:
            try:
                await self.connect(node, addr)
            except FstoreError as e:
                log.debug("could not reach %s yet: %s", node.hex()[:12], e)

    def _opened(self, node: bytes, task: asyncio.Task[PeerLink]) -> None:
        self._opening.pop(node, None)
        if not task.cancelled():
            task.exception()  # retrieved: every caller may have given up waiting

    async def _open(self, node: bytes, addr: str) -> PeerLink:
        try:
            host, port = parse_hostport(addr)
        except ValueError as e:
            raise PeerUnavailableError(f"{node.hex()[:12]} claims a bad address: {e}") from None
        link = await dial(
            host,
            port,
            lambda: self.link_factory(outbound=True),
            self.credentials.client_context,
            timeout=self.limits.handshake_timeout,
        )
        if link.peer_node != node:
            link.go_away("rejected", "not the node expected at this address")
            who = link.peer_node.hex()[:12] if link.peer_node else "?"
            log.warning("%s, claimed by %s, answered as %s: dropped", addr, node.hex()[:12], who)
            raise PeerRejectedError(f"{addr} answered as {who}, not {node.hex()[:12]}")
        current = self.live().get(node)  # ours, or the other's if both dialled at once
        if current is None:
            raise PeerUnavailableError(f"the link to {addr} closed at once")
        return current

    def _close_idle(self) -> None:
        """Close the least recently used idle links above ``max_links``."""
        live = self.live()
        excess = len(live) - self.max_links
        if excess <= 0:
            return
        unused_since = time.monotonic() - IDLE_GRACE
        idle = [link for link in live.values() if link.idle and link.used_at < unused_since]
        for link in sorted(idle, key=lambda link: link.used_at)[:excess]:
            log.debug("closing idle %s: over %d links", link.describe(), self.max_links)
            link.close()

    async def _close_idle_forever(self) -> None:
        while True:
            await asyncio.sleep(IDLE_GRACE / 2)
            self._close_idle()

    # --- links coming and going -------------------------------------------------------

    def _dialler(self, link: PeerLink) -> bytes:
        assert link.peer_node is not None
        return self.node_id if link.outbound else link.peer_node

    def _on_ready(self, link: PeerLink) -> None:
        self._unauthenticated.pop(link, None)
        peer = link.peer_node
        assert peer is not None
        if peer == self.node_id:
            link.go_away("duplicate", "that is me")
            return
        existing = self.links.get(peer)
        if existing is not None and existing is not link and not existing.is_closed():
            if self._dialler(existing) <= self._dialler(link):
                link.go_away("duplicate", "already linked")
                return
            existing.go_away("duplicate", "already linked")
        self.links[peer] = link
        log.debug("linked with %s", link.describe())
        self._on_link(link)
        self.notify()

    def _on_closed(self, link: PeerLink) -> None:
        self._all_links.discard(link)
        self._unauthenticated.pop(link, None)
        if link.peer_node is not None and self.links.get(link.peer_node) is link:
            del self.links[link.peer_node]
            if not self._stopping:
                log.debug("closed %s", link.describe())
            self.notify()

    def notify(self) -> None:
        """Wake every ``wait_for``: links or members changed."""

        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        self._spawn(notify())

    # --- bootstrap ---------------------------------------------------------------------

    def learn(self, addr: str) -> None:
        """Dial ``addr`` until it answers once, then hand it to ``on_seed``."""
        if self._stopping or addr in self._dialing or addr == self.listen_addr:
            return
        task = asyncio.create_task(self._dial_seed(addr))
        self._dialing[addr] = task
        task.add_done_callback(lambda _: self._dialing.pop(addr, None))

    async def _dial_seed(self, addr: str) -> None:
        host, port = parse_hostport(addr)
        backoff = BACKOFF_INITIAL
        while not self._stopping:
            try:
                link = await dial(
                    host,
                    port,
                    lambda: self.link_factory(outbound=True),
                    self.credentials.client_context,
                    timeout=self.limits.handshake_timeout,
                )
            except (PeerUnavailableError, PeerRejectedError) as e:
                delay = backoff * random.uniform(0.5, 1.5)
                level = logging.WARNING if isinstance(e, PeerRejectedError) else logging.INFO
                log.log(level, "%s; retrying in %.1fs", e, delay)  # e names the address
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            if link.peer_node is not None and link.peer_node != self.node_id:
                self._on_seed(link.peer_node, addr)
            return

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self._ping_interval)
            await asyncio.gather(
                *(self._ping(link) for link in self.live().values()), return_exceptions=True
            )

    async def _ping(self, link: PeerLink) -> None:
        try:
            await link.request("ping", timeout=PING_TIMEOUT)
        except RemoteError:
            return  # an answer, if only "busy" (a peer at its request rate), is alive
        except FstoreError as e:
            if link.is_closed():  # closed meanwhile (idle, or by the peer): nothing to drop
                return
            log.info("%s failed a ping (%s); dropping it", link.describe(), e)
            link.abort("ping failed")

    def _spawn(self, coro: object) -> None:
        assert asyncio.iscoroutine(coro)
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
