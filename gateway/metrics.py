"""Prometheus metrics of the gateway, and the `/metrics` route.

Names follow Prometheus conventions (base units in names, `_total` counters);
labels have bounded values whatever clients send: routes are URL templates (or
"unmatched"), never ids or raw paths; methods are one of METHODS or "other";
every other label is a name the code chooses, checked by `BoundedLabel`.
"""

from __future__ import annotations

import hmac
import re

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

from gateway.base import BaseHandler
from gateway.cpu_governor import CpuGovernor, NoGovernor
from gateway.errors import ApiError
from metadata.media import CATEGORIES
from metadata.uploads import UploadRecord
from processing.jobs import MediaProcessor
from streaming.events import UploadEvents

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)

#: the methods the gateway serves; any other method is labelled "other" (and answered 405)
METHODS = ("GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS")
OTHER = "other"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def method_label(method: str | None) -> str:
    """The `method` label of a request method: one of METHODS, or "other"."""
    return method if method in METHODS else OTHER


class BoundedLabel:
    """Label values from a closed set (`known`), or at most `limit` distinct short snake_case
    names when the set is open; anything else is "other"."""

    def __init__(self, known: tuple[str, ...] = (), limit: int = 0) -> None:
        self._known = frozenset(known)
        self._seen: set[str] = set()
        self._limit = limit

    def __call__(self, value: object) -> str:
        if not isinstance(value, str):
            return OTHER
        if value in self._known or value in self._seen:
            return value
        if len(self._seen) < self._limit and _NAME.match(value):
            self._seen.add(value)
            return value
        return OTHER


