"""Processing jobs: what a media item is made into after its upload finished.

The queue is MongoDB itself: every item with status "processing" is pending
work. An instance takes an item's lease before working on it, so no item is
processed twice at once; a sweep picks up items whose worker died, so no job
is lost across restarts. Images are thumbnailed in a worker process pool
(isolated: a decoder crash or a bomb fails the job, not the gateway); videos
are probed and thumbnailed by ffprobe/ffmpeg subprocesses through a URL.
With an SQS queue (processing/queue.py, processing/worker.py) the queue's workers
call `attempt` and `settle` under their own claim instead of `submit`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import re
import resource
import time
import uuid
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, AsyncContextManager, AsyncIterator, Awaitable, Callable, Protocol

from metadata.leases import LeaseRepository
from metadata.media import FAILED, PROCESSING, READY, MediaConflict, MediaItem, MediaRepository
from processing.budget import PROBE_COST, MemoryBudget, image_job_cost, video_frame_cost
from processing.fair_slots import FairSlots
from processing.images import ImageRejected, estimate, make_thumbnail, megapixels
from processing.video import VideoRejected, probe, thumbnail

log = logging.getLogger("mediaserver.processing")

IMAGE_HEADER_BYTES = 1024 * 1024  # read to learn an image's size before admitting it

# A failed item's `reason` is shown to its owner: plain words, never a URL, a signature,
# a path or an object's repr. What went wrong in detail goes to the log only.
CANNOT_PROCESS = "the file could not be processed"
CANNOT_READ_STORED = "the stored file could not be read"
IMAGE_DECODER_STOPPED = "the image could not be read (the decoder stopped)"
_NOT_PLAIN = re.compile(r"://|signature|[<>{}\[\]/\\]|\bobject at\b|\b0x[0-9a-f]+|\w+Error\b|Exception\b",
                        re.IGNORECASE)


def plain_reason(text: object, fallback: str = CANNOT_PROCESS) -> str:
    """`text` when it is plain words for people (short; no URL, signature, path or repr), else `fallback`."""
    if not isinstance(text, str):
        return fallback
    text = " ".join(text.split())
    if not text or len(text) > 200 or _NOT_PLAIN.search(text):
        return fallback
    return text


def failure_of(exc: BaseException) -> tuple[str, str]:
    """(reason for the owner, detail for the log) of a rejected image or video."""
    args = [arg for arg in exc.args if isinstance(arg, str)]
    reason = getattr(exc, "reason", None) or (args[0] if args else "")
    detail = getattr(exc, "detail", None) or " ".join(args[1:]) or str(exc)
    return plain_reason(reason), detail


@dataclass(frozen=True)
class ProcessingLimits:
    concurrency: int
    job_timeout: float
    max_image_pixels: int
    max_image_bytes: int
    max_video_duration: float
    subprocess_memory: int
    thumbnail_width: int
    thumbnail_height: int
    executor_kind: str  # "process" or "thread"
    file_sha256: bool = True  # hash the stored object when the upload could not
    memory_budget: int = 128 * 1024 * 1024  # bytes all image and video jobs may hold at once (processing/budget.py)
    video_memory: int = 96 * 1024 * 1024  # reserved per ffmpeg run when the video's frame size is unknown
    queue: int = 64  # jobs waiting here at most; more stay pending in MongoDB for a later sweep
    queue_per_user: int = 8  # jobs of one user waiting or running here at most; more stay pending


@dataclass(frozen=True)
class Attempt:
    """What one attempt at a job came to: the item's new fields, or a plain reason it failed."""

    changes: dict[str, Any] | None  # set when the attempt succeeded
    reason: str | None = None  # plain words for the owner when it failed
    detail: str = ""  # for the log only
    retryable: bool = False  # failed for a cause that may pass (store, decoder process, time, unexpected)
    seconds: float = 0.0


class MediaObjects(Protocol):
    """What processing needs of the object store."""

    def read_range(self, key: str, start: int, end: int, chunk_size: int) -> AsyncIterator[bytes]:
        """Bytes start..end-1 of `key`, in chunks."""

    async def put_object(self, key: str, data: bytes | memoryview, content_type: str = "application/octet-stream") -> None:
        """Store a whole (small) object."""


