"""The sans-IO wire protocol (``fstore.net.wire``): frames, limits, handshake, streams, fuzzing."""

from __future__ import annotations

import random
import struct
import tracemalloc
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fstore.errors import InvalidArgumentError, ProtocolError
from fstore.net import wire
from fstore.net.wire import Frame, FrameKind

KiB = 1024
MiB = 1024 * KiB

NODE_A = bytes(range(32))
NODE_B = bytes(range(100, 132))
PROOF_A = bytes(range(200, 232))  # what a HELLO proves is checked by fstore.net.trust, not here
PROOF_B = bytes(range(50, 82))
V = wire.VERSION
HEADER = struct.Struct(">IBII")

REQUEST, RESPONSE = FrameKind.REQUEST, FrameKind.RESPONSE
HELLO, GOAWAY = FrameKind.HELLO, FrameKind.GOAWAY


def join(writes: Sequence[bytes | memoryview]) -> bytes:
    return b"".join(writes)


def encoded(kind: FrameKind, stream: int, meta: dict[str, Any], body: bytes = b"") -> bytes:
    return join(wire.encode_frame(kind, stream, meta, body))


def raw_frame(
    kind: int,
    stream: int,
    meta: bytes,
    body: bytes = b"",
    *,
    length: int | None = None,
    meta_len: int | None = None,
) -> bytes:
    """A frame built by hand, so that any field can be wrong."""
    if length is None:
        length = 9 + len(meta) + len(body)
    if meta_len is None:
        meta_len = len(meta)
    return HEADER.pack(length, kind, stream, meta_len) + meta + body


def packed(value: Any) -> bytes:
    result: bytes = msgpack.packb(value, use_bin_type=True)
    return result


def hello_bytes(node: bytes = NODE_B, addr: str | None = "10.0.0.2:5000") -> bytes:
    return encoded(HELLO, 0, {"v": V, "node": node, "addr": addr, "proof": PROOF_B})


def pair() -> tuple[wire.Connection, wire.Connection]:
    """Two connections that have exchanged HELLOs."""
    a = wire.Connection(NODE_A, "10.0.0.1:5000")
    b = wire.Connection(NODE_B, None)
    hello_a, hello_b = join(a.hello(PROOF_A)), join(b.hello(PROOF_B))
    assert b.feed(hello_a) == [wire.HelloReceived(NODE_A, "10.0.0.1:5000", PROOF_A)]
    assert a.feed(hello_b) == [wire.HelloReceived(NODE_B, None, PROOF_B)]
    return a, b


def greeted() -> wire.Connection:
    """A connection that has sent its HELLO and received the peer's (NODE_B)."""
    conn = wire.Connection(NODE_A, None)
    conn.hello(PROOF_A)
    conn.feed(hello_bytes())
    return conn


def socket_feed(
    decoder: wire.FrameDecoder, data: bytes, chunk: int
) -> tuple[list[Frame], list[object]]:
    """Play the socket: write at most ``chunk`` bytes into each lent buffer.

    Returns the frames and, for every write, the object that owned the buffer written into.
    """
    frames: list[Frame] = []
    written_into: list[object] = []
    pos = 0
    while pos < len(data):
        buf = decoder.get_buffer(-1)
        assert len(buf) > 0
        n = min(len(buf), chunk, len(data) - pos)
        buf[:n] = data[pos : pos + n]
        written_into.append(buf.obj)
        frames += decoder.buffer_updated(n)
        pos += n
    return frames, written_into


# --- frames -----------------------------------------------------------------------


def test_layout_is_exact() -> None:
    # length 18 = 9 + 9 bytes of meta; kind 2; stream 7; meta_len 9; meta {"op": "ping"}
    assert encoded(REQUEST, 7, {"op": "ping"}) == (
        b"\x00\x00\x00\x12\x02\x00\x00\x00\x07\x00\x00\x00\x09\x81\xa2op\xa4ping"
    )
    # The HELLO example of docs/PROTOCOL.md, section 4.
    hello = {
        "v": 2,
        "node": bytes(range(32)),
        "addr": "127.0.0.1:5000",
        "proof": bytes(range(0xA0, 0xC0)),
    }
    assert encoded(HELLO, 0, hello) == (
        bytes.fromhex(
            "00000070 01 00000000 00000067 84a17602a46e6f6465c420"
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
            "a461646472ae3132372e302e302e313a35303030"
            "a570726f6f66c420"
            "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
        )
    )
    conn = wire.Connection(bytes(range(32)), "127.0.0.1:5000")
    assert join(conn.hello(bytes(range(0xA0, 0xC0)))) == encoded(HELLO, 0, hello)
    assert encoded(RESPONSE, 0x01020304, {}, b"xyz") == (
        b"\x00\x00\x00\x0d\x03\x01\x02\x03\x04\x00\x00\x00\x01\x80xyz"
    )