class GatewayMetrics:
    """Every metric the gateway exports, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        r = self.registry
        self.http_requests = Counter("mediaserver_http_requests_total", "HTTP requests answered.",
                                     ["route", "method", "status"], registry=r)
        self.http_duration = Histogram("mediaserver_http_request_duration_seconds", "Time to answer an HTTP request.",
                                       ["route", "method"], buckets=LATENCY_BUCKETS, registry=r)
        self.uploads_created = Counter("mediaserver_tus_uploads_created_total", "Uploads created.", registry=r)
        self.uploads_finished = Counter("mediaserver_tus_uploads_finished_total", "Uploads completed.", registry=r)
        self.uploads_terminated = Counter("mediaserver_tus_uploads_terminated_total", "Uploads terminated by clients.", registry=r)
        self.uploads_expired = Counter("mediaserver_tus_uploads_expired_total", "Uploads aborted after expiry.", registry=r)
        self.bytes_received = Counter("mediaserver_tus_received_bytes_total", "Upload bytes committed to the store.", registry=r)
        self.uploads_in_progress = Gauge("mediaserver_tus_uploads_in_progress", "Request bodies being written to uploads now.", registry=r)
        self.buffer_bytes = Gauge("mediaserver_upload_buffer_bytes", "Bytes of part buffers handed out now.", registry=r)
        self.parts_in_flight = Gauge("mediaserver_store_parts_in_flight", "Parts being sent to the store now.", registry=r)
        self.store_duration = Histogram("mediaserver_store_request_duration_seconds", "Duration of object store requests.",
                                        ["operation", "outcome"], buckets=LATENCY_BUCKETS, registry=r)
        self.store_read_bytes = Counter("mediaserver_store_read_bytes_total", "Bytes read from the object store to answer downloads.", registry=r)
        self.store_retries = Counter("mediaserver_store_retries_total", "Object store request retries.", ["operation"], registry=r)
        self.processing_jobs = Counter("mediaserver_processing_jobs_total", "Media processing jobs by outcome.", ["kind", "outcome"], registry=r)
        self.processing_duration = Histogram("mediaserver_processing_duration_seconds", "Duration of media processing jobs.",
                                             ["kind"], buckets=LATENCY_BUCKETS, registry=r)
        # processing through the queue (PROCESSING_QUEUE_URL): sends by the gateway, messages handled by workers
        self.processing_queue_sends = Counter("mediaserver_processing_queue_sends_total", "Processing job messages sent to the queue, by outcome (sent, send_failed).", ["outcome"], registry=r)
        self.processing_queue_messages = Counter("mediaserver_processing_queue_messages_total", "Processing job messages handled by this worker, by what became of them.", ["outcome"], registry=r)
        self.processing_jobs_running = Gauge("mediaserver_processing_queue_jobs_running", "Queued processing jobs this worker runs now.", registry=r)
        # webhooks and the SQS sink (gateway.hooks)
        self.hook_deliveries = Counter("mediaserver_hook_deliveries_total", "Webhook and SQS delivery attempts by outcome (delivered, failed; dead: the event was dead-lettered).", ["sink", "event", "outcome"], registry=r)
        self.hook_pre_create = Counter("mediaserver_hook_pre_create_total", "pre-create hook calls by outcome.", ["outcome"], registry=r)
        self.hook_dropped = Counter("mediaserver_hook_events_dropped_total", "Events not written because the outbox backlog, or the user's part of it, was full (HOOK_MAX_PENDING, HOOK_MAX_PENDING_PER_USER).", ["event"], registry=r)
        self.hook_outbox_pending = Gauge("mediaserver_hook_outbox_pending", "Events waiting in the outbox (all instances), as last counted here.", registry=r)
        self.hook_outbox_dead = Gauge("mediaserver_hook_outbox_dead", "Dead-lettered events kept in the outbox (all instances), as last counted here.", registry=r)
        self.ingest_paced = Gauge("mediaserver_ingest_paced_seconds", "Seconds upload bodies were held back so far to keep the process under its CPU ceiling (INGEST_CPU_LIMIT).", registry=r)
        self.ingest_cpu_ceiling = Gauge("mediaserver_ingest_cpu_ceiling_cores", "The CPU ceiling upload bodies are paced to (0: none).", registry=r)
        self.rate_limited = Counter("mediaserver_rate_limited_requests_total", "Requests refused by a rate limit.", ["limiter"], registry=r)
        # label values the code names (store calls, processing kinds and outcomes), bounded all the same
        self.store_operation = BoundedLabel(limit=32)
        self.processing_kind = BoundedLabel(CATEGORIES)
        self.processing_outcome = BoundedLabel(("ready", "failed"))
        self.hook_sink = BoundedLabel(("http", "sqs"))
        self.hook_event = BoundedLabel(("pre-create", "post-create", "post-receive", "post-finish", "post-terminate",
                                        "media-ready", "media-failed"))
        self.hook_outcome = BoundedLabel(("delivered", "failed", "dead"))
        self.pre_create_outcome = BoundedLabel(("allowed", "rejected", "replaced", "default_allowed", "default_rejected"))
        self.queue_outcome = BoundedLabel(("sent", "send_failed", "ready", "failed", "retried", "dead_lettered",
                                           "duplicate", "busy", "invalid", "interrupted"))

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered HTTP request; `route` is a template from RouteNamer."""
        label = method_label(method)
        self.http_requests.labels(route, label, str(status)).inc()
        self.http_duration.labels(route, label).observe(seconds)

    def observe_store_call(self, operation: str, seconds: float, ok: bool, retries: int = 0) -> None:
        operation = self.store_operation(operation)
        self.store_duration.labels(operation, "ok" if ok else "error").observe(seconds)
        if retries:
            self.store_retries.labels(operation).inc(retries)

    def observe_processing(self, kind: str, outcome: str, seconds: float) -> None:
        kind = self.processing_kind(kind)
        self.processing_jobs.labels(kind, self.processing_outcome(outcome)).inc()
        self.processing_duration.labels(kind).observe(seconds)

    def observe_queue_send(self, outcome: str) -> None:
        self.processing_queue_sends.labels(self.queue_outcome(outcome)).inc()

    def observe_queue_message(self, outcome: str) -> None:
        self.processing_queue_messages.labels(self.queue_outcome(outcome)).inc()

    def observe_hook_delivery(self, sink: str, event: str, outcome: str) -> None:
        self.hook_deliveries.labels(self.hook_sink(sink), self.hook_event(event), self.hook_outcome(outcome)).inc()

    def observe_pre_create(self, outcome: str) -> None:
        self.hook_pre_create.labels(self.pre_create_outcome(outcome)).inc()

    def observe_hook_dropped(self, event: str) -> None:
        self.hook_dropped.labels(self.hook_event(event)).inc()

    def observe_hook_backlog(self, pending: int, dead: int) -> None:
        self.hook_outbox_pending.set(pending)
        self.hook_outbox_dead.set(dead)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RouteNamer:
    """Maps a request path to the URL template of the route that serves it, or "unmatched":
    as many label values as routes, whatever the path (it is matched as Tornado matches it)."""

    UNMATCHED = "unmatched"

    def __init__(self, patterns: list[str]) -> None:
        self._rules = [(re.compile(pattern.rstrip("$") + "$"), _template(pattern)) for pattern in patterns]

    def __call__(self, path: str) -> str:
        for regex, template in self._rules:
            if regex.match(path):
                return template
        return self.UNMATCHED

    @property
    def templates(self) -> list[str]:
        return [template for _, template in self._rules]


