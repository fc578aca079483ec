"""The queue worker: takes processing jobs from the queue and runs them, a bounded number at once.

Each job is claimed in MongoDB before it runs (one live holder; each claim counts an attempt),
and while it runs both the claim and the message's invisibility are extended every third of
the visibility timeout (the heartbeat), so only a dead worker's job comes back, after at most
one visibility timeout. A job whose item left "processing" (done by another delivery) is
deleted without work; the thumbnail key depends only on the item, and the final status is a
compare-and-swap from "processing", so a job run twice leaves one thumbnail and one status.
A job that fails for a cause that may pass is tried again after a short pause; once it is out
of attempts its item is failed with a plain reason and its message goes to the dead-letter queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from metadata.jobs import JobRepository
from metadata.media import PROCESSING, MediaItem, MediaRepository
from processing.jobs import Attempt, MediaProcessor
from processing.queue import MAX_BATCH, JobQueue, Message

log = logging.getLogger("mediaserver.processing")

#: what became of a message (the `outcome` label of the queue metrics)
OUTCOMES = ("ready", "failed", "retried", "dead_lettered", "duplicate", "busy", "invalid", "interrupted")


@dataclass(frozen=True)
class WorkerLimits:
    concurrency: int  # jobs run at once
    visibility_timeout: int  # seconds; the claim's time to live too
    max_attempts: int
    wait_seconds: int  # long poll of one receive
    test_delay: float = 0.0  # tests only: seconds each job waits, claimed, before it starts

    @property
    def heartbeat(self) -> float:
        return max(0.5, self.visibility_timeout / 3)


class QueueWorker:
    """Receives jobs while it has free slots and runs each under its claim; `run` until `stop`."""

    def __init__(self, queue: JobQueue, jobs: JobRepository, media: MediaRepository, processor: MediaProcessor,
                 limits: WorkerLimits) -> None:
        self.queue = queue
        self.jobs = jobs
        self.media = media
        self.processor = processor
        self.limits = limits
        self.instance = uuid.uuid4().hex[:12]
        self._running: set[asyncio.Task] = set()
        self._stopping = asyncio.Event()
        self.observers: list[Callable[[str], None]] = []  # one of OUTCOMES per message handled

    @property
    def running(self) -> int:
        """Jobs being handled now."""
        return len(self._running)

    async def run(self) -> None:
        """Receive and handle jobs until `stop`; queue errors are logged and retried with a growing pause."""
        pause = 1.0
        while not self._stopping.is_set():
            free = self.limits.concurrency - len(self._running)
            if free <= 0:
                await asyncio.wait(set(self._running), return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                messages = await self.queue.receive(min(MAX_BATCH, free), self.limits.wait_seconds,
                                                    self.limits.visibility_timeout)
                pause = 1.0
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the queue may come back
                log.warning("receiving processing jobs failed", exc_info=True)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), pause)
                pause = min(30.0, pause * 2)
                continue
            for message in messages:
                task = asyncio.ensure_future(self._handle(message))
                self._running.add(task)
                task.add_done_callback(self._running.discard)

    async def stop(self, timeout: float) -> None:
        """Receive no more; let running jobs finish for up to `timeout` seconds, then interrupt the
        rest (their claims are given back and their messages made visible again at once)."""
        self._stopping.set()
        if self._running:
            await asyncio.wait(set(self._running), timeout=timeout)
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*list(self._running), return_exceptions=True)

    async def _handle(self, message: Message) -> None:
        outcome = "interrupted"
        try:
            outcome = await self._job(message)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the message comes back after its visibility timeout
            log.warning("processing job not handled", extra={"media_id": message.media_id}, exc_info=True)
            outcome = "interrupted"
        finally:
            for observer in self.observers:
                observer(outcome)

    async def _job(self, message: Message) -> str:
        media_id = message.media_id
        if media_id is None:
            log.warning("not a processing job; deleted", extra={"message_id": message.id})
            await self.queue.delete(message)
            return "invalid"
        visibility = self.limits.visibility_timeout
        holder = f"{self.instance}:{uuid.uuid4().hex[:12]}"
        job = await self.jobs.claim(media_id, holder, visibility)
        if job is None:  # another live worker has it: look again when its claim would run out
            current = await self.jobs.get(media_id)
            wait = (current.lease_until - time.time() + 1) if current is not None else 1
            await self.queue.hide(message, int(max(1, min(visibility, wait))))
            return "busy"
        try:
            await self.queue.hide(message, visibility)  # no earlier than the claim runs out
            item = await self.media.get(media_id)
            if item is None or item.status != PROCESSING:
                await self.jobs.forget(media_id)
                await self.queue.delete(message)
                return "duplicate"
            if job.attempts > self.limits.max_attempts:  # earlier attempts' workers died mid-job
                return await self._give_up(item, message, Attempt(
                    None, f"processing did not finish after {self.limits.max_attempts} attempts",
                    "the workers of earlier attempts stopped before the end"))
            heartbeat = asyncio.ensure_future(self._heartbeat(message, media_id, holder))
            try:
                if self.limits.test_delay:
                    await asyncio.sleep(self.limits.test_delay)
                attempt = await self.processor.attempt(item)
            finally:
                heartbeat.cancel()
                await asyncio.gather(heartbeat, return_exceptions=True)
            if attempt.retryable and job.attempts < self.limits.max_attempts:
                log.info("processing job will be retried", extra={
                    "media_id": media_id, "attempt": job.attempts, "reason": attempt.reason, "detail": attempt.detail[:1000]})
                await self.jobs.release(media_id, holder)
                await self.queue.hide(message, min(visibility, 2 ** job.attempts))
                return "retried"
            if attempt.retryable:
                return await self._give_up(item, message, attempt)
            saved = await self.processor.settle(item, attempt)
            await self.jobs.forget(media_id)
            await self.queue.delete(message)
            if saved is None:
                return "duplicate"
            return "ready" if attempt.changes is not None else "failed"
        except asyncio.CancelledError:
            # stopping: another worker may take the job at once
            with contextlib.suppress(Exception):
                await asyncio.shield(self._hand_back(message, media_id, holder))
            raise

    async def _give_up(self, item: MediaItem, message: Message, attempt: Attempt) -> str:
        """Out of attempts: fail the item with its plain reason and dead-letter the message."""
        await self.processor.settle(item, attempt)
        await self.jobs.forget(item.id)
        how = await self.queue.dead_letter(message)
        log.warning("processing job out of attempts", extra={
            "media_id": item.id, "attempts": self.limits.max_attempts, "dead_letter": how, "reason": attempt.reason})
        return "dead_lettered"

    async def _hand_back(self, message: Message, media_id: str, holder: str) -> None:
        await self.jobs.release(media_id, holder)
        await self.queue.hide(message, 0)

    async def _heartbeat(self, message: Message, media_id: str, holder: str) -> None:
        """Every third of the visibility timeout: extend the claim, then the message's invisibility."""
        while True:
            await asyncio.sleep(self.limits.heartbeat)
            try:
                if not await self.jobs.renew(media_id, holder, self.limits.visibility_timeout):
                    log.warning("processing claim lost", extra={"media_id": media_id})
                await self.queue.hide(message, self.limits.visibility_timeout)
            except Exception:  # noqa: BLE001 - the next beat tries again
                log.warning("processing heartbeat failed", extra={"media_id": media_id}, exc_info=True)
