"""Waiting in a background loop that a stop cancels."""

from __future__ import annotations

import asyncio
import contextlib


async def woken_or_after(event: asyncio.Event, seconds: float) -> None:
    """Wait until ``event`` is set or ``seconds`` have passed.

    Not ``asyncio.wait_for``: on Python 3.11 it can swallow a cancellation that
    arrives as the event is set, and the loop waiting here would then outlive a
    node's stop, which waits for it for ever. ``asyncio.timeout`` tells its own
    cancellation from another.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
