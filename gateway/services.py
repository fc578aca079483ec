"""Building and closing everything the handlers use: stores, MongoDB, the upload engine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from auth.oidc import ExternalTokenVerifier
from auth.passwords import PasswordPolicy
from auth.passwords import configure as password_hashing
from auth.revocation import TokenChecker
from auth.tokens import TokenIssuer
from gateway.config import Settings, parts_in_flight
from gateway.secrets import local_secret, read_ssm_parameter
from gateway.cpu_governor import CpuGovernor, NoGovernor, cgroup_cpu_quota, ingest_cpu_ceiling
from gateway.security_headers import security_headers
from metadata.connection import open_database
from metadata.embedded import EmbeddedMongo
from metadata.leases import LeaseRepository
from metadata.media import PROCESSING, MediaRepository
from metadata.ratelimits import RateCounterRepository
from metadata.uploads import UploadRecord, UploadRepository
from metadata.users import RevokedTokenRepository, UserRepository
from gateway.events import ChangeFeed, EventBus, LiveUploadEvents
from gateway.events import watch_processing as publish_processing
from gateway.logs import emf
from gateway.hooks.setup import Hooks
from gateway.media_service import MediaService
from gateway.metrics import GatewayMetrics, UploadMetrics
from gateway.metrics import watch_cpu_governor
from gateway.metrics import watch_processing as count_processing
from metadata.jobs import JobRepository
from processing.jobs import MediaProcessor, ProcessingLimits
from processing.queue import JobQueue, QueueDispatcher
from processing.worker import QueueWorker, WorkerLimits
from processing.placement import MediaPlacementPolicy
from gateway.ratelimit import (FailureLimiter, FixedWindowLimiter, LoginGuard, SharedFixedWindowLimiter,
                               TokenBucketLimiter)
from gateway.signed_urls import UrlSigner
from streaming.buffers import BufferPool
from streaming.commits import CommitRepository
from streaming.digests import FileDigests
from streaming.engine import UploadEngine, UploadLimits
from streaming.events import EventFanout, UploadEvents
from streaming.locking import UploadLocker
from streaming.stores.base import ObjectStore, SignsUrls, StoreError
from streaming.stores.local import LocalStore
from streaming.stores.s3 import S3Store
from streaming.stores.s3_model import trimmed_data

log = logging.getLogger("mediaserver")


@dataclass
class Services:
    """Everything with a lifetime: created by `start`, released by `close`."""

    settings: Settings
    store: ObjectStore
    db: AsyncDatabase
    client: AsyncMongoClient
    tokens: TokenIssuer
    uploads: UploadEngine
    executor: ThreadPoolExecutor
    cpu_executor: ThreadPoolExecutor
    users: UserRepository
    media: MediaService
    limiters: dict[str, Any]
    metrics: GatewayMetrics
    processor: MediaProcessor
    events: EventBus
    token_checker: TokenChecker
    embedded_mongo: EmbeddedMongo | None = None
    #: webhooks and the SQS sink (HOOK_URL, HOOK_SQS_QUEUE_URL)
    hooks: Hooks | None = None
    #: with PROCESSING_QUEUE_URL: sends jobs to the queue; and, with PROCESSING_CONCURRENCY > 0, runs some
    dispatcher: QueueDispatcher | None = None
    queue_worker: QueueWorker | None = None
    revoked_tokens: RevokedTokenRepository | None = None
    rate_counters: RateCounterRepository | None = None
    #: failed sign-ins per client IP and per account (gateway.ratelimit.LoginGuard)
    login_guard: LoginGuard | None = None
    #: the rules for new passwords (PASSWORD_MIN_LENGTH)
    password_policy: PasswordPolicy = field(default_factory=PasswordPolicy)
    #: with JWT_JWKS_URL: verifies an identity provider's RS256/ES256 tokens
    external_tokens: ExternalTokenVerifier | None = None
    tasks: list[asyncio.Task] = field(default_factory=list)
    #: set on SIGTERM: health answers 503 and new requests are refused while those in flight finish
    draining: bool = False
    #: requests being answered now (see `BaseHandler`)
    requests_in_flight: int = 0
    #: the headers of every answer; the CSP allows the store's signed-URL origin for media (videos)
    security_headers: dict[str, str] = field(default_factory=security_headers)
    #: paces upload bodies so the process stays under its CPU ceiling (INGEST_CPU_LIMIT)
    cpu_governor: CpuGovernor | NoGovernor = field(default_factory=NoGovernor)

    @classmethod
    async def start(cls, settings: Settings) -> "Services":
        """Connect to (or start) MongoDB, open the object store, create indexes, start the reaper."""
        loop = asyncio.get_running_loop()
        data_dir = Path(settings.data_dir)
        embedded: EmbeddedMongo | None = None
        mongodb_uri = settings.mongodb_uri
        if settings.mongodb_uri_ssm_parameter:
            mongodb_uri = await loop.run_in_executor(
                None, read_ssm_parameter, settings.mongodb_uri_ssm_parameter, settings.aws_region)
        if not mongodb_uri:
            embedded = EmbeddedMongo(data_dir)
            mongodb_uri = await loop.run_in_executor(None, embedded.start)
            log.info("embedded MongoDB started", extra={"port": embedded.port})
        jwt_secret = settings.jwt_secret
        if settings.jwt_secret_ssm_parameter:
            jwt_secret = await loop.run_in_executor(
                None, read_ssm_parameter, settings.jwt_secret_ssm_parameter, settings.aws_region)
        if not jwt_secret:
            jwt_secret = local_secret(data_dir, "jwt-secret")

        password_hashing(memory_kib=settings.password_hash_memory // 1024, time_cost=settings.password_hash_time_cost)
        executor = ThreadPoolExecutor(max_workers=settings.s3_max_workers, thread_name_prefix="store")
        metrics = GatewayMetrics()
        store = build_store(settings, executor, metrics.observe_store_call)
        if isinstance(store, S3Store) and settings.s3_endpoint_url:
            await store.ensure_bucket()
        client, db = open_database(mongodb_uri, settings.mongodb_db, settings.mongodb_timeout)
        repo = UploadRepository(db)
        users = UserRepository(db)
        revoked_tokens = RevokedTokenRepository(db)
        media_repo = MediaRepository(db)
        for repository in (repo, users, media_repo, revoked_tokens):
            await repository.create_indexes()
        media = MediaService(store, media_repo, repo, UrlSigner(jwt_secret), settings.signed_url_ttl,
                             file_sha256=settings.file_sha256)
        processor = MediaProcessor(store, media_repo, LeaseRepository(db), processing_limits(settings),
                                   source_url=lambda item: media.internal_url(item, internal_base_url(settings)),
                                   store_failures=(StoreError,))
        dispatcher, queue_worker = build_queue(settings, db, media_repo, processor, metrics) \
            if settings.processing_queue_url else (None, None)
        bus = EventBus(ChangeFeed(repo, media_repo), max_streams=settings.events_max_streams,
                       max_per_user=settings.events_max_streams_per_user)
        # in this order: the media item exists before it is processed or announced
        events = EventFanout([media, ProcessNewMedia(media_repo, dispatcher or processor), LiveUploadEvents(bus),
                              UploadMetrics(metrics), CompletionLog(settings.emf_namespace)])
        buffers = BufferPool(settings.upload_memory_budget, per_owner=settings.upload_memory_per_user,
                             wait=settings.upload_memory_wait)
        metrics.buffer_bytes.set_function(lambda: buffers.in_use)
        if settings.hook_secret_ssm_parameter:
            settings = settings.replace(hook_secret=await loop.run_in_executor(
                None, read_ssm_parameter, settings.hook_secret_ssm_parameter, settings.aws_region))
            if settings.hook_url and len(settings.hook_secret) < 16:
                raise ValueError("HOOK_SECRET_SSM_PARAMETER must hold 16 characters or more")
        hooks = Hooks.build(settings, db, repo, users, media_repo, metrics)
        uploads = UploadEngine(
            store=store,
            commits=CommitRepository(repo),
            locker=UploadLocker(LeaseRepository(db), ttl=settings.lease_ttl, wait=settings.lease_wait),
            buffers=buffers,
            placement=MediaPlacementPolicy(settings.allowed_types),
            events=events,
            digests=FileDigests(enabled=settings.file_sha256),
            limits=UploadLimits(
                max_size=settings.tus_max_size,
                part_size=settings.part_size,
                window=parts_in_flight(settings),
                expiration=settings.upload_expiration,
                unfinished_per_owner=settings.max_unfinished_uploads,
                concat_parts=settings.max_concat_parts,
            ),
            gate=hooks.gate,
            announcer=hooks.announcer,
        )
        await hooks.start(events, processor, media)
        count_processing(metrics, processor)
        governor = cpu_governor(settings.ingest_cpu_limit)
        watch_cpu_governor(metrics, governor)
        publish_processing(bus, processor)
        counters = RateCounterRepository(db)
        await counters.create_indexes()

        def window_limiter(policy: str, limit: int) -> FixedWindowLimiter | SharedFixedWindowLimiter:
            if settings.rate_limit_shared:
                return SharedFixedWindowLimiter(counters, policy, limit, settings.rate_limit_window)
            return FixedWindowLimiter(limit, settings.rate_limit_window)

        services = cls(
            settings=settings,
            store=store,
            db=db,
            client=client,
            tokens=TokenIssuer(jwt_secret, settings.jwt_ttl),
            uploads=uploads,
            executor=executor,
            cpu_executor=ThreadPoolExecutor(max_workers=2, thread_name_prefix="cpu"),
            users=users,
            media=media,
            limiters={
                "rest": window_limiter("rest", settings.rate_limit_requests),
                "register": window_limiter("register", settings.register_rate_limit),
                "tus": TokenBucketLimiter(settings.tus_rate_per_second, settings.tus_rate_burst),
            },
            metrics=metrics,
            processor=processor,
            events=bus,
            embedded_mongo=embedded,
            hooks=hooks,
            dispatcher=dispatcher,
            queue_worker=queue_worker,
            rate_counters=counters,
            login_guard=LoginGuard(
                FailureLimiter("login-failures-ip", settings.login_rate_limit, settings.login_failure_window,
                               counters if settings.rate_limit_shared else None),
                FailureLimiter("login-failures-account", settings.login_account_failure_limit,
                               settings.login_failure_window, counters if settings.rate_limit_shared else None)),
            password_policy=PasswordPolicy(settings.password_min_length),
            security_headers=security_headers((store.url_origin(),) if isinstance(store, SignsUrls) else ()),
            cpu_governor=governor,
            external_tokens=ExternalTokenVerifier(
                settings.jwt_jwks_url, settings.jwt_issuer, settings.jwt_audience, users,
                role_claim=settings.jwt_role_claim, admin_roles=settings.jwt_admin_roles,
                cache_seconds=settings.jwt_jwks_cache_seconds, refresh_interval=settings.jwt_jwks_refresh_interval,
                timeout=settings.jwt_jwks_timeout) if settings.jwt_jwks_url else None,
            token_checker=TokenChecker(users, revoked_tokens, settings.token_check_cache_seconds,
                                       accountless_tokens=settings.accountless_tokens, token_ttl=settings.jwt_ttl),
            revoked_tokens=revoked_tokens,
        )
        services.tasks.append(asyncio.ensure_future(services._reap_forever()))
        services.tasks.append(asyncio.ensure_future(services._sweep_processing_forever()))
        if queue_worker is not None and settings.processing_concurrency > 0:
            services.tasks.append(asyncio.ensure_future(queue_worker.run()))
        return services

    def on_rate_limited(self, kind: str) -> None:
        """A request was refused by limiter `kind`."""
        self.metrics.rate_limited.labels(kind).inc()

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reaper_interval)
            try:
                expired = await self.uploads.expire_due()
                if self.rate_counters is not None:
                    await self.rate_counters.sweep()
                if self.revoked_tokens is not None:
                    await self.revoked_tokens.sweep()
                if expired:
                    log.info("expired uploads aborted", extra={"count": expired})
            except Exception:  # noqa: BLE001 - the sweep runs again next interval
                log.warning("expiry sweep failed", exc_info=True)

    async def _sweep_processing_forever(self) -> None:
        while True:
            try:
                submitted = await (self.dispatcher or self.processor).sweep()
                if submitted:
                    log.info("processing jobs resumed", extra={"count": submitted})
            except Exception:  # noqa: BLE001 - the sweep runs again next interval
                log.warning("processing sweep failed", exc_info=True)
            await asyncio.sleep(self.settings.processing_sweep_interval)

    async def requests_done(self, timeout: float) -> bool:
        """Wait until no request is in flight, at most `timeout` seconds; True when none is."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.requests_in_flight > 0 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        return self.requests_in_flight <= 0

    async def close(self) -> None:
        """Stop background work and release every connection, thread and child process."""
        for task in self.tasks:
            task.cancel()
        if self.hooks is not None:
            with contextlib.suppress(Exception):
                await self.hooks.close()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.queue_worker is not None:
            with contextlib.suppress(Exception):
                await self.queue_worker.stop(0)
        if self.dispatcher is not None:
            with contextlib.suppress(Exception):
                await self.dispatcher.close()
        with contextlib.suppress(Exception):
            await self.processor.close()
        with contextlib.suppress(Exception):
            await self.store.close()
        with contextlib.suppress(Exception):
            await self.client.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.cpu_executor.shutdown(wait=False, cancel_futures=True)
        if self.external_tokens is not None:
            self.external_tokens.close()
        if self.embedded_mongo is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.embedded_mongo.stop)


