"""The asyncio adapter: one TLS connection to a peer, driving ``wire.Connection``.

Every link is mutual TLS 1.3 with the node's network credentials
(``fstore.net.trust``): ``dial`` connects with TLS, and ``accept`` completes TLS on
a socket the node's ``Listener`` accepted, logging every handshake that fails
with the address it came from. Then both sides send HELLO. The peer's HELLO
must name the node its certificate stands for and carry a valid proof of the
network key; until it does, nothing the peer sends is served, and a peer that
fails is logged and dropped.

``PeerLink`` is an ``asyncio.BufferedProtocol``: TLS decrypts straight into
the buffers the sans-IO decoder lends (a blob body lands in its final buffer),
and every write waits for the transport to drain below its high-water mark,
so a slow peer costs bounded memory. The link knows nothing about blobs or
names: incoming requests go to a ``RequestHandler``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol, cast

from fstore.errors import (
    FstoreError,
    PeerRejectedError,
    PeerSlowError,
    PeerUnavailableError,
    ProtocolError,
    RemoteError,
)
from fstore.net import tcp_queue, wire
from fstore.net.rtt import ResponseTimes
from fstore.net.trust import LinkCredentials

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0  # for the TLS handshake, and again for the peer's HELLO after it
# How long closing a link waits for the peer to acknowledge the end of TLS.
TLS_SHUTDOWN_TIMEOUT = 5.0
LISTEN_BACKLOG = 128
ACCEPT_RETRY_DELAY = 0.1
REQUEST_TIMEOUT = 60.0
# Requests from one peer served at once; more are answered "busy" (the codec's
# hard limit, wire.MAX_INFLIGHT, is above this so a polite peer never hits it).
MAX_SERVING = 32
WRITE_HIGH_WATER = 8 * 1024 * 1024
# Defences against hostile peers (docs/PROTOCOL.md, section 10). A frame whose
# first byte has arrived must be complete within FRAME_TIMEOUT (a slowloris
# trickle or a peer that stops mid-frame is dropped; an idle link between frames
# is not, it is kept alive by pings). Our writes to a peer may stay paused (the
# peer reads nothing) for at most WRITE_STALL_TIMEOUT; both match REQUEST_TIMEOUT,
# the time in which a peer must deliver or take a response anyway.
FRAME_TIMEOUT = 60.0
WRITE_STALL_TIMEOUT = 60.0
# Responses are written one at a time once the transport is below its high-water
# mark, so at most one frame goes above it; a peer whose unsent bytes still reach
# MAX_UNSENT (small error responses to a flood) is dropped.
MAX_UNSENT = 2 * WRITE_HIGH_WATER
# A token bucket per link: requests beyond it are answered "busy". A storer sends
# each holder two requests per small file (its blob, its name record): the rate
# leaves room for about 2,000 small files a second between two members.
REQUEST_RATE = 4000.0  # requests per second, sustained
REQUEST_BURST = 8000


@dataclass(frozen=True)
class LinkLimits:
    """The per-link timeouts and rate; the module constants unless overridden."""

    handshake_timeout: float = HANDSHAKE_TIMEOUT
    frame_timeout: float = FRAME_TIMEOUT
    write_stall_timeout: float = WRITE_STALL_TIMEOUT
    request_rate: float = REQUEST_RATE
    request_burst: float = REQUEST_BURST

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{field.name} must be a positive number, not {value!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> LinkLimits:
        """The defaults, each overridden by ``FSTORE_<FIELD NAME IN CAPITALS>`` if set.

        E.g. ``FSTORE_FRAME_TIMEOUT=1`` (tests use this to run in seconds).
        """
        overrides: dict[str, float] = {}
        for field in fields(cls):
            text = environ.get(f"FSTORE_{field.name.upper()}")
            if text is not None:
                try:
                    overrides[field.name] = float(text)
                except ValueError:
                    raise ValueError(
                        f"FSTORE_{field.name.upper()}={text!r} is not a number"
                    ) from None
        return cls(**overrides)


DEFAULT_LIMITS = LinkLimits()


@dataclass(frozen=True)
class SendMark:
    """How far the peer's TCP had acknowledged our bytes, and where what we had queued ended."""

    acked: int
    end: int


