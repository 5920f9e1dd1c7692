"""The fstore wire protocol, sans-IO: bytes in, typed events out, bytes to send.

Nothing here touches a socket or an event loop (the model is aioquic/h11).
``FrameDecoder`` turns received bytes into ``Frame`` objects; it is shaped for
``asyncio.BufferedProtocol``: the socket writes into buffers it lends, and a
large body is written straight into its own final buffer. ``encode_frame`` does
the reverse without copying the body. ``Connection`` adds the handshake and the
stream rules on top and speaks in events. The format is docs/PROTOCOL.md.

Every malformed input raises ``ProtocolError``, after which the decoder (and the
receiving side of a ``Connection``) refuses further use: the only thing left to
do with that peer is to send a GOAWAY and close.
"""

from __future__ import annotations

import enum
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import msgpack
from typing_extensions import Buffer

from fstore.errors import InvalidArgumentError, ProtocolError
from fstore.formats.packing import pack

KiB: Final = 1024
MiB: Final = 1024 * KiB

VERSION: Final = 2  # 2: links are TLS 1.3 and HELLO carries a membership proof
NODE_ID_SIZE: Final = 32
PROOF_SIZE: Final = 32
LENGTH_SIZE: Final = 4  # the length prefix, not counted in itself
FIXED_SIZE: Final = 9  # kind, stream and meta_len: the part of `length` that is not meta or body
HEADER_SIZE: Final = LENGTH_SIZE + FIXED_SIZE
MAX_META: Final = 64 * KiB
MAX_BODY: Final = 4 * MiB + 64 * KiB  # a sealed 4 MiB chunk is 4 MiB + about 4 KiB
MAX_FRAME: Final = FIXED_SIZE + MAX_META + MAX_BODY  # the largest valid `length`
MAX_STREAM: Final = 0xFFFF_FFFF
MAX_INFLIGHT: Final = 64
SCRATCH_SIZE: Final = 256 * KiB

ERROR_CODES: Final = frozenset(
    {"not_found", "bad_request", "bad_address", "too_large", "disk_full", "busy", "internal"}
)
GOAWAY_CODES: Final = frozenset({"protocol_error", "shutdown", "duplicate", "rejected", "internal"})

_HEADER: Final = struct.Struct(">IBII")

Writes: TypeAlias = list[bytes | memoryview]
"""Pieces to send in order, e.g. with ``transport.writelines``.

A body is passed through uncopied: the caller must not modify it until the
transport has sent it (``transport.write`` does not copy either).
"""


class FrameKind(enum.IntEnum):
    HELLO = 1
    REQUEST = 2
    RESPONSE = 3
    GOAWAY = 4


