"""Processing jobs: what a media item is made into after its upload finished.

The queue is MongoDB itself: every item with status "processing" is pending
work. An instance takes an item's lease before working on it, so no item is
processed twice at once; a sweep picks up items whose worker died, so no job
is lost across restarts. Images are thumbnailed in a worker process pool
(isolated: a decoder crash or a bomb fails the job, not the gateway); videos
are probed and thumbnailed by ffprobe/ffmpeg subprocesses through a URL.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import resource
import time
import uuid
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

from metadata.leases import LeaseRepository
from metadata.media import FAILED, PROCESSING, READY, MediaConflict, MediaItem, MediaRepository
from processing.images import ImageRejected, make_thumbnail
from processing.video import VideoRejected, probe, thumbnail

log = logging.getLogger("mediaserver.processing")

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
        self._slots = asyncio.Semaphore(limits.concurrency)
        self._running: dict[str, asyncio.Future] = {}
        self._executor: Executor | None = None
        self.observers: list[Callable[[str, str, float], None]] = []  # (kind, outcome, seconds)
        self.status_observers: list[Callable[[MediaItem], None]] = []

    def _pool(self) -> Executor:
        if self._executor is None:
            if self.limits.executor_kind == "thread":
                self._executor = ThreadPoolExecutor(self.limits.concurrency, thread_name_prefix="thumbnail")
            else:
                self._executor = ProcessPoolExecutor(
                    self.limits.concurrency, initializer=_worker_init,
                    initargs=(self.limits.subprocess_memory,), max_tasks_per_child=100)
        return self._executor

    def submit(self, media_id: str) -> None:
        """Process `media_id` soon (no-op when this instance already is)."""
        if media_id in self._running:
            return
        task = asyncio.ensure_future(self._run(media_id))
        self._running[media_id] = task
        task.add_done_callback(lambda _: self._running.pop(media_id, None))

    async def sweep(self) -> int:
        """Submit every pending item no live worker holds; return how many were submitted."""
        submitted = 0
        for item in await self.media.with_status(PROCESSING):
            if item.id not in self._running and await self.leases.holder(f"media:{item.id}") is None:
                self.submit(item.id)
                submitted += 1
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

    async def _run(self, media_id: str) -> None:
        holder = f"{self.instance}:{uuid.uuid4().hex}"
        lease_name = f"media:{media_id}"
        ttl = self.limits.job_timeout + 60
        async with self._slots:
            if not await self.leases.try_acquire(lease_name, holder, ttl):
                return
            try:
                item = await self.media.get(media_id)
                if item is None or item.status != PROCESSING:
                    return
                started = time.monotonic()
                kind = item.category
                reason: str | None = None
                detail = ""
                try:
                    changes = await asyncio.wait_for(self._process(item), self.limits.job_timeout)
                except asyncio.TimeoutError:
                    reason = f"processing took too long (more than {self.limits.job_timeout:.0f} seconds)"
                except (ImageRejected, VideoRejected) as exc:
                    reason, detail = failure_of(exc)
                except self.store_failures as exc:
                    reason, detail = CANNOT_READ_STORED, f"{type(exc).__name__}: {exc}"
                except BrokenProcessPool:
                    self._executor = None
                    reason, detail = IMAGE_DECODER_STOPPED, "the image worker process died"
                except Exception as exc:  # noqa: BLE001 - any failure is the job's, never the gateway's
                    log.exception("processing failed", extra={"media_id": media_id})
                    reason, detail = CANNOT_PROCESS, f"{type(exc).__name__}: {exc}"
                if reason is None:
                    outcome, item = "ready", item.evolve(status=READY, reason=None, **changes)
                else:
                    outcome, item = "failed", item.evolve(status=FAILED, reason=plain_reason(reason))
                seconds = time.monotonic() - started
                for observer in self.observers:
                    observer(kind, outcome, seconds)
                try:
                    saved = await self._save(item)
                except MediaConflict:
                    return  # deleted or changed meanwhile: the other change wins
                log.info("media processed", extra={"media_id": media_id, "outcome": outcome, "reason": saved.reason,
                                                   "detail": detail[:1000], "seconds": round(seconds, 3)})
                for status_observer in self.status_observers:
                    status_observer(saved)
            finally:
                await self.leases.release(lease_name, holder)

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

    async def _image(self, item: MediaItem) -> dict[str, Any]:
        if item.size > self.limits.max_image_bytes:
            raise ImageRejected(f"the image is too large to process (more than {self.limits.max_image_bytes} bytes)")
        data = b"".join([chunk async for chunk in self.store.read_range(item.key, 0, item.size, 4 * 1024 * 1024)])
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            self._pool(), make_thumbnail, data, self.limits.thumbnail_width, self.limits.thumbnail_height,
            self.limits.max_image_pixels)
        key = self._thumbnail_key(item)
        await self.store.put_object(key, result.thumbnail, "image/jpeg")
        return {"width": result.width, "height": result.height, "thumbnail_key": key}

    async def _video(self, item: MediaItem) -> dict[str, Any]:
        url = await self.source_url(item)
        timeout = self.limits.job_timeout / 2
        info = await probe(url, timeout, self.limits.subprocess_memory)
        if info.duration is not None and info.duration > self.limits.max_video_duration:
            raise VideoRejected(f"the video is too long to process (more than {self.limits.max_video_duration:.0f} seconds)",
                                f"{info.duration} s")
        at = min(1.0, (info.duration or 0) / 10)
        frame = await thumbnail(url, at, self.limits.thumbnail_width, self.limits.thumbnail_height,
                                timeout, self.limits.subprocess_memory)
        key = self._thumbnail_key(item)
        await self.store.put_object(key, frame, "image/jpeg")
        return {"width": info.width, "height": info.height, "duration": info.duration, "codec": info.codec,
                "frame_rate": info.frame_rate, "thumbnail_key": key}
