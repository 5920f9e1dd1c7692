"""What the kernel knows of a TCP connection's outgoing bytes (Linux; None elsewhere).

A member that is busy receiving a blob from us may not see our PING for
seconds: the PING waits behind the blob in our buffers. Whether the member
is still taking in what lies ahead of it is in the kernel's counters: the
bytes its TCP has acknowledged (``TCP_INFO``'s ``tcpi_bytes_acked``, Linux
4.1) and the bytes still queued in our socket (``SIOCOUTQ``).
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct
import sys
import termios
from typing import Protocol

# struct tcp_info is only ever extended at its end; tcpi_bytes_acked is a u64 at 120.
_BYTES_ACKED_OFFSET = 120
_TCP_INFO_SIZE = 256
_LINUX = sys.platform.startswith("linux")


class SocketLike(Protocol):
    def fileno(self) -> int: ...

    def getsockopt(self, level: int, option: int, buflen: int) -> bytes: ...


def acked_bytes(sock: SocketLike | None) -> int | None:
    """Bytes of ours the peer's TCP has acknowledged on this connection so far."""
    if sock is None or not _LINUX:
        return None
    with contextlib.suppress(OSError, ValueError):
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
        if len(info) >= _BYTES_ACKED_OFFSET + 8:
            return int(struct.unpack_from("=Q", info, _BYTES_ACKED_OFFSET)[0])
    return None


def queued_bytes(sock: SocketLike | None) -> int | None:
    """Bytes in our socket's send queue: not yet sent, or sent and not yet acknowledged."""
    if sock is None or not _LINUX:
        return None
    with contextlib.suppress(OSError, ValueError):
        answer = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
        return int(struct.unpack("i", answer)[0])
    return None