# Connection-level frames: always on stream 0 and never with a body.
_CONTROL_KINDS: Final = frozenset({FrameKind.HELLO, FrameKind.GOAWAY})


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame. It owns ``body`` (read-only): the decoder never writes there again."""

    kind: FrameKind
    stream: int
    meta: dict[str, Any]
    body: memoryview


@dataclass(frozen=True, slots=True)
class _Header:
    kind: FrameKind
    stream: int
    meta_len: int
    size: int  # meta + body: the bytes that follow the header

    @property
    def total(self) -> int:
        return HEADER_SIZE + self.size


# --- encoding ---------------------------------------------------------------------


def encode_frame(
    kind: FrameKind, stream: int, meta: Mapping[str, Any], body: Buffer = b""
) -> Writes:
    """``[header + meta, body]`` (no body piece when it is empty), ready for ``writelines``.

    Raises InvalidArgumentError for what cannot be encoded at all (a stream id
    outside u32, a meta value msgpack cannot pack, a non-contiguous body), and
    ProtocolError for a frame the peer would have to reject (over a size limit,
    a stream or body where the kind forbids one, meta the decoder would refuse).
    """
    view = _byte_view(body)
    if not 0 <= stream <= MAX_STREAM:
        raise InvalidArgumentError(f"stream id {stream} is not a u32")
    packed = _pack_meta(meta)
    frame_kind = _check_frame(kind, stream, len(packed), view.nbytes)
    _unpack_meta(packed)  # refuse exactly what the peer's decoder would refuse
    length = FIXED_SIZE + len(packed) + view.nbytes
    writes: Writes = [_HEADER.pack(length, frame_kind, stream, len(packed)) + packed]
    if view.nbytes:
        writes.append(body if isinstance(body, bytes) else view)
    return writes


def _byte_view(data: Buffer) -> memoryview:
    try:
        return memoryview(data).cast("B")
    except TypeError as exc:
        raise InvalidArgumentError(f"not a contiguous buffer: {exc}") from exc


def _pack_meta(meta: Mapping[str, Any]) -> bytes:
    if not isinstance(meta, Mapping):
        raise InvalidArgumentError(f"meta must be a mapping, not {type(meta).__name__}")
    try:
        packed: bytes = pack(dict(meta))
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidArgumentError(f"meta cannot be encoded as msgpack: {exc}") from exc
    return packed


# --- checks shared by both directions ---------------------------------------------


def _check_frame(kind: int, stream: int, meta_len: int, body_len: int) -> FrameKind:
    """The frame-level rules (besides meta's content); returns the kind."""
    try:
        frame_kind = FrameKind(kind)
    except ValueError:
        raise ProtocolError(f"unknown frame kind {kind}") from None
    if meta_len > MAX_META:
        raise ProtocolError(f"meta of {meta_len} bytes exceeds the maximum of {MAX_META}")
    if body_len > MAX_BODY:
        raise ProtocolError(f"body of {body_len} bytes exceeds the maximum of {MAX_BODY}")
    if frame_kind in _CONTROL_KINDS:
        if stream != 0:
            raise ProtocolError(f"{frame_kind.name} on stream {stream} instead of 0")
        if body_len:
            raise ProtocolError(f"{frame_kind.name} with a body")
    elif stream == 0:
        raise ProtocolError(f"{frame_kind.name} on stream 0")
    return frame_kind


def _parse_header(header: memoryview, max_frame: int) -> _Header:
    length, kind, stream, meta_len = _HEADER.unpack(header)
    if length < FIXED_SIZE:
        raise ProtocolError(f"frame length {length} is below the minimum of {FIXED_SIZE}")
    if length > max_frame:
        raise ProtocolError(f"frame length {length} exceeds the maximum of {max_frame}")
    if meta_len > length - FIXED_SIZE:
        raise ProtocolError(f"meta length {meta_len} exceeds the frame length {length}")
    frame_kind = _check_frame(kind, stream, meta_len, length - FIXED_SIZE - meta_len)
    return _Header(frame_kind, stream, meta_len, length - FIXED_SIZE)


def _unpack_meta(data: Buffer) -> dict[str, Any]:
    """Exactly one msgpack map with str keys, without ext types; else ProtocolError."""
    try:
        meta = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=MAX_META,
            max_bin_len=MAX_META,
            max_array_len=MAX_META,
            max_map_len=MAX_META // 2,
            max_ext_len=0,
        )
    except msgpack.ExtraData:
        raise ProtocolError("meta has bytes after its map") from None
    # Hostile input makes msgpack raise many types (ValueError and its subclasses,
    # OutOfData, UnicodeDecodeError, ...): all of them mean "malformed".
    except Exception as exc:
        raise ProtocolError(f"meta is not valid msgpack: {exc!r}") from exc
    if not isinstance(meta, dict):
        raise ProtocolError(f"meta is a {type(meta).__name__}, not a map")
    if not all(isinstance(key, str) for key in meta):
        raise ProtocolError("meta has a key that is not a str")
    return meta


# --- decoding ---------------------------------------------------------------------


@dataclass(slots=True)
class _LargeFrame:
    header: _Header
    buffer: memoryview  # meta + body, exactly
    filled: int


