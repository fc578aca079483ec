"""Processing jobs through an SQS queue: the queue itself, and the gateway's side of it.

A message only says "media item X waits for processing"; MongoDB stays the source of
truth for each job (the item's status, and in `metadata.jobs` its claim and attempts), so
a message delivered twice, or a message lost, changes nothing but timing: the gateway's
sweep sends again for items still waiting whose last message is old.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from metadata.jobs import JobRepository
from metadata.media import PROCESSING, MediaRepository
from processing.jobs import Attempt, MediaProcessor

log = logging.getLogger("mediaserver.processing")

#: SQS's largest batch of one receive
MAX_BATCH = 10


@dataclass(frozen=True)
class Message:
    """One received message: the job's media id (None when the body is not a job) and its handle."""

    id: str
    receipt: str
    media_id: str | None
    receive_count: int


def job_body(media_id: str) -> str:
    return json.dumps({"media_id": media_id})


def media_id_of(body: str) -> str | None:
    """The media id a message body names, or None for a body that is not a job."""
    try:
        value = json.loads(body).get("media_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and 0 < len(value) <= 128 else None


class JobQueue:
    """The SQS queue of processing jobs (and its dead-letter queue); boto3 calls run in a
    small thread pool of their own, so at most `threads` calls are in flight."""

    def __init__(self, url: str, region: str, dead_letter_url: str = "", threads: int = 4,
                 endpoint_url: str | None = None) -> None:
        """`endpoint_url`: a custom SQS endpoint; None for AWS's."""
        import boto3
        from botocore.config import Config

        self.url = url
        self.dead_letter_url = dead_letter_url
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sqs")
        self._client = boto3.session.Session().client(
            "sqs", region_name=region, endpoint_url=endpoint_url or None,
            config=Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=threads,
                          connect_timeout=5, read_timeout=40))
        self._redrive: bool | None = None

    async def _call(self, name: str, **kwargs: Any) -> Any:
        method = getattr(self._client, name)
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: method(**kwargs))

    async def send(self, media_id: str) -> None:
        await self._call("send_message", QueueUrl=self.url, MessageBody=job_body(media_id))

    async def receive(self, max_messages: int, wait_seconds: int, visibility_timeout: int) -> list[Message]:
        """Up to `max_messages` (at most 10) jobs, long-polling up to `wait_seconds`, each hidden
        from other receivers for `visibility_timeout` seconds."""
        answer = await self._call(
            "receive_message", QueueUrl=self.url, MaxNumberOfMessages=max(1, min(MAX_BATCH, max_messages)),
            WaitTimeSeconds=wait_seconds, VisibilityTimeout=visibility_timeout,
            MessageSystemAttributeNames=["ApproximateReceiveCount"])
        return [Message(raw["MessageId"], raw["ReceiptHandle"], media_id_of(raw.get("Body", "")),
                        int(raw.get("Attributes", {}).get("ApproximateReceiveCount", "1")))
                for raw in answer.get("Messages", [])]

    async def hide(self, message: Message, seconds: int) -> None:
        """Keep `message` from every receiver for `seconds` from now (0: visible at once)."""
        await self._call("change_message_visibility", QueueUrl=self.url, ReceiptHandle=message.receipt,
                         VisibilityTimeout=max(0, min(43200, int(seconds))))

    async def delete(self, message: Message) -> None:
        await self._call("delete_message", QueueUrl=self.url, ReceiptHandle=message.receipt)

    async def redrive_configured(self) -> bool:
        """Whether SQS itself moves messages received too often to a dead-letter queue."""
        if self._redrive is None:
            answer = await self._call("get_queue_attributes", QueueUrl=self.url, AttributeNames=["RedrivePolicy"])
            self._redrive = bool(answer.get("Attributes", {}).get("RedrivePolicy"))
        return self._redrive

    async def dead_letter(self, message: Message) -> str:
        """Move a job out of attempts to the dead-letter queue: with a redrive policy, left for SQS
        to move at its next receive ("redrive"); else sent to the dead-letter URL and deleted
        ("sent"), or only deleted when there is none ("dropped")."""
        if await self.redrive_configured():
            await self.hide(message, 0)
            return "redrive"
        if self.dead_letter_url and message.media_id is not None:
            await self._call("send_message", QueueUrl=self.dead_letter_url, MessageBody=job_body(message.media_id))
            await self.delete(message)
            return "sent"
        await self.delete(message)
        return "dropped"

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class QueueDispatcher:
    """The gateway's side: one message per item that waits for processing, sent once per
    `resend_after` seconds at most (across instances), and items out of attempts failed."""

    def __init__(self, queue: JobQueue, jobs: JobRepository, media: MediaRepository, processor: MediaProcessor,
                 *, resend_after: float, max_attempts: int, visibility_timeout: float, max_sending: int = 256) -> None:
        self.queue = queue
        self.jobs = jobs
        self.media = media
        self.processor = processor
        self.resend_after = resend_after
        self.max_attempts = max_attempts
        self.visibility_timeout = visibility_timeout
        self.max_sending = max_sending
        self._sending: dict[str, asyncio.Task] = {}
        self.observers: list[Callable[[str], None]] = []  # "sent" or "send_failed"

    def submit(self, media_id: str, owner: str | None = None) -> None:
        """Send `media_id`'s job soon; when `max_sending` sends are in flight, the sweep sends it later.
        (`owner` is for the in-process processor's turns; the queue's workers take jobs as they come.)"""
        if media_id in self._sending or len(self._sending) >= self.max_sending:
            return
        task = asyncio.ensure_future(self.send(media_id))
        self._sending[media_id] = task
        task.add_done_callback(lambda _: self._sending.pop(media_id, None))

    async def send(self, media_id: str) -> bool:
        """Send the job's message unless one was sent less than `resend_after` seconds ago or a
        worker holds the job; True when sent. Never raises: a failed send is left to the sweep."""
        try:
            if not await self.jobs.mark_enqueued(media_id, unless_since=time.time() - self.resend_after):
                return False
            await self.queue.send(media_id)
        except Exception:  # noqa: BLE001 - the sweep sends it again
            log.warning("processing job not sent", extra={"media_id": media_id}, exc_info=True)
            self._observe("send_failed")
            return False
        self._observe("sent")
        return True

    async def sweep(self) -> int:
        """Send again the jobs of items still waiting whose message is old or was never sent, and
        fail the items whose attempts ran out with no worker on them; return how many were sent."""
        sent = 0
        now = time.time()
        for item in await self.media.with_status(PROCESSING):
            job = await self.jobs.get(item.id)
            if job is not None and job.attempts >= self.max_attempts and not job.held(now) \
                    and job.lease_until < now - self.visibility_timeout:
                # the last attempt's worker died and its message went to the dead-letter queue
                failed = Attempt(None, f"processing did not finish after {self.max_attempts} attempts",
                                 "attempts exhausted, no worker holds the job")
                if await self.processor.settle(item, failed) is not None:
                    await self.jobs.forget(item.id)
                continue
            if await self.send(item.id):
                sent += 1
        return sent

    async def close(self) -> None:
        for task in list(self._sending.values()):
            task.cancel()
        await asyncio.gather(*list(self._sending.values()), return_exceptions=True)
        self.queue.close()

    def _observe(self, outcome: str) -> None:
        for observer in self.observers:
            observer(outcome)
