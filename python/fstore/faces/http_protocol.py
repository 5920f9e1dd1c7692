"""aiohttp's HTTP/1.1 connection handling, held to the promises of docs/API.md.

aiohttp answers a request it cannot parse (a malformed request line, a bad
``Content-Length`` or chunk size, a line too long, bytes after ``Connection:
close``) itself, before any middleware runs: in text/plain, with an ERROR and a
traceback in the log each time. It offers no hook for either (aiohttp issue
#3287), so the API's runner makes its connections from :class:`ApiProtocol`,
a :class:`web.RequestHandler` that

- answers those requests with the JSON error every other error gets, logging one
  line at most per ``LOG_INTERVAL`` seconds (the next line counts those left out),
  and no access-log line;
- answers a client that closes its sending side (a half-close) instead of
  dropping the connection with the answer unsent: a complete request is answered
  as usual, a body cut short fails the handler's next read, and the connection
  closes once the answer is sent.

Two things are not aiohttp's public API, and tests/test_http.py exercises both:
the runner reaches the protocol through ``AppRunner._make_server`` (the one place
a runner builds its server), and a half-close looks at ``_messages``, aiohttp's
queue of requests received but not yet begun.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import StreamReader, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import RawRequestMessage

__all__ = ["ApiRunner", "BodyCutShort", "RateLimitedLog", "error_response"]

log = logging.getLogger(__name__)

LOG_INTERVAL = 10.0  # seconds between two log lines about malformed requests
MAX_DETAIL = 200  # characters of aiohttp's description of a malformed request
_MALFORMED = web.ResponseKey("fstore_malformed_request", bool)


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """The API's error: ``{"error": {"code", "message"}}`` as JSON."""
    body = {"error": {"code": code, "message": message}}
    return web.json_response(body, status=status, headers=headers)


class BodyCutShort(ConnectionError):
    """The client closed its sending side before the end of the request body."""


class RateLimitedLog:
    """A warning log of at most one line per ``interval`` seconds.

    A line logged after some were left out says how many: nothing a client
    sends can fill the log, and nothing is hidden for good.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._next = -float("inf")
        self._left_out = 0

    def warning(self, message: str) -> bool:
        """Log ``message`` unless a line was logged less than ``interval`` ago; whether it was."""
        now = self._clock()
        if now < self._next:
            self._left_out += 1
            return False
        if self._left_out:
            message += f" ({self._left_out} more like it in the last {self._interval:g} s)"
        self._logger.warning("%s", message)
        self._next = now + self._interval
        self._left_out = 0
        return True


def _detail(message: str | None, exc: BaseException | None, status: int) -> str:
    """The first line of aiohttp's description of what was malformed."""
    text = message or (str(exc) if exc is not None else "") or f"status {status}"
    first = text.strip().splitlines()[0].rstrip(":").strip()
    return first[:MAX_DETAIL]


class ApiProtocol(web.RequestHandler):
    """One HTTP connection to the API (see the module docstring)."""

    def __init__(self, manager: web.Server, *, malformed: RateLimitedLog, **options: Any) -> None:
        super().__init__(manager, **options)
        self._malformed = malformed
        self._body: StreamReader | None = None  # of the request being answered
        self._answering = False

    def request_started(self, body: StreamReader) -> None:
        """A request is begun (its answer is owed until logged); ``body`` is its body."""
        self._body = body
        self._answering = True

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the response has begun: no error response can follow")
        if status >= 500:
            log.error("%s %s failed", request.method, request.path, exc_info=exc)
            response = error_response(status, "internal", "the node failed (see its log)")
        else:
            detail = _detail(message, exc, status)
            self._malformed.warning(f"malformed request from {request.remote}: {detail}")
            response = error_response(status, "bad_request", f"malformed request: {detail}")
            response[_MALFORMED] = True
        response.force_close()
        return response

    def log_access(
        self, request: web.BaseRequest, response: web.StreamResponse, started: float | None
    ) -> None:
        self._answering = False
        self._body = None
        if not response.get(_MALFORMED, False):
            super().log_access(request, response, started)

    def eof_received(self) -> bool:  # type: ignore[override]  # asyncio's is bool | None
        """Keep the connection open for the answers owed, then close it."""
        if self.transport is None or not (self._answering or self._messages):
            return False  # nothing owed: let the transport close
        self._end_body_early()
        self.close()  # once the answers owed are sent
        return True

    def _end_body_early(self) -> None:
        """Fail the next read of the body being received, if it is not complete."""
        body = self._body
        if body is None or body.is_eof() or body.exception() is not None:
            return
        body.set_exception(
            BodyCutShort(
                f"the client stopped sending after {body.total_bytes} bytes of the request body"
            )
        )
        body.feed_eof()  # nothing more will come: aiohttp must not wait to read the rest


class _ApiServer(web.Server):
    """aiohttp's server for one application, making :class:`ApiProtocol` connections."""

    def __init__(
        self, app_server: web.Server, malformed: RateLimitedLog, options: Mapping[str, Any]
    ) -> None:
        super().__init__(
            app_server.request_handler,
            request_factory=self._request,
            handler_cancellation=app_server.handler_cancellation,
            **options,
        )
        self._app_request = app_server.request_factory
        self._malformed = malformed
        self._options = dict(options)

    def __call__(self) -> ApiProtocol:
        loop = asyncio.get_running_loop()
        return ApiProtocol(self, loop=loop, malformed=self._malformed, **self._options)

    def _request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web.RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        if isinstance(protocol, ApiProtocol):
            protocol.request_started(payload)
        return self._app_request(message, payload, protocol, writer, task)


class ApiRunner(web.AppRunner):
    """An :class:`web.AppRunner` whose connections are :class:`ApiProtocol`.

    ``options`` go to every connection (``access_log_format``, ...);
    ``malformed`` logs the requests that could not be parsed.
    """

    def __init__(
        self,
        app: web.Application,
        *,
        malformed: RateLimitedLog,
        handle_signals: bool = False,
        shutdown_timeout: float = 60.0,
        **options: Any,
    ) -> None:
        super().__init__(app, handle_signals=handle_signals, shutdown_timeout=shutdown_timeout)
        self._malformed = malformed
        self._options = options

    async def _make_server(self) -> web.Server:
        # The application's own server does the app's start-up and routing;
        # only the connections it makes are replaced.
        app_server = await super()._make_server()
        return _ApiServer(app_server, self._malformed, self._options)
