"""The node's local HTTP API (docs/API.md): files, capabilities, peers, status, metrics.

Bodies are streamed both ways: an upload goes into :meth:`Node.store` piece by
piece as it arrives, and a download is written chunk by chunk as the node
opens them, so no file is ever held whole. A ``Range`` request is answered
from only the chunks that overlap it (:meth:`Node.read_range`).

A download's status line and headers are sent once its first chunk has been
fetched and verified, so a missing or corrupt first chunk is a proper error
response. A failure after that can no longer change the status: the node closes
the connection early, and the client sees fewer bytes than ``Content-Length``.
For the same reason the last chunk of a whole file is sent only after the
whole file's BLAKE3 has been checked.

A stored directory tree is read below its name: ``/v1/files/{name}/`` lists
one level as JSON (streamed, entry by entry), ``/v1/files/{name}/{path}``
streams one file, and ``?format=tar`` streams a whole (sub)tree as a tar, never
held whole; a ``PUT`` with ``?format=tar`` stores the tree a tar body holds.
The same works below ``/v1/caps/{capability}/`` for ``fsd1:`` capabilities.

Errors are JSON, ``{"error": {"code", "message"}}``, made in one middleware
from the :mod:`fstore.errors` hierarchy (and, for requests aiohttp cannot
parse, by :mod:`fstore.faces.http_protocol`); another middleware times every
request for ``fstore_http_request_duration_seconds``.

The ``{name}`` of a path is percent-decoded strictly: a malformed escape or
bytes that are not UTF-8 are an invalid name, never taken as literal text. An
upload that sends no body bytes for ``body_idle_timeout`` seconds is answered
408 and its connection closed; nothing is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, Self
from urllib.parse import unquote_to_bytes

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from fstore import __version__
from fstore.errors import (
    DiskFullError,
    FileTooLargeError,
    FstoreError,
    InsufficientReplicasError,
    IntegrityError,
    InvalidArgumentError,
    InvalidCapabilityError,
    InvalidNameError,
    NotFoundError,
    StorageFullError,
    UnsafePathError,
    WrongKindError,
)
from fstore.faces.http_protocol import ApiRunner, RateLimitedLog, error_response
from fstore.formats.capability import Capability, DirCapability
from fstore.formats.directory import (
    TreeDir,
    TreeEntry,
    TreeFile,
    TreeLink,
    check_segment,
    kind_of,
)
from fstore.formats.names import decode_name
from fstore.node import PIECE_SIZE, FileEntry, FileView, Located, Node, TreeStoreResult
from fstore.node.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from fstore.node.metrics import NodeMetrics
from fstore.node.trees import capability_of

__all__ = [
    "ApiError",
    "HttpServer",
    "create_app",
    "format_hostport",
    "name_in_path",
    "parse_range",
]

log = logging.getLogger(__name__)

FILE_ROUTE = "/v1/files/{name}"
CAP_ROUTE = "/v1/caps/{capability}"
TREE_ROUTE = "/v1/files/{name}/{path:.*}"
CAP_TREE_ROUTE = "/v1/caps/{capability}/{path:.*}"
TAR_TYPE = "application/x-tar"
LISTING_PIECE = 256 * 1024  # bytes of a listing's JSON gathered before they are sent
PIN_ROUTE = "/v1/pins/{capability}"
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs'
SHUTDOWN_TIMEOUT = 5.0  # seconds a stopping node lets requests in flight finish
BODY_IDLE_TIMEOUT = 30.0  # seconds an upload may send no body bytes before a 408

# The fstore errors a request can fail with, most specific first.
_STATUSES: tuple[tuple[type[FstoreError], int, str], ...] = (
    (InvalidNameError, 400, "invalid_name"),
    (UnsafePathError, 400, "unsafe_path"),
    (WrongKindError, 400, "wrong_kind"),
    (InvalidArgumentError, 400, "bad_request"),
    (InvalidCapabilityError, 400, "bad_request"),
    (NotFoundError, 404, "not_found"),
    (FileTooLargeError, 413, "too_large"),
    (IntegrityError, 422, "integrity"),
    (InsufficientReplicasError, 503, "insufficient_replicas"),
    (DiskFullError, 507, "disk_full"),
    (StorageFullError, 507, "storage_full"),
)
# aiohttp's own answers: an unknown path, a method a path does not take.
_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}


class ApiError(Exception):
    """An error response decided by the HTTP layer itself (a bad header, a bad range).

    With ``close_connection`` the connection is closed once the error is sent,
    whatever is left of the request unread.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        *,
        close_connection: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = dict(headers or {})
        self.close_connection = close_connection


