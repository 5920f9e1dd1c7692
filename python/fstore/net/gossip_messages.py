"""The messages of membership gossip, as plain msgpack-able values (docs/PROTOCOL.md, section 11).

A ``Member`` is one node's record in the member list: its id, the address it
claims, its incarnation and its state. Records are immutable, so a record
received from a peer is kept as it is and shared. Each message is a frozen
dataclass with ``to_wire()`` (a list of ints, bytes, str, bools and lists) and
a ``wire_size()`` equal to the length of that value packed with msgpack, so a
host or a simulator can count bytes without packing. ``decode`` is the one way
in for peer-sent values: it checks every type, length and range, and raises
``ProtocolError`` for anything else.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from fstore._native import hash as blake3
from fstore.errors import ProtocolError

NODE_ID_SIZE: Final = 32
MAX_ADDR_BYTES: Final = 255
MAX_INCARNATION: Final = 2**63 - 1
MAX_SEQ: Final = 2**32 - 1
BUCKETS: Final = 256  # digest buckets, by the first byte of a node id
DIGEST_SIZE: Final = BUCKETS * 8
BITMAP_SIZE: Final = BUCKETS // 8
MAX_UPDATES: Final = 64  # records piggybacked on one probe or broadcast message
MAX_ENTRIES: Final = 1024  # records in one sync message
MAX_SYNC_BYTES: Final = 48 * 1024  # a sync message a node sends is at most this (it fits MAX_META)


class State(enum.IntEnum):
    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


LIVE_STATES: Final = frozenset({State.ALIVE, State.SUSPECT})
_DIGEST: Final = struct.Struct(f">{BUCKETS}Q")


# --- msgpack sizes ------------------------------------------------------------------


def _int_size(value: int) -> int:
    if value < 0x80:
        return 1
    if value <= 0xFF:
        return 2
    if value <= 0xFFFF:
        return 3
    return 5 if value <= 0xFFFF_FFFF else 9


def _array_header(count: int) -> int:
    return 1 if count < 16 else 3 if count <= 0xFFFF else 5


def _bin_size(length: int) -> int:
    return length + (2 if length <= 0xFF else 3 if length <= 0xFFFF else 5)


def _str_size(text: str | None) -> int:
    if text is None:
        return 1
    length = len(text.encode())
    return length + (1 if length < 32 else 2 if length <= 0xFF else 3)


# --- member records -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """What a node knows of one member. ``suspector`` is set for SUSPECT only: who suspected it."""

    node: bytes
    addr: str | None
    incarnation: int
    state: State
    suspector: bytes | None = None
    # Derived once, so that a record shared by many tables is hashed and sized once.
    digest: int = field(init=False, repr=False, compare=False)
    wire_size: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = self.node + self.incarnation.to_bytes(8, "big") + bytes((self.state,))
        object.__setattr__(self, "digest", int.from_bytes(blake3(key, 8), "big"))
        size = 1 + 1 + _bin_size(NODE_ID_SIZE) + _int_size(self.incarnation)
        size += _str_size(self.addr)
        if self.state == State.SUSPECT:
            size += _bin_size(NODE_ID_SIZE)
        object.__setattr__(self, "wire_size", size)

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def bucket(self) -> int:
        return self.node[0]

    def to_wire(self) -> list[object]:
        fields: list[object] = [int(self.state), self.node, self.incarnation, self.addr]
        if self.state == State.SUSPECT:
            fields.append(self.suspector)
        return fields

    @classmethod
    def from_wire(cls, value: object) -> Member:
        if not isinstance(value, list) or len(value) not in (4, 5):
            raise ProtocolError("a member record must be an array of 4 or 5 items")
        state = _state(value[0])
        node = _node_id(value[1], "member id")
        incarnation = _uint(value[2], MAX_INCARNATION, "incarnation")
        addr = _addr(value[3])
        if state == State.SUSPECT:
            if len(value) != 5:
                raise ProtocolError("a SUSPECT record must name its suspector")
            return cls(node, addr, incarnation, state, _node_id(value[4], "suspector"))
        if len(value) != 4:
            raise ProtocolError(f"a {state.name} record has 4 items, not 5")
        return cls(node, addr, incarnation, state)


def _updates_size(updates: tuple[Member, ...]) -> int:
    return _array_header(len(updates)) + sum(m.wire_size for m in updates)


def _updates_wire(updates: tuple[Member, ...]) -> list[object]:
    return [m.to_wire() for m in updates]


# --- messages -----------------------------------------------------------------------


class Kind(enum.IntEnum):
    PING = 1
    ACK = 2
    PING_REQ = 3
    NACK = 4
    BROADCAST = 5
    SYNC_REQUEST = 6
    SYNC_REPLY = 7
    SYNC_PUSH = 8


@dataclass(frozen=True, slots=True)
class Ping:
    """Are you alive? Answered with an ``Ack`` of the same ``seq``."""

    seq: int
    updates: tuple[Member, ...] = ()

    def to_wire(self) -> list[object]:
        return [Kind.PING.value, self.seq, _updates_wire(self.updates)]

    def wire_size(self) -> int:
        return 2 + _int_size(self.seq) + _updates_size(self.updates)


@dataclass(frozen=True, slots=True)
class Ack:
    """The answer to a ``Ping``, or relayed by the helper of a ``PingReq``."""

    seq: int
    updates: tuple[Member, ...] = ()

    def to_wire(self) -> list[object]:
        return [Kind.ACK.value, self.seq, _updates_wire(self.updates)]

    def wire_size(self) -> int:
        return 2 + _int_size(self.seq) + _updates_size(self.updates)


@dataclass(frozen=True, slots=True)
class PingReq:
    """Please ping ``target`` for me and relay its ack as ``Ack(seq)`` (or ``Nack(seq)``)."""

    seq: int
    target: bytes
    updates: tuple[Member, ...] = ()

    def to_wire(self) -> list[object]:
        return [Kind.PING_REQ.value, self.seq, self.target, _updates_wire(self.updates)]

    def wire_size(self) -> int:
        return 2 + _int_size(self.seq) + _bin_size(NODE_ID_SIZE) + _updates_size(self.updates)


@dataclass(frozen=True, slots=True)
class Nack:
    """From the helper of a ``PingReq``: the target did not answer me in time (but I am here)."""

    seq: int

    def to_wire(self) -> list[object]:
        return [Kind.NACK.value, self.seq]

    def wire_size(self) -> int:
        return 2 + _int_size(self.seq)


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Only piggybacked records, sent to a few random members each gossip round."""

    updates: tuple[Member, ...]

    def to_wire(self) -> list[object]:
        return [Kind.BROADCAST.value, _updates_wire(self.updates)]

    def wire_size(self) -> int:
        return 2 + _updates_size(self.updates)


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """Anti-entropy, step 1: my digest; send me your records in the buckets where we differ."""

    seq: int
    digest: bytes  # DIGEST_SIZE bytes: BUCKETS big-endian u64

    def to_wire(self) -> list[object]:
        return [Kind.SYNC_REQUEST.value, self.seq, self.digest]

    def wire_size(self) -> int:
        return 2 + _int_size(self.seq) + _bin_size(DIGEST_SIZE)


