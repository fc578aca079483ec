"""Slots for processing jobs, handed out fairly among the users whose jobs wait.

`FairSlots(n)` lets `n` jobs run at once (0: none, every job waits). When more wait, the next free slot goes to the user
after the one served last, in the order users first started waiting, and within a user to
their oldest job: a user with a hundred images queued and a user with one take turns, instead
of the one waiting behind the hundred.

Not thread-safe: used from the event loop only.
"""

from __future__ import annotations

import asyncio
import collections
from contextlib import asynccontextmanager
from typing import AsyncIterator


class FairSlots:
    """At most `slots` holders at once; waiters admitted round-robin by owner, FIFO per owner."""

    def __init__(self, slots: int) -> None:
        if slots < 0:
            raise ValueError("slots cannot be negative")
        self.free = slots
        # owner -> their waiters, oldest first; the dict's order is the round-robin order
        self._waiting: dict[str, collections.deque[asyncio.Future[None]]] = {}

    @property
    def waiting(self) -> int:
        """Jobs waiting for a slot now."""
        return sum(len(queue) for queue in self._waiting.values())

    async def acquire(self, owner: str) -> None:
        """Wait for a slot for a job of `owner` (at once when one is free and nobody waits).
        A cancelled wait holds nothing."""
        if self.free > 0 and not self._waiting:
            self.free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(owner, collections.deque()).append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just as it was cancelled: pass it on
            else:
                queue = self._waiting.get(owner)
                if queue is not None and waiter in queue:
                    queue.remove(waiter)
                    if not queue:
                        del self._waiting[owner]
            raise

    def release(self) -> None:
        """Give a slot back: to the next owner in turn that waits, else free. A waiter cancelled
        but not yet woken to see it is passed over."""
        while self._waiting:
            owner = next(iter(self._waiting))
            queue = self._waiting.pop(owner)
            waiter = queue.popleft()
            if queue:
                self._waiting[owner] = queue  # to the back of the turn order
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1

    @asynccontextmanager
    async def slot(self, owner: str) -> AsyncIterator[None]:
        """Hold a slot for the body of the `async with` (see `acquire`)."""
        await self.acquire(owner)
        try:
            yield
        finally:
            self.release()