KIND_CASES = [
    (HELLO, 0, {"v": 1, "node": NODE_A, "addr": None}, b""),
    (GOAWAY, 0, {"code": "shutdown", "msg": "bye"}, b""),
    (REQUEST, 1, {"op": "ping"}, b""),
    (REQUEST, 0xFFFF_FFFF, {"op": "put_blob", "addr": NODE_A}, b"blob bytes"),
    (RESPONSE, 5, {"ok": True}, b""),
    (RESPONSE, 5, {"ok": True}, bytes(range(256)) * 3),
]


@pytest.mark.parametrize(("kind", "stream", "meta", "body"), KIND_CASES)
def test_round_trip_every_kind(
    kind: FrameKind, stream: int, meta: dict[str, Any], body: bytes
) -> None:
    writes = wire.encode_frame(kind, stream, meta, body)
    assert len(writes) == (2 if body else 1)
    assert isinstance(writes[0], bytes)
    frames = wire.FrameDecoder().feed(join(writes))
    assert frames == [Frame(kind, stream, meta, memoryview(body))]
    assert frames[0].body.readonly


def test_encode_passes_the_body_through_uncopied() -> None:
    body = bytearray(b"sealed chunk")
    writes = wire.encode_frame(REQUEST, 1, {"op": "put_blob"}, body)
    assert isinstance(writes[1], memoryview)
    assert writes[1].obj is body
    as_bytes = b"sealed chunk"
    assert wire.encode_frame(REQUEST, 1, {"op": "put_blob"}, as_bytes)[1] is as_bytes


def test_largest_frame_round_trips() -> None:
    meta = {"x": b"\0" * (wire.MAX_META - 6)}  # fixmap, "x", bin16 header: 6 bytes
    body = random.Random(1).randbytes(wire.MAX_BODY)
    data = encoded(REQUEST, 3, meta, body)
    assert HEADER.unpack(data[:13])[0] == wire.MAX_FRAME
    (frame,) = wire.FrameDecoder().feed(data)
    assert frame.meta == meta and frame.body == body


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=10,
)
metas = st.dictionaries(st.text(max_size=8), json_values, max_size=5)


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    kind = draw(st.sampled_from(FrameKind))
    if kind in (HELLO, GOAWAY):
        return Frame(kind, 0, draw(metas), memoryview(b""))
    stream = draw(st.integers(1, wire.MAX_STREAM))
    return Frame(kind, stream, draw(metas), memoryview(draw(st.binary(max_size=700))))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(frames(), min_size=1, max_size=6),
    st.lists(st.integers(0, 4000), max_size=12),
    st.sampled_from([13, 64, 1000, wire.SCRATCH_SIZE]),
)
def test_any_split_gives_the_same_frames(
    sent: list[Frame], cuts: list[int], scratch_size: int
) -> None:
    data = b"".join(encoded(f.kind, f.stream, f.meta, bytes(f.body)) for f in sent)
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    decoder = wire.FrameDecoder(scratch_size=scratch_size)
    received: list[Frame] = []
    for start, end in pairwise(bounds):
        received += decoder.feed(data[start:end])
    assert received == sent


@pytest.mark.parametrize("scratch_size", [13, 100, wire.SCRATCH_SIZE])
def test_one_byte_at_a_time(scratch_size: int) -> None:
    sent = [
        Frame(REQUEST, 1, {"op": "get_blob", "addr": NODE_A}, memoryview(b"")),
        Frame(RESPONSE, 9, {"ok": True}, memoryview(bytes(range(200)))),
        Frame(GOAWAY, 0, {"code": "shutdown", "msg": ""}, memoryview(b"")),
    ]
    data = b"".join(encoded(f.kind, f.stream, f.meta, bytes(f.body)) for f in sent)
    decoder = wire.FrameDecoder(scratch_size=scratch_size)
    frames_ = [frame for i in range(len(data)) for frame in decoder.feed(data[i : i + 1])]
    assert frames_ == sent


