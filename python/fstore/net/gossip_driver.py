"""Gossip in a real node: the asyncio host of the sans-IO core ``fstore.net.gossip``.

``GossipDriver`` calls the core's ``tick`` when its next deadline comes, feeds
it the ``gossip`` requests peers send (docs/PROTOCOL.md, section 11), and
carries each message the core returns as a ``gossip`` request on the link to
its recipient, opened on demand (``Membership.connect``). Delivery is best
effort, as the core expects: a message that cannot be delivered is dropped.
Probes share each connection with bulk data, so anything a probed member sends
after a PING, or its taking in what was queued ahead of the PING, counts as its
ACK (``_watch``).

Who sent a message is the node id the link's handshake proved, never a field
of the message; a record's address is only a claim, checked by the certificate
of whoever answers when a link is opened to it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from fstore.errors import FstoreError
from fstore.net.gossip import (
    AddressChanged,
    Event,
    Gossip,
    GossipConfig,
    MemberDead,
    MemberJoined,
    MemberLeft,
    MemberSuspected,
    Send,
)
from fstore.net.gossip_messages import Ack, Member, Ping, decode
from fstore.net.link import PeerLink
from fstore.net.membership import Membership
from fstore.net.waiting import woken_or_after

log = logging.getLogger(__name__)

# A gossip request not answered in this long costs the link (PeerLink.request).
GOSSIP_REQUEST_TIMEOUT = 30.0
MAX_WAIT = 1.0  # the timer loop wakes at least this often, whatever the core says
# The fraction of the probe timeout after which bytes heard count as a probe's ACK.
ANSWER_WAIT = 0.8


def gossip_config_from_env(environ: Mapping[str, str] = os.environ) -> GossipConfig:
    """The default timing, each field overridden by ``FSTORE_GOSSIP_<FIELD>`` if set.

    E.g. ``FSTORE_GOSSIP_PROBE_INTERVAL=0.5`` (tests use this to converge faster).
    """
    overrides: dict[str, Any] = {}
    for field in dataclasses.fields(GossipConfig):
        name = f"FSTORE_GOSSIP_{field.name.upper()}"
        text = environ.get(name)
        if text is None:
            continue
        try:
            overrides[field.name] = int(text) if field.type == "int" else float(text)
        except ValueError:
            raise ValueError(f"{name}={text!r} is not a number") from None
    return GossipConfig(**overrides)


class GossipDriver:
    def __init__(
        self,
        gossip: Gossip,
        links: Membership,
        *,
        on_member: Callable[[Member], None] = lambda member: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gossip = gossip
        self._links = links
        self._on_member = on_member
        self._clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        tasks = [*self._sending, *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- the host's side of the core ---------------------------------------------------

    def join(self, node: bytes, addr: str) -> None:
        """Sync with ``node``, a seed just linked, until a sync completes."""
        self._send_all(self.gossip.join([(node, addr)], self._clock()))

    def receive(self, sender: bytes, value: object) -> None:
        """A ``gossip`` request's message from ``sender`` (proven by its link); ProtocolError."""
        message = decode(value)
        self._send_all(self.gossip.receive(sender, message, self._clock()))

    def address_of(self, node: bytes) -> str | None:
        member = self.gossip.member(node)
        return member.addr if member is not None else None

    async def _run(self) -> None:
        while True:
            delay = min(MAX_WAIT, max(0.0, self.gossip.next_deadline() - self._clock()))
            self._wake.clear()
            if delay > 0:
                await woken_or_after(self._wake, delay)
            self._send_all(self.gossip.tick(self._clock()))

    def _send_all(self, sends: list[Send]) -> None:
        for send in sends:
            task = asyncio.create_task(self._deliver(send))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        self._handle(self.gossip.drain_events())
        if math.isfinite(self.gossip.next_deadline()):
            self._wake.set()  # the deadline may be sooner now

    async def _deliver(self, send: Send) -> None:
        try:
            link = await self._links.connect(send.to, send.addr)
            if isinstance(send.message, Ping):
                self._watch(link, send.to, send.message.seq)
            await link.request(
                "gossip", {"m": send.message.to_wire()}, timeout=GOSSIP_REQUEST_TIMEOUT
            )
        except FstoreError as e:
            log.debug("gossip to %s not delivered: %s", send.to.hex()[:12], e)

    def _watch(self, link: PeerLink, node: bytes, seq: int) -> None:
        """Count signs of life from ``node`` after PING ``seq`` as its ACK, just before the
        probe times out. A blob on the same connection may hold up the PING or the ACK
        for seconds on a slow path, so either sign will do:

        - bytes from ``node``: a member that is sending is alive (a dead one's
          connection ends once drained);
        - ``node`` taking in the bytes queued ahead of the PING: its TCP acknowledges
          only what fits its receive buffer, which stays full unless its process
          reads. Once it has taken in all of them, only an answer counts.
        """
        sent_at = time.monotonic()
        ahead = link.send_mark()

        def check() -> None:
            if link.is_closed():
                return
            if link.heard_at > sent_at or link.taking_in(ahead):
                self._send_all(self.gossip.receive(node, Ack(seq, ()), self._clock()))

        delay = self.gossip.config.probe_timeout * ANSWER_WAIT
        asyncio.get_running_loop().call_later(delay, check)

    def _handle(self, events: list[Event]) -> None:
        if not events:
            return
        for event in events:
            member = event.member
            who = f"{member.node.hex()[:12]}@{member.addr}"
            if isinstance(event, MemberJoined | AddressChanged):
                self._on_member(member)
                log.debug("member %s is alive", who)
            elif isinstance(event, MemberSuspected):
                log.info("member %s is suspected of failure", who)
            elif isinstance(event, MemberDead):
                log.warning("member %s is dead", who)
            elif isinstance(event, MemberLeft):
                log.info("member %s left", who)
        self._links.notify()


def random_source() -> random.Random:
    """The core's randomness: seeded from the OS, so no two nodes probe in step."""
    return random.Random(os.urandom(16))