class ProcessNewMedia(UploadEvents):
    """Queues the processing of each finished upload's media item that waits for it."""

    def __init__(self, media: MediaRepository, processor: MediaProcessor | QueueDispatcher) -> None:
        """`processor`: the in-process processor, or the dispatcher that sends jobs to the queue."""
        self._media = media
        self._processor = processor

    async def finished(self, record: UploadRecord) -> None:
        item = await self._media.get(record.id)
        if item is not None and item.status == PROCESSING:
            self._processor.submit(item.id, item.owner)


class CompletionLog(UploadEvents):
    """One log line per finished upload, with CloudWatch embedded metrics."""

    def __init__(self, namespace: str) -> None:
        self._namespace = namespace

    async def finished(self, record: UploadRecord) -> None:
        log.info("upload completed", extra={
            "upload_id": record.id, "owner": record.owner, "size": record.length,
            **emf(self._namespace, {"Service": "mediaserver"},
                  {"UploadsCompleted": (1, "Count"), "UploadBytes": (record.length or 0, "Bytes")}),
        })


def processing_limits(settings: Settings) -> ProcessingLimits:
    """The limits of media processing the settings name."""
    width, _, height = settings.thumbnail_size.lower().partition("x")
    return ProcessingLimits(
        concurrency=settings.processing_concurrency, job_timeout=settings.processing_timeout,
        max_image_pixels=settings.max_image_pixels, max_image_bytes=settings.max_image_bytes,
        max_video_duration=settings.max_video_duration, subprocess_memory=settings.processing_memory,
        thumbnail_width=int(width), thumbnail_height=int(height), executor_kind=settings.processing_executor,
        file_sha256=settings.file_sha256, memory_budget=settings.processing_memory_budget,
        video_memory=settings.processing_video_memory, queue=settings.processing_queue,
        queue_per_user=settings.processing_queue_per_user,
    )