@dataclass(frozen=True, slots=True)
class SyncReply:
    """Step 2, in one or more parts: the buckets that differ and my records in them."""

    seq: int
    buckets: bytes  # BITMAP_SIZE bytes: bit (7 - b % 8) of byte b // 8 is bucket b
    entries: tuple[Member, ...]
    last: bool

    def to_wire(self) -> list[object]:
        return [
            Kind.SYNC_REPLY.value,
            self.seq,
            self.buckets,
            _updates_wire(self.entries),
            self.last,
        ]

    def wire_size(self) -> int:
        return 2 + _int_size(self.seq) + _bin_size(BITMAP_SIZE) + _updates_size(self.entries) + 1


@dataclass(frozen=True, slots=True)
class SyncPush:
    """Step 3, in one or more parts: the requester's records in those buckets."""

    entries: tuple[Member, ...]

    def to_wire(self) -> list[object]:
        return [Kind.SYNC_PUSH.value, _updates_wire(self.entries)]

    def wire_size(self) -> int:
        return 2 + _updates_size(self.entries)


Message: TypeAlias = Ping | Ack | PingReq | Nack | Broadcast | SyncRequest | SyncReply | SyncPush


# --- decoding -----------------------------------------------------------------------


def decode(value: object) -> Message:
    """The message a peer sent, from its msgpack-decoded value; ProtocolError if malformed."""
    if not isinstance(value, list) or not value:
        raise ProtocolError("a gossip message must be a non-empty array")
    kind = _uint(value[0], 0xFF, "message kind")
    try:
        decoder, length = _DECODERS[Kind(kind)]
    except ValueError:
        raise ProtocolError(f"unknown gossip message kind {kind}") from None
    if len(value) != length:
        raise ProtocolError(f"a {Kind(kind).name} message has {length} items, not {len(value)}")
    return decoder(value)