class _LargeBuffers:
    """Reusable receive buffers for large frames, shared by the decoders of a process.

    A fresh buffer per blob costs zero-filling it and faulting its pages in
    (writing into never-touched memory is several times slower here), on the
    event loop's thread. A buffer is lent again only once nothing references it:
    a body handed out earlier keeps its buffer referenced (through its memoryview,
    or a native borrower's Py_buffer) until its last user drops it, so a body is
    never overwritten while anything can still see it. Decoders run on one event
    loop thread; the counts are read there.
    """

    def __init__(self, count: int, size: int) -> None:
        self._count = count
        self._size = size
        self._buffers: list[bytearray] = []
        probe = [bytearray(1)]
        # References a buffer has when only this pool holds it, counted the way
        # _free_buffer counts them (the list's, and getrefcount's argument).
        self._unreferenced = sys.getrefcount(probe[0])

    def take(self, size: int) -> memoryview:
        if size > self._size:
            return memoryview(bytearray(size))
        for i in range(len(self._buffers)):
            if sys.getrefcount(self._buffers[i]) <= self._unreferenced:
                return memoryview(self._buffers[i])[:size]
        buffer = bytearray(self._size)
        if len(self._buffers) < self._count:
            self._buffers.append(buffer)
        return memoryview(buffer)[:size]


LARGE_BUFFERS: Final = 8  # at most 8 buffers of MAX_FRAME - 9 bytes, about 33 MiB, per process
_large_buffers = _LargeBuffers(LARGE_BUFFERS, MAX_FRAME - FIXED_SIZE)