def test_large_body_is_received_into_its_own_buffer() -> None:
    body = random.Random(2).randbytes(4 * MiB + 4 * KiB)
    meta = {"op": "put_blob", "addr": NODE_A}
    small = encoded(REQUEST, 1, {"op": "ping"})
    data = small + encoded(REQUEST, 2, meta, body) + small
    decoder = wire.FrameDecoder()
    received, written_into = socket_feed(decoder, data, chunk=64 * KiB)
    assert [f.stream for f in received] == [1, 2, 1]
    large = received[1]
    assert large.meta == meta and large.body == body and large.body.readonly
    owner = large.body.obj
    assert isinstance(owner, bytearray)
    # One of the pooled buffers, each as large as the largest frame.
    assert len(owner) == wire.MAX_FRAME - wire.FIXED_SIZE
    scratch = written_into[0]
    assert owner is not scratch
    # After the header, the socket wrote the rest of the frame straight into its buffer.
    assert set(map(id, written_into)) == {id(scratch), id(owner)}
    assert sum(obj is owner for obj in written_into) >= len(body) // (64 * KiB)


def test_large_buffers_are_reused_only_when_nothing_holds_their_frames() -> None:
    """More large frames than the pool holds, all kept: none is overwritten by a later
    one. Once they are dropped, later frames reuse the same buffers."""
    rng = random.Random(5)
    bodies = [rng.randbytes(300 * KiB + i) for i in range(2 * wire.LARGE_BUFFERS + 3)]
    data = b"".join(encoded(RESPONSE, i + 1, {"ok": True}, b) for i, b in enumerate(bodies))
    decoder = wire.FrameDecoder()
    kept, written_into = socket_feed(decoder, data, chunk=64 * KiB)
    assert [bytes(f.body) for f in kept] == bodies
    owners = {id(f.body.obj) for f in kept}
    assert len(owners) == len(bodies)  # each kept frame has a buffer of its own
    pooled = {id(f.body.obj) for f in kept[: wire.LARGE_BUFFERS]}
    del kept, written_into
    again, _ = socket_feed(decoder, data, chunk=64 * KiB)
    assert [bytes(f.body) for f in again] == bodies
    reused = [f for f in again if id(f.body.obj) in pooled]
    assert reused, "no pooled buffer was lent again after its frames were dropped"


def test_returned_frames_are_never_overwritten() -> None:
    rng = random.Random(3)
    bodies = [rng.randbytes(n) for n in (100, 300 * KiB, 1000, 300 * KiB, 5)]
    data = b"".join(encoded(RESPONSE, i + 1, {"ok": True}, b) for i, b in enumerate(bodies))
    decoder = wire.FrameDecoder()
    received, _ = socket_feed(decoder, data, chunk=50 * KiB)
    more = b"".join(encoded(RESPONSE, 1, {"ok": True}, bytes(len(b))) for b in bodies)
    socket_feed(decoder, more, chunk=50 * KiB)
    assert [bytes(f.body) for f in received] == bodies


# --- limits and malformed input -----------------------------------------------------


def test_huge_length_is_refused_before_any_allocation() -> None:
    decoder = wire.FrameDecoder()  # its scratch buffer exists before tracing starts
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match="exceeds the maximum"):
            decoder.feed(HEADER.pack(0xFFFF_FFFF, REQUEST, 1, 1))
        _, refused_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        fresh = bytearray(wire.MAX_FRAME)  # what a fresh frame buffer costs
        _, control_peak = tracemalloc.get_traced_memory()
        del fresh
    finally:
        tracemalloc.stop()
    assert refused_peak < 32 * KiB
    assert control_peak > wire.MAX_FRAME - 100  # the measurement does see a frame's buffer


META = packed({"op": "ping"})