def _decode_ping(v: list[object]) -> Message:
    return Ping(_seq(v[1]), _records(v[2], MAX_UPDATES))


def _decode_ack(v: list[object]) -> Message:
    return Ack(_seq(v[1]), _records(v[2], MAX_UPDATES))


def _decode_ping_req(v: list[object]) -> Message:
    return PingReq(_seq(v[1]), _node_id(v[2], "target"), _records(v[3], MAX_UPDATES))


def _decode_nack(v: list[object]) -> Message:
    return Nack(_seq(v[1]))


def _decode_broadcast(v: list[object]) -> Message:
    return Broadcast(_records(v[1], MAX_UPDATES))


def _decode_sync_request(v: list[object]) -> Message:
    return SyncRequest(_seq(v[1]), _bin(v[2], DIGEST_SIZE, "digest"))


def _decode_sync_reply(v: list[object]) -> Message:
    if not isinstance(v[4], bool):
        raise ProtocolError("a SYNC_REPLY's last flag must be a bool")
    buckets = _bin(v[2], BITMAP_SIZE, "bucket bitmap")
    return SyncReply(_seq(v[1]), buckets, _records(v[3], MAX_ENTRIES), v[4])


def _decode_sync_push(v: list[object]) -> Message:
    return SyncPush(_records(v[1], MAX_ENTRIES))


_DECODERS: Final = {
    Kind.PING: (_decode_ping, 3),
    Kind.ACK: (_decode_ack, 3),
    Kind.PING_REQ: (_decode_ping_req, 4),
    Kind.NACK: (_decode_nack, 2),
    Kind.BROADCAST: (_decode_broadcast, 2),
    Kind.SYNC_REQUEST: (_decode_sync_request, 3),
    Kind.SYNC_REPLY: (_decode_sync_reply, 5),
    Kind.SYNC_PUSH: (_decode_sync_push, 2),
}


def _uint(value: object, maximum: int, what: str) -> int:
    if type(value) is not int or not 0 <= value <= maximum:
        raise ProtocolError(f"{what} must be an integer in [0, {maximum}]")
    return value


def _seq(value: object) -> int:
    return _uint(value, MAX_SEQ, "seq")


def _state(value: object) -> State:
    return State(_uint(value, max(State), "member state"))


def _bin(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise ProtocolError(f"{what} must be {size} bytes")
    return value


def _node_id(value: object, what: str) -> bytes:
    return _bin(value, NODE_ID_SIZE, what)


def address_problem(value: object) -> str | None:
    """Why ``value`` is not a valid address claim, or None if it is one."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        return "an address must be a non-empty str or nil"
    if len(value.encode()) > MAX_ADDR_BYTES or not value.isprintable() or " " in value:
        return f"an address must be printable, without spaces, at most {MAX_ADDR_BYTES} bytes"
    return None


def _addr(value: object) -> str | None:
    problem = address_problem(value)
    if problem is not None:
        raise ProtocolError(problem)
    assert value is None or isinstance(value, str)
    return value


def _records(value: object, maximum: int) -> tuple[Member, ...]:
    if not isinstance(value, list):
        raise ProtocolError("member records must be an array")
    if len(value) > maximum:
        raise ProtocolError(f"{len(value)} member records exceed the maximum of {maximum}")
    return tuple(Member.from_wire(item) for item in value)


# --- digests and bucket bitmaps -----------------------------------------------------


def pack_digest(buckets: list[int]) -> bytes:
    return _DIGEST.pack(*buckets)


def unpack_digest(digest: bytes) -> tuple[int, ...]:
    return _DIGEST.unpack(digest)


def pack_bitmap(buckets: set[int]) -> bytes:
    bitmap = bytearray(BITMAP_SIZE)
    for b in buckets:
        bitmap[b >> 3] |= 0x80 >> (b & 7)
    return bytes(bitmap)


def unpack_bitmap(bitmap: bytes) -> set[int]:
    return {b for b in range(BUCKETS) if bitmap[b >> 3] & (0x80 >> (b & 7))}