def build_queue(settings: Settings, db: AsyncDatabase, media: MediaRepository, processor: MediaProcessor,
                metrics: GatewayMetrics) -> tuple[QueueDispatcher, QueueWorker]:
    """The queue's sender (for gateways) and receiver (for workers, and gateways that process), counted in `metrics`."""
    queue = JobQueue(settings.processing_queue_url, settings.aws_region, settings.processing_dead_letter_queue_url,
                     threads=min(8, settings.processing_concurrency + 3), endpoint_url=settings.sqs_endpoint_url)
    jobs = JobRepository(db)
    visibility = settings.processing_visibility_timeout
    dispatcher = QueueDispatcher(
        queue, jobs, media, processor, max_attempts=settings.processing_max_attempts, visibility_timeout=visibility,
        # a message older than every attempt could take is lost or in the dead-letter queue: send again
        resend_after=visibility * settings.processing_max_attempts + settings.processing_sweep_interval)
    dispatcher.observers.append(metrics.observe_queue_send)
    worker = QueueWorker(queue, jobs, media, processor, WorkerLimits(
        concurrency=settings.processing_concurrency, visibility_timeout=visibility,
        max_attempts=settings.processing_max_attempts, wait_seconds=settings.processing_queue_wait,
        test_delay=settings.processing_test_delay))
    worker.observers.append(metrics.observe_queue_message)
    metrics.processing_jobs_running.set_function(lambda: worker.running)
    return dispatcher, worker


