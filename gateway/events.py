"""Live notifications of upload progress and processing status, as Server-Sent Events.

`GET /api/events` streams the caller's events: `upload.progress` (`{id, offset, length,
filename, version}`), `upload.completed` (`{id, length, filename, version}`),
`media.status` (`{id, status, reason, type, filename, size, version}`) and `media.deleted`
(`{id, version}`), for every upload and media item of the caller, whichever instance
handles it. EventSource cannot send headers, so the token may also come as the
`access_token` query parameter.

Where the events come from: MongoDB. Every upload and media document carries
`updated_at` (indexed with its owner); each open stream reads the caller's documents
changed since its cursor every EVENTS_POLL_SECONDS (one query per collection), looking
EVENTS_CLOCK_SKEW seconds further back so an instance whose clock is a little behind is
not missed. Changes made through this instance are also pushed at once, through a
bounded per-subscriber queue. Each stream sends a document's version once (a change
seen both ways, or twice in the look-back, is sent once). Each event's `id:` is its
document's `updated_at`: a reconnect with `Last-Event-ID` (or the `lastEventId` query
parameter) continues from there (events
are whole states, so one sent twice in the look-back is harmless). Open streams are
capped per process (EVENTS_MAX_STREAMS, then 503) and per user (EVENTS_MAX_STREAMS_PER_USER,
then 429).

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
import math
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Any

import tornado.iostream

from auth.revocation import TokenRevoked
from auth.tokens import InvalidToken, Token
from gateway.base import BaseHandler
from gateway.errors import ApiError
from metadata.media import DELETED, MediaItem, MediaRepository
from metadata.uploads import ACTIVE, COMPLETE, UploadRecord, UploadRepository
from processing.jobs import MediaProcessor
from streaming.events import UploadEvents

log = logging.getLogger("mediaserver.events")

QUEUE_SIZE = 256
#: most documents of one collection read by one poll of one stream
BATCH = 200
#: documents a stream remembers what it sent of (about 150 bytes each; one forgotten is at worst sent again)
REMEMBERED = 512


@dataclass(frozen=True)
class Change:
    """One event about one document at one version."""

    kind: str  # what a stream sends once per version of a document: the event's name
    id: str
    version: int
    updated_at: float
    event: str
    data: dict[str, Any]


def upload_changes(record: UploadRecord) -> list[Change]:
    """The events announcing `record`'s state: its progress, and its completion once complete.

    Partial uploads (joined by a final one) and tombstones of expired uploads announce nothing."""
    if record.concat == "partial" or record.status not in (ACTIVE, COMPLETE):
        return []
    common = {"id": record.id, "length": record.length, "filename": record.filename, "version": record.version}
    changes = [Change("upload.progress", record.id, record.version, record.updated_at, "upload.progress",
                      dict(common, offset=record.offset))]
    if record.status == COMPLETE:
        changes.append(Change("upload.completed", record.id, record.version, record.updated_at, "upload.completed",
                              common))
    return changes


def media_change(item: MediaItem) -> Change:
    """The event announcing `item`'s state."""
    if item.status == DELETED:
        return Change("media.deleted", item.id, item.version, item.updated_at, "media.deleted",
                      {"id": item.id, "version": item.version})
    return Change("media.status", item.id, item.version, item.updated_at, "media.status", {
        "id": item.id, "status": item.status, "reason": item.reason, "type": item.category,
        "filename": item.filename, "size": item.size, "version": item.version})


class ChangeFeed:
    """The changes of a user's uploads and media in MongoDB since a cursor."""

    def __init__(self, uploads: UploadRepository, media: MediaRepository, batch: int = BATCH) -> None:
        self._uploads = uploads
        self._media = media
        self._batch = batch

    async def since(self, owner: str, since: float) -> tuple[list[Change], float | None]:
        """Changes written at or after `since`, oldest first, and the horizon they are complete up to.

        The horizon is None when every change since `since` was read; otherwise (a collection
        gave a full batch) it is the time up to which the changes returned are complete, and
        the caller reads again from there.
        """
        records = await self._uploads.changed_since(owner, since, self._batch)
        items = await self._media.changed_since(owner, since, self._batch)
        horizon: float | None = None
        for batch in (records, items):
            if len(batch) >= self._batch:
                last = batch[-1].updated_at
                horizon = last if horizon is None else min(horizon, last)
        changes = [c for r in records for c in upload_changes(r)] + [media_change(i) for i in items]
        if horizon is not None:
            changes = [c for c in changes if c.updated_at <= horizon]
        changes.sort(key=lambda c: (c.updated_at, c.kind, c.id))
        return changes, horizon


class StreamLimitReached(Exception):
    """No room for one more event stream (per process when `everyone`, else per user)."""

    def __init__(self, everyone: bool) -> None:
        super().__init__("process" if everyone else "user")
        self.everyone = everyone


