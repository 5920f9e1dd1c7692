"""Fuzzing of what a peer controls: the frame codec and every request handler.

Two targets, both fed hypothesis-generated hostile input:

- ``wire.Connection`` (and so ``wire.FrameDecoder``): random byte streams, and
  structurally valid frames (random kinds, streams, meta and bodies, after a real
  HELLO or not) mutated by bit flips, truncation, length-prefix edits, insertions
  and deletions, fed in random splits through ``feed`` or ``get_buffer`` /
  ``buffer_updated``. Each input yields events or raises ``ProtocolError``, never
  another exception, and a failed connection refuses further input. A few huge
  ``length`` prefixes are checked with tracemalloc: nothing beyond one frame's
  limit is ever allocated.
- ``Node._handle``: a real, started in-process ``Node`` (data directory in
  ``tmp_path``) called directly with known and random ops, random meta (every
  msgpack type, wrong types for known fields, addresses of the wrong length, huge
  lists) and bodies. Each call returns a ``Reply`` that the wire can encode, or
  raises ``RemoteError`` with a code in ``wire.ERROR_CODES``. Afterwards every
  file under ``tmp_path`` is inside the node's data directory, and every blob
  file is named by 64 hex digits that are the BLAKE3 of its content. The
  ``link`` argument is a stand-in with a peer's identity: the handlers do not
  use their link (``PeerLink`` itself needs a running loop and a transport).

The default sizes give 10,500 cases in about 30 s on 2 cores. For a longer run,
set ``FSTORE_FUZZ_EXAMPLES`` to the total number of cases wanted; every fuzz test
scales its ``max_examples`` in proportion::

    FSTORE_FUZZ_EXAMPLES=200000 .venv/bin/python -m pytest -q -p no:cacheprovider \\
        tests/test_fuzz.py
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import sqlite3
import struct
import tracemalloc
from pathlib import Path
from typing import Any, cast

import msgpack
import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fstore import _native
from fstore.errors import ProtocolError, RemoteError
from fstore.net import wire
from fstore.net.link import PeerLink, Reply
from fstore.node import Node
from fstore.node.service import HANDLERS as _HANDLERS
from fstore.storage.catalog import CATALOG_NAME

KiB = 1024
HEADER = struct.Struct(">IBII")

# max_examples of each fuzz test at the default size; they add up to DEFAULT_TOTAL.
DEFAULT_EXAMPLES = {
    "byte_streams": 5000,
    "mutated_frames": 3000,
    "handlers": 2500,
}
DEFAULT_TOTAL = sum(DEFAULT_EXAMPLES.values())


def examples(test: str) -> int:
    """``max_examples`` for ``test``, scaled by ``FSTORE_FUZZ_EXAMPLES`` (a total) if set."""
    default = DEFAULT_EXAMPLES[test]
    total = os.environ.get("FSTORE_FUZZ_EXAMPLES")
    if not total:
        return default
    return max(1, int(default * int(total) / DEFAULT_TOTAL))


def fuzz(test: str) -> settings:
    return settings(
        max_examples=examples(test),
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


# --- strategies ----------------------------------------------------------------------

NODE_A = bytes(range(32))
NODE_B = bytes(range(100, 132))

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=40)
    | st.binary(max_size=80)
)
# Every msgpack type; keys are str, as the decoder demands of meta.
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=20,
)


def pack(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


# Meta bytes of a frame: usually a msgpack map (whose keys matter to the Connection),
# sometimes anything msgpack can pack, sometimes not msgpack at all.
frame_meta_objects = st.one_of(
    st.fixed_dictionaries(
        {"op": st.sampled_from(["ping", "get_blob", "put_blob"]) | st.text(max_size=8)},
        optional={"addr": st.binary(min_size=32, max_size=32), "x": values},
    ),
    st.fixed_dictionaries(
        {"ok": st.booleans() | values},
        optional={"code": st.text(max_size=10) | values, "msg": st.text(max_size=10) | values},
    ),
    st.fixed_dictionaries(
        {"v": st.just(wire.VERSION) | values, "node": st.just(NODE_B) | values},
        optional={"addr": st.none() | st.text(max_size=20) | values},
    ),
    st.fixed_dictionaries({"code": st.text(max_size=10), "msg": st.text(max_size=10)}),
    st.dictionaries(st.text(max_size=6), values, max_size=5),
    values,
    st.dictionaries(st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=4), values, max_size=3),
)
frame_meta = frame_meta_objects.map(pack) | st.binary(max_size=64)

kinds = st.sampled_from(list(wire.FrameKind)) | st.integers(0, 255)
streams = st.sampled_from([0, 1, 2, 3, wire.MAX_STREAM]) | st.integers(0, wire.MAX_STREAM)
bodies = st.binary(max_size=300)


@st.composite
def frame_lists(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """Frames laid out exactly as the wire does, any kind/stream/meta/body; their offsets."""
    frames: list[bytes] = []
    if draw(st.booleans()):
        hello = {
            "v": wire.VERSION,
            "node": NODE_B,
            "addr": draw(st.none() | st.just("h:1")),
            "proof": bytes(32),
        }
        frames.append(HEADER.pack(9 + len(pack(hello)), 1, 0, len(pack(hello))) + pack(hello))
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(kinds)
        stream = draw(streams)
        meta = draw(frame_meta)
        body = draw(bodies)
        frames.append(HEADER.pack(9 + len(meta) + len(body), kind, stream, len(meta)) + meta + body)
    offsets = []
    position = 0
    for frame in frames:
        offsets.append(position)
        position += len(frame)
    return b"".join(frames), offsets


def shifted(old: int, delta: int) -> int:
    return (old + delta) % 2**32


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    data, offsets = draw(frame_lists())
    buffer = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        what = draw(st.sampled_from(["flip", "truncate", "length", "meta_len", "insert", "delete"]))
        if what == "flip" and buffer:
            position = draw(st.integers(0, len(buffer) - 1))
            buffer[position] ^= 1 << draw(st.integers(0, 7))
        elif what == "truncate" and buffer:
            del buffer[draw(st.integers(0, len(buffer) - 1)) :]
        elif what in ("length", "meta_len") and offsets:
            field = offsets[draw(st.integers(0, len(offsets) - 1))] + (0 if what == "length" else 9)
            if field + 4 <= len(buffer):
                old: int
                (old,) = struct.unpack_from(">I", buffer, field)
                new = draw(
                    st.integers(0, 2**32 - 1)
                    | st.sampled_from([0, 8, 9, wire.MAX_FRAME, wire.MAX_FRAME + 1, 2**32 - 1])
                    | st.integers(-16, 16).map(functools.partial(shifted, old))
                )
                struct.pack_into(">I", buffer, field, new)
        elif what == "insert":
            position = draw(st.integers(0, len(buffer)))
            buffer[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif what == "delete" and buffer:
            position = draw(st.integers(0, len(buffer) - 1))
            del buffer[position : position + draw(st.integers(1, 16))]
    return bytes(buffer)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


EVENT_TYPES = (wire.HelloReceived, wire.RequestReceived, wire.ResponseReceived, wire.GoAway)


def check_connection_input(pieces: list[bytes], lend: bool) -> None:
    """Feed ``pieces`` to a fresh Connection: only events or ProtocolError, then refusal."""
    conn = wire.Connection(NODE_A, None)
    conn.hello(bytes(32))
    try:
        for piece in pieces:
            if lend:
                view = memoryview(piece)
                while view:
                    target = conn.get_buffer(len(view))
                    assert len(target) > 0
                    n = min(len(target), len(view))
                    target[:n] = view[:n]
                    view = view[n:]
                    events = conn.buffer_updated(n)
                    assert all(isinstance(e, EVENT_TYPES) for e in events)
            else:
                events = conn.feed(piece)
                assert all(isinstance(e, EVENT_TYPES) for e in events)
    except ProtocolError:
        with pytest.raises(ProtocolError):
            conn.feed(b"\0" * 13)
        # The sending side stays usable to say why.
        assert conn.goaway("protocol_error", "fuzz")


# --- the frame codec ---------------------------------------------------------------------


@fuzz("byte_streams")
@given(
    data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=8), lend=st.booleans()
)
def test_random_byte_streams(data: bytes, cuts: list[int], lend: bool) -> None:
    check_connection_input(split(data, cuts), lend)


@fuzz("mutated_frames")
@given(
    data=mutated_streams(),
    cuts=st.lists(st.integers(0, 4000), max_size=8),
    lend=st.booleans(),
)
def test_mutated_frames(data: bytes, cuts: list[int], lend: bool) -> None:
    check_connection_input(split(data, cuts), lend)


# header -> whether it is refused before its frame's buffer is allocated
HUGE_HEADERS = {
    "2**32-1 request": (HEADER.pack(2**32 - 1, wire.FrameKind.REQUEST, 1, 10), True),
    "MAX_FRAME+1 request": (HEADER.pack(wire.MAX_FRAME + 1, wire.FrameKind.REQUEST, 1, 10), True),
    "MAX_FRAME unknown kind": (HEADER.pack(wire.MAX_FRAME, 9, 1, 10), True),
    "MAX_FRAME hello": (HEADER.pack(wire.MAX_FRAME, wire.FrameKind.HELLO, 0, 10), True),
    "MAX_FRAME meta_len 2**32-1": (
        HEADER.pack(wire.MAX_FRAME, wire.FrameKind.REQUEST, 1, 2**32 - 1),
        True,
    ),
    "MAX_FRAME request on stream 0": (
        HEADER.pack(wire.MAX_FRAME, wire.FrameKind.REQUEST, 0, 10),
        True,
    ),
    "2**31 response": (HEADER.pack(2**31, wire.FrameKind.RESPONSE, 1, 0), True),
    "MAX_FRAME request": (
        HEADER.pack(wire.MAX_FRAME, wire.FrameKind.REQUEST, 1, wire.MAX_META),
        False,
    ),
    "MAX_BODY response": (
        HEADER.pack(9 + 10 + wire.MAX_BODY, wire.FrameKind.RESPONSE, 7, 10),
        False,
    ),
    "MAX_BODY+1 response": (
        HEADER.pack(9 + 10 + wire.MAX_BODY + 1, wire.FrameKind.RESPONSE, 7, 10),
        True,
    ),
}


@pytest.mark.parametrize(("header", "refused"), HUGE_HEADERS.values(), ids=HUGE_HEADERS.keys())
def test_huge_lengths_never_allocate_beyond_one_frame(header: bytes, refused: bool) -> None:
    """A header claiming a huge frame costs at most one frame's buffer, whatever follows;
    one the decoder refuses costs nothing of the sort."""
    conn = wire.Connection(NODE_A, None)  # its scratch buffer exists before tracing starts
    conn.hello(bytes(32))
    hello = {"v": wire.VERSION, "node": NODE_B, "addr": None, "proof": bytes(32)}
    conn.feed(HEADER.pack(9 + len(pack(hello)), 1, 0, len(pack(hello))) + pack(hello))
    body_start = b"\xa5" * (64 * KiB)
    tracemalloc.start()
    try:
        try:
            conn.feed(header)
            conn.feed(body_start)
            failed = False
        except ProtocolError:
            failed = True
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert failed == refused
    if refused:
        assert peak < 32 * KiB
    else:
        # Its buffer, nothing more: a fresh one, or none if a pooled one was free.
        assert peak <= wire.MAX_FRAME + 32 * KiB


# --- the request handlers ----------------------------------------------------------------

KNOWN_OPS = sorted(_HANDLERS)
FIELDS = ["addr", "addrs", "loc", "rec", "ver", "after", "target", "op", "peers", "ok"]

addresses = st.binary(min_size=32, max_size=32)
wrong_addresses = st.binary(max_size=31) | st.binary(min_size=33, max_size=70)
address_like = addresses | wrong_addresses | st.text(min_size=32, max_size=32) | values
versions = st.lists(st.integers(-(2**64), 2**64 - 1) | addresses | values, max_size=3)
huge_lists = st.builds(
    lambda n, item: [item] * n, st.integers(0, 3000), addresses | wrong_addresses | values
)
field_values: dict[str, st.SearchStrategy[Any]] = {
    "addr": address_like,
    "addrs": st.lists(address_like, max_size=8) | huge_lists | values,
    "loc": address_like,
    "rec": st.binary(max_size=300) | st.binary(min_size=64 * KiB, max_size=64 * KiB + 2) | values,
    "ver": versions | values,
    "after": address_like,
    "target": address_like,
}


# A well-formed request, half the time, for each handler whose success needs particular
# fields: whether the fuzz reaches every success path must not depend on the draw.
WELL_FORMED: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "put_record": st.fixed_dictionaries(
        {
            "loc": addresses,
            "rec": st.binary(max_size=200),
            "ver": st.tuples(st.integers(0, 2**63 - 1) | st.booleans(), addresses).map(list),
        }
    ),
    "has_blobs": st.fixed_dictionaries({"addrs": st.lists(addresses, max_size=8)}),
    "find_node": st.fixed_dictionaries({"target": addresses}),
}


@st.composite
def handler_calls(draw: st.DrawFn) -> tuple[str, dict[str, Any], bytes]:
    op = draw(st.sampled_from(KNOWN_OPS) | st.text(max_size=12))
    meta: dict[str, Any] = {}
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=5, unique=True)):
        meta[field] = draw(field_values.get(field, values))
    meta.update(draw(st.dictionaries(st.text(max_size=6), values, max_size=3)))
    body = draw(st.binary(max_size=400))
    if op == "put_blob" and draw(st.booleans()):
        meta["addr"] = _native.hash(body)  # a real blob: it gets written
    if op in WELL_FORMED and draw(st.booleans()):
        meta.update(draw(WELL_FORMED[op]))
    return op, meta, body


def check_blob_files(root: Path, data_dir: Path) -> int:
    """Every file under ``root`` is in ``data_dir``; every blob (file or catalog row) is
    named by its hash. Returns how many blobs there are."""
    blobs = 0
    if (data_dir / CATALOG_NAME).exists():
        with contextlib.closing(sqlite3.connect(data_dir / CATALOG_NAME)) as db:
            for address, data in db.execute("SELECT address, data FROM small_blobs"):
                assert _native.hash(data) == address, f"row {address.hex()}"
                blobs += 1
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory, name)
            assert path.is_relative_to(data_dir), f"{path} is outside {data_dir}"
            relative = path.relative_to(data_dir)
            if relative.parts[0] != "blobs":
                continue
            assert relative.parts[1] not in ("tmp", "corrupt"), f"{path} was left behind"
            assert len(name) == 64 and all(c in "0123456789abcdef" for c in name), path
            assert _native.hash(path.read_bytes()).hex() == name, path
            assert relative.parts[1:3] == (name[0:2], name[2:4]), path
            blobs += 1
    return blobs


class StandInLink:
    """The handlers' ``link`` argument: they only use it to name the peer in logs."""

    peer_node = NODE_B
    peer_addr = "127.0.0.1:9"
    outbound = False

    def describe(self) -> str:
        return "peer fuzz@127.0.0.1:9"


