"""Membership: who this node is linked to, and staying linked.

Bootstrap addresses are dialled with exponential backoff and jitter until they
answer, forever; so are peers learned from other peers. Live links are pinged;
a link that does not answer is dropped and re-dialled. Between two nodes at
most one link survives: when both dialled each other, both keep the link
dialled by the node with the smaller id, so they agree without talking.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import weakref
from collections.abc import Callable

from fstore.errors import FstoreError, PeerRejectedError, PeerUnavailableError
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
        on_peer: Callable[[bytes, str | None], None] = lambda node, addr: None,
        on_rejected: Callable[[PeerLink, str], None] = lambda link, reason: None,
        ping_interval: float = PING_INTERVAL,
        limits: LinkLimits = DEFAULT_LIMITS,
    ) -> None:
        self.credentials = credentials
        self.node_id = credentials.node_id
        self.limits = limits
        self.listen_addr = listen_addr
        self._handler = handler
        self._on_peer = on_peer
        self._on_rejected = on_rejected
        self._ping_interval = ping_interval
        self.links: dict[bytes, PeerLink] = {}
        self._addr_node: dict[str, bytes] = {}
        self._dialing: dict[str, asyncio.Task[None]] = {}
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
            self.learn(None, addr)
        self._spawn(self._keepalive())

    async def stop(self) -> None:
        self._stopping = True
        for task in [*self._dialing.values(), *self._tasks]:
            task.cancel()
        for link in list(self._all_links):
            link.close()
        await asyncio.gather(*self._dialing.values(), *self._tasks, return_exceptions=True)
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

    def known_addresses(self) -> list[tuple[bytes, str]]:
        return [(n, link.peer_addr) for n, link in self.live().items() if link.peer_addr]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until ``predicate()`` holds after a membership change."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    # --- links coming and going -------------------------------------------------------

    def _dialler(self, link: PeerLink) -> bytes:
        assert link.peer_node is not None
        return self.node_id if link.outbound else link.peer_node

    def _on_ready(self, link: PeerLink) -> None:
        self._unauthenticated.pop(link, None)
        peer = link.peer_node
        assert peer is not None
        if peer == self.node_id:
            if link.peer_addr:
                self._addr_node[link.peer_addr] = peer
            link.go_away("duplicate", "that is me")
            return
        existing = self.links.get(peer)
        if existing is not None and existing is not link and not existing.is_closed():
            if self._dialler(existing) <= self._dialler(link):
                link.go_away("duplicate", "already linked")
                return
            existing.go_away("duplicate", "already linked")
        self.links[peer] = link
        if link.peer_addr:
            self._addr_node[link.peer_addr] = peer
        log.info("linked with %s", link.describe())
        self._on_peer(peer, link.peer_addr)
        self._spawn(self._exchange_peers(link))
        self._notify()

    def _on_closed(self, link: PeerLink) -> None:
        self._all_links.discard(link)
        self._unauthenticated.pop(link, None)
        if link.peer_node is not None and self.links.get(link.peer_node) is link:
            del self.links[link.peer_node]
            if not self._stopping:
                log.info("lost %s", link.describe())
            self._notify()

    def _notify(self) -> None:
        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        self._spawn(notify())

    # --- dialling -------------------------------------------------------------------

    def learn(self, node: bytes | None, addr: str) -> None:
        """Keep a link to ``addr`` from now on (a bootstrap or a learned peer)."""
        if self._stopping or addr in self._dialing or addr == self.listen_addr:
            return
        if node is not None and (node == self.node_id or node in self.live()):
            self._addr_node[addr] = node
            if node == self.node_id:
                return
        self._dialing[addr] = asyncio.create_task(self._keep_dialing(addr))

    async def _keep_dialing(self, addr: str) -> None:
        host, port = parse_hostport(addr)
        backoff = BACKOFF_INITIAL
        while not self._stopping:
            node = self._addr_node.get(addr)
            if node == self.node_id:
                return
            current = self.links.get(node) if node is not None else None
            if current is not None and not current.is_closed():
                await current.closed
                continue
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
            backoff = BACKOFF_INITIAL
            await link.closed

    async def _exchange_peers(self, link: PeerLink) -> None:
        try:
            response = await link.request("peers")
        except FstoreError as e:
            log.debug("peer exchange with %s failed: %s", link.describe(), e)
            return
        for entry in response.meta.get("peers", []):
            try:
                node, addr = bytes(entry[0]), str(entry[1])
                parse_hostport(addr)
            except (TypeError, ValueError, IndexError):
                continue
            if len(node) == 32:
                self.learn(node, addr)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self._ping_interval)
            await asyncio.gather(
                *(self._ping(link) for link in self.live().values()), return_exceptions=True
            )

    async def _ping(self, link: PeerLink) -> None:
        try:
            await link.request("ping", timeout=PING_TIMEOUT)
        except FstoreError as e:
            log.info("%s failed a ping (%s); dropping it", link.describe(), e)
            link.abort("ping failed")

    def _spawn(self, coro: object) -> None:
        assert asyncio.iscoroutine(coro)
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