class RangeNotSatisfiable(ApiError):
    def __init__(self, size: int) -> None:
        super().__init__(
            416,
            "range_not_satisfiable",
            f"the range is outside the file of {size} bytes",
            {hdrs.CONTENT_RANGE: f"bytes */{size}"},
        )


class RequestTimeout(ApiError):
    def __init__(self, idle: float, received: int) -> None:
        super().__init__(
            408,
            "request_timeout",
            f"no bytes of the request body arrived for {idle:g} s (after {received} bytes); "
            "nothing was stored",
            close_connection=True,
        )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


# --- pure helpers -------------------------------------------------------------------------


def format_hostport(host: str, port: int) -> str:
    """``HOST:PORT``, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_range(header: str, size: int) -> tuple[int, int]:
    """One ``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` range as ``(start, end)``, end exclusive.

    A range reaching past the end is cut to the file; one that starts at or
    after the end, or a zero-length suffix, raises :class:`RangeNotSatisfiable`;
    anything else that is not one byte range raises a ``bad_request`` ApiError.
    """
    unit, _, spec = header.partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or not dash or not (first or last):
        raise bad_request(f"not one byte range: {header!r}")
    if not first:
        suffix = _number(last, header)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - suffix), size
    start = _number(first, header)
    end = _number(last, header) + 1 if last else size
    if last and end <= start:
        raise bad_request(f"a range cannot end before it starts: {header!r}")
    if start >= size:
        raise RangeNotSatisfiable(size)
    return start, min(end, size)


_MALFORMED_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def name_in_path(segment: str) -> str:
    """The name a percent-encoded path segment spells, decoded strictly.

    A ``%`` not followed by two hex digits, or escapes that decode to bytes that
    are not UTF-8, raise :class:`InvalidNameError` instead of standing for
    themselves (``%ff`` would otherwise name the same file as ``%25ff``).
    """
    bad = _MALFORMED_ESCAPE.search(segment)
    if bad is not None:
        raise InvalidNameError(
            f"a malformed percent escape in the name at character {bad.start() + 1}: "
            "% must be followed by two hex digits"
        )
    return decode_name(unquote_to_bytes(segment))


def _path_name(request: web.Request) -> str:
    # The route's last segment as sent, still percent-encoded (aiohttp's match_info
    # keeps an escape that is not UTF-8 as literal text).
    return name_in_path(request.rel_url.raw_name)


def path_in_tree(raw: str) -> tuple[tuple[str, ...], bool]:
    """The segments of a percent-encoded path below a tree's name, and whether it ends in ``/``.

    Each segment is decoded strictly, like a name, and must be able to name an
    entry: a ``..`` is :class:`UnsafePathError`, an empty segment (``a//b``) or
    one with ``%2F`` in it :class:`InvalidNameError`.
    """
    directory_wanted = raw == "" or raw.endswith("/")
    parts = raw.removesuffix("/").split("/") if raw.removesuffix("/") else []
    segments = []
    for part in parts:
        if _MALFORMED_ESCAPE.search(part):
            raise InvalidNameError(f"a malformed percent escape in the path {raw!r}")
        try:
            segment = unquote_to_bytes(part).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidNameError(f"the path {raw!r} is not UTF-8") from None
        if segment == "..":
            raise UnsafePathError(f"a path inside a tree cannot go up ('..'): {raw!r}")
        if not segment:
            raise InvalidNameError(f"an empty segment in the path {raw!r}")
        segments.append(check_segment(segment))
    return tuple(segments), directory_wanted


def _tree_target(request: web.Request, route_prefix: str) -> tuple[str, tuple[str, ...], bool]:
    """(the name or capability, the path below it, whether a directory is asked for)."""
    raw = request.rel_url.raw_path.removeprefix(route_prefix)
    first, _, rest = raw.partition("/")
    target = request.match_info["capability"] if route_prefix == "/v1/caps/" else None
    path, directory_wanted = path_in_tree(rest)
    return target or name_in_path(first), path, directory_wanted


def _number(text: str, header: str) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        raise bad_request(f"not one byte range: {header!r}")
    return int(text)


def _etag_listed(header: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (or is ``*``)."""
    if header is None:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in header.split(",")]
    return "*" in tags or etag in tags


def _entry_json(entry: FileEntry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "size": entry.size,
        "blake3": entry.blake3.hex(),
        "stored_at": entry.stored_at,
        "capability": entry.capability,
    }


def _flag(request: web.Request, name: str) -> bool | None:
    """A yes/no query parameter: ``1``/``true`` or ``0``/``false``; None when absent."""
    text = request.query.get(name)
    if text is None:
        return None
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise bad_request(f"{name} must be 1 or 0, not {text!r}")


def _tree_json(result: TreeStoreResult, replicas: int) -> dict[str, Any]:
    return {
        "name": result.name,
        "kind": "dir",
        "size": result.size,
        "blake3": "",
        "stored_at": result.stored_at,
        "capability": result.capability,
        "files": result.files,
        "dirs": result.dirs,
        "symlinks": result.symlinks,
        "new_bytes": result.new_bytes,
        "reused_bytes": result.reused_bytes,
        "skipped": [{"path": s.path, "reason": s.reason} for s in result.skipped],
        "copies": result.replicas,
        "replicas": replicas,
    }


def tree_entry_json(entry: TreeEntry) -> dict[str, Any]:
    """One entry of a directory listing (docs/API.md)."""
    fields: dict[str, Any] = {
        "name": entry.name,
        "kind": kind_of(entry),
        "mode": entry.mode,
        "mtime_ns": entry.mtime_ns,
    }
    if isinstance(entry, TreeFile):
        fields["size"] = entry.size
        fields["blake3"] = entry.blake3.hex()
    elif isinstance(entry, TreeDir):
        fields["files"] = entry.files
        fields["size"] = entry.size
    else:
        fields["target"] = entry.target
    if not isinstance(entry, TreeLink):
        fields["capability"] = capability_of(entry)
    return fields


def _route_of(request: web.Request) -> str:
    """The route's template (``/v1/files/{name}``), never the raw URL: bounded label values."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


# --- middlewares ---------------------------------------------------------------------------


def _status_of(error: FstoreError) -> tuple[int, str]:
    for kind, status, code in _STATUSES:
        if isinstance(error, kind):
            return status, code
    return 500, "internal"


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as ``{"error": {"code", "message"}}`` with the status of docs/API.md."""
    try:
        return await handler(request)
    except ApiError as e:
        response = error_response(e.status, e.code, str(e), e.headers)
        return await _send_and_close(request, response) if e.close_connection else response
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _HTTP_CODES.get(e.status, "internal")
        allow = {"Allow": e.headers[hdrs.ALLOW]} if hdrs.ALLOW in e.headers else None
        return error_response(e.status, code, e.reason, allow)
    except FstoreError as e:
        status, code = _status_of(e)
        if status == 500:
            log.exception("%s %s failed", request.method, request.path)
        return error_response(status, code, str(e))
    except ConnectionError as e:  # the client went away, an upload cut short
        log.info("%s %s: the connection was lost: %s", request.method, request.path, e)
        return error_response(400, "bad_request", f"the connection was lost: {e}")
    except Exception as e:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal", f"{type(e).__name__} (see the node's log)")


async def _send_and_close(request: web.Request, response: web.Response) -> web.Response:
    """Send ``response`` whole, then close the connection without reading the rest."""
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()
    return response


def _timing(metrics: NodeMetrics) -> Middleware:
    @web.middleware
    async def timing(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            elapsed = time.perf_counter() - started
            metrics.http_request(request.method, _route_of(request), status, elapsed)

    return timing


# --- streaming -----------------------------------------------------------------------------


async def _body_bytes(request: web.Request, idle_timeout: float) -> bytes:
    """The next bytes of the request body, b"" at its end; a 408 if none come in time."""
    try:
        async with asyncio.timeout(idle_timeout):
            return await request.content.readany()
    except TimeoutError:
        raise RequestTimeout(idle_timeout, request.content.total_bytes) from None


async def _body_pieces(request: web.Request, idle_timeout: float) -> AsyncIterator[bytes]:
    """The request body as it arrives, gathered into pieces of about PIECE_SIZE."""
    parts: list[bytes] = []
    size = 0
    while data := await _body_bytes(request, idle_timeout):
        parts.append(data)
        size += len(data)
        if size >= PIECE_SIZE:
            yield b"".join(parts)
            parts.clear()
            size = 0
    if parts:
        yield b"".join(parts)


async def _send_pieces(
    request: web.Request, response: web.StreamResponse, pieces: AsyncGenerator[bytes, None]
) -> web.StreamResponse:
    """Send the headers once the first piece is ready, then every piece.

    Each piece is written only once the next one is ready (or the stream has
    ended without an error), so the last piece of a whole file waits for its
    BLAKE3 check.
    """
    async with contextlib.aclosing(pieces):
        pending = await anext(pieces, None)  # a failure here is still an error response
        await response.prepare(request)
        try:
            while pending is not None:
                following = await anext(pieces, None)
                await response.write(pending)
                pending = following
        except ConnectionError as e:
            log.debug("%s %s: the client went away: %s", request.method, request.path, e)
        except Exception as e:
            log.warning(
                "%s %s failed after its headers were sent; closing the connection: %s",
                request.method,
                request.path,
                e,
                exc_info=not isinstance(e, FstoreError),
            )
            response.force_close()
    return response


async def _listing_json(
    head: dict[str, Any], entries: AsyncGenerator[TreeEntry, None]
) -> AsyncGenerator[bytes, None]:
    """``head`` with ``"entries": [...]`` added, as JSON in pieces of about LISTING_PIECE."""
    out = bytearray(json.dumps(head)[:-1].encode() + b', "entries": [')
    separator = b""
    async with contextlib.aclosing(entries):
        async for entry in entries:
            out += separator + json.dumps(tree_entry_json(entry)).encode()
            separator = b", "
            if len(out) >= LISTING_PIECE:
                yield bytes(out)
                out.clear()
    yield bytes(out) + b"]}"


def _check_capability(text: str) -> None:
    """A 400 for anything but a file or directory capability, never read as a name."""
    if DirCapability.looks_like(text):
        DirCapability.parse(text)
    else:
        Capability.parse(text)


# --- the handlers --------------------------------------------------------------------------


class _Api:
    """The request handlers of one node."""

    def __init__(self, node: Node, body_idle_timeout: float) -> None:
        self.node = node
        self.body_idle_timeout = body_idle_timeout

    async def put_file(self, request: web.Request) -> web.Response:
        chunked = "chunked" in request.headers.get(hdrs.TRANSFER_ENCODING, "").lower()
        if request.content_length is None and not chunked:
            raise ApiError(411, "length_required", "send Content-Length or a chunked body")
        name = _path_name(request)
        degraded = _flag(request, "allow_degraded")
        body = _body_pieces(request, self.body_idle_timeout)
        form = request.query.get("format")
        if form == "tar":
            tree = await self.node.store_tar(name, body)
            tree_json = _tree_json(tree, self.node.replicas)
            return web.json_response(tree_json, status=201, headers={hdrs.LOCATION: request.path})
        if form is not None:
            raise bad_request(f"unknown format {form!r}: a PUT takes format=tar or none")
        result = await self.node.store(name, body, allow_degraded=degraded)
        entry = FileEntry(
            result.name, result.size, result.blake3, result.stored_at, result.capability
        )
        headers = {hdrs.LOCATION: request.raw_path}
        # The durable copies the least-copied blob got, and how many were wanted:
        # fewer when fewer nodes are live than the node's --replicas.
        stored = {**_entry_json(entry), "copies": result.replicas, "replicas": self.node.replicas}
        return web.json_response(stored, status=201, headers=headers)

    async def get_file(self, request: web.Request) -> web.StreamResponse:
        located = await self.node.locate(_path_name(request))
        return await self._send(request, located, directory_wanted=False)

    async def get_capability(self, request: web.Request) -> web.StreamResponse:
        text = request.match_info["capability"]
        _check_capability(text)
        return await self._send(request, await self.node.locate(text), directory_wanted=False)

    async def get_in_tree(self, request: web.Request) -> web.StreamResponse:
        target, path, directory_wanted = _tree_target(request, "/v1/files/")
        located = await self.node.locate(target, path)
        return await self._send(request, located, directory_wanted)

    async def get_in_capability(self, request: web.Request) -> web.StreamResponse:
        target, path, directory_wanted = _tree_target(request, "/v1/caps/")
        _check_capability(target)
        located = await self.node.locate(target, path)
        return await self._send(request, located, directory_wanted)

    async def _send(
        self, request: web.Request, located: Located, directory_wanted: bool
    ) -> web.StreamResponse:
        """A file, a directory's listing (a path ending in ``/``), or a tree as a tar."""
        form = request.query.get("format")
        if form not in (None, "tar", "json"):
            raise bad_request(f"unknown format {form!r}: format=tar, format=json or none")
        if directory_wanted or form is not None:
            if located.directory is None:
                raise WrongKindError(f"{located.label} is not a directory")
            if form == "tar":
                return await self._send_tar(request, located)
            return await self._send_listing(request, located)
        if located.is_directory:
            raise WrongKindError(
                f"{located.label} is a directory: a path ending in / lists it, ?format=tar "
                "fetches it whole"
            )
        return await self._send_file(request, await self.node.trees.file(located))

    async def _send_file(self, request: web.Request, view: FileView) -> web.StreamResponse:
        """GET and HEAD of a file: whole, one range, or 304 Not Modified."""
        etag = f'"{view.blake3.hex()}"'
        headers = {hdrs.ETAG: etag, hdrs.ACCEPT_RANGES: "bytes"}
        if _etag_listed(request.headers.get(hdrs.IF_NONE_MATCH), etag):
            return web.Response(status=304, headers=headers)
        start, end = 0, view.size
        status = 200
        header = request.headers.get(hdrs.RANGE)
        # If-Range naming another version of the file asks for the whole of this one.
        if header is not None and request.headers.get(hdrs.IF_RANGE, etag) == etag:
            start, end = parse_range(header, view.size)
            status = 206
            headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{end - 1}/{view.size}"
        headers[hdrs.CONTENT_TYPE] = "application/octet-stream"
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = end - start
        if request.method == hdrs.METH_HEAD:
            await response.prepare(request)
            return response
        return await _send_pieces(request, response, view.read(start, end))

    async def _send_listing(self, request: web.Request, located: Located) -> web.StreamResponse:
        """One level of a directory as JSON, streamed entry by entry."""
        assert located.directory is not None
        totals = await self.node.trees.totals(located.directory)
        head = {
            "target": located.label,
            "capability": located.capability,
            "count": totals.entries,
            "files": totals.files,
            "size": totals.size,
        }
        response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: "application/json"})
        if request.method == hdrs.METH_HEAD:
            await response.prepare(request)
            return response
        entries = self.node.trees.entries(located.directory)
        return await _send_pieces(request, response, _listing_json(head, entries))

    async def _send_tar(self, request: web.Request, located: Located) -> web.StreamResponse:
        """A directory and everything below it as a tar stream (GNU tar, bsdtar read it)."""
        assert located.directory is not None
        totals = await self.node.trees.totals(located.directory)
        headers = {
            hdrs.CONTENT_TYPE: TAR_TYPE,
            "X-Fstore-Files": str(totals.files),
            "X-Fstore-Bytes": str(totals.size),
        }
        response = web.StreamResponse(headers=headers)
        if request.method == hdrs.METH_HEAD:
            await response.prepare(request)
            return response
        return await _send_pieces(request, response, self.node.trees.tar(located.directory))

    async def delete_file(self, request: web.Request) -> web.Response:
        await self.node.delete(_path_name(request))
        return web.Response(status=204)

    async def list_files(self, request: web.Request) -> web.Response:
        entries = await self.node.list()
        return web.json_response({"files": [_entry_json(e) for e in entries]})

    async def put_pin(self, request: web.Request) -> web.Response:
        entry = await self.node.pin(request.match_info["capability"])
        return web.json_response(_entry_json(entry), status=201)

    async def delete_pin(self, request: web.Request) -> web.Response:
        await self.node.unpin(request.match_info["capability"])
        return web.Response(status=204)

    async def list_pins(self, request: web.Request) -> web.Response:
        entries = await self.node.pins()
        return web.json_response({"pins": [_entry_json(e) for e in entries]})

    async def peers(self, request: web.Request) -> web.Response:
        peers = [
            {"node_id": p.node_id.hex(), "addr": p.addr, "outbound": p.outbound}
            for p in self.node.peers()
        ]
        return web.json_response({"peers": peers})

    async def members(self, request: web.Request) -> web.Response:
        members = [
            {
                "node_id": m.node_id.hex(),
                "addr": m.addr,
                "state": m.state,
                "incarnation": m.incarnation,
            }
            for m in self.node.member_list()
        ]
        return web.json_response({"members": members})

    async def status(self, request: web.Request) -> web.Response:
        stats = await self.node.stats()
        local = request.transport.get_extra_info("sockname") if request.transport else None
        return web.json_response(
            {
                "node_id": self.node.node_id.hex(),
                "address": self.node.address,
                "http": format_hostport(local[0], local[1]) if local else None,
                "replicas": self.node.replicas,
                "peers": stats.peers,
                "blobs": stats.blobs,
                "blob_bytes": stats.blob_bytes,
                "under_replicated": stats.under_replicated,
                "repair_queue": stats.repair_queue,
                "last_scrub": stats.last_scrub or None,
                "used_bytes": stats.used_bytes,
                "max_storage": stats.max_storage,
                "reclaimable_bytes": stats.reclaimable_bytes,
                "reclaimed_bytes": stats.reclaimed_bytes,
                "pinned_bytes": stats.pinned_bytes,
                "last_collection": stats.last_collection or None,
                "version": __version__,
            }
        )

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def metrics(self, request: web.Request) -> web.Response:
        stats = await self.node.stats()
        body = await asyncio.to_thread(self.node.metrics.exposition, stats)
        return web.Response(body=body, headers={hdrs.CONTENT_TYPE: METRICS_CONTENT_TYPE})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(OPENAPI)


def create_app(node: Node, *, body_idle_timeout: float = BODY_IDLE_TIMEOUT) -> web.Application:
    """The aiohttp application serving ``node``'s API (docs/API.md)."""
    api = _Api(node, body_idle_timeout)
    app = web.Application(middlewares=[_timing(node.metrics), _errors])
    app.router.add_put(FILE_ROUTE, api.put_file)
    app.router.add_get(FILE_ROUTE, api.get_file)  # and HEAD
    app.router.add_delete(FILE_ROUTE, api.delete_file)
    app.router.add_get("/v1/files", api.list_files)
    app.router.add_get(CAP_ROUTE, api.get_capability)
    app.router.add_get(TREE_ROUTE, api.get_in_tree)
    app.router.add_get(CAP_TREE_ROUTE, api.get_in_capability)
    app.router.add_put(PIN_ROUTE, api.put_pin)
    app.router.add_delete(PIN_ROUTE, api.delete_pin)
    app.router.add_get("/v1/pins", api.list_pins)
    app.router.add_get("/v1/peers", api.peers)
    app.router.add_get("/v1/members", api.members)
    app.router.add_get("/v1/status", api.status)
    app.router.add_get("/v1/openapi.json", api.openapi)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/metrics", api.metrics)
    return app


class HttpServer:
    """The API of one node, listening: ``async with HttpServer(node, host, port) as server``.

    ``body_idle_timeout``: seconds an upload may send no body bytes before a 408.
    """

    def __init__(
        self,
        node: Node,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        body_idle_timeout: float = BODY_IDLE_TIMEOUT,
    ) -> None:
        self._runner = ApiRunner(
            create_app(node, body_idle_timeout=body_idle_timeout),
            malformed=RateLimitedLog(log),
            access_log_format=ACCESS_LOG_FORMAT,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        self._host = host
        self._port = port
        self.address = ""

    async def start(self) -> str:
        """Listen; the address listened on (``HOST:PORT``, the port chosen if 0 was asked)."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        host, port = self._runner.addresses[0][:2]
        self.address = format_hostport(host, port)
        log.info("http on %s", self.address)
        return self.address

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# --- OpenAPI --------------------------------------------------------------------------------


def _json_ref(name: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}


def _errors_of(*statuses: int) -> dict[str, Any]:
    return {str(s): {"description": "an error", **_json_ref("Error")} for s in (*statuses, 500)}


def _json_answer(status: int, description: str, schema: str) -> dict[str, Any]:
    return {str(status): {"description": description, **_json_ref(schema)}}


def _parameter(name: str, where: str, description: str, *, required: bool) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required,
        "description": description,
        "schema": {"type": "string"},
    }


_NAME = _parameter(
    "name",
    "path",
    "the file's name, percent-encoded UTF-8 (1 to 4096 bytes, no control characters, "
    "not starting like a capability such as fs1:; / as %2F)",
    required=True,
)
_CAPABILITY = _parameter(
    "capability", "path", "a capability, fs1:… (a file) or fsd1:… (a directory)", required=True
)
_PATH = _parameter(
    "path",
    "path",
    "a path inside the tree, segments percent-encoded UTF-8; ending in / (or empty) names a "
    "directory, whose listing is answered",
    required=True,
)
_FORMAT = {
    "name": "format",
    "in": "query",
    "required": False,
    "description": "tar: the directory and everything below it as a tar stream; json: its "
    "listing (the default for a path ending in /)",
    "schema": {"type": "string", "enum": ["tar", "json"]},
}
_PUT_FORMAT = {
    "name": "format",
    "in": "query",
    "required": False,
    "description": "tar: the body is a tar stream; the tree it holds is stored",
    "schema": {"type": "string", "enum": ["tar"]},
}
_RANGE = _parameter("Range", "header", "one range: bytes=A-B, bytes=A- or bytes=-N", required=False)
_BYTES = {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}
_FILE_HEADERS = {
    "ETag": {"description": '"<BLAKE3 hex>" of the whole file', "schema": {"type": "string"}},
    "Accept-Ranges": {"schema": {"type": "string", "const": "bytes"}},
    "Content-Length": {"schema": {"type": "integer"}},
}
_DOWNLOAD = {
    "parameters": [_RANGE],
    "responses": {
        "200": {"description": "the file's bytes", "headers": _FILE_HEADERS, **_BYTES},
        "206": {"description": "the bytes of the range", "headers": _FILE_HEADERS, **_BYTES},
        "304": {"description": "If-None-Match named the ETag"},
        **_errors_of(400, 404, 416, 422),
    },
}
_INT = {"type": "integer"}
_STR = {"type": "string"}
_TAR_HEADERS = {
    "X-Fstore-Files": {"description": "regular files in the tree", "schema": _INT},
    "X-Fstore-Bytes": {"description": "their bytes", "schema": _INT},
}
_IN_TREE = {
    "parameters": [_RANGE, _FORMAT],
    "responses": {
        "200": {
            "description": "a file's bytes; for a directory its listing, or with format=tar "
            "the tree as a tar stream (chunked)",
            "headers": {**_FILE_HEADERS, **_TAR_HEADERS},
            "content": {
                "application/octet-stream": {"schema": _STR},
                "application/json": {"schema": {"$ref": "#/components/schemas/Listing"}},
                TAR_TYPE: {"schema": _STR},
            },
        },
        "206": {"description": "the bytes of the range", "headers": _FILE_HEADERS, **_BYTES},
        "304": {"description": "If-None-Match named the ETag"},
        **_errors_of(400, 404, 416, 422),
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "fstore node",
        "version": __version__,
        "description": "The local HTTP API of one fstore node (docs/API.md).",
    },
    "paths": {
        "/v1/files/{name}": {
            "parameters": [_NAME],
            "put": {
                "summary": "store the request body under the name (streamed); with "
                "format=tar, the tree the tar body holds",
                "parameters": [_PUT_FORMAT],
                "requestBody": {"required": True, **_BYTES},
                "responses": {
                    "201": {
                        "description": "stored: a StoredFile, or with format=tar a StoredTree",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/StoredFile"},
                                        {"$ref": "#/components/schemas/StoredTree"},
                                    ]
                                }
                            }
                        },
                    },
                    **_errors_of(400, 408, 411, 413, 503, 507),
                },
            },
            "get": {"summary": "the file's bytes, streamed", **_DOWNLOAD},
            "head": {"summary": "the headers of the GET", **_DOWNLOAD},
            "delete": {
                "summary": "delete the name",
                "responses": {"204": {"description": "deleted"}, **_errors_of(400, 404, 503)},
            },
        },
        "/v1/files": {
            "get": {
                "summary": "every name of the node's namespace",
                "responses": _json_answer(200, "the files", "FileList"),
            }
        },
        "/v1/caps/{capability}": {
            "parameters": [_CAPABILITY],
            "get": {"summary": "the bytes of the file a capability names", **_DOWNLOAD},
        },
        "/v1/files/{name}/{path}": {
            "parameters": [_NAME, _PATH],
            "get": {"summary": "a file or directory inside the tree stored as name", **_IN_TREE},
            "head": {"summary": "the headers of the GET", **_IN_TREE},
        },
        "/v1/caps/{capability}/{path}": {
            "parameters": [_CAPABILITY, _PATH],
            "get": {"summary": "a file or directory inside a directory capability", **_IN_TREE},
            "head": {"summary": "the headers of the GET", **_IN_TREE},
        },
        "/v1/pins/{capability}": {
            "parameters": [_CAPABILITY],
            "put": {
                "summary": "keep the file alive under this node's namespace (a pin)",
                "responses": {
                    **_json_answer(201, "pinned", "FileEntry"),
                    **_errors_of(400, 404, 422, 503, 507),
                },
            },
            "delete": {
                "summary": "unpin the file",
                "responses": {"204": {"description": "unpinned"}, **_errors_of(400, 404, 503)},
            },
        },
        "/v1/pins": {
            "get": {
                "summary": "every pin of the node's namespace",
                "responses": _json_answer(200, "the pins", "PinList"),
            }
        },
        "/v1/peers": {
            "get": {
                "summary": "the linked peers",
                "responses": _json_answer(200, "the peers", "PeerList"),
            }
        },
        "/v1/members": {
            "get": {
                "summary": "the gossiped member list, this node included",
                "responses": _json_answer(200, "the members", "MemberList"),
            }
        },
        "/v1/status": {
            "get": {"summary": "the node", "responses": _json_answer(200, "the node", "Status")}
        },
        "/v1/openapi.json": {
            "get": {"summary": "this document", "responses": {"200": {"description": "OpenAPI"}}}
        },
        "/healthz": {
            "get": {"summary": "liveness", "responses": {"200": {"description": '{"ok": true}'}}}
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "text format",
                        "content": {"text/plain": {"schema": _STR}},
                    }
                },
            }
        },
    },
    "components": {
        "schemas": {
            "FileEntry": {
                "type": "object",
                "required": ["name", "size", "blake3", "stored_at", "capability"],
                "properties": {
                    "name": _STR,
                    "size": _INT,
                    "blake3": {"type": "string", "description": "hex"},
                    "stored_at": {"type": "number", "description": "Unix seconds"},
                    "capability": {"type": "string", "description": "fs1:…"},
                },
            },
            "StoredFile": {
                "description": "a file entry, and the copies its store made",
                "allOf": [
                    {"$ref": "#/components/schemas/FileEntry"},
                    {
                        "type": "object",
                        "required": ["copies", "replicas"],
                        "properties": {
                            "copies": {
                                "type": "integer",
                                "description": "durable copies of the least-copied blob",
                            },
                            "replicas": {
                                "type": "integer",
                                "description": "the copies the node wants (its --replicas)",
                            },
                        },
                    },
                ],
            },
            "StoredTree": {
                "type": "object",
                "required": ["name", "kind", "capability", "files", "size", "new_bytes"],
                "properties": {
                    "name": _STR,
                    "kind": {"type": "string", "const": "dir"},
                    "size": {"type": "integer", "description": "bytes of every file"},
                    "blake3": {"type": "string", "description": "empty for a tree"},
                    "stored_at": {"type": "number"},
                    "capability": {"type": "string", "description": "fsd1:…"},
                    "files": _INT,
                    "dirs": _INT,
                    "symlinks": _INT,
                    "new_bytes": {
                        "type": "integer",
                        "description": "blob bytes this store sent to the network (each once)",
                    },
                    "reused_bytes": {
                        "type": "integer",
                        "description": "blob bytes found already stored (unchanged parts)",
                    },
                    "skipped": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"path": _STR, "reason": _STR},
                        },
                    },
                    "copies": _INT,
                    "replicas": _INT,
                },
            },
            "TreeEntry": {
                "type": "object",
                "required": ["name", "kind", "mode", "mtime_ns"],
                "properties": {
                    "name": _STR,
                    "kind": {"type": "string", "enum": ["file", "dir", "symlink"]},
                    "mode": {"type": "integer", "description": "permission bits, 0 to 0o7777"},
                    "mtime_ns": {"type": "integer", "description": "nanoseconds since the epoch"},
                    "size": {"type": "integer", "description": "a file's; a directory's files'"},
                    "blake3": {"type": "string", "description": "a file's, hex"},
                    "files": {"type": "integer", "description": "a directory's, all below it"},
                    "target": {"type": "string", "description": "a link's"},
                    "capability": {
                        "type": ["string", "null"],
                        "description": "fsd1:… of a directory, fs1:… of a large file; null "
                        "for a small file (sealed inside its directory)",
                    },
                },
            },
            "Listing": {
                "type": "object",
                "properties": {
                    "target": _STR,
                    "capability": {"type": "string", "description": "fsd1:… of this directory"},
                    "count": {"type": "integer", "description": "its entries"},
                    "files": _INT,
                    "size": _INT,
                    "entries": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/TreeEntry"},
                    },
                },
            },
            "FileList": {
                "type": "object",
                "properties": {
                    "files": {"type": "array", "items": {"$ref": "#/components/schemas/FileEntry"}}
                },
            },
            "PinList": {
                "type": "object",
                "properties": {
                    "pins": {"type": "array", "items": {"$ref": "#/components/schemas/FileEntry"}}
                },
            },
            "PeerList": {
                "type": "object",
                "properties": {
                    "peers": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "node_id": _STR,
                                "addr": {"type": ["string", "null"]},
                                "outbound": {"type": "boolean"},
                            },
                        },
                    }
                },
            },
            "MemberList": {
                "type": "object",
                "properties": {
                    "members": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "node_id": _STR,
                                "addr": {"type": ["string", "null"]},
                                "state": {"enum": ["alive", "suspect", "dead", "left"]},
                                "incarnation": {"type": "integer"},
                            },
                        },
                    }
                },
            },
            "Status": {
                "type": "object",
                "properties": {
                    "node_id": _STR,
                    "address": _STR,
                    "http": _STR,
                    "replicas": _INT,
                    "peers": _INT,
                    "blobs": _INT,
                    "blob_bytes": _INT,
                    "used_bytes": _INT,
                    "max_storage": {"type": ["integer", "null"], "description": "--max-storage"},
                    "reclaimable_bytes": _INT,
                    "reclaimed_bytes": _INT,
                    "pinned_bytes": _INT,
                    "last_collection": {"type": ["number", "null"], "description": "Unix s"},
                    "version": _STR,
                },
            },
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {"code": _STR, "message": _STR},
                    }
                },
            },
        }
    },
}
