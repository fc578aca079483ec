"""Live notifications of upload progress and processing status, as Server-Sent Events.

`GET /api/events` streams the caller's events: `upload.progress`, `upload.completed`
and `media.status`. EventSource cannot send headers, so the token may also come as
the `access_token` query parameter. Events are those of uploads handled by this
instance; each subscriber's queue is bounded (a slow reader misses events, it never
grows memory).

A stream lives no longer than its token: it ends when the token expires, and when the
token is found revoked (signed out, password changed, account deleted) at a keep-alive
tick (every EVENTS_KEEPALIVE_SECONDS). Its last event is then `auth.ended`
(`{code: "token_expired" | "token_revoked", message}`); a reconnect with the same token
gets 401.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from typing import Any

import tornado.iostream

from auth.revocation import TokenRevoked
from auth.tokens import InvalidToken, Token
from gateway.base import BaseHandler
from metadata.uploads import UploadRecord
from processing.jobs import MediaProcessor
from streaming.events import UploadEvents

log = logging.getLogger("mediaserver.events")

QUEUE_SIZE = 256


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
    counted_in_flight = False  # a stream never ends by itself: shutdown closes it

    def bearer_token(self) -> str | None:
        """The `Authorization` header's token, else the `access_token` query parameter."""
        return super().bearer_token() or self.get_query_argument("access_token", None) or None

    async def get(self) -> None:
        principal, token = self.current_user, self.presented_token
        if principal is None or token is None:
            raise self.unauthorized()
        bus: EventBus = self.services.events
        queue = bus.subscribe(principal.user_id)
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")
        keepalive = self.services.settings.events_keepalive_seconds
        loop = asyncio.get_running_loop()
        try:
            self.write(": connected\nretry: 3000\n\n")
            await self.flush()
            next_check = loop.time() + keepalive
            while not self._closed:
                left = token.expires_at - time.time()
                if left <= 0:
                    self._end("token_expired", "the token has expired")
                    break
                try:
                    event, data = await asyncio.wait_for(queue.get(), min(max(next_check - loop.time(), 0), left))
                    self.write(f"event: {event}\ndata: {json.dumps(data)}\n\n")
                except asyncio.TimeoutError:
                    if loop.time() >= next_check:
                        self.write(": keep-alive\n\n")
                if loop.time() >= next_check:  # a tick, also while events keep coming
                    next_check = loop.time() + keepalive
                    ended = await self._token_ended(token)
                    if ended is not None:
                        self._end(*ended)
                        break
                await self.flush()
        except tornado.iostream.StreamClosedError:
            pass
        finally:
            bus.unsubscribe(principal.user_id, queue)

    async def _token_ended(self, token: Token) -> tuple[str, str] | None:
        """Why the stream's token no longer stands (code, message), or None while it does.

        A check that fails (MongoDB unreachable) keeps the stream until the next tick; the
        token's expiry still ends it."""
        try:
            await self.token_checker.check(token)
        except TokenRevoked as exc:
            return "token_revoked", str(exc)
        except InvalidToken as exc:
            return "token_expired", str(exc)
        except Exception:  # noqa: BLE001 - checked again at the next tick
            log.warning("could not check an event stream's token", exc_info=True)
        return None

    def _end(self, code: str, message: str) -> None:
        """The stream's last event: why it ends."""
        self.write(f"event: auth.ended\ndata: {json.dumps({'code': code, 'message': message})}\n\n")

    def on_connection_close(self) -> None:
        super().on_connection_close()
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