def test_every_handler_answers_a_reply_or_a_remote_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    loop = uvloop.new_event_loop()
    node = Node(data_dir, durable=False, ping_interval=3600)
    loop.run_until_complete(node.start())
    link = cast(PeerLink, StandInLink())
    outcomes: dict[str, int] = {}

    def call(op: str, meta: dict[str, Any], body: bytes) -> str:
        try:
            reply = loop.run_until_complete(node._handle(link, op, meta, memoryview(body)))
        except RemoteError as e:
            assert e.code in wire.ERROR_CODES, e
            return e.code
        assert isinstance(reply, Reply), reply
        # What the link would send: the reply must be encodable within the wire's limits.
        wire.encode_frame(wire.FrameKind.RESPONSE, 1, {"ok": True, **reply.meta}, reply.body)
        return "ok"

    @fuzz("handlers")
    @given(handler_calls())
    def fuzz_handlers(case: tuple[str, dict[str, Any], bytes]) -> None:
        op, meta, body = case
        outcome = call(op, meta, body)
        key = f"{op if op in _HANDLERS else '?'} {outcome}"
        outcomes[key] = outcomes.get(key, 0) + 1

    try:
        fuzz_handlers()
    finally:
        loop.run_until_complete(node.stop())
        loop.close()
    # The fuzz reached the handlers' success paths, not only their refusals.
    for op in ("ping", "put_blob", "put_record", "has_blobs", "list_records", "find_node"):
        assert outcomes.get(f"{op} ok"), (op, outcomes)
    assert check_blob_files(tmp_path, data_dir) >= 1