class FrameDecoder:
    """Bytes in, frames out, for ``asyncio.BufferedProtocol`` (or ``feed`` any pieces).

    Headers and frames up to ``scratch_size`` bytes are received into one
    scratch buffer, allocated once; their bodies are copied out. A larger frame
    gets a buffer (``_LargeBuffers``) as soon as its header is in, and the
    decoder lends views into it, so its body is written once, by the socket.
    """

    def __init__(self, max_frame: int = MAX_FRAME, *, scratch_size: int = SCRATCH_SIZE) -> None:
        if not FIXED_SIZE <= max_frame <= MAX_FRAME:
            raise InvalidArgumentError(f"max_frame must be in [{FIXED_SIZE}, {MAX_FRAME}]")
        if scratch_size < HEADER_SIZE:
            raise InvalidArgumentError(f"scratch_size must be at least {HEADER_SIZE}")
        self._max_frame = max_frame
        self._scratch = memoryview(bytearray(scratch_size))
        self._filled = 0  # scratch[:filled] holds received bytes of frames not yet complete
        self._large: _LargeFrame | None = None
        self._failed = False

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Where the next received bytes must be written; never empty. ``sizehint`` is ignored."""
        self._check_usable()
        if self._large is not None:
            return memoryview(self._large.buffer)[self._large.filled :]
        return self._scratch[self._filled :]

    def buffer_updated(self, nbytes: int) -> list[Frame]:
        """``nbytes`` were written at the start of the last ``get_buffer``: the frames completed."""
        self._check_usable()
        large = self._large
        lent = len(large.buffer) - large.filled if large is not None else self._free()
        if not 0 <= nbytes <= lent:
            raise InvalidArgumentError(f"{nbytes} bytes updated, but {lent} were lent")
        try:
            if large is not None:
                return self._large_updated(large, nbytes)
            self._filled += nbytes
            return self._decode_scratch()
        except BaseException:
            self._failed = True
            raise

    def feed(self, data: Buffer) -> list[Frame]:
        """Decode ``data`` (any piece of the stream) through ``get_buffer``/``buffer_updated``."""
        self._check_usable()
        source = _byte_view(data)
        frames: list[Frame] = []
        while source:
            target = self.get_buffer(len(source))
            n = min(len(target), len(source))
            target[:n] = source[:n]
            source = source[n:]
            frames += self.buffer_updated(n)
        return frames

    @property
    def mid_frame(self) -> bool:
        """Whether some bytes of a frame not yet complete have been received."""
        return self._filled > 0 or self._large is not None

    def _check_usable(self) -> None:
        if self._failed:
            raise ProtocolError("the decoder failed earlier; the connection must be closed")

    def _free(self) -> int:
        return len(self._scratch) - self._filled

    def _large_updated(self, large: _LargeFrame, nbytes: int) -> list[Frame]:
        large.filled += nbytes
        if large.filled < len(large.buffer):
            return []
        self._large = None
        payload = memoryview(large.buffer).toreadonly()
        meta = _unpack_meta(payload[: large.header.meta_len])
        return [
            Frame(large.header.kind, large.header.stream, meta, payload[large.header.meta_len :])
        ]

    def _decode_scratch(self) -> list[Frame]:
        frames: list[Frame] = []
        view = self._scratch
        pos = 0
        while self._filled - pos >= HEADER_SIZE:
            header = _parse_header(view[pos : pos + HEADER_SIZE], self._max_frame)
            if header.total > len(view):
                self._start_large(header, view[pos + HEADER_SIZE : self._filled])
                pos = self._filled
                break
            if self._filled - pos < header.total:
                break
            payload = view[pos + HEADER_SIZE : pos + header.total]
            meta = _unpack_meta(payload[: header.meta_len])
            # A copy, so the scratch buffer can be reused: the frame owns its body.
            body = memoryview(bytes(payload[header.meta_len :]))
            frames.append(Frame(header.kind, header.stream, meta, body))
            pos += header.total
        # Move the incomplete rest (less than one frame) to the front, so the
        # frame it starts always fits behind it.
        rest = self._filled - pos
        if pos and rest:
            view[:rest] = view[pos : self._filled]
        self._filled = rest
        return frames

    def _start_large(self, header: _Header, received: memoryview) -> None:
        # The scratch buffer is smaller than this frame, so `received` is only a part of it.
        buffer = _large_buffers.take(header.size)
        buffer[: len(received)] = received
        self._large = _LargeFrame(header, buffer, len(received))


# --- the connection ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HelloReceived:
    node: bytes
    addr: str | None
    proof: bytes  # of the network key, bound to both certificates (fstore.net.trust)


@dataclass(frozen=True, slots=True)
class RequestReceived:
    stream: int
    op: str
    meta: dict[str, Any]  # without "op"
    body: memoryview


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    stream: int
    ok: bool
    meta: dict[str, Any]  # without "ok"; an error response has str "code" and "msg"
    body: memoryview


@dataclass(frozen=True, slots=True)
class GoAway:
    code: str
    msg: str


Event: TypeAlias = HelloReceived | RequestReceived | ResponseReceived | GoAway


class Connection:
    """One connection's protocol state: the handshake and the streams of both directions.

    Send ``hello()`` first. Feed received bytes with ``get_buffer``/``buffer_updated``
    (or ``feed``) to get events. ``request``, ``respond``, ``respond_error`` and
    ``goaway`` return what to send. Receiving and sending fail independently: after
    a ProtocolError on receipt, ``goaway`` is still available to say why.
    """

    def __init__(self, local_node: bytes, local_addr: str | None) -> None:
        if not isinstance(local_node, bytes) or len(local_node) != NODE_ID_SIZE:
            raise InvalidArgumentError(f"a node id is {NODE_ID_SIZE} bytes")
        if local_addr is not None and not isinstance(local_addr, str):
            raise InvalidArgumentError("local_addr must be a str or None")
        self._local_node = local_node
        self._local_addr = local_addr
        self._decoder = FrameDecoder()
        self._receive_failed = False
        self._peer: HelloReceived | None = None
        self._peer_gone = False  # the peer sent GOAWAY
        self._hello_sent = False
        self._goaway_sent = False
        self._next_stream = 1
        self._ours: set[int] = set()  # our requests not answered yet
        self._theirs: set[int] = set()  # the peer's requests we have not answered yet

    # --- receiving --------------------------------------------------------------------

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        self._check_receiving()
        return self._decoder.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> list[Event]:
        self._check_receiving()
        return self._events(self._decoder.buffer_updated(nbytes))

    def feed(self, data: Buffer) -> list[Event]:
        self._check_receiving()
        return self._events(self._decoder.feed(data))

    @property
    def mid_frame(self) -> bool:
        """Whether some bytes of a frame not yet complete have been received."""
        return self._decoder.mid_frame

    def _check_receiving(self) -> None:
        if self._receive_failed:
            raise ProtocolError("receiving failed earlier; the connection must be closed")

    def _events(self, frames: list[Frame]) -> list[Event]:
        # The decoder refuses further use after its own errors; these are ours.
        try:
            return [self._event(frame) for frame in frames]
        except ProtocolError:
            self._receive_failed = True
            raise

    def _event(self, frame: Frame) -> Event:
        if self._peer is None:
            if frame.kind is not FrameKind.HELLO:
                raise ProtocolError(f"first frame is {frame.kind.name}, not HELLO")
            self._peer = _hello(frame.meta)
            return self._peer
        if self._peer_gone:
            raise ProtocolError(f"{frame.kind.name} after GOAWAY")
        match frame.kind:
            case FrameKind.HELLO:
                raise ProtocolError("second HELLO")
            case FrameKind.REQUEST:
                return self._request_received(frame)
            case FrameKind.RESPONSE:
                return self._response_received(frame)
            case FrameKind.GOAWAY:
                self._peer_gone = True
                code, msg = _code_and_msg(frame.meta, "GOAWAY")
                return GoAway(code, msg)

    def _request_received(self, frame: Frame) -> RequestReceived:
        meta = dict(frame.meta)
        op = meta.pop("op", None)
        if not isinstance(op, str):
            raise ProtocolError("REQUEST without a str op")
        if frame.stream in self._theirs:
            raise ProtocolError(f"REQUEST on stream {frame.stream}, which is still unanswered")
        if len(self._theirs) >= MAX_INFLIGHT:
            raise ProtocolError("too many streams")
        self._theirs.add(frame.stream)
        return RequestReceived(frame.stream, op, meta, frame.body)

    def _response_received(self, frame: Frame) -> ResponseReceived:
        meta = dict(frame.meta)
        ok = meta.pop("ok", None)
        if not isinstance(ok, bool):
            raise ProtocolError("RESPONSE without a bool ok")
        if not ok:
            _code_and_msg(meta, "error RESPONSE")
            if frame.body:
                raise ProtocolError("error RESPONSE with a body")
        if frame.stream not in self._ours:
            raise ProtocolError(f"RESPONSE on stream {frame.stream}, which has no request of ours")
        self._ours.remove(frame.stream)
        return ResponseReceived(frame.stream, ok, meta, frame.body)

    # --- sending ----------------------------------------------------------------------

    def hello(self, proof: bytes) -> Writes:
        """The first frame; ``proof`` shows this side holds the network key (fstore.net.trust)."""
        if self._hello_sent:
            raise ProtocolError("HELLO already sent")
        if not isinstance(proof, bytes) or len(proof) != PROOF_SIZE:
            raise InvalidArgumentError(f"a HELLO proof is {PROOF_SIZE} bytes")
        meta = {"v": VERSION, "node": self._local_node, "addr": self._local_addr, "proof": proof}
        writes = encode_frame(FrameKind.HELLO, 0, meta)
        self._hello_sent = True
        return writes

    def request(self, op: str, meta: Mapping[str, Any], body: Buffer = b"") -> tuple[int, Writes]:
        """A new request: its stream id (the response will carry it) and what to send.

        Raises ProtocolError when MAX_INFLIGHT requests are already unanswered.
        """
        self._check_sending()
        if not isinstance(op, str):
            raise InvalidArgumentError("op must be a str")
        if "op" in meta:
            raise InvalidArgumentError('meta must not contain "op"')
        if len(self._ours) >= MAX_INFLIGHT:
            raise ProtocolError("too many streams")
        stream = self._free_stream()
        writes = encode_frame(FrameKind.REQUEST, stream, {"op": op, **meta}, body)
        self._ours.add(stream)
        return stream, writes

    @property
    def may_send(self) -> bool:
        """False once this side sent GOAWAY: nothing may follow it."""
        return not self._goaway_sent

    def respond(self, stream: int, meta: Mapping[str, Any], body: Buffer = b"") -> Writes:
        """A success response to the peer's request on ``stream``."""
        if "ok" in meta:
            raise InvalidArgumentError('meta must not contain "ok"')
        return self._respond(stream, {"ok": True, **meta}, body)

    def respond_error(self, stream: int, code: str, msg: str) -> Writes:
        """An error response to the peer's request on ``stream``; ``code`` is in ERROR_CODES."""
        if code not in ERROR_CODES:
            raise InvalidArgumentError(f"unknown error code {code!r}")
        if not isinstance(msg, str):
            raise InvalidArgumentError("msg must be a str")
        return self._respond(stream, {"ok": False, "code": code, "msg": msg}, b"")

    def goaway(self, code: str, msg: str) -> Writes:
        """The last frame to send before closing; ``code`` is in GOAWAY_CODES."""
        self._check_sending()
        if code not in GOAWAY_CODES:
            raise InvalidArgumentError(f"unknown GOAWAY code {code!r}")
        if not isinstance(msg, str):
            raise InvalidArgumentError("msg must be a str")
        writes = encode_frame(FrameKind.GOAWAY, 0, {"code": code, "msg": msg})
        self._goaway_sent = True
        return writes

    def _respond(self, stream: int, meta: dict[str, Any], body: Buffer) -> Writes:
        self._check_sending()
        if stream not in self._theirs:
            raise ProtocolError(f"stream {stream} has no unanswered request from the peer")
        writes = encode_frame(FrameKind.RESPONSE, stream, meta, body)
        self._theirs.remove(stream)
        return writes

    def _check_sending(self) -> None:
        if not self._hello_sent:
            raise ProtocolError("HELLO must be sent first")
        if self._goaway_sent:
            raise ProtocolError("GOAWAY was sent; nothing may follow it")

    def _free_stream(self) -> int:
        stream = self._next_stream
        while stream in self._ours:
            stream = stream % MAX_STREAM + 1
        self._next_stream = stream % MAX_STREAM + 1
        return stream


