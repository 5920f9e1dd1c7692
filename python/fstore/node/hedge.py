"""Asking holders in order without waiting on a silent one: attempts with due times.

An attempt on a peer is due within the time that peer's past answers predict
(``PeerLink.expected_time``). At that time a peer heard from since the attempt
began is only busy, and is given another period. One not heard from is pinged
once; still silent after a round trip, it is marked overdue (asked last from
then on) and the next candidate is asked too. The overdue attempt keeps
running, and whichever answers first is used. A frozen or cut-off holder so
costs about two expected round trips, not a ping timeout, and a busy one is
not mistaken for a dead one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fstore.node.peers import Peers

T = TypeVar("T")

Outcome = tuple[bytes, T | BaseException]


@dataclass
class _Attempt:
    node: bytes
    started: float  # time.monotonic(), comparable with PeerLink.heard_at
    due: float | None  # loop time; None for this node itself, which is never overdue
    probed: bool = False
    overdue: bool = False


class Hedge(Generic[T]):
    def __init__(
        self,
        peers: Peers,
        candidates: Iterable[bytes],
        attempt: Callable[[bytes], Awaitable[T]],
        body_bytes: int = 0,
    ) -> None:
        self._peers = peers
        self._candidates = iter(candidates)
        self._left = True
        self._attempt = attempt
        self._body_bytes = body_bytes
        self._running: dict[asyncio.Task[T], _Attempt] = {}
        self.hedged = 0  # attempts started because another was overdue

    @property
    def exhausted(self) -> bool:
        """Nothing runs and no candidate is left."""
        return not self._running and not self._left

    @property
    def waiting_only_on_overdue(self) -> bool:
        return bool(self._running) and all(a.overdue for a in self._running.values())

    def _start_next(self) -> bool:
        for node in self._candidates:
            expected = self._peers.expected_time(node, self._body_bytes)
            now = asyncio.get_running_loop().time()
            due = None if expected is None else now + expected
            task = asyncio.ensure_future(self._attempt(node))
            self._running[task] = _Attempt(node, time.monotonic(), due)
            return True
        self._left = False
        return False

    def _fill(self, width: int) -> None:
        while sum(not a.overdue for a in self._running.values()) < width and self._start_next():
            pass

    async def wait(self, width: int) -> list[Outcome[T]]:
        """Keep ``width`` attempts running that are not overdue; return those that finished.

        Returns an empty list when a due time passed instead.
        """
        self._fill(width)
        if not self._running:
            return []
        dues = [a.due for a in self._running.values() if a.due is not None and not a.overdue]
        timeout = max(0.0, min(dues) - asyncio.get_running_loop().time()) if dues else None
        done, _ = await asyncio.wait(
            self._running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            self._check_dues()
            self._fill(width)
            return []
        outcomes: list[Outcome[T]] = []
        for task in done:
            attempt = self._running.pop(task)
            outcomes.append((attempt.node, task.exception() or task.result()))
        return outcomes

    def _check_dues(self) -> None:
        now = asyncio.get_running_loop().time()
        for attempt in self._running.values():
            if attempt.due is None or attempt.overdue or attempt.due > now:
                continue
            expected = self._peers.expected_time(attempt.node) or 0.0
            if self._peers.heard_since(attempt.node, attempt.started):
                # Busy, not silent: it answered something since; give it another period.
                attempt.due = now + (self._peers.expected_time(attempt.node, self._body_bytes) or 0)
                attempt.started, attempt.probed = time.monotonic(), False
            elif not attempt.probed:
                self._peers.probe(attempt.node)
                attempt.due, attempt.probed = now + expected, True
            else:
                attempt.overdue = True
                self._peers.mark_overdue(attempt.node)
                self.hedged += 1

    def cancel(self) -> None:
        """Stop every attempt still running; their outcomes are collected, never logged."""
        for task in self._running:
            task.cancel()
        self.detach()

    def detach(self) -> None:
        """Let attempts still running finish on their own (a late copy is still a copy)."""
        for task in self._running:
            run_detached(task)
        self._running.clear()


# Detached tasks, referenced until they finish (the loop holds tasks only weakly).
_DETACHED: set[asyncio.Future[object]] = set()


def run_detached(task: asyncio.Future[Any]) -> None:
    """Let ``task`` finish on its own: kept referenced until then, its outcome collected
    and never logged."""
    _DETACHED.add(task)
    task.add_done_callback(_collect)


def _collect(task: asyncio.Future[object]) -> None:
    _DETACHED.discard(task)
    if not task.cancelled():
        task.exception()
