"""Part buffers drawn from one process-wide memory budget, shared fairly between users.

Every byte an upload holds in memory (the part filling and the parts in flight)
is a buffer from this pool. When the budget is spent, `acquire` waits: the
caller stops reading its socket, which is the backpressure that keeps the
process inside its memory limit however many uploads run at once.

One owner (a user) may hold at most its share of the budget: the smaller of the
per-owner cap and the budget divided among the owners holding or waiting for
buffers, so one user's many uploads cannot starve everyone else. An owner
holding nothing may always take one buffer when there is room. A wait has a
deadline: past it `acquire` raises `MemoryBusy` and the caller answers "retry
later" instead of holding a connection forever.
"""

from __future__ import annotations

import asyncio
import mmap
from collections import Counter, defaultdict

from streaming.errors import MemoryBusy


def aligned_buffer(size: int) -> mmap.mmap:
    """A writable buffer of `size` bytes that starts on a page boundary (anonymous memory).

    Page alignment lets a store hand the buffer to the kernel for direct I/O; the
    memory goes back to the system as soon as the buffer is dropped.
    """
    return mmap.mmap(-1, size)


class BufferPool:
    """Hands out page-aligned buffers (`aligned_buffer`) of a requested size while their total stays
    within `budget` bytes, and each owner's within its fair share.

    Released buffers are kept for reuse (they count against the budget while
    kept); kept buffers of another size are dropped when room is needed.
    `per_owner` caps what one owner holds (None: the whole budget); `wait` is how
    long `acquire` may wait by default (None: no deadline).
    """

    def __init__(self, budget: int, per_owner: int | None = None, wait: float | None = None) -> None:
        self.budget = budget
        self.per_owner = budget if per_owner is None else per_owner
        self.wait = wait
        self._in_use = 0
        self._held: Counter[str] = Counter()  # owner -> bytes handed out
        self._owners: dict[int, str] = {}  # id(buffer) -> owner
        self._waiting: Counter[str] = Counter()  # owner -> acquires waiting
        self._kept: dict[int, list[mmap.mmap]] = defaultdict(list)
        self._kept_bytes = 0
        self._changed = asyncio.Condition()

    @property
    def in_use(self) -> int:
        """Bytes currently handed out."""
        return self._in_use

    def held_by(self, owner: str) -> int:
        """Bytes currently handed out to `owner`."""
        return self._held[owner]

    def share(self) -> int:
        """What one owner may hold now: the per-owner cap, shrunk as more owners hold or wait."""
        owners = len(set(self._held) | {owner for owner, count in self._waiting.items() if count})
        return min(self.per_owner, self.budget // max(owners, 1))

    def _owner_may(self, owner: str, size: int) -> bool:
        held = self._held[owner]
        return held == 0 or held + size <= self.share()

    def _room_for(self, size: int) -> bool:
        if self._in_use + size > self.budget and self._in_use > 0:
            return False
        if self._kept.get(size):
            return True
        while self._in_use + self._kept_bytes + size > self.budget and self._kept_bytes:
            for kept_size, buffers in self._kept.items():
                if buffers:
                    buffers.pop()
                    self._kept_bytes -= kept_size
                    break
        return True

    async def acquire(self, size: int, owner: str = "", wait: float | None = None) -> mmap.mmap:
        """A buffer of exactly `size` bytes (contents unspecified) for `owner`; waits while the
        budget or the owner's share is spent, at most `wait` seconds (default: the pool's),
        then raises MemoryBusy."""
        wait = self.wait if wait is None else wait
        async with self._changed:
            self._waiting[owner] += 1
            try:
                ready = lambda: self._owner_may(owner, size) and self._room_for(size)  # noqa: E731
                if wait is None:
                    await self._changed.wait_for(ready)
                else:
                    try:
                        await asyncio.wait_for(self._changed.wait_for(ready), wait)
                    except asyncio.TimeoutError:
                        raise MemoryBusy("the server's upload memory is busy; retry shortly") from None
            finally:
                self._waiting[owner] -= 1
                if not self._waiting[owner]:
                    del self._waiting[owner]
                # a waiter leaving changes the share of those still waiting
                self._changed.notify_all()
            self._in_use += size
            self._held[owner] += size
            kept = self._kept.get(size)
            if kept:
                self._kept_bytes -= size
                buffer = kept.pop()
            else:
                buffer = aligned_buffer(size)
            self._owners[id(buffer)] = owner
            return buffer

    async def release(self, buffer: mmap.mmap) -> None:
        """Give `buffer` back; it may be handed out again."""
        async with self._changed:
            size = len(buffer)
            owner = self._owners.pop(id(buffer), "")
            self._in_use -= size
            self._held[owner] -= size
            if self._held[owner] <= 0:
                del self._held[owner]
            if self._in_use + self._kept_bytes + size <= self.budget:
                self._kept[size].append(buffer)
                self._kept_bytes += size
            self._changed.notify_all()
