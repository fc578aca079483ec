"""`mediaserver worker`: a process that only processes media, taking its jobs from the queue.

It reads the same settings as the gateway (it needs PROCESSING_QUEUE_URL and an external
MongoDB), serves no public HTTP, and answers `/health` and `/metrics` on WORKER_PORT for
the orchestrator and Prometheus. On SIGTERM it takes no new job, lets running ones finish for
up to SHUTDOWN_TIMEOUT seconds, and hands the rest back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import tornado.httpserver
import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway import __version__
from gateway.config import Settings
from gateway.hooks.setup import Hooks
from gateway.metrics import GatewayMetrics
from gateway.metrics import watch_processing as count_processing
from gateway.secrets import local_secret, read_ssm_parameter
from gateway.services import build_queue, build_store, internal_base_url, processing_limits
from gateway.signed_urls import UrlSigner
from metadata.connection import open_database
from metadata.leases import LeaseRepository
from metadata.media import MediaItem, MediaRepository
from metadata.uploads import UploadRepository
from metadata.users import UserRepository
from processing.jobs import MediaProcessor
from processing.worker import QueueWorker
from streaming.stores.base import SignsUrls, StoreError

log = logging.getLogger("mediaserver")


class WorkerRefused(ValueError):
    """The settings do not describe a worker that can run."""


def check(settings: Settings) -> None:
    """Raise WorkerRefused unless a worker can run with `settings`."""
    if not settings.processing_queue_url:
        raise WorkerRefused("PROCESSING_QUEUE_URL is required: the worker takes its jobs from that queue")
    if not (settings.mongodb_uri or settings.mongodb_uri_ssm_parameter):
        raise WorkerRefused("MONGODB_URI or MONGODB_URI_SSM_PARAMETER is required: the worker shares the gateway's MongoDB")
    if settings.processing_concurrency < 1:
        raise WorkerRefused("PROCESSING_CONCURRENCY must be 1 or more for a worker")


@dataclass
class WorkerState:
    settings: Settings
    metrics: GatewayMetrics
    worker: QueueWorker
    stopping: bool = False


class WorkerHealthHandler(tornado.web.RequestHandler):
    """200 while the worker takes jobs, 503 once it stops."""

    def initialize(self, state: WorkerState) -> None:
        self.state = state

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        if self.state.stopping:
            self.set_status(503)
        self.write({"status": "stopping" if self.state.stopping else "ok", "version": __version__,
                    "role": "worker", "jobsRunning": self.state.worker.running})


class WorkerMetricsHandler(tornado.web.RequestHandler):
    """GET /metrics in the Prometheus text format (METRICS_TOKEN applies as on the gateway)."""

    def initialize(self, state: WorkerState) -> None:
        self.state = state

    def get(self) -> None:
        token = self.state.settings.metrics_token
        if token:
            given = self.request.headers.get("Authorization", "").partition(" ")[2].strip()
            if not hmac.compare_digest(given.encode(), token.encode()):
                self.set_status(401)
                self.write({"error": {"code": "unauthorized", "message": "a valid metrics bearer token is required"}})
                return
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.set_header("Cache-Control", "no-store")
        self.write(self.state.metrics.exposition())


def make_worker_app(state: WorkerState) -> tornado.web.Application:
    return tornado.web.Application([
        (r"/health", WorkerHealthHandler, {"state": state}),
        (r"/metrics", WorkerMetricsHandler, {"state": state}),
    ], default_handler_class=None)


async def run_worker(settings: Settings) -> None:
    """Process jobs from the queue until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    mongodb_uri = settings.mongodb_uri
    if settings.mongodb_uri_ssm_parameter:
        mongodb_uri = await loop.run_in_executor(
            None, read_ssm_parameter, settings.mongodb_uri_ssm_parameter, settings.aws_region)
    executor = ThreadPoolExecutor(max_workers=settings.s3_max_workers, thread_name_prefix="store")
    metrics = GatewayMetrics()
    store = build_store(settings, executor, metrics.observe_store_call)
    client, db = open_database(mongodb_uri, settings.mongodb_db, settings.mongodb_timeout)
    media = MediaRepository(db)
    await media.create_indexes()
    signer: UrlSigner | None = None

    async def source_url(item: MediaItem) -> str:
        """Where ffmpeg reads a video: a presigned store URL, or (local store) the gateway on this host."""
        nonlocal signer
        if isinstance(store, SignsUrls):
            return await store.signed_url(item.key, settings.signed_url_ttl)
        if signer is None:
            secret = settings.jwt_secret
            if settings.jwt_secret_ssm_parameter:
                secret = await loop.run_in_executor(
                    None, read_ssm_parameter, settings.jwt_secret_ssm_parameter, settings.aws_region)
            signer = UrlSigner(secret or local_secret(Path(settings.data_dir), "jwt-secret"))
        return signer.sign(internal_base_url(settings), item.id, "original", settings.signed_url_ttl)

    processor = MediaProcessor(store, media, LeaseRepository(db), processing_limits(settings), source_url=source_url,
                               store_failures=(StoreError,))
    count_processing(metrics, processor)
    # media-ready/failed events of the jobs done here go into the hooks' outbox in MongoDB, which
    # the gateways deliver from (this process delivers nothing itself)
    hooks = Hooks.build(settings, db, UploadRepository(db), UserRepository(db), media, metrics)
    if hooks.sinks:
        await hooks.outbox.create_indexes()
        processor.announce_status = hooks.announcer.announcing_status
    dispatcher, worker = build_queue(settings, db, media, processor, metrics)
    state = WorkerState(settings, metrics, worker)
    server = tornado.httpserver.HTTPServer(make_worker_app(state), max_body_size=64 * 1024,
                                          idle_connection_timeout=settings.idle_connection_timeout)
    server.listen(settings.worker_port, address=settings.host)
    log.info("worker started", extra={"host": settings.host, "port": settings.worker_port, "store": store.name,
                                      "concurrency": settings.processing_concurrency, "version": __version__})
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    receiving = asyncio.ensure_future(worker.run())
    waiting = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({receiving, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if receiving.done():
            receiving.result()  # raises what stopped it
    finally:
        state.stopping = True
        log.info("worker stopping", extra={"jobs_running": worker.running})
        receiving.cancel()
        waiting.cancel()
        await worker.stop(settings.shutdown_timeout)
        await asyncio.gather(receiving, waiting, return_exceptions=True)
        server.stop()
        with contextlib.suppress(Exception):
            await dispatcher.close()
        with contextlib.suppress(Exception):
            await hooks.close()
        with contextlib.suppress(Exception):
            await processor.close()
        with contextlib.suppress(Exception):
            await store.close()
        with contextlib.suppress(Exception):
            await client.close()
        executor.shutdown(wait=False, cancel_futures=True)
        log.info("worker stopped")
