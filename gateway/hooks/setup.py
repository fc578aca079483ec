"""The hooks of one gateway process, built from the settings: gate, announcer, delivery loop."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Callable

from pymongo.asynchronous.database import AsyncDatabase

from gateway.config import Settings
from gateway.hooks.announcer import OutboxAnnouncer
from gateway.hooks.delivery import Deliverer, RetryPolicy
from gateway.hooks.events import PRE_CREATE
from gateway.hooks.gate import HttpCreationGate
from gateway.hooks.names import UserNames
from gateway.hooks.sinks import HttpSink, Sink, SqsSink
from gateway.metrics import GatewayMetrics
from metadata.media import MediaRepository
from metadata.outbox import OutboxRepository
from metadata.uploads import UploadRepository
from metadata.users import UserRepository
from processing.jobs import MediaProcessor
from streaming.events import EventFanout, UploadEvents
from streaming.hooks import CreationGate

MAX_PENDING_CREATES = 64  # pre-create requests to HOOK_URL at once, at most


@dataclass
class Hooks:
    """Everything of the webhooks and the SQS sink; inert when neither HOOK_URL nor HOOK_SQS_QUEUE_URL is set."""

    outbox: OutboxRepository
    announcer: OutboxAnnouncer
    media: MediaRepository
    gate: CreationGate | None = None
    deliverer: Deliverer | None = None
    sinks: dict[str, Sink] = field(default_factory=dict)
    task: asyncio.Task | None = None

    @classmethod
    def build(cls, settings: Settings, db: AsyncDatabase, uploads: UploadRepository, users: UserRepository,
              media: MediaRepository, metrics: GatewayMetrics) -> "Hooks":
        outbox = OutboxRepository(db, settings.hook_retention)
        usernames = UserNames(users)
        sinks: dict[str, Sink] = {}
        if settings.hook_url:
            sinks["http"] = HttpSink(settings.hook_url, settings.hook_secret, settings.hook_timeout,
                                     settings.hook_concurrency)
        if settings.hook_sqs_queue_url:
            sinks["sqs"] = SqsSink(settings.hook_sqs_queue_url, settings.aws_region,
                                   settings.hook_sqs_endpoint_url or None, settings.hook_timeout,
                                   settings.hook_concurrency)
        events = frozenset(settings.hook_events)
        wakeups: list[Callable[[], None]] = []

        def wake() -> None:
            for wakeup in wakeups:
                wakeup()

        announcer = OutboxAnnouncer(
            outbox, uploads, events=events, sinks=tuple(sinks), usernames=usernames,
            confirm_grace=settings.hook_confirm_grace, receive_interval=settings.hook_receive_interval,
            max_pending=settings.hook_max_pending, max_pending_per_user=settings.hook_max_pending_per_user, wake=wake,
            on_dropped=metrics.observe_hook_dropped)

        def backlog(waiting: int, dead: int) -> None:
            announcer.pending_estimate = waiting
            metrics.observe_hook_backlog(waiting, dead)

        deliverer = None
        if sinks:
            deliverer = Deliverer(
                outbox, sinks, RetryPolicy(settings.hook_max_attempts, settings.hook_retry_base, settings.hook_retry_max),
                concurrency=settings.hook_concurrency, lease=2 * settings.hook_timeout + 10,
                poll_interval=settings.hook_poll_interval, confirm_grace=settings.hook_confirm_grace,
                observe=metrics.observe_hook_delivery, gauges=backlog)
            wakeups.append(deliverer.wake)
        gate = None
        if settings.hook_url and PRE_CREATE in events:
            gate = HttpCreationGate(settings.hook_url, settings.hook_secret, settings.hook_timeout,
                                    reject_by_default=settings.hook_pre_create_default == "reject",
                                    max_metadata=settings.max_upload_metadata, usernames=usernames,
                                    observe=metrics.observe_pre_create, max_clients=MAX_PENDING_CREATES)
        return cls(outbox=outbox, announcer=announcer, media=media, gate=gate, deliverer=deliverer, sinks=sinks)

    async def start(self, fanout: EventFanout, processor: MediaProcessor, media_listener: UploadEvents) -> None:
        """Create the outbox's indexes, listen to uploads and processing, start delivering.

        `media_listener` is the fanout's listener that registers media items: items ready at
        registration are announced around it."""
        if not self.sinks:
            return
        await self.outbox.create_indexes()
        listeners = fanout.listeners
        if media_listener in listeners:
            before, after = self.announcer.registration(self.media.get)
            at = listeners.index(media_listener)
            listeners[at:at + 1] = [before, media_listener, after]
        fanout.add(self.announcer)
        processor.announce_status = self.announcer.announcing_status
        if self.deliverer is not None:
            self.task = asyncio.ensure_future(self.deliverer.run())

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self.deliverer is not None:
            await self.deliverer.close()
        for sink in self.sinks.values():
            sink.close()
        if isinstance(self.gate, HttpCreationGate):
            self.gate.close()
