"""Bounded hand-overs between one worker thread and the event loop.

:class:`ToLoop` carries items a worker thread makes (entries of a tree being
read from disk or from a tar stream) to a coroutine; :class:`FromLoop` carries
bytes the loop receives (an HTTP body) to a worker thread that reads them as a
file. Both hold at most ``capacity`` items: the faster side waits for the
slower one, so memory stays bounded. Either can be closed by the loop when
the work fails, which wakes a waiting thread with :class:`Closed`.
"""

from __future__ import annotations

import asyncio
import io
import queue
import threading
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from fstore.errors import FstoreError

T = TypeVar("T")

_PLENTY = 1 << 20  # releases that wake any number of waiting threads


class Closed(FstoreError):
    """The other side of a hand-over gave up (its work failed or was cancelled)."""


@dataclass(frozen=True)
class _End:
    error: BaseException | None


class ToLoop(Generic[T]):
    """Items from one worker thread to the loop, in order.

    Made on the loop, or on the thread with the loop it goes to.
    """

    def __init__(self, capacity: int, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._items: asyncio.Queue[T | _End] = asyncio.Queue()
        self._space = threading.Semaphore(capacity)
        self._closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    # --- the worker thread's side ---

    def put(self, item: T) -> None:
        """Hand over ``item``, waiting while ``capacity`` items are unread."""
        self._space.acquire()
        if self._closed:
            raise Closed("the receiving side stopped")
        self._loop.call_soon_threadsafe(self._items.put_nowait, item)

    def end(self, error: BaseException | None = None) -> None:
        """No more items; the reader gets ``error`` if one is given."""
        self._loop.call_soon_threadsafe(self._items.put_nowait, _End(error))

    # --- the loop's side ---

    async def get(self) -> T:
        """The next item; StopAsyncIteration at the end, or the error the thread ended with."""
        item = await self._items.get()
        self._space.release()
        if isinstance(item, _End):
            self._items.put_nowait(item)  # every later get ends the same way
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        return await self.get()

    def close(self) -> None:
        """Stop receiving: a thread waiting in :meth:`put` (or calling it later) gets Closed."""
        self._closed = True
        self._space.release(_PLENTY)


class FromLoop(io.RawIOBase):
    """Bytes the loop receives, read by one worker thread as a file; made on the loop."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._pieces: queue.Queue[bytes | BaseException | None] = queue.Queue()
        self._space = asyncio.Semaphore(capacity)
        self._current = memoryview(b"")
        self._ended = False

    # --- the loop's side ---

    async def feed(self, pieces: AsyncIterable[bytes]) -> None:
        """Hand over every piece, then the end; an error in ``pieces`` reaches the reader too."""
        try:
            async for piece in pieces:
                await self._space.acquire()
                self._pieces.put(piece)
        except BaseException as e:
            self._pieces.put(e)
            raise
        self._pieces.put(None)

    def close_input(self) -> None:
        """Stop feeding: the reader's next read raises Closed."""
        self._pieces.put(Closed("the sending side stopped"))

    # --- the worker thread's side ---

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._current:
            if self._ended:
                return 0
            piece = self._pieces.get()
            self._loop.call_soon_threadsafe(self._space.release)
            if piece is None:
                self._ended = True
                return 0
            if isinstance(piece, BaseException):
                self._pieces.put(piece)  # for any later read too
                raise piece if isinstance(piece, Closed) else Closed(str(piece))
            self._current = memoryview(piece)
        count = min(len(buffer), len(self._current))
        buffer[:count] = self._current[:count]
        self._current = self._current[count:]
        return count
