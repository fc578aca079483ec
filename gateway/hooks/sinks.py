"""Where outbox rows go: the signed HTTP POST to HOOK_URL, and an SQS queue.

A sink's `send` returns when the event was accepted and raises `DeliveryFailed`
(with a short reason for the log and the row) otherwise.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from gateway.hooks.events import SIGNATURE_HEADER, sign

USER_AGENT = "mediaserver-webhooks/1"
MAX_ANSWER = 64 * 1024  # bytes of a pre-create answer read at most
MAX_IGNORED_ANSWER = 1024 * 1024  # bytes of a notification's answer read (and dropped as they come) at most


class DeliveryFailed(Exception):
    """The sink did not accept the event; `str(exc)` says why, briefly."""


class Sink(Protocol):
    name: str

    async def send(self, event_id: str, kind: str, body: str, group: str) -> None:
        """Deliver one event (`group`: the upload it is about) or raise DeliveryFailed."""

    def close(self) -> None:
        """Release connections and threads."""


def http_client(max_clients: int, max_answer: int = MAX_ANSWER) -> AsyncHTTPClient:
    """A private HTTP client: at most `max_clients` requests at once, answers of at most `max_answer` bytes."""
    return AsyncHTTPClient(force_instance=True, max_clients=max_clients, max_body_size=max_answer,
                           max_buffer_size=2 * MAX_ANSWER)


def signed_request(url: str, secret: str, event_id: str, kind: str, body: bytes, timeout: float,
                   keep_answer: bool = True) -> HTTPRequest:
    """The signed POST of one event; without `keep_answer` the answer's body is dropped as it arrives."""
    return HTTPRequest(
        url, method="POST", body=body, connect_timeout=timeout, request_timeout=timeout, follow_redirects=False,
        streaming_callback=None if keep_answer else _drop,
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, SIGNATURE_HEADER: sign(secret, body),
                 "Mediaserver-Event-Id": event_id, "Mediaserver-Event-Type": kind})


class HttpSink:
    """POSTs each event to `url`, signed with `secret`; any 2xx answer accepts it."""

    name = "http"

    def __init__(self, url: str, secret: str, timeout: float, max_clients: int) -> None:
        self._url = url
        self._secret = secret
        self._timeout = timeout
        self._client = http_client(max_clients, MAX_IGNORED_ANSWER)

    async def send(self, event_id: str, kind: str, body: str, group: str) -> None:
        request = signed_request(self._url, self._secret, event_id, kind, body.encode(), self._timeout,
                                 keep_answer=False)
        try:
            response = await self._client.fetch(request, raise_error=False)
        except Exception as exc:  # noqa: BLE001 - any failure to reach the receiver is a failed attempt
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}"[:200]) from None
        if not 200 <= response.code < 300:
            raise DeliveryFailed(f"HTTP {response.code}")

    def close(self) -> None:
        self._client.close()


class SqsSink:
    """Sends each event as an SQS message (a FIFO queue gets the upload as group and the event id
    as deduplication id); boto3 runs in its own small thread pool."""

    name = "sqs"

    def __init__(self, queue_url: str, region: str, endpoint_url: str | None, timeout: float, threads: int) -> None:
        import boto3
        from botocore.config import Config

        self._queue_url = queue_url
        self._fifo = queue_url.endswith(".fifo")
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hook-sqs")
        self._client: Any = boto3.session.Session().client(
            "sqs", region_name=region, endpoint_url=endpoint_url or None,
            # one attempt per send: the outbox retries, and a send must end within the row's lease
            config=Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1, "mode": "standard"},
                          max_pool_connections=threads))

    def _send(self, event_id: str, kind: str, body: str, group: str) -> None:
        message: dict[str, Any] = {
            "QueueUrl": self._queue_url, "MessageBody": body,
            "MessageAttributes": {"event_type": {"DataType": "String", "StringValue": kind},
                                  "event_id": {"DataType": "String", "StringValue": event_id}},
        }
        if self._fifo:
            message.update(MessageGroupId=group or "mediaserver", MessageDeduplicationId=event_id)
        self._client.send_message(**message)

    async def send(self, event_id: str, kind: str, body: str, group: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._send, event_id, kind, body, group)
        except Exception as exc:  # noqa: BLE001 - any failure of the queue is a failed attempt
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}"[:200]) from None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _drop(chunk: bytes) -> None:
    """Where the answer of a notification goes: nowhere."""