def _worker_init(memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


class MediaProcessor:
    """Runs processing jobs with bounded concurrency; `submit` schedules, `sweep` recovers."""

    def __init__(
        self,
        store: MediaObjects,
        media: MediaRepository,
        leases: LeaseRepository,
        limits: ProcessingLimits,
        source_url: Callable[[MediaItem], Awaitable[str]],
        store_failures: tuple[type[BaseException], ...] = (),
    ) -> None:
        """`store_failures`: the store's error types; a job that meets one fails with its message."""
        self.store = store
        self.store_failures = store_failures
        self.media = media
        self.leases = leases
        self.limits = limits
        self.source_url = source_url
        self.instance = uuid.uuid4().hex
        self._slots = FairSlots(limits.concurrency)  # users take turns for them
        self.budget = MemoryBudget(limits.memory_budget)
        self._running: dict[str, asyncio.Future] = {}
        self._jobs_of: collections.Counter[str] = collections.Counter()  # owner -> jobs in _running
        self._turned_away = False  # a job was left to the sweep because the queue was full
        self._executor: Executor | None = None
        self.observers: list[Callable[[str, str, float], None]] = []  # (kind, outcome, seconds)
        self.status_observers: list[Callable[[MediaItem], None]] = []
        #: wraps the save of an item's final status, so it is announced durably with it (webhooks)
        self.announce_status: Callable[[MediaItem], AsyncContextManager[None]] = lambda item: contextlib.nullcontext()

    def _pool(self) -> Executor:
        if self._executor is None:
            if self.limits.executor_kind == "thread":
                self._executor = ThreadPoolExecutor(self.limits.concurrency, thread_name_prefix="thumbnail")
            else:
                self._executor = ProcessPoolExecutor(
                    self.limits.concurrency, initializer=_worker_init,
                    initargs=(self.limits.subprocess_memory,), max_tasks_per_child=100)
        return self._executor

    def _full(self) -> bool:
        return len(self._running) >= self.limits.concurrency + self.limits.queue

    def _user_full(self, owner: str) -> bool:
        return self._jobs_of[owner] >= self.limits.queue_per_user

    def submit(self, media_id: str, owner: str | None = None) -> bool:
        """Process `media_id` of `owner` soon (no-op when this instance already is); False when
        the queue, or `owner`'s part of it, is full: the item stays pending in MongoDB and is
        submitted again by the sweep once a job here ends."""
        if media_id in self._running:
            return True
        who = owner or ""
        if self._full() or self._user_full(who):
            self._turned_away = True
            return False
        task = asyncio.ensure_future(self._run(media_id, who))
        self._running[media_id] = task
        self._jobs_of[who] += 1
        task.add_done_callback(lambda done: self._job_ended(media_id, who, done))
        return True

    def _job_ended(self, media_id: str, owner: str, task: asyncio.Future) -> None:
        self._running.pop(media_id, None)
        self._jobs_of[owner] -= 1
        if self._jobs_of[owner] <= 0:
            del self._jobs_of[owner]
        if self._turned_away and not task.cancelled():
            self._turned_away = False
            asyncio.ensure_future(self._sweep_logged())

    async def _sweep_logged(self) -> None:
        try:
            await self.sweep()
        except Exception:  # noqa: BLE001 - the periodic sweep tries again
            log.warning("processing sweep failed", exc_info=True)

    async def sweep(self) -> int:
        """Submit every pending item no live worker holds, but those of users whose part of the
        queue is full (their items are not even read); return how many were submitted."""
        submitted = 0
        full = [owner or None for owner in self._jobs_of if self._user_full(owner)]  # "": no owner
        if full:
            self._turned_away = True  # their items wait for the sweep after a job of theirs ends
        for item in await self.media.with_status(PROCESSING, excluding_owners=full):
            if self._full():
                self._turned_away = True
                break  # the rest waits for the next sweep
            if item.id not in self._running and await self.leases.holder(f"media:{item.id}") is None:
                submitted += self.submit(item.id, item.owner)
        return submitted

    async def wait_idle(self) -> None:
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*list(self._running.values()), return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, media_id: str, owner: str) -> None:
        holder = f"{self.instance}:{uuid.uuid4().hex}"
        lease_name = f"media:{media_id}"
        ttl = self.limits.job_timeout + 60
        async with self._slots.slot(owner):
            if not await self.leases.try_acquire(lease_name, holder, ttl):
                return
            try:
                item = await self.media.get(media_id)
                if item is None or item.status != PROCESSING:
                    return
                await self.settle(item, await self.attempt(item))
            finally:
                await self.leases.release(lease_name, holder)

    async def attempt(self, item: MediaItem) -> Attempt:
        """Process `item` once, within the job timeout; never raises for the job's own failures.

        The caller holds the item's claim and saves the result with `settle`."""
        started = time.monotonic()
        changes: dict[str, Any] | None = None
        reason: str | None = None
        detail = ""
        retryable = True  # a failure that may pass: the store, the decoder process, time, anything unexpected
        try:
            changes = await asyncio.wait_for(self._process(item), self.limits.job_timeout)
        except asyncio.TimeoutError:
            reason = f"processing took too long (more than {self.limits.job_timeout:.0f} seconds)"
        except (ImageRejected, VideoRejected) as exc:
            (reason, detail), retryable = failure_of(exc), False
        except self.store_failures as exc:
            reason, detail = CANNOT_READ_STORED, f"{type(exc).__name__}: {exc}"
        except BrokenProcessPool:
            self._executor = None
            reason, detail = IMAGE_DECODER_STOPPED, "the image worker process died"
        except Exception as exc:  # noqa: BLE001 - any failure is the job's, never the gateway's
            log.exception("processing failed", extra={"media_id": item.id})
            reason, detail = CANNOT_PROCESS, f"{type(exc).__name__}: {exc}"
        if reason is not None:
            return Attempt(None, plain_reason(reason), detail, retryable, time.monotonic() - started)
        return Attempt(changes or {}, None, "", False, time.monotonic() - started)

    async def settle(self, item: MediaItem, attempt: Attempt) -> MediaItem | None:
        """Save the final status `attempt` gives `item` (ready, or failed with its plain reason),
        unless the item left "processing" meanwhile; the saved item, or None when another change won."""
        kind = item.category
        if attempt.changes is not None:
            outcome, item = "ready", item.evolve(status=READY, reason=None, **attempt.changes)
        else:
            outcome, item = "failed", item.evolve(status=FAILED, reason=plain_reason(attempt.reason))
        for observer in self.observers:
            observer(kind, outcome, attempt.seconds)
        try:
            async with self.announce_status(item):
                saved = await self._save(item)
        except MediaConflict:
            return None  # deleted or changed meanwhile: the other change wins
        log.info("media processed", extra={"media_id": item.id, "outcome": outcome, "reason": saved.reason,
                                           "detail": attempt.detail[:1000], "seconds": round(attempt.seconds, 3)})
        for status_observer in self.status_observers:
            status_observer(saved)
        return saved

    async def _save(self, item: MediaItem) -> MediaItem:
        current = await self.media.get(item.id)
        if current is None or current.status != PROCESSING:
            raise MediaConflict(item.id)
        return await self.media.save(item.evolve(version=current.version))

    async def _process(self, item: MediaItem) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if item.sha256 is None and self.limits.file_sha256:
            changes["sha256"] = await self._sha256(item)
        if item.category == "images":
            changes.update(await self._image(item))
        elif item.category == "videos":
            changes.update(await self._video(item))
        return changes

    async def _sha256(self, item: MediaItem) -> str:
        """Fallback when the upload moved between instances: hash the stored object."""
        hasher = hashlib.sha256()
        loop = asyncio.get_running_loop()
        async for chunk in self.store.read_range(item.key, 0, item.size, 4 * 1024 * 1024):
            await loop.run_in_executor(None, hasher.update, chunk)
        return hasher.hexdigest()

    def _thumbnail_key(self, item: MediaItem) -> str:
        return f"{item.key.rsplit('.', 1)[0]}_thumb.jpg"

    async def _read(self, item: MediaItem, size: int) -> bytearray:
        """The first `size` bytes of the item's file, in one buffer (filled in place, not joined)."""
        data = bytearray()
        async for chunk in self.store.read_range(item.key, 0, size, 4 * 1024 * 1024):
            data += chunk
        return data

    @contextlib.asynccontextmanager
    async def _admit(self, cost: int, rejected: type[ImageRejected] | type[VideoRejected],
                     what: str, figures: str = "") -> AsyncIterator[None]:
        """Hold `cost` bytes of the processing budget (waiting its turn) for the body, or raise
        `rejected` at once when the job needs more than the whole budget."""
        mib = 1024 * 1024
        if not self.budget.fits(cost):
            raise rejected(f"the {what} is too large to process ({figures}it needs about {cost / mib:.0f} MiB of "
                           f"memory, limit {self.budget.total / mib:.0f} MiB)", f"cost {cost} bytes")
        waits = self.budget.waiting > 0 or self.budget.in_use + cost > self.budget.total
        started = time.monotonic()
        async with self.budget.reserve(cost):
            if waits:
                log.info("processing job waited for memory", extra={
                    "cost_mib": round(cost / mib, 1), "budget_mib": round(self.budget.total / mib, 1),
                    "seconds": round(time.monotonic() - started, 3)})
            yield

    async def _image(self, item: MediaItem) -> dict[str, Any]:
        mib = 1024 * 1024
        if item.size > self.limits.max_image_bytes:
            raise ImageRejected(f"the image file is too large to process ({item.size / mib:.0f} MiB, "
                                f"limit {self.limits.max_image_bytes / mib:.0f} MiB)", f"{item.size} bytes")
        loop = asyncio.get_running_loop()
        box = (self.limits.thumbnail_width, self.limits.thumbnail_height, self.limits.max_image_pixels)
        # the cost from the header alone, before any pixel is decoded (the header is parsed in the pool too)
        head: bytearray | None = await self._read(item, min(item.size, IMAGE_HEADER_BYTES))
        complete = len(head) == item.size
        shape = await loop.run_in_executor(self._pool(), estimate, head, complete, *box)
        if not complete:
            head = None  # read again whole once admitted
        if shape is None:  # the header lies further in: read the whole file, under a reservation of its own
            async with self._admit(image_job_cost(0, item.size), ImageRejected, "image"):
                shape = await loop.run_in_executor(self._pool(), estimate, await self._read(item, item.size), True, *box)
        cost = image_job_cost(shape.pixel_bytes, item.size)
        async with self._admit(cost, ImageRejected, "image", f"{megapixels(shape.width * shape.height)} megapixels, "):
            data = head if head is not None else await self._read(item, item.size)
            head = None
            result = await loop.run_in_executor(self._pool(), make_thumbnail, data, *box)
            del data
        key = self._thumbnail_key(item)
        await self.store.put_object(key, result.thumbnail, "image/jpeg")
        return {"width": result.width, "height": result.height, "thumbnail_key": key}

    async def _video(self, item: MediaItem) -> dict[str, Any]:
        url = await self.source_url(item)
        timeout = self.limits.job_timeout / 2
        async with self._admit(PROBE_COST, VideoRejected, "video"):
            info = await probe(url, timeout, self.limits.subprocess_memory, PROBE_COST)
        if info.duration is not None and info.duration > self.limits.max_video_duration:
            raise VideoRejected(f"the video is too long to process (more than {self.limits.max_video_duration:.0f} seconds)",
                                f"{info.duration} s")
        at = min(1.0, (info.duration or 0) / 10)
        cost = video_frame_cost(info.width, info.height, self.limits.video_memory)
        async with self._admit(cost, VideoRejected, "video", f"{info.width} by {info.height} pixels, "
                               if info.width and info.height else ""):
            frame = await thumbnail(url, at, self.limits.thumbnail_width, self.limits.thumbnail_height,
                                    timeout, self.limits.subprocess_memory, cost)
        key = self._thumbnail_key(item)
        await self.store.put_object(key, frame, "image/jpeg")
        return {"width": info.width, "height": info.height, "duration": info.duration, "codec": info.codec,
                "frame_rate": info.frame_rate, "thumbnail_key": key}
