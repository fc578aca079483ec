"""Admission of processing work by memory: every job reserves its estimated cost first.

A `MemoryBudget` holds a number of bytes all image and video jobs of the process may use at
once. A job estimates its cost before it decodes anything (from the image's header, or a fixed
figure per ffmpeg run scaled by the video's frame size), reserves it, and gives it back when it
ends. Jobs that do not fit wait in arrival order (a large job is not overtaken forever by small
ones); a job larger than the whole budget is refused at once, since it could never run.

The cost functions here are estimates with a margin, measured on Pillow and ffmpeg: they are
meant to be above what a job really holds, so that the sum of admitted jobs stays inside the
budget.
"""

from __future__ import annotations

import asyncio
import collections
from contextlib import asynccontextmanager
from typing import AsyncIterator

MiB = 1024 * 1024

# Image jobs: the file's bytes are held about three times while a thumbnail is made (read from
# the store in the gateway, pickled to the worker, unpickled there), the decoded pixels once plus
# the reduced copy the resize makes, and a fixed part for decoder and encoder state.
IMAGE_FILE_COPIES = 3
IMAGE_PIXELS_FACTOR = 1.3
IMAGE_OVERHEAD = 8 * MiB

# Video jobs: ffprobe reads headers only; ffmpeg (one thread) holds its libraries' data, the
# demuxer's buffers and a few decoded frames (reference frames of the codec). Measured with
# RLIMIT_DATA on ffmpeg 5.1 taking one frame, one thread: 1920x1080 H.264 needs 64 MiB, 3840x2160
# needs 128 MiB; the estimate below gives 72 and 164 MiB.
PROBE_COST = 48 * MiB
VIDEO_BASE = 40 * MiB
VIDEO_FRAMES_HELD = 10
VIDEO_BYTES_PER_PIXEL = 1.5  # 4:2:0 frames


class OverBudget(Exception):
    """A job needs more memory than the whole budget: it can never run here."""

    def __init__(self, cost: int, total: int) -> None:
        super().__init__(f"a job of {cost} bytes does not fit a budget of {total} bytes")
        self.cost = cost
        self.total = total


def image_job_cost(pixel_bytes: int, file_bytes: int) -> int:
    """Bytes an image thumbnail job holds at most: its file's copies, its decoded pixels, overhead.

    `pixel_bytes` is the size of the decoded image as Pillow stores it (after draft mode).
    """
    return int(IMAGE_FILE_COPIES * file_bytes + IMAGE_PIXELS_FACTOR * pixel_bytes + IMAGE_OVERHEAD)


def video_frame_cost(width: int | None, height: int | None, fallback: int) -> int:
    """Bytes one ffmpeg run taking a frame of a `width` x `height` video holds at most.

    `fallback` when the size is unknown (the probe did not say).
    """
    if not width or not height or width <= 0 or height <= 0:
        return fallback
    return int(VIDEO_BASE + VIDEO_FRAMES_HELD * VIDEO_BYTES_PER_PIXEL * width * height)


class MemoryBudget:
    """`total` bytes shared by jobs of one event loop; `reserve(cost)` admits a job in arrival order.

    Not thread-safe: used from the event loop only.
    """

    def __init__(self, total: int) -> None:
        if total <= 0:
            raise ValueError("a memory budget must be positive")
        self.total = total
        self.in_use = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    @property
    def waiting(self) -> int:
        """Jobs waiting for memory now."""
        return len(self._waiters)

    def fits(self, cost: int) -> bool:
        """Whether a job of `cost` bytes can ever run under this budget."""
        return 0 <= cost <= self.total

    async def acquire(self, cost: int) -> None:
        """Wait until `cost` bytes are free and no earlier job waits, then hold them.

        Raises OverBudget at once when `cost` is larger than the whole budget. A cancelled
        wait holds nothing.
        """
        if not self.fits(cost):
            raise OverBudget(cost, self.total)
        if not self._waiters and self.in_use + cost <= self.total:
            self.in_use += cost
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (cost, waiter)
        self._waiters.append(entry)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(cost)  # granted just as it was cancelled: give it back
            else:
                if entry in self._waiters:  # not passed over by a grant already
                    self._waiters.remove(entry)
                self._grant()  # the jobs behind it may fit now
            raise

    def release(self, cost: int) -> None:
        """Give back `cost` bytes held by a job; admit the waiting jobs that now fit, in order."""
        self.in_use = max(0, self.in_use - cost)
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self.in_use + self._waiters[0][0] <= self.total:
            cost, waiter = self._waiters.popleft()
            if waiter.done():  # cancelled, not yet woken to see it: holds nothing
                continue
            self.in_use += cost
            waiter.set_result(None)

    @asynccontextmanager
    async def reserve(self, cost: int) -> AsyncIterator[None]:
        """Hold `cost` bytes for the body of the `async with` (see `acquire`)."""
        await self.acquire(cost)
        try:
            yield
        finally:
            self.release(cost)
