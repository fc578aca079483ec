"""Part buffers drawn from one process-wide memory budget.

Every byte an upload holds in memory (the part filling and the parts in flight)
is a buffer from this pool. When the budget is spent, `acquire` waits: the
caller stops reading its socket, which is the backpressure that keeps the
process inside its memory limit however many uploads run at once.
"""

from __future__ import annotations

import asyncio
import mmap
from collections import defaultdict


def aligned_buffer(size: int) -> mmap.mmap:
    """A writable buffer of `size` bytes that starts on a page boundary (anonymous memory).

    Page alignment lets a store hand the buffer to the kernel for direct I/O; the
    memory goes back to the system as soon as the buffer is dropped.
    """
    return mmap.mmap(-1, size)


class BufferPool:
    """Hands out page-aligned buffers (`aligned_buffer`) of a requested size while their total stays within `budget` bytes.

    Released buffers are kept for reuse (they count against the budget while
    kept); kept buffers of another size are dropped when room is needed.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._in_use = 0
        self._kept: dict[int, list[mmap.mmap]] = defaultdict(list)
        self._kept_bytes = 0
        self._changed = asyncio.Condition()

    @property
    def in_use(self) -> int:
        """Bytes currently handed out."""
        return self._in_use

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

    async def acquire(self, size: int) -> mmap.mmap:
        """A buffer of exactly `size` bytes (contents unspecified); waits while the budget is spent."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._room_for(size))
            self._in_use += size
            kept = self._kept.get(size)
            if kept:
                self._kept_bytes -= size
                return kept.pop()
        return aligned_buffer(size)

    async def release(self, buffer: mmap.mmap) -> None:
        """Give `buffer` back; it may be handed out again."""
        async with self._changed:
            size = len(buffer)
            self._in_use -= size
            if self._in_use + self._kept_bytes + size <= self.budget:
                self._kept[size].append(buffer)
                self._kept_bytes += size
            self._changed.notify_all()
