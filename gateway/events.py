"""Live notifications of upload progress and processing status, as Server-Sent Events.

`GET /api/events` streams the caller's events: `upload.progress`, `upload.completed`
and `media.status`. EventSource cannot send headers, so the token may also come as
the `access_token` query parameter. Events are those of uploads handled by this
instance; each subscriber's queue is bounded (a slow reader misses events, it never
grows memory).
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from typing import Any

import tornado.iostream

from auth.tokens import InvalidToken
from gateway.base import BaseHandler
from gateway.errors import ApiError
from metadata.uploads import UploadRecord
from processing.jobs import MediaProcessor
from streaming.events import UploadEvents

QUEUE_SIZE = 256
KEEPALIVE_SECONDS = 15.0


class EventBus:
    """Per-user fan-out of small JSON events."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue]] = defaultdict(set)

    def publish(self, user_id: str | None, event: str, data: dict[str, Any]) -> None:
        if user_id is None:
            return
        for queue in list(self._subscribers.get(user_id, ())):
            if queue.full():
                continue
            queue.put_nowait((event, data))

    def subscribe(self, user_id: str) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(QUEUE_SIZE)
        self._subscribers[user_id].add(queue)
        return queue

    def unsubscribe(self, user_id: str, queue: asyncio.Queue) -> None:
        subscribers = self._subscribers.get(user_id)
        if subscribers is not None:
            subscribers.discard(queue)
            if not subscribers:
                del self._subscribers[user_id]


class EventsHandler(BaseHandler):
    """GET /api/events: text/event-stream of the caller's events."""

    _closed = False

    def get_current_user(self):
        principal = super().get_current_user()
        token = self.get_query_argument("access_token", None)
        if principal is None and token:
            try:
                principal = self.token_issuer.verify(token)
            except InvalidToken:
                return None
            self.on_principal(principal)
        return principal

    async def get(self) -> None:
        principal = self.current_user
        if principal is None:
            raise ApiError(401, "unauthorized", "a valid bearer token is required")
        bus: EventBus = self.services.events
        queue = bus.subscribe(principal.user_id)
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")
        try:
            self.write(": connected\nretry: 3000\n\n")
            await self.flush()
            while not self._closed:
                try:
                    event, data = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                    self.write(f"event: {event}\ndata: {json.dumps(data)}\n\n")
                except asyncio.TimeoutError:
                    self.write(": keep-alive\n\n")
                await self.flush()
        except tornado.iostream.StreamClosedError:
            pass
        finally:
            bus.unsubscribe(principal.user_id, queue)

    def on_connection_close(self) -> None:
        self._closed = True


class LiveUploadEvents(UploadEvents):
    """Publishes upload progress and completion to each upload's owner on `bus`."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus

    def committed(self, record: UploadRecord, count: int) -> None:
        self._bus.publish(record.owner, "upload.progress", {"id": record.id, "offset": record.offset, "length": record.length})

    async def finished(self, record: UploadRecord) -> None:
        self._bus.publish(record.owner, "upload.completed", {"id": record.id, "length": record.length})


def watch_processing(bus: EventBus, processor: MediaProcessor) -> None:
    """Publish the processor's status changes to each item's owner on `bus`."""

    def status(item) -> None:
        bus.publish(item.owner, "media.status", {"id": item.id, "status": item.status, "reason": item.reason})

    processor.status_observers.append(status)