def _hello(meta: dict[str, Any]) -> HelloReceived:
    version = meta.get("v")
    if type(version) is not int or version != VERSION:
        raise ProtocolError(f"unsupported protocol version {version!r}")
    node = meta.get("node")
    if not isinstance(node, bytes) or len(node) != NODE_ID_SIZE:
        raise ProtocolError(f"HELLO node id is not {NODE_ID_SIZE} bytes")
    if "addr" not in meta:
        raise ProtocolError("HELLO without addr")
    addr = meta["addr"]
    if addr is not None and not isinstance(addr, str):
        raise ProtocolError("HELLO addr is neither a str nor nil")
    proof = meta.get("proof")
    if not isinstance(proof, bytes) or len(proof) != PROOF_SIZE:
        raise ProtocolError(f"HELLO proof is not {PROOF_SIZE} bytes")
    return HelloReceived(node, addr, proof)


def _code_and_msg(meta: dict[str, Any], what: str) -> tuple[str, str]:
    code, msg = meta.get("code"), meta.get("msg")
    if not isinstance(code, str) or not isinstance(msg, str):
        raise ProtocolError(f"{what} without a str code and msg")
    return code, msg


__all__ = [
    "ERROR_CODES",
    "GOAWAY_CODES",
    "LARGE_BUFFERS",
    "MAX_BODY",
    "MAX_FRAME",
    "MAX_INFLIGHT",
    "MAX_META",
    "NODE_ID_SIZE",
    "PROOF_SIZE",
    "VERSION",
    "Connection",
    "Event",
    "Frame",
    "FrameDecoder",
    "FrameKind",
    "GoAway",
    "HelloReceived",
    "RequestReceived",
    "ResponseReceived",
    "Writes",
    "encode_frame",
]
