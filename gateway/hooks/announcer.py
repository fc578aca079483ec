"""Notification events into the outbox, written with the commits they announce.

For a change the engine (or processing) commits, `announcing` stores the event's rows
`prepared` (not yet deliverable) before the commit and confirms them after it, then wakes
the local delivery loop. Whatever point the process dies at, the outbox settles it: before
the rows exist nothing was committed; between the rows and the confirmation the delivery
loop of any instance reads the committed state after HOOK_CONFIRM_GRACE and sends or drops
the rows (metadata.outbox.OutboxRepository.committed); after the confirmation they are
ordinary pending rows. `post-receive` (progress, throttled per upload) is written just
after its commit: a crash in between loses one progress notice, which the next one or
`post-finish` supersedes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from typing import AsyncIterator, Awaitable, Callable

from gateway.hooks.events import event_body, event_id, media_part, upload_part
from metadata.errors import MetadataError
from metadata.media import READY, MediaItem
from metadata.outbox import PENDING, PREPARED, OutboxRepository, OutboxRow
from metadata.uploads import COMPLETE, UploadRecord, UploadRepository
from streaming.errors import metadata_failures
from streaming.events import UploadEvents

log = logging.getLogger("mediaserver.hooks")

THROTTLE_ENTRIES = 10_000  # uploads whose last progress notice time is remembered
PROGRESS_WRITES = 64  # progress notices being written at once, at most (more are skipped)


class OutboxAnnouncer(UploadEvents):
    """The engine's Announcer and processing's status announcer, writing to `outbox`."""

    def __init__(self, outbox: OutboxRepository, uploads: UploadRepository, *, events: frozenset[str],
                 sinks: tuple[str, ...], usernames: Callable[[str | None], Awaitable[str | None]],
                 confirm_grace: float, receive_interval: float, max_pending: int,
                 wake: Callable[[], None], on_dropped: Callable[[str], None],
                 max_pending_per_user: int | None = None) -> None:
        self._outbox = outbox
        self._uploads = uploads
        self._events = events
        self._sinks = sinks
        self._usernames = usernames
        self._grace = confirm_grace
        self._receive_interval = receive_interval
        self._max_pending = max_pending
        self._max_pending_per_user = max_pending_per_user or max_pending
        self._wake = wake
        self._on_dropped = on_dropped
        self.pending_estimate = 0  # kept up to date by the delivery loop
        self._last_progress: OrderedDict[str, float] = OrderedDict()
        self._progress_writes: set[asyncio.Task] = set()

    def wants(self, kind: str) -> bool:
        return kind in self._events and bool(self._sinks)

    def _rows(self, kind: str, subject: str, owner: str | None, body: str, identifier: str, state: str,
              now: float) -> list[OutboxRow]:
        due = now + self._grace if state == PREPARED else now
        return [OutboxRow(id=f"{identifier}:{sink}", event_id=identifier, type=kind, sink=sink, subject=subject,
                          body=body, state=state, due=due, created_at=now, owner=owner or "") for sink in self._sinks]

    def _over_cap(self, kind: str) -> bool:
        """Whether the whole outbox backlog is at HOOK_MAX_PENDING (the event is then dropped)."""
        if self.pending_estimate < self._max_pending:
            return False
        self._on_dropped(kind)
        log.error("webhook outbox backlog is full; event dropped",
                  extra={"event": kind, "pending": self.pending_estimate, "cap": self._max_pending})
        return True

    async def _over_user_cap(self, kind: str, owner: str | None) -> bool:
        """Whether `owner`'s undelivered events are at HOOK_MAX_PENDING_PER_USER (the event is then
        dropped: one user's flood never takes the room of other users' events)."""
        with metadata_failures():
            waiting = await self._outbox.count_waiting_of(owner or "", self._max_pending_per_user)
        if waiting < self._max_pending_per_user:
            return False
        self._on_dropped(kind)
        log.error("a user's webhook backlog is full; event dropped",
                  extra={"event": kind, "pending": waiting, "cap": self._max_pending_per_user})
        return True

    async def _refused(self, kind: str, owner: str | None) -> bool:
        return self._over_cap(kind) or await self._over_user_cap(kind, owner)

    @contextlib.asynccontextmanager
    async def _prepared(self, kind: str, subject: str, owner: str | None, body: str,
                        identifier: str) -> AsyncIterator[None]:
        rows = self._rows(kind, subject, owner, body, identifier, PREPARED, time.time())
        with metadata_failures():
            await self._outbox.prepare(rows)
        yield  # the commit; if it raises, the rows stay prepared and are settled after the grace
        try:
            await self._outbox.confirm([row.id for row in rows])
        except MetadataError:
            log.warning("could not confirm webhook event; it is settled after the grace", exc_info=True,
                        extra={"event": kind, "subject": subject})
        self._wake()

    # -- the engine's Announcer ------------------------------------------------------

    @contextlib.asynccontextmanager
    async def announcing(self, kind: str, record: UploadRecord) -> AsyncIterator[None]:
        if not self.wants(kind) or await self._refused(kind, record.owner):
            yield
            return
        body = event_body(kind, event_id(kind, record.id), upload_part(record), record.owner,
                          await self._usernames(record.owner))
        async with self._prepared(kind, record.id, record.owner, body, event_id(kind, record.id)):
            yield

    # -- media status (processing, and items ready when registered) -------------------

    async def _media_body(self, kind: str, item: MediaItem) -> str:
        record = None
        with contextlib.suppress(MetadataError):
            record = await self._uploads.get(item.id)
        upload = upload_part(record) if record is not None else {
            "id": item.id, "size": item.size, "offset": item.size, "metadata": {}, "key": item.key}
        return event_body(kind, event_id(kind, item.id), upload, item.owner, await self._usernames(item.owner),
                          media_part(item))

    @contextlib.asynccontextmanager
    async def announcing_status(self, item: MediaItem) -> AsyncIterator[None]:
        """Wrap the save that gives `item` its final status (ready or failed)."""
        kind = "media-ready" if item.status == READY else "media-failed"
        if not self.wants(kind) or await self._refused(kind, item.owner):
            yield
            return
        async with self._prepared(kind, item.id, item.owner, await self._media_body(kind, item),
                                  event_id(kind, item.id)):
            yield

    def registration(self, media: Callable[[str], Awaitable[MediaItem | None]]) -> tuple[UploadEvents, UploadEvents]:
        """Listeners to put before and after the one registering media items: an item registered
        ready (nothing to process) is announced `media-ready` with its registration."""
        return _BeforeRegistration(self), _AfterRegistration(self, media)

    async def _prepare_ready(self, record: UploadRecord) -> None:
        kind = "media-ready"
        if not self.wants(kind) or record.concat == "partial" or not record.key \
                or await self._refused(kind, record.owner):
            return
        provisional = {"id": record.id, "status": READY, "reason": None, "category": record.category or "files",
                       "contentType": record.content_type or "application/octet-stream", "size": record.length or 0,
                       "filename": record.filename, "sha256": record.sha256, "width": None, "height": None,
                       "duration": None}
        body = event_body(kind, event_id(kind, record.id), upload_part(record), record.owner,
                          await self._usernames(record.owner), provisional)
        await self._outbox.prepare(self._rows(kind, record.id, record.owner, body, event_id(kind, record.id),
                                              PREPARED, time.time()))

    async def _confirm_ready(self, item: MediaItem) -> None:
        kind = "media-ready"
        if not self.wants(kind) or item.status != READY:
            return  # still processing: processing announces it; the prepared rows wait for it
        identifier = event_id(kind, item.id)
        rows = self._rows(kind, item.id, item.owner, await self._media_body(kind, item), identifier, PREPARED,
                          time.time())
        await self._outbox.prepare(rows)  # the item's own description replaces the provisional one
        await self._outbox.confirm([row.id for row in rows])
        self._wake()

    # -- progress ---------------------------------------------------------------------

    def committed(self, record: UploadRecord, count: int) -> None:
        kind = "post-receive"
        if count <= 0 or record.status == COMPLETE or not self.wants(kind):
            return
        now = time.monotonic()
        last = self._last_progress.get(record.id)
        if last is not None and now - last < self._receive_interval:
            return
        if len(self._progress_writes) >= PROGRESS_WRITES or self._over_cap(kind):
            return
        self._last_progress[record.id] = now
        self._last_progress.move_to_end(record.id)
        while len(self._last_progress) > THROTTLE_ENTRIES:
            self._last_progress.popitem(last=False)
        task = asyncio.ensure_future(self._write_progress(record))
        self._progress_writes.add(task)
        task.add_done_callback(self._progress_writes.discard)

    async def _write_progress(self, record: UploadRecord) -> None:
        kind = "post-receive"
        identifier = event_id(kind, record.id, str(record.offset))
        try:
            if await self._over_user_cap(kind, record.owner):
                return
            body = event_body(kind, identifier, upload_part(record), record.owner, await self._usernames(record.owner))
            await self._outbox.prepare(self._rows(kind, record.id, record.owner, body, identifier, PENDING,
                                                  time.time()))
            self._wake()
        except Exception:  # noqa: BLE001 - a lost progress notice is superseded by the next
            log.warning("could not write a post-receive event", exc_info=True, extra={"upload_id": record.id})

    async def terminated(self, record: UploadRecord) -> None:
        self._last_progress.pop(record.id, None)

    async def finished(self, record: UploadRecord) -> None:
        self._last_progress.pop(record.id, None)


class _BeforeRegistration(UploadEvents):
    def __init__(self, announcer: OutboxAnnouncer) -> None:
        self._announcer = announcer

    async def finished(self, record: UploadRecord) -> None:
        await self._announcer._prepare_ready(record)


class _AfterRegistration(UploadEvents):
    def __init__(self, announcer: OutboxAnnouncer, media: Callable[[str], Awaitable[MediaItem | None]]) -> None:
        self._announcer = announcer
        self._media = media

    async def finished(self, record: UploadRecord) -> None:
        item = await self._media(record.id)
        if item is not None:
            await self._announcer._confirm_ready(item)