def _parameter(group: re.Match[str]) -> str:
    """The name of a route's capture group: an alternation is a {kind}, a catch-all a {path}."""
    body = group.group(1)
    if "|" in body:
        return "{kind}"
    if body in (".+", ".*"):
        return "{path}"
    return "{id}"


def _template(pattern: str) -> str:
    text = re.sub(r"\(([^)]*)\)", _parameter, pattern)
    return re.sub(r"/\?$", "", text).replace("\\", "").rstrip("$") or "/"


class MetricsHandler(BaseHandler):
    """GET /metrics in the Prometheus text format (bearer token optional)."""

    authenticates = False  # never looks at the caller: no account lookup

    rate_limit = None

    def get(self) -> None:
        token = self.services.settings.metrics_token
        if token:
            given = self.request.headers.get("Authorization", "").partition(" ")[2].strip()
            if not hmac.compare_digest(given.encode(), token.encode()):
                raise ApiError(401, "unauthorized", "a valid metrics bearer token is required")
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.set_header("Cache-Control", "no-store")
        self.write(self.services.metrics.exposition())


class UploadMetrics(UploadEvents):
    """Counts the upload engine's events into `metrics`."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def created(self, record: UploadRecord) -> None:
        self._metrics.uploads_created.inc()

    def committed(self, record: UploadRecord, count: int) -> None:
        self._metrics.bytes_received.inc(count)

    async def finished(self, record: UploadRecord) -> None:
        self._metrics.uploads_finished.inc()

    async def terminated(self, record: UploadRecord) -> None:
        self._metrics.uploads_terminated.inc()

    def expired(self, record: UploadRecord) -> None:
        self._metrics.uploads_expired.inc()

    def writers(self, delta: int) -> None:
        self._metrics.uploads_in_progress.inc(delta)

    def parts_storing(self, delta: int) -> None:
        self._metrics.parts_in_flight.inc(delta)


def watch_cpu_governor(metrics: GatewayMetrics, governor: CpuGovernor | NoGovernor) -> None:
    """Export `governor`'s ceiling and the time it has held bodies back, read at each scrape."""
    metrics.ingest_paced.set_function(lambda: governor.waited)
    metrics.ingest_cpu_ceiling.set_function(lambda: governor.cores)


def watch_processing(metrics: GatewayMetrics, processor: MediaProcessor) -> None:
    """Count the processor's jobs into `metrics`."""

    processor.observers.append(metrics.observe_processing)
