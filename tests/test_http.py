"""The HTTP API of a node (docs/API.md): real nodes, real sockets, real HTTP.

Most tests run ``Node``s and their ``HttpServer`` inside the test's own event loop
and talk to them with aiohttp's client over loopback; the tests of the large
streamed file, of the default address and of ``curl`` run real ``fstore-node``
processes started with ``--http`` (``netutil.Cluster.holder``). Nothing sleeps to
synchronise: every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import blake3
import pytest
import uvloop
from netutil import (
    Cluster,
    MiB,
    blake3_file,
    blob_path,
    fstore_node_command,
    stored_blobs,
    wait_until,
    write_random_file,
)
from prometheus_client.parser import text_string_to_metric_families

from fstore import __version__
from fstore.errors import InvalidNameError
from fstore.faces.cli import HTTP_ADDR_FILE, default_http
from fstore.faces.http import BODY_IDLE_TIMEOUT, HttpServer, create_app, name_in_path, parse_range
from fstore.faces.http_protocol import RateLimitedLog
from fstore.formats import tar
from fstore.formats.manifest import INLINE_MAX
from fstore.net.trust import NetworkKey
from fstore.node import Node

T = TypeVar("T")

TEST_DEADLINE = 60.0
LINK_TIMEOUT = 20.0
FILE_ROUTE = "/v1/files/{name}"
FILE_ENTRY_FIELDS = ("name", "size", "blake3", "stored_at", "capability")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# --- in-process nodes -----------------------------------------------------------------------


def run(scenario: Coroutine[Any, Any, T]) -> T:
    """Run one test's scenario in a fresh uvloop event loop, with a deadline."""

    async def bounded() -> T:
        async with asyncio.timeout(TEST_DEADLINE):
            return await scenario

    return uvloop.run(bounded())


@dataclass
class Served:
    """A node in this process, and its HTTP API."""

    node: Node
    base: str

    def url(self, path: str) -> str:
        return self.base + path

    def file_url(self, name: str) -> str:
        return self.url("/v1/files/" + quote(name, safe=""))


@contextlib.asynccontextmanager
async def network(
    root: Path,
    count: int,
    *,
    replicas: int = 2,
    peers: tuple[str, ...] = (),
    join: NetworkKey | None = None,
    body_idle_timeout: float = BODY_IDLE_TIMEOUT,
) -> AsyncIterator[list[Served]]:
    """``count`` nodes sharing one namespace, linked, each serving HTTP on an ephemeral port.

    They are in network ``join`` (that of ``peers``), or a new one.
    """
    root.mkdir(parents=True, exist_ok=True)
    namespace = root / "namespace.key"
    namespace.write_bytes(os.urandom(32))
    network = join or NetworkKey.generate()
    served: list[Served] = []
    async with contextlib.AsyncExitStack() as stack:
        for i in range(count):
            node = Node(
                root / f"node{i}",
                peers=[*peers, *(s.node.address for s in served[:1])],
                network=network,
                replicas=replicas,
                durable=False,
                namespace_file=namespace,
            )
            await stack.enter_async_context(node)
            server = await stack.enter_async_context(
                HttpServer(node, body_idle_timeout=body_idle_timeout)
            )
            served.append(Served(node, f"http://{server.address}"))
        for s in served:
            await s.node.wait_for_peers(count - 1 + len(peers), LINK_TIMEOUT)
        yield served