def test_handler_check_sees_a_stray_file(tmp_path: Path) -> None:
    """The after-run check itself: a file outside the data dir, or a misnamed blob, fails it."""
    data_dir = tmp_path / "node"
    (data_dir / "blobs" / "ab" / "cd").mkdir(parents=True)
    blob = data_dir / "blobs" / "ab" / "cd" / ("ab" + "cd" + "0" * 60)
    blob.write_bytes(b"not its hash")
    with pytest.raises(AssertionError):
        check_blob_files(tmp_path, data_dir)
    blob.unlink()
    (tmp_path / "stray").write_bytes(b"")
    with pytest.raises(AssertionError, match="outside"):
        check_blob_files(tmp_path, data_dir)


def test_put_record_with_a_bool_clock_is_a_bad_request(tmp_path: Path) -> None:
    """Found by the fuzz above: msgpack's ``true`` passes ``_record_entry``'s ``isinstance(clock,
    int)`` check, and the catalog's own check then raises InvalidArgumentError out of the
    handler instead of a ``bad_request`` RemoteError."""
    meta = {"loc": bytes(32), "rec": b"", "ver": [True, bytes(32)]}

    async def put() -> None:
        async with Node(tmp_path / "node", durable=False, ping_interval=3600) as node:
            link = cast(PeerLink, StandInLink())
            with pytest.raises(RemoteError) as refused:
                await node._handle(link, "put_record", meta, memoryview(b""))
            assert refused.value.code == "bad_request"

    uvloop.run(put())