def internal_base_url(settings: Settings) -> str:
    """How processes on this host (ffmpeg) reach this gateway."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}"


def cpu_governor(setting: str) -> CpuGovernor | NoGovernor:
    """The body pacing INGEST_CPU_LIMIT asks for, with the container's CPU quota for 'auto'."""
    ceiling = ingest_cpu_ceiling(setting, cgroup_cpu_quota() if setting == "auto" else None)
    if ceiling is None:
        return NoGovernor()
    log.info("upload bodies paced to keep the process under %.3f CPU cores", ceiling)
    return CpuGovernor(ceiling)


def build_store(settings: Settings, executor: ThreadPoolExecutor, on_call=None) -> ObjectStore:
    """The object store the settings name; `on_call` observes S3 requests."""
    if settings.storage_backend == "s3":
        return S3Store(
            settings.s3_bucket,
            executor,
            region=settings.aws_region,
            endpoint_url=settings.s3_endpoint_url or None,
            sse=settings.s3_sse,
            max_attempts=settings.s3_max_attempts,
            max_connections=settings.s3_max_workers,
            payload_signing=settings.s3_payload_signing,
            data_path=trimmed_data(Path(settings.s3_model_dir or Path(settings.data_dir) / "cache"))
            if settings.s3_trimmed_model else None,
            on_call=on_call,
        )
    return LocalStore(Path(settings.data_dir) / "store", executor, direct_io=settings.local_direct_io)