class EventBus:
    """Per-user fan-out of this instance's changes, the feed of everyone's, and the stream caps."""

    def __init__(self, feed: ChangeFeed | None = None, max_streams: int = 200, max_per_user: int = 4) -> None:
        self.feed = feed
        self._subscribers: dict[str, set[asyncio.Queue]] = defaultdict(set)
        self._max_streams = max_streams
        self._max_per_user = max_per_user
        self._open = 0

    @property
    def open_streams(self) -> int:
        return self._open

    def publish(self, user_id: str | None, change: Change) -> None:
        """Hand `change` to `user_id`'s subscribers; a full queue misses it (the feed brings it later)."""
        if user_id is None:
            return
        for queue in list(self._subscribers.get(user_id, ())):
            if not queue.full():
                queue.put_nowait(change)

    def subscribe(self, user_id: str) -> asyncio.Queue:
        """A queue of `user_id`'s changes; StreamLimitReached when the process or the user has no room."""
        if self._open >= self._max_streams:
            raise StreamLimitReached(everyone=True)
        if len(self._subscribers.get(user_id, ())) >= self._max_per_user:
            raise StreamLimitReached(everyone=False)
        queue: asyncio.Queue = asyncio.Queue(QUEUE_SIZE)
        self._subscribers[user_id].add(queue)
        self._open += 1
        return queue

    def unsubscribe(self, user_id: str, queue: asyncio.Queue) -> None:
        subscribers = self._subscribers.get(user_id)
        if subscribers is not None and queue in subscribers:
            subscribers.discard(queue)
            self._open -= 1
            if not subscribers:
                del self._subscribers[user_id]


class SentVersions:
    """What a stream sent last per document and event (a bounded, least recently used map)."""

    def __init__(self, size: int = REMEMBERED) -> None:
        self._sent: OrderedDict[tuple[str, str], tuple[int, int]] = OrderedDict()
        self._size = size

    def is_new(self, change: Change) -> bool:
        """Whether `change` tells something new: a later version whose data differs (beyond its
        version) from what was sent of its document; if so it counts as sent from now."""
        key = (change.kind, change.id)
        fingerprint = hash(json.dumps({k: v for k, v in change.data.items() if k != "version"}, sort_keys=True))
        sent = self._sent.get(key)
        if sent is not None and (sent[0] >= change.version or sent[1] == fingerprint):
            self._sent[key] = (max(sent[0], change.version), sent[1])
            self._sent.move_to_end(key)
            return False
        self._sent[key] = (change.version, fingerprint)
        self._sent.move_to_end(key)
        if len(self._sent) > self._size:
            self._sent.popitem(last=False)
        return True


def resume_point(last_event_id: str | None, now: float) -> float:
    """The cursor a stream starts from: the `Last-Event-ID` it was given, else now."""
    if last_event_id:
        try:
            value = float(last_event_id)
        except ValueError:
            return now
        if math.isfinite(value) and 0 <= value <= now:
            return value
    return now


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
        settings = self.services.settings
        try:
            queue = bus.subscribe(principal.user_id)
        except StreamLimitReached as exc:
            if exc.everyone:
                raise ApiError(503, "too_many_streams", "this instance serves as many event streams as it can; retry later",
                               {"Retry-After": "10"}) from None
            raise ApiError(429, "too_many_streams", "too many open event streams for this user; close one first",
                           {"Retry-After": "10"}) from None
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")
        keepalive = settings.events_keepalive_seconds
        interval = settings.events_poll_seconds
        skew = settings.events_clock_skew
        loop = asyncio.get_running_loop()
        sent = SentVersions()
        # EventSource sends Last-Event-ID on its own reconnects; a page opening a new one passes `lastEventId`
        cursor = resume_point(self.request.headers.get("Last-Event-ID") or self.get_query_argument("lastEventId", None),
                              time.time())
        catching_up = False
        try:
            self.write(": connected\nretry: 3000\n\n")
            await self.flush()
            next_check = loop.time() + keepalive
            next_poll = loop.time()  # at once: what changed since Last-Event-ID (or in the last moments)
            while not self._closed:
                left = token.expires_at - time.time()
                if left <= 0:
                    self._end("token_expired", "the token has expired")
                    break
                if bus.feed is not None and loop.time() >= next_poll:
                    since = cursor if catching_up else cursor - skew
                    try:
                        changes, horizon = await bus.feed.since(principal.user_id, since)
                    except Exception:  # noqa: BLE001 - read again at the next interval
                        log.warning("could not read the changes of an event stream", exc_info=True)
                        changes, horizon = [], None
                    for change in changes:
                        self._send(change, sent)
                        cursor = max(cursor, change.updated_at)
                    catching_up = horizon is not None
                    if horizon is not None:
                        # a full batch of one instant would be read again and again: step past it
                        cursor = max(cursor, horizon if horizon > since else horizon + 1e-6)
                    next_poll = loop.time() + (0 if catching_up else interval)
                    await self.flush()
                    continue
                wait = min(max(next_check - loop.time(), 0), left)
                if bus.feed is not None:
                    wait = min(wait, max(next_poll - loop.time(), 0))
                try:
                    change = await asyncio.wait_for(queue.get(), wait)
                    self._send(change, sent)
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

    def _send(self, change: Change, sent: SentVersions) -> None:
        """Write `change` unless this stream already sent its document at this version or later."""
        if sent.is_new(change):
            self.write(f"id: {change.updated_at:.6f}\nevent: {change.event}\ndata: {json.dumps(change.data)}\n\n")

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
    """Publishes upload progress and completion to each upload's owner on `bus` (this instance's, at once)."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus

    def _publish(self, record: UploadRecord, event: str) -> None:
        for change in upload_changes(record):
            if change.event == event:
                self._bus.publish(record.owner, change)

    def committed(self, record: UploadRecord, count: int) -> None:
        self._publish(record, "upload.progress")

    async def finished(self, record: UploadRecord) -> None:
        self._publish(record, "upload.completed")


def watch_processing(bus: EventBus, processor: MediaProcessor) -> None:
    """Publish the processor's status changes to each item's owner on `bus`."""

    def status(item: MediaItem) -> None:
        bus.publish(item.owner, media_change(item))

    processor.status_observers.append(status)