async def assert_error(response: aiohttp.ClientResponse, status: int, code: str) -> str:
    """The response is the JSON error of docs/API.md with this status and code; its message."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    error = (await response.json())["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    return str(error["message"])


def digest_of(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def samples_of(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def request_count(samples: Samples, method: str, route: str, status: str) -> float:
    """How many requests the duration histogram counted with these labels."""
    return sample(
        samples,
        "fstore_http_request_duration_seconds_count",
        method=method,
        route=route,
        status=status,
    )


async def scrape(http: aiohttp.ClientSession, served: Served) -> Samples:
    async with http.get(served.url("/metrics")) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return samples_of(await response.text())


# --- files: the whole life of one --------------------------------------------------------------


def test_put_get_head_list_caps_delete(tmp_path: Path, rng: random.Random) -> None:
    """Stored through A under a name with a slash; read through B by name and capability,
    with the ETag, length and range headers; HEAD, 304, list, peers, status, healthz,
    OpenAPI; deleted through B, then 404 everywhere; an empty file too."""
    data = rng.randbytes(3 * MiB + 12345)
    name = "photos/picture 1.png"

    async def scenario() -> None:
        async with network(tmp_path, 2) as (a, b), aiohttp.ClientSession() as http:
            before = time.time()
            async with http.put(a.file_url(name), data=data) as response:
                assert response.status == 201, await response.text()
                stored = await response.json()
                assert response.headers["Location"] == "/v1/files/photos%2Fpicture%201.png"
            # The file entry, and the copies made: two nodes, two replicas wanted.
            assert set(stored) == {*FILE_ENTRY_FIELDS, "copies", "replicas"}
            assert (stored["copies"], stored["replicas"]) == (2, 2)
            entry = {field: stored[field] for field in FILE_ENTRY_FIELDS}
            assert (entry["name"], entry["size"], entry["blake3"]) == (
                name,
                len(data),
                digest_of(data),
            )
            assert entry["capability"].startswith("fs1:")
            assert before <= entry["stored_at"] <= time.time()
            etag = f'"{entry["blake3"]}"'

            async with http.get(b.file_url(name)) as response:
                assert response.status == 200
                assert await response.read() == data
                assert response.headers["ETag"] == etag
                assert response.headers["Content-Length"] == str(len(data))
                assert response.headers["Accept-Ranges"] == "bytes"
            async with http.head(a.file_url(name)) as response:
                assert response.status == 200
                assert response.headers["ETag"] == etag
                assert response.headers["Content-Length"] == str(len(data))
                assert await response.read() == b""
            async with http.get(a.file_url(name), headers={"If-None-Match": etag}) as response:
                assert response.status == 304
                assert await response.read() == b""
            async with http.get(b.url("/v1/caps/" + entry["capability"])) as response:
                assert response.status == 200
                assert response.headers["ETag"] == etag
                assert await response.read() == data

            async with http.get(b.url("/v1/files")) as response:
                assert await response.json() == {"files": [entry]}
            async with http.get(a.url("/v1/peers")) as response:
                (peer,) = (await response.json())["peers"]
                assert peer["node_id"] == b.node.node_id.hex()
                assert isinstance(peer["outbound"], bool)
            async with http.get(a.url("/v1/status")) as response:
                status = await response.json()
            blobs = stored_blobs(a.node.data_dir)
            assert status == {
                "node_id": a.node.node_id.hex(),
                "address": a.node.address,
                "http": a.base.removeprefix("http://"),
                "replicas": 2,
                "peers": 1,
                "blobs": len(blobs),
                "blob_bytes": sum(blobs.values()),
                "under_replicated": 0,
                "repair_queue": 0,
                "last_scrub": status["last_scrub"],
                "used_bytes": sum(blobs.values()),
                "max_storage": None,
                "reclaimable_bytes": 0,
                "reclaimed_bytes": 0,
                "pinned_bytes": 0,
                "last_collection": status["last_collection"],
                "version": __version__,
            }
            # The first scrub and collection passes run at start: over, or not yet.
            assert status["last_scrub"] is None or status["last_scrub"] <= time.time()
            assert status["last_collection"] is None or status["last_collection"] <= time.time()
            async with http.get(a.url("/healthz")) as response:
                assert await response.json() == {"ok": True}

            async with http.delete(b.file_url(name)) as response:
                assert response.status == 204
            async with http.get(a.file_url(name)) as response:
                await assert_error(response, 404, "not_found")
            async with http.delete(a.file_url(name)) as response:
                await assert_error(response, 404, "not_found")
            async with http.get(a.url("/v1/files")) as response:
                assert await response.json() == {"files": []}

            async with http.put(a.file_url("empty"), data=b"") as response:
                assert response.status == 201
                assert (await response.json())["blake3"] == digest_of(b"")
            async with http.get(b.file_url("empty")) as response:
                assert await response.read() == b""
                assert response.headers["ETag"] == f'"{digest_of(b"")}"'

    run(scenario())


def test_openapi_describes_every_route(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with network(tmp_path, 1) as (a,), aiohttp.ClientSession() as http:
            async with http.get(a.url("/v1/openapi.json")) as response:
                document = await response.json()
            assert document["openapi"].startswith("3.1")
            routes = {
                (r.resource.canonical, r.method.lower())
                for r in create_app(a.node).router.routes()
                if r.resource is not None and r.method != "HEAD"  # aiohttp adds HEAD to GETs
            }
            described = {
                (path, method)
                for path, item in document["paths"].items()
                for method in item
                if method not in ("parameters", "head")
            }
            assert routes == described
            assert "head" in document["paths"]["/v1/files/{name}"]

    run(scenario())


# --- ranges --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-0", 10, (0, 1)),
        ("bytes=2-5", 10, (2, 6)),
        ("bytes=2-", 10, (2, 10)),
        ("bytes=-3", 10, (7, 10)),
        ("bytes=-30", 10, (0, 10)),
        ("bytes=5-99", 10, (5, 10)),
        (" Bytes = 1 - 2 ", 10, (1, 3)),
    ],
)
def test_parse_range(header: str, size: int, expected: tuple[int, int]) -> None:
    assert parse_range(header, size) == expected


def test_ranges_are_exact_and_read_only_the_chunks_they_cover(
    tmp_path: Path, rng: random.Random
) -> None:
    """Ranges inside one chunk, across chunk boundaries, suffix and open-ended equal the
    original's bytes. With the last chunk's blob gone, a range of the first chunk still
    reads (only the covering chunks are fetched), a range of the last chunk is a 404, and a
    whole-file GET ends early (the failure comes after its headers). Then 416 and 400s."""
    data = rng.randbytes(6 * MiB + 777)
    size = len(data)

    async def scenario() -> None:
        async with network(tmp_path, 1, replicas=1) as (a,), aiohttp.ClientSession() as http:
            url = a.file_url("f")
            async with http.put(url, data=data) as response:
                assert response.status == 201
            _, manifest = await a.node.manifest("f")
            bounds = [0]
            for ref in manifest.chunks:
                bounds.append(bounds[-1] + ref.length)
            assert len(manifest.chunks) >= 4
            first_end, second_end = bounds[1], bounds[2]

            async def expect_range(header: str, start: int, end: int) -> None:
                async with http.get(url, headers={"Range": header}) as response:
                    assert response.status == 206, (header, await response.text())
                    assert response.headers["Content-Range"] == f"bytes {start}-{end - 1}/{size}"
                    assert response.headers["Content-Length"] == str(end - start)
                    assert await response.read() == data[start:end], header

            cases = [
                (f"bytes=10-{first_end - 10}", 10, first_end - 9),  # inside one chunk
                (f"bytes={first_end - 5}-{first_end + 4}", first_end - 5, first_end + 5),
                (f"bytes=100-{second_end + 99}", 100, second_end + 100),  # three chunks
                (f"bytes={first_end}-{second_end - 1}", first_end, second_end),  # one exactly
                ("bytes=-1000", size - 1000, size),
                (f"bytes=-{size + 10}", 0, size),
                (f"bytes={size - 7}-", size - 7, size),
                (f"bytes={size - 1}-{size - 1}", size - 1, size),
                (f"bytes=5-{size + 100}", 5, size),
            ]
            for header, start, end in cases:
                await expect_range(header, start, end)
            async with http.get(url, headers={"Range": "bytes=0-9", "If-Range": '"x"'}) as r:
                assert r.status == 200 and await r.read() == data  # If-Range names another

            assert a.node.blobs.delete(manifest.chunks[-1].address)
            await expect_range("bytes=0-99", 0, 100)
            async with http.get(url, headers={"Range": f"bytes={size - 10}-"}) as response:
                await assert_error(response, 404, "not_found")
            async with http.get(url) as response:
                assert response.status == 200  # sent before the last chunk was missed
                with pytest.raises(aiohttp.ClientPayloadError):
                    await response.read()

            for header in (f"bytes={size}-", f"bytes={size + 5}-{size + 9}", "bytes=-0"):
                async with http.get(url, headers={"Range": header}) as response:
                    await assert_error(response, 416, "range_not_satisfiable")
                    assert response.headers["Content-Range"] == f"bytes */{size}"
            for header in ("bytes=5-2", "items=0-1", "bytes=0-1,3-4", "bytes=x-", "bytes=-"):
                async with http.get(url, headers={"Range": header}) as response:
                    await assert_error(response, 400, "bad_request")

    run(scenario())


def test_small_files_are_one_blob_and_serve_ranges(tmp_path: Path, rng: random.Random) -> None:
    """A file of up to INLINE_MAX bytes is carried in its manifest: each node keeps one blob
    for it (the manifest), and GETs, ranges and HEAD of it are exact through either node. One
    byte more is a chunk blob beside the manifest."""
    small = rng.randbytes(INLINE_MAX)
    size = len(small)

    async def scenario() -> None:
        async with network(tmp_path, 2) as (a, b), aiohttp.ClientSession() as http:
            async with http.put(a.file_url("small"), data=small) as response:
                assert response.status == 201
                assert (await response.json())["copies"] == 2
            _, manifest = await a.node.manifest("small")
            assert manifest.inline == small and manifest.chunks == ()
            assert [len(stored_blobs(n.node.data_dir)) for n in (a, b)] == [1, 1]
            for served in (a, b):
                async with http.get(served.file_url("small")) as response:
                    assert response.status == 200 and await response.read() == small
                cases = [("bytes=0-0", 0, 1), ("bytes=100-4195", 100, 4196)]
                cases += [("bytes=-10", size - 10, size), (f"bytes={size - 3}-", size - 3, size)]
                for header, start, end in cases:
                    async with http.get(served.file_url("small"), headers={"Range": header}) as r:
                        assert r.status == 206
                        assert r.headers["Content-Range"] == f"bytes {start}-{end - 1}/{size}"
                        assert await r.read() == small[start:end]
            async with http.get(a.file_url("small"), headers={"Range": f"bytes={size}-"}) as r:
                await assert_error(r, 416, "range_not_satisfiable")

            async with http.put(a.file_url("larger"), data=small + b"!") as response:
                assert response.status == 201
            _, larger = await a.node.manifest("larger")
            assert larger.inline is None and len(larger.chunks) == 1
            assert [len(stored_blobs(n.node.data_dir)) for n in (a, b)] == [3, 3]
            async with http.get(b.file_url("larger")) as response:
                assert await response.read() == small + b"!"

    run(scenario())


# --- errors --------------------------------------------------------------------------------


async def raw_request(address: str, request: str, *, hang_up: bool = False) -> bytes:
    """Send ``request`` as is; everything the server answers (nothing if ``hang_up``)."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request.encode())
        await writer.drain()
        return b"" if hang_up else await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