@dataclass(frozen=True)
class _ErrorReply:
    code: str
    msg: str


@dataclass(frozen=True)
class Reply:
    """What a handler answers: response meta fields and an optional raw body."""

    meta: dict[str, Any]
    body: bytes | memoryview = b""


class RequestHandler(Protocol):
    async def __call__(
        self, link: PeerLink, op: str, meta: dict[str, Any], body: memoryview
    ) -> Reply: ...


class PeerLink(asyncio.BufferedProtocol):
    def __init__(
        self,
        credentials: LinkCredentials,
        local_addr: str | None,
        handler: RequestHandler,
        *,
        outbound: bool,
        on_ready: Callable[[PeerLink], None] = lambda link: None,
        on_closed: Callable[[PeerLink], None] = lambda link: None,
        on_rejected: Callable[[PeerLink, str], None] = lambda link, reason: None,
        limits: LinkLimits = DEFAULT_LIMITS,
    ) -> None:
        self._credentials = credentials
        self._conn = wire.Connection(credentials.node_id, local_addr)
        self.limits = limits
        self._handler = handler
        self._on_ready = on_ready
        self._on_closed = on_closed
        self._on_rejected = on_rejected
        self.outbound = outbound
        self.peer_node: bytes | None = None  # set once the peer's HELLO is verified
        self.peer_addr: str | None = None
        self._transport: asyncio.Transport | None = None  # TLS, handshake done
        self._socket: tcp_queue.SocketLike | None = None  # the TCP socket under TLS
        # Asked once the connection is made: asyncio's TLS transport cannot answer once
        # closed twice, and a link must still describe itself as it ends.
        self._peer_socket_name = "?"
        self._peer_certificate = b""
        self._pending: dict[int, asyncio.Future[wire.ResponseReceived]] = {}
        self._serving: set[asyncio.Task[None]] = set()
        self._writable = asyncio.Event()
        self._writable.set()
        # Held while waiting to write a request or response: one writer at a
        # time, so a resumed transport takes one frame, not every waiter's.
        self._write_lock = asyncio.Lock()
        self._tokens = float(limits.request_burst)
        self._tokens_at = time.monotonic()
        # No more unanswered requests than an fstore peer serves at once: with
        # MAX_INFLIGHT (64) the peer answers the 33rd and later "busy", and a
        # store or get with many blobs in flight fails for its own concurrency.
        self._request_slots = asyncio.Semaphore(MAX_SERVING)
        self.response_times = ResponseTimes()
        # When a request was last seen overdue, and when the peer last sent anything:
        # a peer is responsive unless it has been silent since a request went overdue.
        self._overdue_at: float | None = None
        self.heard_at = time.monotonic()
        # When a request other than a ping last went either way: the link pool
        # closes the least recently used idle links first.
        self.used_at = time.monotonic()
        self._probe: asyncio.Future[None] | None = None
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._frame_timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None

    # --- asyncio.BufferedProtocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """TLS is up (the handshake verified the peer's certificate): say HELLO."""
        # uvloop's SSL transport implements asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        name = transport.get_extra_info("peername")
        if isinstance(name, tuple):
            self._peer_socket_name = f"{name[0]}:{name[1]}"
        elif name:
            self._peer_socket_name = str(name)
        self._transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self._socket = transport.get_extra_info("socket")
        self._handshake_timer = asyncio.get_running_loop().call_later(
            self.limits.handshake_timeout, self._handshake_timed_out
        )
        ssl_object = transport.get_extra_info("ssl_object")
        certificate = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if not certificate:  # CERT_REQUIRED makes this unreachable; never serve without one
            self._reject("no certificate")
            self.abort("no certificate")
            return
        self._peer_certificate = certificate
        proof = self._credentials.proof(outbound=self.outbound, peer_certificate=certificate)
        self._send(self._conn.hello(proof))

    def handshake_failed(self, peer: str, error: BaseException) -> None:
        """The TLS handshake with ``peer`` (HOST:PORT) failed: log it, and end the link."""
        self.peer_addr = self.peer_addr or peer
        self._reject(f"TLS handshake failed: {tls_failure(error)}")
        self._finish(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._conn.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.heard_at = time.monotonic()
        try:
            events = self._conn.buffer_updated(nbytes)
        except ProtocolError as e:
            log.warning("dropping %s: %s", self.describe(), e)
            self.go_away("protocol_error", str(e))
            return
        for event in events:
            if self.is_closed():  # e.g. after a rejected HELLO: nothing more is served
                break
            self._dispatch(event)
        self._watch_frame(completed=bool(events))

    def _watch_frame(self, *, completed: bool) -> None:
        """Time the frame being received: it must be complete within frame_timeout."""
        if not self._conn.mid_frame:
            self._cancel_timer(self._frame_timer)
            self._frame_timer = None
        elif completed or self._frame_timer is None:
            # A frame was completed by these bytes, so the one in progress started here.
            self._cancel_timer(self._frame_timer)
            self._frame_timer = asyncio.get_running_loop().call_later(
                self.limits.frame_timeout, self._timed_out, "frame not complete", "frame_timeout"
            )

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self._writable.clear()
        if self._stall_timer is None:
            self._stall_timer = asyncio.get_running_loop().call_later(
                self.limits.write_stall_timeout,
                self._timed_out,
                "not reading what we send",
                "write_stall_timeout",
            )

    def resume_writing(self) -> None:
        self._writable.set()
        self._cancel_timer(self._stall_timer)
        self._stall_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(exc)

    def _finish(self, exc: Exception | None) -> None:
        """Everything that ends with the connection; once, however it ended."""
        if self.closed.done():
            return
        for timer in (self._handshake_timer, self._frame_timer, self._stall_timer):
            self._cancel_timer(timer)
        why = f": {connection_failure(exc)}" if exc is not None else ""
        error = PeerUnavailableError(f"connection to {self.describe()} lost{why}")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        for task in self._serving:
            task.cancel()
        self._writable.set()
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # mark retrieved: the dialer may have given up
        if not self.closed.done():
            self.closed.set_result(None)
        self._on_closed(self)

    # --- events -------------------------------------------------------------------

    def _dispatch(self, event: wire.Event) -> None:
        if isinstance(event, wire.HelloReceived):
            if self._handshake_timer is not None:
                self._handshake_timer.cancel()
            try:
                self._credentials.check_peer(
                    outbound=self.outbound,
                    peer_certificate=self._peer_certificate,
                    claimed_node=event.node,
                    proof=event.proof,
                )
            except PeerRejectedError as e:
                self._reject(str(e))
                self.go_away("rejected", str(e))
                return
            self.peer_node, self.peer_addr = event.node, event.addr
            if not self.ready.done():
                self.ready.set_result(None)
            self._on_ready(self)
        elif isinstance(event, wire.RequestReceived):
            if event.op != "ping":
                self.used_at = time.monotonic()
            if not self._take_token():
                self._send(self._conn.respond_error(event.stream, "busy", "request rate limit"))
                return
            if len(self._serving) >= MAX_SERVING:
                self._send(self._conn.respond_error(event.stream, "busy", "too many requests"))
                return
            task = asyncio.create_task(self._serve(event))
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)
        elif isinstance(event, wire.ResponseReceived):
            future = self._pending.pop(event.stream, None)
            if future is not None and not future.done():
                future.set_result(event)
        elif isinstance(event, wire.GoAway):
            log.info("%s is going away: %s %s", self.describe(), event.code, event.msg)
            self.close()

    async def _serve(self, event: wire.RequestReceived) -> None:
        reply: Reply | _ErrorReply
        try:
            reply = await self._handler(self, event.op, event.meta, event.body)
        except RemoteError as e:
            code = e.code if e.code in wire.ERROR_CODES else "internal"
            reply = _ErrorReply(code, str(e)[:1000])
        except Exception as e:
            log.exception("handler for %r from %s failed", event.op, self.describe())
            reply = _ErrorReply("internal", type(e).__name__)
        # The link may have said GOAWAY or closed while the handler ran: then the
        # answer has nowhere to go, and is dropped.
        if not self.is_closed() and self._conn.may_send:
            if isinstance(reply, _ErrorReply):
                frames = self._conn.respond_error(event.stream, reply.code, reply.msg)
            else:
                frames = self._conn.respond(event.stream, reply.meta, reply.body)
            async with self._write_lock:
                await self._writable.wait()
                self._send(frames)
        # Free the serving slot now: the peer may get the response and send its
        # next request before this task's done callback runs, and would be told
        # "busy" though it never had more than MAX_SERVING requests unanswered.
        task = asyncio.current_task()
        if task is not None:
            self._serving.discard(task)

    # --- requests -----------------------------------------------------------------

    async def request(
        self,
        op: str,
        meta: dict[str, Any] | None = None,
        body: bytes | memoryview = b"",
        *,
        timeout: float = REQUEST_TIMEOUT,
        deadline: float | None = None,
    ) -> wire.ResponseReceived:
        """Send a request and wait for its response; an error response raises RemoteError.

        After ``timeout`` seconds the link is dropped. A shorter ``deadline``
        gives up on this request only (:class:`PeerSlowError`) and marks the
        peer overdue; a late answer is discarded, and the link stays.
        """
        if op != "ping":
            self.used_at = time.monotonic()
        async with self._request_slots:
            if self.is_closed():
                raise PeerUnavailableError(f"{self.describe()} is not connected")
            async with self._write_lock:
                await self._writable.wait()
                if self.is_closed():
                    raise PeerUnavailableError(f"{self.describe()} is not connected")
                stream, frames = self._conn.request(op, meta or {}, body)
                loop = asyncio.get_running_loop()
                future: asyncio.Future[wire.ResponseReceived] = loop.create_future()
                self._pending[stream] = future
                self._send(frames)
                sent_at = time.monotonic()
            try:
                if deadline is not None and deadline < timeout:
                    response = await self._answer_by(future, deadline, op)
                else:
                    async with asyncio.timeout(timeout):
                        response = await future
            except TimeoutError:
                # A peer that does not answer in time is not trusted with the
                # stream any more: closing frees its state on both sides.
                self.abort(f"{op} timed out after {timeout:g}s")
                raise PeerUnavailableError(
                    f"{self.describe()} did not answer {op} in time"
                ) from None
            finally:
                self._pending.pop(stream, None)  # abandoned, cancelled or timed out
            self.response_times.sample(time.monotonic() - sent_at)
        if not response.ok:
            raise RemoteError(str(response.meta.get("code")), str(response.meta.get("msg")))
        return response

    async def _answer_by(
        self, future: asyncio.Future[wire.ResponseReceived], deadline: float, op: str
    ) -> wire.ResponseReceived:
        try:
            async with asyncio.timeout(deadline):
                return await asyncio.shield(future)
        except TimeoutError:
            self.mark_overdue()
            raise PeerSlowError(
                f"{self.describe()} did not answer {op} within {deadline:.2f}s"
            ) from None

    def expected_time(self, body_bytes: int = 0) -> float:
        """Seconds within which this peer should answer a request moving ``body_bytes``."""
        return self.response_times.expected(body_bytes)

    def probe(self) -> None:
        """Ping the peer in the background (one ping at a time); its answer is all that counts."""
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._ping_quietly())

    async def _ping_quietly(self) -> None:
        with contextlib.suppress(FstoreError):
            await self.request("ping", deadline=self.expected_time())

    def send_mark(self) -> SendMark | None:
        """Where our bytes to the peer stand now (None where the kernel does not say)."""
        acked = tcp_queue.acked_bytes(self._socket)
        queued = tcp_queue.queued_bytes(self._socket)
        if acked is None or queued is None or self.is_closed():
            return None
        assert self._transport is not None
        return SendMark(acked, acked + queued + self._transport.get_write_buffer_size())

    def taking_in(self, mark: SendMark | None) -> bool:
        """Whether the peer has taken in bytes we had queued at ``mark``, but not all of them.

        Its TCP acknowledges only what fits its receive buffer, which fills unless
        its process reads: a peer draining a backlog is alive, however slow the path.
        """
        if mark is None or self.is_closed():
            return False
        acked = tcp_queue.acked_bytes(self._socket)
        return acked is not None and mark.acked < acked < mark.end

    def mark_overdue(self) -> None:
        """A request to this peer is overdue: ask it last until it is heard from again."""
        self._overdue_at = time.monotonic()

    @property
    def idle(self) -> bool:
        """No request in flight either way: closing the link now loses nothing."""
        return not self._pending and not self._serving

    @property
    def responsive(self) -> bool:
        return self._overdue_at is None or self.heard_at > self._overdue_at

    # --- plumbing -----------------------------------------------------------------

    def _send(self, frames: Sequence[bytes | memoryview]) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.writelines(frames)
            unsent = self._transport.get_write_buffer_size()
            if unsent >= MAX_UNSENT:
                log.warning("dropping %s: %d bytes unsent", self.describe(), unsent)
                self.abort("too many bytes unsent")

    def _take_token(self) -> bool:
        """Whether the request rate allows one more request now (then it is counted)."""
        now = time.monotonic()
        rate, burst = self.limits.request_rate, self.limits.request_burst
        self._tokens = min(burst, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _handshake_timed_out(self) -> None:
        if self.peer_node is None:
            self._timed_out("no HELLO", "handshake_timeout")

    def _reject(self, reason: str) -> None:
        """The peer failed to show it is a member: log it, and fail the dial if ours."""
        log.warning("rejected %s: %s", self.describe(), reason)
        if not self.ready.done():
            self.ready.set_exception(PeerRejectedError(f"{self.describe()}: {reason}"))
            self.ready.exception()  # mark retrieved: the dialer may have given up
        self._on_rejected(self, reason)

    def _timed_out(self, what: str, limit: str) -> None:
        log.warning(
            "dropping %s: %s within %gs (%s)",
            self.describe(),
            what,
            getattr(self.limits, limit),
            limit,
        )
        self.abort(limit)

    @staticmethod
    def _cancel_timer(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()

    @property
    def connected(self) -> bool:
        """Whether a connection was ever made (a failed dial or handshake never makes one)."""
        return self._transport is not None

    def is_closed(self) -> bool:
        return self._transport is None or self._transport.is_closing() or self.closed.done()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def go_away(self, code: str, msg: str) -> None:
        """Tell the peer why, then close (GOAWAY is best effort)."""
        with contextlib.suppress(FstoreError):
            self._send(self._conn.goaway(code, msg[:1000]))
        self.close()

    def abort(self, reason: str) -> None:
        # Also after close(): a graceful close waits for the peer to read what is
        # unsent, which a hostile peer never does.
        if self._transport is not None and not self.closed.done():
            log.debug("aborting %s: %s", self.describe(), reason)
            self._transport.abort()

    def describe(self) -> str:
        who = self.peer_node.hex()[:12] if self.peer_node else "?"
        where = self.peer_addr or self._peer_socket_name
        return f"peer {who}@{where}"


async def dial(
    host: str,
    port: int,
    factory: Callable[[], PeerLink],
    context: ssl.SSLContext,
    *,
    timeout: float = HANDSHAKE_TIMEOUT,
) -> PeerLink:
    """Connect with TLS and complete the handshake.

    Raises PeerRejectedError if TLS or HELLO show the peer is not a member (or it
    does not take us for one), PeerUnavailableError if it cannot be reached.
    """
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            _, link = await loop.create_connection(
                factory,
                host,
                port,
                ssl=context,
                server_hostname="",  # no SNI: peers are named by node id, not host name
                ssl_handshake_timeout=timeout,
                ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT,
            )
    except ssl.SSLError as e:
        raise PeerRejectedError(f"{host}:{port} TLS handshake failed: {tls_failure(e)}") from e
    except (OSError, TimeoutError) as e:
        raise PeerUnavailableError(f"cannot reach {host}:{port}: {e}") from e
    try:
        async with asyncio.timeout(timeout):
            await asyncio.shield(link.ready)
    except TimeoutError as e:
        link.abort("no HELLO")
        raise PeerUnavailableError(f"{host}:{port} did not say HELLO in time") from e
    return link


async def accept(
    sock: socket.socket,
    link: PeerLink,
    context: ssl.SSLContext,
    *,
    timeout: float = HANDSHAKE_TIMEOUT,
) -> None:
    """Complete TLS as the server on an accepted ``sock``; ``link`` takes it from there.

    A failed handshake (wrong or no certificate, not TLS, too slow) is logged with
    the peer's address and ends the link; nothing is raised.
    """
    peer = format_peer(sock)
    loop = asyncio.get_running_loop()
    try:
        await loop.connect_accepted_socket(
            lambda: link,
            sock,
            ssl=context,
            ssl_handshake_timeout=timeout,
            ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT,
        )
    except (OSError, TimeoutError) as e:  # ssl.SSLError is an OSError
        sock.close()
        link.handshake_failed(peer, e)


def format_peer(sock: socket.socket) -> str:
    try:
        name = sock.getpeername()
    except OSError:
        return "?"
    return f"{name[0]}:{name[1]}" if isinstance(name, tuple) else str(name)


class Listener:
    """A listening socket whose connections are handed to ``on_connection`` (not awaited).

    Accepting by hand, rather than through ``loop.create_server(ssl=...)``, is what
    lets every failed TLS handshake be logged with its address.
    """

    def __init__(self, sock: socket.socket, on_connection: Callable[[socket.socket], None]) -> None:
        self.sock = sock
        self._on_connection = on_connection
        self._task = asyncio.create_task(self._accept_forever())

    @classmethod
    async def bind(
        cls, host: str, port: int, on_connection: Callable[[socket.socket], None]
    ) -> Listener:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        if not infos:
            raise OSError(f"cannot resolve {host!r}")
        family, _, _, _, address = infos[0]
        sock = socket.create_server(address[:2], family=family, backlog=LISTEN_BACKLOG)
        sock.setblocking(False)
        return cls(sock, on_connection)

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"

    async def _accept_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as e:  # e.g. out of file descriptors: wait, do not spin
                log.warning("accepting a connection failed: %s", e)
                await asyncio.sleep(ACCEPT_RETRY_DELAY)
                continue
            conn.setblocking(False)
            self._on_connection(conn)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.sock.close()


CLOSED_IN_HANDSHAKE = (
    "it closed the connection (a node of another network refusing our certificate?)"
)


def connection_failure(error: BaseException) -> str:
    """Why an established link ended, for its log line."""
    if isinstance(error, ssl.SSLError):
        return tls_failure(error)
    return str(error) or type(error).__name__


def tls_failure(error: BaseException) -> str:
    """Why a TLS handshake or link failed, in words a node's operator can act on."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return "its certificate is not from this network (another network's node, or not fstore)"
    reason = getattr(error, "reason", None)
    if isinstance(error, ssl.SSLError) and isinstance(reason, str):
        known = {
            "TLSV1_ALERT_UNKNOWN_CA": "it does not accept our certificate (another network?)",
            "TLSV13_ALERT_CERTIFICATE_REQUIRED": "it wants a certificate",
            "PEER_DID_NOT_RETURN_A_CERTIFICATE": "it presented no certificate",
            "WRONG_VERSION_NUMBER": "it does not speak TLS 1.3 (not an fstore node?)",
            "UNSUPPORTED_PROTOCOL": "it does not speak TLS 1.3 (an old fstore or not fstore?)",
            "HTTP_REQUEST": "it sent HTTP, not TLS",
            "UNEXPECTED_EOF_WHILE_READING": CLOSED_IN_HANDSHAKE,
        }
        return known.get(reason, f"{reason} ({error})")
    if isinstance(error, (ConnectionResetError, BrokenPipeError)):
        return CLOSED_IN_HANDSHAKE
    if isinstance(error, TimeoutError):
        return "not finished in time"
    return str(error) or type(error).__name__


def parse_hostport(text: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT`` or ``:PORT`` (loopback) into a pair; raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT or :PORT, not {text!r}")
    host = host.strip("[]") or default_host
    return host, int(port)