MALFORMED = {
    "length 0": HEADER.pack(0, REQUEST, 1, 0),
    "length 8": HEADER.pack(8, REQUEST, 1, 0),
    "length over max": raw_frame(REQUEST, 1, META, length=wire.MAX_FRAME + 1),
    "length 2**32-1": raw_frame(REQUEST, 1, META, length=0xFFFF_FFFF),
    "meta_len over length": raw_frame(REQUEST, 1, META, meta_len=len(META) + 1),
    "meta_len 2**32-1": raw_frame(REQUEST, 1, META, meta_len=0xFFFF_FFFF),
    "meta over MAX_META": raw_frame(
        REQUEST, 1, META, length=9 + wire.MAX_META + 1, meta_len=wire.MAX_META + 1
    ),
    "body over MAX_BODY": raw_frame(REQUEST, 1, META, length=9 + len(META) + wire.MAX_BODY + 1),
    "unknown kind 0": raw_frame(0, 1, META),
    "unknown kind 5": raw_frame(5, 1, META),
    "unknown kind 255": raw_frame(255, 1, META),
    "REQUEST on stream 0": raw_frame(REQUEST, 0, META),
    "RESPONSE on stream 0": raw_frame(RESPONSE, 0, packed({"ok": True})),
    "HELLO on stream 1": raw_frame(HELLO, 1, packed({"v": 1})),
    "GOAWAY on stream 3": raw_frame(GOAWAY, 3, packed({"code": "x", "msg": ""})),
    "HELLO with a body": raw_frame(HELLO, 0, packed({"v": 1}), b"x"),
    "GOAWAY with a body": raw_frame(GOAWAY, 0, packed({"code": "x", "msg": ""}), b"x"),
    "empty meta": raw_frame(REQUEST, 1, b""),
    "meta is a list": raw_frame(REQUEST, 1, packed(["op", "ping"])),
    "meta is an int": raw_frame(REQUEST, 1, packed(7)),
    "meta is nil": raw_frame(REQUEST, 1, packed(None)),
    "meta with an int key": raw_frame(REQUEST, 1, packed({1: "ping"})),
    "meta with a bytes key": raw_frame(REQUEST, 1, packed({b"op": "ping"})),
    "meta with a nested int key": raw_frame(REQUEST, 1, packed({"op": {1: 2}})),
    "meta truncated": raw_frame(REQUEST, 1, META[:-1]),
    "meta with trailing bytes": raw_frame(REQUEST, 1, META + b"\xc0"),
    "meta with two maps": raw_frame(REQUEST, 1, META + META),
    "meta with an ext type": raw_frame(REQUEST, 1, packed({"t": msgpack.ExtType(1, b"x")})),
    "meta with a timestamp": raw_frame(REQUEST, 1, packed({"t": msgpack.Timestamp(1, 0)})),
    "meta with bad utf-8": raw_frame(REQUEST, 1, b"\x81\xa2\xff\xfe\xc0"),
    "meta with 0xc1": raw_frame(REQUEST, 1, b"\xc1"),
    "meta nested too deep": raw_frame(REQUEST, 1, b"\x81\xa1a" + b"\x91" * 5000 + b"\xc0"),
    "meta claims a huge str": raw_frame(REQUEST, 1, b"\x81\xa1a\xdb\xff\xff\xff\xff"),
    "meta claims a huge array": raw_frame(REQUEST, 1, b"\x81\xa1a\xdd\xff\xff\xff\xff"),
    "http request": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "tls client hello": bytes.fromhex("1603010200010001fc0303") + bytes(64),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frames_are_refused(data: bytes) -> None:
    decoder = wire.FrameDecoder()
    with pytest.raises(ProtocolError):
        decoder.feed(data)


def test_malformed_frame_after_good_ones() -> None:
    decoder = wire.FrameDecoder()
    good = encoded(REQUEST, 1, {"op": "ping"})
    assert len(decoder.feed(good + good)) == 2
    with pytest.raises(ProtocolError):
        decoder.feed(good + MALFORMED["meta is a list"])


def test_decoder_is_dead_after_an_error() -> None:
    decoder = wire.FrameDecoder()
    with pytest.raises(ProtocolError):
        decoder.feed(MALFORMED["unknown kind 5"])
    with pytest.raises(ProtocolError, match="failed earlier"):
        decoder.get_buffer(-1)
    with pytest.raises(ProtocolError, match="failed earlier"):
        decoder.buffer_updated(0)
    with pytest.raises(ProtocolError, match="failed earlier"):
        decoder.feed(encoded(REQUEST, 1, {"op": "ping"}))
    with pytest.raises(ProtocolError, match="failed earlier"):
        decoder.feed(b"")


def test_decoder_checks_its_arguments() -> None:
    decoder = wire.FrameDecoder()
    lent = len(decoder.get_buffer(-1))
    with pytest.raises(InvalidArgumentError):
        decoder.buffer_updated(lent + 1)
    with pytest.raises(InvalidArgumentError):
        decoder.buffer_updated(-1)
    assert decoder.feed(encoded(REQUEST, 1, {"op": "ping"}))  # still usable
    with pytest.raises(InvalidArgumentError):
        wire.FrameDecoder(max_frame=wire.MAX_FRAME + 1)
    with pytest.raises(InvalidArgumentError):
        wire.FrameDecoder(scratch_size=12)


def test_smaller_max_frame_is_enforced() -> None:
    decoder = wire.FrameDecoder(max_frame=1000)
    assert decoder.feed(encoded(REQUEST, 1, {"op": "put_blob"}, bytes(900)))
    with pytest.raises(ProtocolError, match="exceeds the maximum of 1000"):
        decoder.feed(encoded(REQUEST, 1, {"op": "put_blob"}, bytes(1000)))


ENCODE_REFUSED: list[tuple[str, FrameKind, int, Any, bytes, type[Exception]]] = [
    ("meta over MAX_META", REQUEST, 1, {"x": bytes(wire.MAX_META)}, b"", ProtocolError),
    ("body over MAX_BODY", REQUEST, 1, {}, bytes(wire.MAX_BODY + 1), ProtocolError),
    ("int key", REQUEST, 1, {1: 2}, b"", ProtocolError),
    ("nested int key", REQUEST, 1, {"a": {1: 2}}, b"", ProtocolError),
    ("HELLO on stream 1", HELLO, 1, {}, b"", ProtocolError),
    ("HELLO with body", HELLO, 0, {}, b"x", ProtocolError),
    ("REQUEST on stream 0", REQUEST, 0, {}, b"", ProtocolError),
    ("unknown kind", 9, 1, {}, b"", ProtocolError),  # type: ignore[list-item]
    ("stream -1", REQUEST, -1, {}, b"", InvalidArgumentError),
    ("stream 2**32", REQUEST, 2**32, {}, b"", InvalidArgumentError),
    ("meta not a mapping", REQUEST, 1, [("op", "x")], b"", InvalidArgumentError),
    ("unpackable value", REQUEST, 1, {"x": object()}, b"", InvalidArgumentError),
    ("int too large", REQUEST, 1, {"x": 2**64}, b"", InvalidArgumentError),
]


@pytest.mark.parametrize(
    ("kind", "stream", "meta", "body", "error"),
    [case[1:] for case in ENCODE_REFUSED],
    ids=[case[0] for case in ENCODE_REFUSED],
)
def test_encode_refuses_what_the_peer_would_refuse(
    kind: FrameKind, stream: int, meta: Any, body: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        wire.encode_frame(kind, stream, meta, body)


# --- handshake --------------------------------------------------------------------


def test_handshake() -> None:
    a, b = pair()
    stream, writes = a.request("ping", {})
    assert b.feed(join(writes)) == [wire.RequestReceived(stream, "ping", {}, memoryview(b""))]


def test_requests_may_follow_hello_at_once() -> None:
    a = wire.Connection(NODE_A, None)
    data = join(a.hello(PROOF_A)) + join(a.request("ping", {})[1])  # without waiting for the peer
    b = wire.Connection(NODE_B, None)
    assert [type(e) for e in b.feed(data)] == [wire.HelloReceived, wire.RequestReceived]


GOOD_HELLO = {"v": V, "node": NODE_B, "addr": None, "proof": PROOF_B}
BAD_HELLOS = {
    "version 1 (before TLS)": {**GOOD_HELLO, "v": 1},
    "version 3": {**GOOD_HELLO, "v": 3},
    "version 0": {**GOOD_HELLO, "v": 0},
    "version True": {**GOOD_HELLO, "v": True},
    "version 2.0": {**GOOD_HELLO, "v": 2.0},
    "no version": {k: v for k, v in GOOD_HELLO.items() if k != "v"},
    "node of 31 bytes": {**GOOD_HELLO, "node": NODE_B[:31]},
    "node of 33 bytes": {**GOOD_HELLO, "node": NODE_B + b"x"},
    "node as str": {**GOOD_HELLO, "node": "b" * 32},
    "no node": {k: v for k, v in GOOD_HELLO.items() if k != "node"},
    "addr as int": {**GOOD_HELLO, "addr": 5000},
    "no addr": {k: v for k, v in GOOD_HELLO.items() if k != "addr"},
    "proof of 31 bytes": {**GOOD_HELLO, "proof": PROOF_B[:31]},
    "proof of 33 bytes": {**GOOD_HELLO, "proof": PROOF_B + b"x"},
    "proof as str": {**GOOD_HELLO, "proof": "p" * 32},
    "no proof": {k: v for k, v in GOOD_HELLO.items() if k != "proof"},
}


@pytest.mark.parametrize("meta", BAD_HELLOS.values(), ids=BAD_HELLOS.keys())
def test_bad_hello_is_refused(meta: dict[str, Any]) -> None:
    conn = wire.Connection(NODE_A, None)
    with pytest.raises(ProtocolError):
        conn.feed(encoded(HELLO, 0, meta))


def test_hello_ignores_unknown_fields() -> None:
    conn = wire.Connection(NODE_A, None)
    meta = {**GOOD_HELLO, "addr": "[::1]:5000", "future": [1, 2]}
    assert conn.feed(encoded(HELLO, 0, meta)) == [wire.HelloReceived(NODE_B, "[::1]:5000", PROOF_B)]


@pytest.mark.parametrize(
    "first",
    [
        encoded(REQUEST, 1, {"op": "ping"}),
        encoded(RESPONSE, 1, {"ok": True}),
        encoded(GOAWAY, 0, {"code": "shutdown", "msg": ""}),
    ],
    ids=["REQUEST", "RESPONSE", "GOAWAY"],
)
def test_first_frame_must_be_hello(first: bytes) -> None:
    conn = wire.Connection(NODE_A, None)
    with pytest.raises(ProtocolError, match="not HELLO"):
        conn.feed(first)


def test_second_hello_is_refused() -> None:
    conn = greeted()
    with pytest.raises(ProtocolError, match="second HELLO"):
        conn.feed(hello_bytes())


def test_hello_is_sent_once_and_first() -> None:
    conn = wire.Connection(NODE_A, None)
    with pytest.raises(ProtocolError, match="HELLO must be sent first"):
        conn.request("ping", {})
    with pytest.raises(ProtocolError, match="HELLO must be sent first"):
        conn.goaway("shutdown", "")
    for proof in (b"", PROOF_A[:31], PROOF_A + b"x"):
        with pytest.raises(InvalidArgumentError, match="proof is 32 bytes"):
            conn.hello(proof)
    conn.hello(PROOF_A)
    with pytest.raises(ProtocolError, match="already sent"):
        conn.hello(PROOF_A)


@pytest.mark.parametrize(("node", "addr"), [(b"short", None), (NODE_A, 5000), ("a" * 32, None)])
def test_connection_checks_its_identity(node: Any, addr: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        wire.Connection(node, addr)


# --- streams ----------------------------------------------------------------------


def test_request_and_response_with_bodies() -> None:
    a, b = pair()
    body = b"\x01" * 5000
    stream, writes = a.request("put_blob", {"addr": NODE_A}, body)
    (request,) = b.feed(join(writes))
    assert request == wire.RequestReceived(stream, "put_blob", {"addr": NODE_A}, memoryview(body))
    (response,) = a.feed(join(b.respond(stream, {"extra": 1}, b"reply")))
    assert response == wire.ResponseReceived(stream, True, {"extra": 1}, memoryview(b"reply"))


def test_error_response() -> None:
    a, b = pair()
    stream, writes = a.request("get_blob", {"addr": NODE_A})
    b.feed(join(writes))
    (response,) = a.feed(join(b.respond_error(stream, "not_found", "no such blob")))
    assert response == wire.ResponseReceived(
        stream, False, {"code": "not_found", "msg": "no such blob"}, memoryview(b"")
    )


def test_both_directions_number_their_own_streams() -> None:
    a, b = pair()
    a_streams = [a.request("ping", {})[0] for _ in range(3)]
    b_streams = [b.request("ping", {})[0] for _ in range(3)]
    assert a_streams == b_streams == [1, 2, 3]


def test_stream_ids_wrap_around_and_skip_outstanding() -> None:
    a, _ = pair()
    first, _ = a.request("ping", {})
    a._next_stream = wire.MAX_STREAM
    assert [a.request("ping", {})[0] for _ in range(2)] == [wire.MAX_STREAM, first + 1]


def test_too_many_streams_from_the_peer() -> None:
    conn = greeted()
    requests = b"".join(encoded(REQUEST, s, {"op": "ping"}) for s in range(1, 65))
    assert len(conn.feed(requests)) == wire.MAX_INFLIGHT
    conn.respond(7, {})
    assert conn.feed(encoded(REQUEST, 100, {"op": "ping"}))  # one answered, one more allowed
    with pytest.raises(ProtocolError, match="too many streams"):
        conn.feed(encoded(REQUEST, 101, {"op": "ping"}))


def test_too_many_streams_of_our_own() -> None:
    a, b = pair()
    streams = []
    for _ in range(wire.MAX_INFLIGHT):
        stream, writes = a.request("ping", {})
        b.feed(join(writes))
        streams.append(stream)
    with pytest.raises(ProtocolError, match="too many streams"):
        a.request("ping", {})
    a.feed(join(b.respond(streams[0], {})))
    a.request("ping", {})


def test_reused_unanswered_stream_is_refused() -> None:
    conn = greeted()
    conn.feed(encoded(REQUEST, 3, {"op": "ping"}))
    with pytest.raises(ProtocolError, match="still unanswered"):
        conn.feed(encoded(REQUEST, 3, {"op": "ping"}))


def test_answered_stream_may_be_reused() -> None:
    conn = greeted()
    conn.feed(encoded(REQUEST, 3, {"op": "ping"}))
    conn.respond(3, {})
    assert conn.feed(encoded(REQUEST, 3, {"op": "ping"}))


def test_response_to_unknown_stream() -> None:
    conn = greeted()
    with pytest.raises(ProtocolError, match="no request of ours"):
        conn.feed(encoded(RESPONSE, 1, {"ok": True}))


def test_response_twice() -> None:
    a, _ = pair()
    stream, _ = a.request("ping", {})
    response = encoded(RESPONSE, stream, {"ok": True})
    assert a.feed(response)
    with pytest.raises(ProtocolError, match="no request of ours"):
        a.feed(response)


def test_respond_twice_or_to_unknown_stream() -> None:
    a, b = pair()
    stream, writes = a.request("ping", {})
    b.feed(join(writes))
    b.respond(stream, {})
    with pytest.raises(ProtocolError, match="no unanswered request"):
        b.respond(stream, {})
    with pytest.raises(ProtocolError, match="no unanswered request"):
        b.respond_error(stream, "internal", "")
    with pytest.raises(ProtocolError, match="no unanswered request"):
        b.respond(99, {})


def test_failed_respond_leaves_the_stream_unanswered() -> None:
    a, b = pair()
    stream, writes = a.request("get_blob", {"addr": NODE_A})
    b.feed(join(writes))
    with pytest.raises(ProtocolError, match="body"):
        b.respond(stream, {}, bytes(wire.MAX_BODY + 1))
    (response,) = a.feed(join(b.respond_error(stream, "too_large", "blob too large")))
    assert isinstance(response, wire.ResponseReceived) and not response.ok


BAD_REQUESTS_AND_RESPONSES = {
    "REQUEST without op": encoded(REQUEST, 1, {"addr": NODE_A}),
    "REQUEST with op 5": encoded(REQUEST, 1, {"op": 5}),
    "RESPONSE without ok": encoded(RESPONSE, 1, {}),
    "RESPONSE with ok 1": encoded(RESPONSE, 1, {"ok": 1}),
    "error without code": encoded(RESPONSE, 1, {"ok": False, "msg": ""}),
    "error with int code": encoded(RESPONSE, 1, {"ok": False, "code": 1, "msg": ""}),
    "error without msg": encoded(RESPONSE, 1, {"ok": False, "code": "busy"}),
    "error with a body": encoded(RESPONSE, 1, {"ok": False, "code": "busy", "msg": ""}, b"x"),
    "GOAWAY without code": encoded(GOAWAY, 0, {"msg": ""}),
    "GOAWAY with bin msg": encoded(GOAWAY, 0, {"code": "shutdown", "msg": b""}),
}


@pytest.mark.parametrize(
    "data", BAD_REQUESTS_AND_RESPONSES.values(), ids=BAD_REQUESTS_AND_RESPONSES.keys()
)
def test_bad_request_or_response_meta(data: bytes) -> None:
    a, _ = pair()
    a.request("ping", {})  # stream 1 is outstanding, so only the meta is wrong
    with pytest.raises(ProtocolError):
        a.feed(data)


def test_unknown_codes_from_the_peer_are_passed_on() -> None:
    a, _ = pair()
    stream, _ = a.request("ping", {})
    error_meta = {"code": "from_the_future", "msg": "?"}
    error = {"ok": False, **error_meta}
    (response,) = a.feed(encoded(RESPONSE, stream, error))
    assert response == wire.ResponseReceived(stream, False, error_meta, memoryview(b""))
    assert a.feed(encoded(GOAWAY, 0, {"code": "new", "msg": ""})) == [wire.GoAway("new", "")]


def test_send_arguments_are_checked() -> None:
    a, b = pair()
    with pytest.raises(InvalidArgumentError):
        a.request("ping", {"op": "get_blob"})
    with pytest.raises(InvalidArgumentError):
        a.request(5, {})  # type: ignore[arg-type]
    stream, writes = a.request("ping", {})
    b.feed(join(writes))
    with pytest.raises(InvalidArgumentError):
        b.respond(stream, {"ok": False})
    with pytest.raises(InvalidArgumentError, match="unknown error code"):
        b.respond_error(stream, "notfound", "")
    with pytest.raises(InvalidArgumentError, match="unknown GOAWAY code"):
        b.goaway("bye", "")
    b.respond_error(stream, "not_found", "")  # the failures above left it unanswered


def test_goaway_received() -> None:
    a, b = pair()
    stream, writes = a.request("ping", {})
    b.feed(join(writes))
    assert a.feed(join(b.goaway("shutdown", "stopping"))) == [wire.GoAway("shutdown", "stopping")]
    with pytest.raises(ProtocolError, match="after GOAWAY"):
        a.feed(encoded(RESPONSE, stream, {"ok": True}))


def test_nothing_is_sent_after_goaway() -> None:
    a, b = pair()
    stream, writes = a.request("ping", {})
    b.feed(join(writes))
    b.goaway("shutdown", "")
    with pytest.raises(ProtocolError, match="GOAWAY was sent"):
        b.respond(stream, {})
    with pytest.raises(ProtocolError, match="GOAWAY was sent"):
        b.request("ping", {})
    with pytest.raises(ProtocolError, match="GOAWAY was sent"):
        b.goaway("shutdown", "")


def test_goaway_can_explain_a_receive_failure() -> None:
    conn = greeted()
    with pytest.raises(ProtocolError):
        conn.feed(encoded(RESPONSE, 42, {"ok": True}))
    with pytest.raises(ProtocolError, match="failed earlier"):
        conn.feed(encoded(REQUEST, 1, {"op": "ping"}))
    with pytest.raises(ProtocolError, match="failed earlier"):
        conn.get_buffer(-1)
    (goaway,) = wire.FrameDecoder().feed(join(conn.goaway("protocol_error", "bad response")))
    assert goaway.meta == {"code": "protocol_error", "msg": "bad response"}


def test_connection_as_buffered_protocol() -> None:
    a, b = pair()
    body = random.Random(4).randbytes(MiB)
    stream, writes = a.request("put_blob", {"addr": NODE_A}, body)
    data = join(writes)
    events: list[wire.Event] = []
    pos = 0
    while pos < len(data):
        buf = b.get_buffer(-1)
        n = min(len(buf), 100 * KiB, len(data) - pos)
        buf[:n] = data[pos : pos + n]
        events += b.buffer_updated(n)
        pos += n
    assert events == [wire.RequestReceived(stream, "put_blob", {"addr": NODE_A}, memoryview(body))]


# --- fuzzing ----------------------------------------------------------------------


def fuzz(data: bytes, piece: int) -> None:
    """Feed ``data`` to a fresh connection in pieces: events or ProtocolError, nothing else."""
    conn = wire.Connection(NODE_A, None)
    conn.hello(PROOF_A)
    conn.request("ping", {})  # so that a RESPONSE on stream 1 is valid
    try:
        for start in range(0, len(data), piece):
            for event in conn.feed(data[start : start + piece]):
                assert isinstance(
                    event,
                    wire.HelloReceived | wire.RequestReceived | wire.ResponseReceived | wire.GoAway,
                )
    except ProtocolError:
        pass


FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=300), st.integers(1, 64))
def test_fuzz_random_bytes(data: bytes, piece: int) -> None:
    fuzz(data, piece)


@FUZZ
@given(st.binary(max_size=300), st.integers(1, 64))
def test_fuzz_random_bytes_after_hello(data: bytes, piece: int) -> None:
    fuzz(hello_bytes() + data, piece)


VALID_STREAM = hello_bytes() + b"".join(
    [
        encoded(REQUEST, 1, {"op": "put_blob", "addr": NODE_A}, b"body"),
        encoded(RESPONSE, 1, {"ok": False, "code": "busy", "msg": "later"}),
        encoded(REQUEST, 2, {"op": "has_blobs", "addrs": [NODE_A, NODE_B]}),
        encoded(GOAWAY, 0, {"code": "shutdown", "msg": ""}),
    ]
)


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(VALID_STREAM) - 1), st.integers(0, 255)), max_size=4),
    st.integers(0, len(VALID_STREAM)),
    st.integers(1, 64),
)
def test_fuzz_mutated_valid_stream(flips: list[tuple[int, int]], cut: int, piece: int) -> None:
    data = bytearray(VALID_STREAM[:cut])
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    fuzz(bytes(data), piece)