def test_request_errors(tmp_path: Path) -> None:
    """400 (capabilities; a name too long is invalid_name), 404 (names, paths), 405 and 411,
    all JSON; an upload cut short stores nothing."""

    async def scenario() -> None:
        async with network(tmp_path, 1) as (a,), aiohttp.ClientSession() as http:
            for cap in ("not-a-capability", "fs1:abc", "fs1:" + "a" * 85):
                async with http.get(a.url("/v1/caps/" + cap)) as response:
                    await assert_error(response, 400, "bad_request")
            async with http.put(a.file_url("n" * 4097), data=b"x") as response:
                await assert_error(response, 400, "invalid_name")
            for method in ("GET", "DELETE"):
                async with http.request(method, a.file_url("missing")) as response:
                    await assert_error(response, 404, "not_found")
            async with http.head(a.file_url("missing")) as response:
                assert response.status == 404
            async with http.get(a.url("/v2/nothing")) as response:
                await assert_error(response, 404, "not_found")
            async with http.post(a.url("/v1/files")) as response:
                await assert_error(response, 405, "method_not_allowed")
                assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD"}

            address = a.base.removeprefix("http://")
            answer = await raw_request(
                address, "PUT /v1/files/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert answer.startswith(b"HTTP/1.1 411 "), answer
            assert b'"code": "length_required"' in answer

            cut = "PUT /v1/files/cut HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000\r\n\r\n"
            await raw_request(address, cut + "x" * 100_000, hang_up=True)
            async with http.get(a.file_url("cut")) as response:
                await assert_error(response, 404, "not_found")

    run(scenario())


# --- names in paths ------------------------------------------------------------------------

CONTROL_NAMES = ["a\x00b", "a\x1b[31mb", "a\nb", "a\x7fb", "a\x9bb"]  # NUL, ESC, LF, DEL, C1
RESERVED_NAMES = ["fs1:hello", "fsd1:tree", "FSN1:x"]


def test_names_with_control_characters_or_a_capability_prefix_are_invalid(
    tmp_path: Path,
) -> None:
    """NUL, ESC, newline, DEL and a C1 control in a name: PUT, GET, HEAD and DELETE are 400
    invalid_name naming the character and where, and the Node refuses them too; so are names
    that start like a capability. Nothing is stored."""

    async def scenario() -> None:
        async with network(tmp_path, 1, replicas=1) as (a,), aiohttp.ClientSession() as http:
            for name in CONTROL_NAMES:
                where = f"U+{ord(name[1]):04X} at character 2"
                async with http.put(a.file_url(name), data=b"x") as response:
                    assert where in await assert_error(response, 400, "invalid_name")
                for method in ("GET", "DELETE"):
                    async with http.request(method, a.file_url(name)) as response:
                        assert where in await assert_error(response, 400, "invalid_name")
                async with http.head(a.file_url(name)) as response:
                    assert response.status == 400
                with pytest.raises(InvalidNameError, match=re.escape(where)):
                    await a.node.store(name, b"x")
                with pytest.raises(InvalidNameError, match=re.escape(where)):
                    await a.node.read(name)
                with pytest.raises(InvalidNameError, match=re.escape(where)):
                    await a.node.delete(name)
            for name in RESERVED_NAMES:
                async with http.put(a.file_url(name), data=b"x") as response:
                    message = await assert_error(response, 400, "invalid_name")
                    assert "cannot start with" in message
                async with http.get(a.file_url(name)) as response:
                    await assert_error(response, 400, "invalid_name")
                with pytest.raises(InvalidNameError):
                    await a.node.store(name, b"x")
            with pytest.raises(InvalidNameError):
                await a.node.read(
                    "fsd1:tree"
                )  # fs1: is a capability, anything else like it no name
            async with http.get(a.url("/v1/files")) as response:
                assert await response.json() == {"files": []}
            assert stored_blobs(a.node.data_dir) == {}

    run(scenario())


@pytest.mark.parametrize(
    ("segment", "name"),
    [("plain", "plain"), ("a%2Fb%20c", "a/b c"), ("%C3%A9t%c3%a9", "été"), ("%25ff", "%ff")],
)
def test_name_in_path(segment: str, name: str) -> None:
    assert name_in_path(segment) == name


@pytest.mark.parametrize("segment", ["%ff%fe", "%c3%28", "%e2%82", "%zz", "a%2", "%", "%1b"])
def test_name_in_path_is_strict(segment: str) -> None:
    with pytest.raises(InvalidNameError):
        name_in_path(segment)


def test_percent_escapes_are_decoded_strictly(tmp_path: Path) -> None:
    """Escapes that are not UTF-8 (%ff%fe, %c3%28) or not escapes at all are 400 invalid_name
    for every method, never a file named by their literal text; %25ff names the file "%ff",
    which no other path reaches."""

    async def scenario() -> None:
        async with network(tmp_path, 1, replicas=1) as (a,), aiohttp.ClientSession() as http:
            address = a.base.removeprefix("http://")
            for segment in ("%ff%fe", "%c3%28", "%zz", "a%2"):
                for method, body in (("PUT", "x"), ("GET", ""), ("DELETE", "")):
                    answer = await exchange(
                        address,
                        f"{method} /v1/files/{segment} HTTP/1.1\r\nHost: x\r\n"
                        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode(),
                    )
                    json_error(answer, 400, "invalid_name")
            async with http.get(a.url("/v1/files")) as response:
                assert await response.json() == {"files": []}

            async with http.put(a.url("/v1/files/%25ff"), data=b"literal") as response:
                assert (await response.json())["name"] == "%ff"
            get = b"GET /v1/files/%ff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            json_error(await exchange(address, get), 400, "invalid_name")
            async with http.get(a.file_url("%ff")) as response:
                assert await response.read() == b"literal"

    run(scenario())


# --- malformed requests, bodies that stall, half-closed connections --------------------------

EXCHANGE_DEADLINE = 10.0  # for one raw exchange to end with the server closing the connection


async def exchange(address: str, *parts: bytes, half_close: bool = False) -> bytes:
    """Send ``parts``, then (``half_close``) close the sending side; all the server answers
    until it closes the connection."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        for part in parts:
            writer.write(part)
        if half_close:
            writer.write_eof()
        await writer.drain()
        async with asyncio.timeout(EXCHANGE_DEADLINE):
            return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def json_error(answer: bytes, status: int, code: str) -> str:
    """``answer`` is the whole JSON error of docs/API.md, with this status and code; its message."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    assert status_line.split(" ")[1] == str(status), answer
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    assert headers["content-type"].startswith("application/json"), answer
    assert int(headers["content-length"]) == len(body), answer
    error = json.loads(body)["error"]
    assert error["code"] == code, answer
    assert isinstance(error["message"], str) and error["message"]
    return str(error["message"])


def request_log(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What the HTTP layers (aiohttp's and the node's) logged."""
    return [r for r in caplog.records if r.name.startswith(("aiohttp", "fstore.faces"))]


MALFORMED = {
    "request line": b"GARBAGE\r\n\r\n",
    "method": b"G@T /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "Content-Length": b"PUT /v1/files/x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "chunk size": (
        b"PUT /v1/files/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    ),
    "request line too long": b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header too long": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 10_000 + b"\r\n\r\n",
    "bytes after Connection: close": (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGARBAGE\r\n\r\n"
    ),
    "a control byte in the path": b"GET /v1/files/a\x1bb HTTP/1.1\r\nHost: x\r\n\r\n",
}


def test_malformed_requests_get_the_json_error_and_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Requests aiohttp cannot parse are answered 400 with the JSON error, and the connection
    closed; all of them together log one line, without a traceback, and no access-log
    lines. Nothing is stored."""
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        async with network(tmp_path, 1, replicas=1) as (a,):
            address = a.base.removeprefix("http://")
            caplog.clear()
            for what, request in MALFORMED.items():
                message = json_error(await exchange(address, request), 400, "bad_request")
                assert message.startswith("malformed request: "), what
            (line,) = request_log(caplog)
            assert line.levelno == logging.WARNING and line.exc_info is None
            assert "malformed request from 127.0.0.1" in line.getMessage()
            assert "\n" not in line.getMessage()
            assert await a.node.list() == []

    run(scenario())


def test_rate_limited_log_counts_the_lines_it_leaves_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = 100.0
    logger = logging.getLogger("test_http.limited")
    limited = RateLimitedLog(logger, interval=10, clock=lambda: now)
    caplog.set_level(logging.WARNING, logger=logger.name)
    assert limited.warning("first")
    for _ in range(3):
        now += 3
        assert not limited.warning("again")
    now = 110.0
    assert limited.warning("later")
    assert limited.warning("much later") is False  # within 10 s of "later"
    now = 1000.0
    assert limited.warning("alone")
    assert [r.getMessage() for r in caplog.records] == [
        "first",
        "later (3 more like it in the last 10 s)",
        "alone (1 more like it in the last 10 s)",
    ]


def test_an_upload_that_stops_sending_is_408_and_stores_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An upload that stalls after 10 of 100 bytes, and a chunked one whose bad chunk size
    comes only after its headers were answered 100 Continue, are answered 408 once no byte
    has come for the idle timeout, and their connections closed: nothing is stored, nothing
    logged as an error."""
    idle = 0.5
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        async with (
            network(tmp_path, 1, replicas=1, body_idle_timeout=idle) as (a,),
            aiohttp.ClientSession() as http,
        ):
            address = a.base.removeprefix("http://")
            started = time.monotonic()
            stalled = b"PUT /v1/files/stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
            answer = await exchange(address, stalled + b"0123456789")
            assert time.monotonic() - started >= idle
            assert "after 10 bytes" in json_error(answer, 408, "request_timeout")

            host, _, port = address.rpartition(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                b"PUT /v1/files/late HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            async with asyncio.timeout(EXCHANGE_DEADLINE):
                assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
                writer.write(b"zz\r\n")
                answer = await reader.read()
            writer.close()
            json_error(answer, 408, "request_timeout")

            for name in ("stalled", "late"):
                async with http.get(a.file_url(name)) as response:
                    await assert_error(response, 404, "not_found")
            assert await a.node.list() == []
            assert stored_blobs(a.node.data_dir) == {}
            assert sample(await scrape(http, a), "fstore_stored_bytes_total") == 0
            assert not [r for r in request_log(caplog) if r.levelno >= logging.ERROR]

    run(scenario())


def test_a_tree_upload_that_stops_or_is_cut_stores_nothing(tmp_path: Path) -> None:
    """A tar upload that stalls inside a member is answered 408 once the idle timeout has
    passed, and one whose connection is cut inside a member 400: the name is not stored."""
    idle = 0.5
    header = tar.header(("dir", "file"), "file", 0o644, 0, 5000)
    partial = tar.header(("dir",), "dir", 0o755, 0) + header + b"x" * 100

    async def scenario() -> None:
        async with (
            network(tmp_path, 1, replicas=1, body_idle_timeout=idle) as (a,),
            aiohttp.ClientSession() as http,
        ):
            address = a.base.removeprefix("http://")
            stalled = (
                b"PUT /v1/files/stalled?format=tar HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 20480\r\n\r\n"
            )
            answer = await exchange(address, stalled + partial)
            json_error(answer, 408, "request_timeout")
            cut = (
                b"PUT /v1/files/cut?format=tar HTTP/1.1\r\nHost: x\r\nContent-Length: 20480\r\n\r\n"
            )
            answer = await exchange(address, cut + partial, half_close=True)
            json_error(answer, 400, "bad_request")
            for name in ("stalled", "cut"):
                async with http.get(a.file_url(name) + "/") as response:
                    await assert_error(response, 404, "not_found")
            assert await a.node.list() == []

    run(scenario())


def test_an_upload_that_keeps_sending_slowly_is_not_cut(tmp_path: Path) -> None:
    """The timeout is for silence, not for the whole body: pieces a quarter of it apart, for
    longer than it in all, are stored."""
    idle = 1.0

    async def slow_client() -> AsyncIterator[bytes]:
        for _ in range(6):
            yield b"x" * 1000
            await asyncio.sleep(idle / 4)  # the pace of a slow client, not a wait for anything

    async def scenario() -> None:
        async with (
            network(tmp_path, 1, replicas=1, body_idle_timeout=idle) as (a,),
            aiohttp.ClientSession() as http,
        ):
            started = time.monotonic()
            async with http.put(a.file_url("slow"), data=slow_client()) as response:
                assert response.status == 201, await response.text()
                assert (await response.json())["size"] == 6000
            assert time.monotonic() - started > idle

    run(scenario())


def test_a_half_closed_request_is_answered(tmp_path: Path) -> None:
    """A client that closes its sending side after its request still gets the answer, then
    the connection closes: 201 for a whole upload, 200 for a GET, 400 for an upload cut
    short (nothing stored); a connection half-closed before any request is closed."""

    async def scenario() -> None:
        async with network(tmp_path, 1, replicas=1) as (a,):
            address = a.base.removeprefix("http://")
            whole = b"PUT /v1/files/whole HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
            answer = await exchange(address, whole + b"0123456789", half_close=True)
            assert answer.startswith(b"HTTP/1.1 201 "), answer
            assert await a.node.read("whole") == b"0123456789"

            get = b"GET /v1/files/whole HTTP/1.1\r\nHost: x\r\n\r\n"
            answer = await exchange(address, get, half_close=True)
            assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n0123456789")

            cut = b"PUT /v1/files/cut HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
            answer = await exchange(address, cut + b"0123456789", half_close=True)
            assert "after 10 bytes" in json_error(answer, 400, "bad_request")
            assert [e.name for e in await a.node.list()] == ["whole"]

            assert await exchange(address, half_close=True) == b""

    run(scenario())


def flip_byte(path: Path) -> None:
    """Damage a blob file in place, as a disk error would."""
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))


def test_every_copy_corrupt_is_422(tmp_path: Path, rng: random.Random) -> None:
    """Both nodes hold every blob; the first chunk is damaged on both disks. A GET is a 422
    (before any byte is sent), each node counts one disk verification failure (b when a
    reports the copy b served), a counts one peer failure, and a range of an intact chunk still
    reads."""
    data = rng.randbytes(3 * MiB)

    async def scenario() -> None:
        async with network(tmp_path, 2) as (a, b), aiohttp.ClientSession() as http:
            async with http.put(a.file_url("f"), data=data) as response:
                assert response.status == 201
            _, manifest = await a.node.manifest("f")
            first, second = manifest.chunks[0], manifest.chunks[1]
            for node in (a.node, b.node):
                path = blob_path(node.data_dir, first.address)
                assert path.is_file()
                flip_byte(path)

            async with http.get(a.file_url("f")) as response:
                message = await assert_error(response, 422, "integrity")
            assert first.address.hex() in message
            start, end = first.length, first.length + second.length
            headers = {"Range": f"bytes={start}-{end - 1}"}
            async with http.get(a.file_url("f"), headers=headers) as response:
                assert response.status == 206 and await response.read() == data[start:end]

            async def failures(served: Served, source: str) -> float:
                samples = await scrape(http, served)
                return sample(samples, "fstore_verification_failures_total", source=source)

            # b served its copy as stored; a found it bad and told b, which checked it.
            deadline = time.monotonic() + 10.0
            while await failures(b, "disk") < 1:
                assert time.monotonic() < deadline, "b never checked the copy a reported"
                await asyncio.sleep(0.02)
            assert (await failures(a, "disk"), await failures(a, "peer")) == (1, 1)
            assert (await failures(b, "disk"), await failures(b, "peer")) == (1, 0)

    run(scenario())


def test_peer_that_cannot_write_is_503(
    cluster: Cluster, tmp_path: Path, rng: random.Random
) -> None:
    """A node (R=2) whose only peer is live but cannot write a chunk (its file size limit is
    below every chunk's size) cannot get two copies: 503, a replication failure counted,
    and the name was not stored."""
    peer = cluster.holder("peer", durable=False)
    limit = 128 * 1024  # chunks are at least 256 KiB, except a file's last one
    resource.prlimit(peer.pid, resource.RLIMIT_FSIZE, (limit, limit))

    async def scenario() -> None:
        async with (
            network(tmp_path / "here", 1, peers=(peer.address,), join=cluster.network) as (a,),
            aiohttp.ClientSession() as http,
        ):
            async with http.put(a.file_url("f"), data=rng.randbytes(2 * MiB)) as response:
                await assert_error(response, 503, "insufficient_replicas")
            async with http.get(a.file_url("f")) as response:
                await assert_error(response, 404, "not_found")
            samples = await scrape(http, a)
            assert sample(samples, "fstore_replication_failures_total") >= 1
            assert sample(samples, "fstore_stored_bytes_total") == 0

    run(scenario())


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[None]:
    """A tmpfs of ``size`` mounted on ``path`` (skips the test if mounting is not allowed)."""
    path.mkdir()
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if mount is None or umount is None:
        pytest.skip("no mount command to make a small file system to fill")
    result = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {result.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run([umount, str(path)], check=True)


def test_full_disk_is_507(tmp_path: Path, rng: random.Random) -> None:
    """A lone node whose data directory is on a 1 MiB tmpfs cannot store 8 MiB: 507."""
    small = tmp_path / "small"
    with tmpfs(small, "1m"):

        async def scenario() -> None:
            async with network(small, 1, replicas=1) as (a,), aiohttp.ClientSession() as http:
                async with http.put(a.file_url("f"), data=rng.randbytes(8 * MiB)) as response:
                    await assert_error(response, 507, "disk_full")
                async with http.get(a.url("/healthz")) as response:
                    assert response.status == 200

        run(scenario())


# --- metrics -------------------------------------------------------------------------------


def test_metrics_count_known_traffic(tmp_path: Path, rng: random.Random) -> None:
    """After two stores, a get, a range and a miss through A (R=2, two nodes), A's and B's
    counters say exactly that, in registries of their own."""
    one, two = rng.randbytes(2 * MiB + 1), rng.randbytes(MiB + 2)

    async def scenario() -> None:
        async with network(tmp_path, 2) as (a, b), aiohttp.ClientSession() as http:
            for name, data in (("one", one), ("two", two)):
                async with http.put(a.file_url(name), data=data) as response:
                    assert response.status == 201
            async with http.get(a.file_url("one")) as response:
                assert await response.read() == one
            async with http.get(a.file_url("two"), headers={"Range": "bytes=10-1009"}) as r:
                assert r.status == 206 and len(await r.read()) == 1000
            async with http.get(a.file_url("three")) as response:
                assert response.status == 404
            mine, theirs = await scrape(http, a), await scrape(http, b)

            held = sum(stored_blobs(b.node.data_dir).values())
            assert sample(mine, "fstore_stored_bytes_total") == len(one) + len(two)
            assert sample(mine, "fstore_served_bytes_total") == len(one) + 1000
            assert sample(mine, "fstore_blob_bytes_sent_total") == held
            assert sample(theirs, "fstore_blob_bytes_received_total") == held
            assert sample(theirs, "fstore_blob_bytes") == held
            assert sample(mine, "fstore_blobs") == len(stored_blobs(a.node.data_dir))
            assert sample(mine, "fstore_peers_connected") == 1
            assert sample(mine, "fstore_replication_failures_total") == 0
            # Where each commit ran is tested in test_group_commit; here, that all are counted:
            # each store commits its chunks, its manifest and its record at least.
            commits = [
                sample(mine, "fstore_group_commits_total", on=on) for on in ("loop", "thread")
            ]
            assert sum(commits) >= 6, commits
            assert sample(theirs, "fstore_stored_bytes_total") == 0
            assert sample(theirs, "fstore_served_bytes_total") == 0

            assert request_count(mine, "PUT", FILE_ROUTE, "201") == 2
            assert request_count(mine, "GET", FILE_ROUTE, "200") == 1
            assert request_count(mine, "GET", FILE_ROUTE, "206") == 1
            assert request_count(mine, "GET", FILE_ROUTE, "404") == 1
            assert any(name == "process_cpu_seconds_total" for name, _ in mine)
            again = await scrape(http, a)  # the first scrape is counted once it has ended
            assert request_count(again, "GET", "/metrics", "200") == 1

    run(scenario())


# --- real fstore-node processes -----------------------------------------------------------


async def file_pieces(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:
        while piece := f.read(MiB):
            yield piece


def test_256_mib_streams_through_a_node_process(cluster: Cluster, tmp_path: Path) -> None:
    """256 MiB up (chunked, never a Content-Length) and down through a real fstore-node, whose
    peak RSS stays under 300 MB; its HTTP address is printed and in http.addr, which a
    clean stop removes."""
    node = cluster.holder("node", durable=False)
    addr_file = node.data_dir / HTTP_ADDR_FILE
    assert addr_file.read_text() == node.http_address + "\n"
    size = 256 * MiB
    source = tmp_path / "big.bin"
    digest = write_random_file(source, size, b"through http")
    url = f"http://{node.http_address}/v1/files/big.bin"

    async def scenario() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http:
            async with http.put(url, data=file_pieces(source)) as response:
                assert response.status == 201, await response.text()
                assert (await response.json())["blake3"] == digest
            async with http.get(url) as response:
                assert response.headers["ETag"] == f'"{digest}"'
                assert response.headers["Content-Length"] == str(size)
                hasher = blake3.blake3()
                received = 0
                async for piece in response.content.iter_chunked(MiB):
                    hasher.update(piece)
                    received += len(piece)
            assert (received, hasher.hexdigest()) == (size, digest)

    run(scenario())
    peak = node.peak_rss()
    print(f"fstore-node peak RSS after 256 MiB up and down over HTTP: {peak / 1e6:.0f} MB")
    assert peak < 300 * 1000 * 1000
    assert node.terminate(timeout=10) == 0
    assert not addr_file.exists()


def free_port_pair(offset: int) -> int:
    """A loopback port P such that P and P + offset are both free right now."""

    def candidate() -> int | None:
        with contextlib.ExitStack() as stack:
            first = stack.enter_context(socket.socket())
            first.bind(("127.0.0.1", 0))
            port: int = first.getsockname()[1]
            if port + offset > 65535:
                return None
            second = stack.enter_context(socket.socket())
            try:
                second.bind(("127.0.0.1", port + offset))
            except OSError:
                return None
            return port

    return wait_until(candidate, 10, "a free pair of ports")


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        (3000, "127.0.0.1:13000"),
        (55535, "127.0.0.1:65535"),
        (55536, "127.0.0.1:0"),
        (0, "127.0.0.1:0"),
    ],
)
def test_default_http_address(port: int, expected: str) -> None:
    """Loopback, whatever the node's host; the node's port + 10000, else ephemeral."""
    assert default_http(port) == expected


def test_default_http_port_is_node_port_plus_10000(cluster: Cluster) -> None:
    port = free_port_pair(10000)
    node = cluster.holder("node", addr=f":{port}", http=None)
    assert node.http_address == f"127.0.0.1:{port + 10000}"
    assert (node.data_dir / HTTP_ADDR_FILE).read_text().strip() == node.http_address


def test_http_port_in_use_is_one_line(cluster: Cluster, tmp_path: Path) -> None:
    first = cluster.holder("first")
    result = subprocess.run(
        [
            fstore_node_command(),
            "--addr",
            ":0",
            "--http",
            first.http_address,
            "--data-dir",
            str(tmp_path / "second"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("fstore-node:")]
    assert f"cannot listen on {first.http_address} (HTTP): address in use" in line
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="session")
def curl() -> str:
    """The ``curl`` command. Missing is a failure, never a skip: CI installs it."""
    path = shutil.which("curl")
    if path is None:
        pytest.fail("`curl` is not installed: apt-get install -y curl (CI does)", pytrace=False)
    return path


def test_curl_put_and_get(cluster: Cluster, tmp_path: Path, curl: str) -> None:
    """``curl -T`` stores a file (with a Content-Length), ``curl -o`` reads it back."""
    node = cluster.holder("node", durable=False)
    source = tmp_path / "picture_1.png"
    digest = write_random_file(source, 5 * MiB + 3, b"curl")
    url = f"http://{node.http_address}/v1/files/picture_1.png"

    def curl_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [curl, "--silent", "--show-error", "--fail", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

    put = curl_run("-T", str(source), url)
    assert f'"blake3": "{digest}"' in put.stdout
    out = tmp_path / "copy.png"
    curl_run("-o", str(out), url)
    assert blake3_file(out) == digest
    assert out.read_bytes() == source.read_bytes()
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=10) == 0
