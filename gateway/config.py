"""Every setting of the gateway, declared once: environment variable, default, help.

`Settings.from_env()` reads them; command-line flags may override some of them
(`mediaserver serve --port`). `mediaserver config` prints this table.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

MiB = 1024 * 1024
GiB = 1024 * MiB


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _size(text: str) -> int:
    """Parse '5242880', '5MiB', '5M', '2GiB', '1G' into bytes."""
    value = text.strip().upper().replace(" ", "")
    for suffix, factor in (("GIB", GiB), ("MIB", MiB), ("KIB", 1024), ("G", GiB), ("M", MiB), ("K", 1024), ("B", 1)):
        if value.endswith(suffix):
            return int(float(value[: -len(suffix)]) * factor)
    return int(value)


def _list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _choice(*allowed: str) -> Callable[[str], str]:
    """A parser accepting exactly one of `allowed` (case-insensitive)."""
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError(f"not one of {', '.join(allowed)}: {text!r}")
        return value
    return parse


def _cpu_limit(text: str) -> str:
    """'auto', 'off' or a positive number of cores (kept as written)."""
    value = text.strip().lower()
    if value in ("auto", "off"):
        return value
    if float(value) <= 0:
        raise ValueError(f"not a positive number of cores: {text!r}")
    return value


def _public_url(text: str) -> str:
    """An http(s) base URL without query, fragment or trailing slash ('' stays '')."""
    value = text.strip().rstrip("/")
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment \
            or "@" in parts.netloc or not value.isascii() or any(ch.isspace() for ch in value):
        raise ValueError(f"not an http(s) base URL: {text!r}")
    return value


def _format_size(value: int) -> str:
    """Bytes in the largest whole unit, as `_size` reads it back: 8388608 -> '8MiB', 1000 -> '1000'."""
    for suffix, factor in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if value and value % factor == 0:
            return f"{value // factor}{suffix}"
    return str(value)


def _format_float(value: float) -> str:
    """'90' for 90.0, else the shortest text `float` reads back exactly ('0.25')."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def format_value(parse: Callable[[str], Any], value: Any) -> str:
    """`value` as it is written in the environment for an option read with `parse`, such that
    parse(format_value(parse, value)) == value: 'true'/'false', sizes with units ('8MiB'),
    lists comma-joined, numbers without a needless '.0'."""
    if parse is _bool:
        return "true" if value else "false"
    if parse is _size:
        return _format_size(value)
    if parse is _list:
        return ",".join(value)
    if parse is float:
        return _format_float(value)
    return str(value)


@dataclass(frozen=True)
class Option:
    """One setting: its environment variable, default and a line of help."""

    env: str
    default: Any
    help: str
    parse: Callable[[str], Any] = str


def option(env: str, default: Any, help: str, parse: Callable[[str], Any] = str) -> Any:
    return field(default=default, metadata={"option": Option(env, default, help, parse)})


@dataclass(frozen=True)
class Settings:
    """The gateway's configuration. Immutable; build with `from_env` or `replace`."""

    # --- serving
    host: str = option("HOST", "127.0.0.1", "Address to listen on (0.0.0.0 in containers).")
    port: int = option("PORT", 3000, "TCP port of the HTTP server.", int)
    environment: str = option("ENVIRONMENT", "development", "'production' refuses to start without an external MongoDB (MONGODB_URI or its SSM parameter) and a configured JWT secret, instead of the embedded server and a generated secret.")
    shutdown_timeout: float = option("SHUTDOWN_TIMEOUT", 90.0, "Seconds requests in flight may go on after SIGTERM (keep below the container's stop timeout); bodies still running then end at a durable point, their received bytes kept.", float)
    data_dir: str = option("DATA_DIR", "./data", "Folder for the local object store, the embedded MongoDB file and generated secrets.")
    file_sha256: bool = option("FILE_SHA256", True, "Compute each finished file's sha256 while it streams (about 0.5 CPU s per GiB); false leaves the media's sha256 empty.", _bool)
    local_direct_io: bool = option("LOCAL_DIRECT_IO", True, "Local store: write whole parts with O_DIRECT (no page-cache copy); falls back to buffered writes where the file system refuses it.", _bool)
    public_url: str = option("PUBLIC_URL", "", "Base URL clients reach the gateway at, e.g. https://media.example.com; when set, the only origin in Location headers and media URLs (empty: taken from the request).", _public_url)
    trusted_proxy_hops: int = option("TRUSTED_PROXY_HOPS", 0, "Number of reverse proxies (e.g. 1 behind an ALB) whose X-Forwarded-For/-Proto entries are trusted.", int)
    max_header_size: int = option("MAX_HEADER_SIZE", 64 * 1024, "Largest accepted request head in bytes.", _size)
    idle_body_timeout: float = option("IDLE_BODY_TIMEOUT", 60.0, "Seconds a request body may send nothing before the connection is closed (slow-loris guard).", float)
    min_body_rate: int = option("MIN_BODY_RATE", 16 * 1024, "Slowest request body accepted, in bytes per second over MIN_BODY_RATE_WINDOW (time the gateway holds the body back does not count); slower bodies are closed, their durable bytes kept (0: off).", _size)
    min_body_rate_window: float = option("MIN_BODY_RATE_WINDOW", 30.0, "Seconds over which MIN_BODY_RATE is measured.", float)
    ingest_cpu_limit: str = option("INGEST_CPU_LIMIT", "auto", "Ceiling on the process's CPU use (cores) kept by pacing upload bodies, so that requests such as a resuming client's HEAD never wait for the kernel's CPU quota: auto (90% of this container's cgroup CPU quota when it has one, else none), off, or a number such as 0.225.", _cpu_limit)
    idle_connection_timeout: float = option("IDLE_CONNECTION_TIMEOUT", 120.0, "Seconds an idle keep-alive connection is kept open.", float)
    cors_origins: tuple = option("CORS_ORIGINS", ("*",), "Comma-separated origins allowed to call the API from browsers ('*' for any).", _list)
    in_place_bodies: bool = option("IN_PLACE_BODIES", True, "Receive tus PATCH bodies straight into part buffers (one copy instead of four).", _bool)
    request_chunk_size: int = option("REQUEST_CHUNK_SIZE", 256 * 1024, "Most bytes of a request body read from the socket per step (larger: less work per byte, more memory per connection).", _size)
    max_json_body: int = option("MAX_JSON_BODY", 64 * 1024, "Largest accepted non-upload request body (JSON) in bytes.", _size)

    # --- storage
    storage_backend: str = option("STORAGE_BACKEND", "local", "Object store: 'local' (files under DATA_DIR/objects) or 's3'.")
    s3_bucket: str = option("S3_BUCKET", "", "S3 bucket for media and uploads in progress.")
    aws_region: str = option("AWS_REGION", "eu-west-2", "AWS region of the bucket and of SSM parameters.")
    s3_endpoint_url: str = option("S3_ENDPOINT_URL", "", "Custom S3 endpoint (MinIO, a test server); empty for AWS.")
    s3_sse: str = option("S3_SSE", "", "Server-side encryption asked for each new object: AES256, aws:kms, or empty to let the bucket's default encryption apply.")
    s3_max_workers: int = option("S3_MAX_WORKERS", 16, "Threads running S3 calls (bounds concurrent S3 requests of the process).", int)
    s3_max_attempts: int = option("S3_MAX_ATTEMPTS", 5, "Attempts per S3 call (standard retry mode).", int)
    s3_payload_signing: str = option("S3_PAYLOAD_SIGNING", "auto", "Whether each S3 request signs its body's sha256 (a second pass over every byte): auto (only over plain HTTP; over HTTPS the body's CRC32 travels in a signed header, as the AWS SDKs stream uploads), on, or off.", _choice("auto", "on", "off"))
    s3_trimmed_model: bool = option("S3_TRIMMED_MODEL", True, "Give the S3 client only the operations the store calls (a copy of botocore's data made once per botocore version under S3_MODEL_DIR): about 11 MiB less memory per process; off: botocore's full data.", _bool)
    s3_model_dir: str = option("S3_MODEL_DIR", "", "Folder holding the trimmed S3 client data ('' = DATA_DIR/cache); the image makes it at build time.")

    # --- metadata
    mongodb_uri: str = option("MONGODB_URI", "", "MongoDB connection string; empty starts the embedded wire server with its file in DATA_DIR.")
    mongodb_db: str = option("MONGODB_DB", "mediaserver", "Database name, when the URI names none.")
    mongodb_timeout: float = option("MONGODB_TIMEOUT", 5.0, "Seconds to wait for MongoDB server selection and each operation.", float)
    mongodb_uri_ssm_parameter: str = option("MONGODB_URI_SSM_PARAMETER", "", "SSM Parameter Store name holding MONGODB_URI (read at start when set).")

    # --- auth
    jwt_secret: str = option("JWT_SECRET", "", "HS256 secret for access tokens; empty: generated once and kept in DATA_DIR.")
    jwt_secret_ssm_parameter: str = option("JWT_SECRET_SSM_PARAMETER", "", "SSM Parameter Store name holding JWT_SECRET (read at start when set).")
    jwt_ttl: int = option("JWT_TTL", 24 * 3600, "Lifetime of an access token in seconds.", int)
    token_check_cache_seconds: float = option("TOKEN_CHECK_CACHE_SECONDS", 5.0, "Seconds this instance reuses a token's check against its account (existence, role, token version, sign-out); revocations made on other instances apply here this much later at most (0: check every request).", float)
    accountless_tokens: bool = option("ACCOUNTLESS_TOKENS", False, "Accept signed tokens without an account version claim (minted elsewhere with JWT_SECRET, or issued before token versions) for users not stored here, with their own role; false: every token's user must be stored.", _bool)
    events_keepalive_seconds: float = option("EVENTS_KEEPALIVE_SECONDS", 15.0, "Seconds between keep-alive comments of /api/events; each re-checks the stream's token (a revoked token ends its stream by then).", float)
    password_hash_memory: int = option("PASSWORD_HASH_MEMORY", 19 * MiB, "Argon2id memory per password hash (each login or register in flight holds this much).", _size)
    password_hash_time_cost: int = option("PASSWORD_HASH_TIME_COST", 2, "Argon2id iterations per password hash.", int)
    auth_required: bool = option("AUTH_REQUIRED", True, "Require a bearer token on upload and media routes.", _bool)

    # --- accounts: sign-in limits and password rules
    login_account_failure_limit: int = option("LOGIN_ACCOUNT_FAILURE_LIMIT", 10, "Failed sign-ins (and wrong current passwords) allowed against one account from any address per LOGIN_FAILURE_WINDOW; a successful sign-in clears the account's count.", int)
    login_failure_window: int = option("LOGIN_FAILURE_WINDOW", 900, "Seconds a window of failed sign-ins lasts, from its first failure (15 minutes).", int)
    register_rate_limit: int = option("REGISTER_RATE_LIMIT", 10, "Registrations (attempts) allowed per client IP per RATE_LIMIT_WINDOW.", int)
    password_min_length: int = option("PASSWORD_MIN_LENGTH", 12, "Fewest characters of a new password (8 or more; at most 256 are accepted). New passwords are also refused when on the shipped list of common passwords or containing the user name; no composition rules.", int)

    # --- external identity provider (OIDC): RS256/ES256 tokens besides the gateway's own
    jwt_jwks_url: str = option("JWT_JWKS_URL", "", "JWKS URL of an identity provider whose RS256/ES256 access tokens are accepted besides the gateway's own HS256 tokens (empty: none). Needs JWT_ISSUER and JWT_AUDIENCE.")
    jwt_issuer: str = option("JWT_ISSUER", "", "The `iss` the identity provider's tokens must carry.")
    jwt_audience: str = option("JWT_AUDIENCE", "", "The `aud` the identity provider's tokens must carry (this gateway's API identifier).")
    jwt_role_claim: str = option("JWT_ROLE_CLAIM", "role", "Claim of an identity provider's token naming the caller's role: a string or a list of strings; dots reach into objects (e.g. realm_access.roles).")
    jwt_admin_roles: tuple = option("JWT_ADMIN_ROLES", ("admin",), "Comma-separated values of JWT_ROLE_CLAIM that make the caller a gateway admin; any other value (or none) is the role 'user'.", _list)
    jwt_jwks_cache_seconds: int = option("JWT_JWKS_CACHE_SECONDS", 300, "Seconds the identity provider's keys are kept before they are fetched again.", int)
    jwt_jwks_refresh_interval: float = option("JWT_JWKS_REFRESH_INTERVAL", 30.0, "Fewest seconds between two fetches of the JWKS caused by tokens naming an unknown key id (a rotation is picked up at most this late; bounds fetches caused by forged key ids).", float)
    jwt_jwks_timeout: float = option("JWT_JWKS_TIMEOUT", 5.0, "Seconds one fetch of the JWKS may take.", float)

    # --- protection
    rate_limit_requests: int = option("RATE_LIMIT_REQUESTS", 100, "REST and auth requests allowed per client IP per window.", int)
    rate_limit_window: int = option("RATE_LIMIT_WINDOW", 900, "Window of RATE_LIMIT_REQUESTS in seconds (15 minutes).", int)
    rate_limit_shared: bool = option("RATE_LIMIT_SHARED", True, "Count REST requests, registrations and failed sign-ins in MongoDB, one count for all instances (false: each instance counts its own).", _bool)
    login_rate_limit: int = option("LOGIN_RATE_LIMIT", 20, "Failed sign-ins (wrong password or unknown user) allowed per client IP per LOGIN_FAILURE_WINDOW; successful ones are not counted. Then 429 with Retry-After until the window ends.", int)
    tus_rate_per_second: float = option("TUS_RATE_PER_SECOND", 50.0, "Sustained tus requests per second per user (PATCH/HEAD/POST/DELETE).", float)
    tus_rate_burst: int = option("TUS_RATE_BURST", 500, "Burst of tus requests per user above the sustained rate.", int)

    # --- media API
    rest_max_file_size: int = option("REST_MAX_FILE_SIZE", 5 * GiB, "Largest file accepted by POST /api/media/upload.", _size)
    rest_max_form_parts: int = option("REST_MAX_FORM_PARTS", 8, "Most multipart/form-data parts accepted by POST /api/media/upload.", int)
    signed_url_ttl: int = option("SIGNED_URL_TTL", 3600, "Seconds a signed media URL stays valid.", int)

    # --- tus uploads
    tus_max_size: int = option("TUS_MAX_SIZE", 50 * GiB, "Largest upload accepted (Tus-Max-Size).", _size)
    upload_expiration: int = option("UPLOAD_EXPIRATION", 24 * 3600, "Seconds an unfinished upload lives after its last write (Upload-Expires).", int)
    reaper_interval: float = option("REAPER_INTERVAL", 60.0, "Seconds between sweeps that abort expired uploads.", float)
    part_size: int = option("PART_SIZE", 8 * MiB, "Multipart part size (>= 5 MiB; raised per upload so it fits in 10,000 parts).", _size)
    parts_in_flight_per_upload: int = option("PARTS_IN_FLIGHT_PER_UPLOAD", 0, "Parts of one upload sent to the store at once while the next fills (0: 3 for S3, where round trips are long, 2 for the local store).", int)
    upload_memory_budget: int = option("UPLOAD_MEMORY_BUDGET", 192 * MiB, "Bytes of part buffers all uploads of the process may hold at once (backpressure beyond).", _size)
    upload_memory_per_user: int = option("UPLOAD_MEMORY_PER_USER", 64 * MiB, "Most bytes of part buffers one user's uploads may hold at once; less while other users wait (the budget divided among the users uploading).", _size)
    upload_memory_wait: float = option("UPLOAD_MEMORY_WAIT", 15.0, "Seconds a request body waits for a part buffer before it is answered 503 with Retry-After (durable bytes kept).", float)
    max_unfinished_uploads: int = option("MAX_UNFINISHED_UPLOADS", 100, "Unfinished uploads one user may have at once (more are refused with 429 until some finish, are terminated or expire).", int)
    max_upload_metadata: int = option("MAX_UPLOAD_METADATA", 4 * 1024, "Largest Upload-Metadata header of one upload, in bytes.", _size)
    max_concat_parts: int = option("MAX_CONCAT_PARTS", 100, "Most partial uploads one final upload may join (each partial once, and consumed by that final).", int)
    lease_ttl: float = option("LEASE_TTL", 10.0, "Seconds an upload lease lives without renewal (a crashed holder frees it after this).", float)
    lease_wait: float = option("LEASE_WAIT", 12.0, "Seconds a PATCH waits for another holder's lease before answering 423.", float)

    # --- media processing
    allowed_types: tuple = option("ALLOWED_TYPES", ("images", "videos", "files"), "Comma-separated categories (images, videos, files) or MIME types accepted; others are refused and deleted.", _list)
    processing_concurrency: int = option("PROCESSING_CONCURRENCY", 2, "Media processing jobs run at once per instance (0: this instance processes nothing; others will).", int)
    processing_timeout: float = option("PROCESSING_TIMEOUT", 120.0, "Seconds one processing job may take.", float)
    processing_executor: str = option("PROCESSING_EXECUTOR", "process", "Where image thumbnails are made: 'process' (isolated worker processes) or 'thread'.")
    processing_memory: int = option("PROCESSING_MEMORY", 1 * GiB, "Address-space ceiling (virtual memory, not resident) of each image worker and ffmpeg/ffprobe subprocess: a backstop; what jobs hold is admitted by PROCESSING_MEMORY_BUDGET.", _size)
    processing_sweep_interval: float = option("PROCESSING_SWEEP_INTERVAL", 30.0, "Seconds between sweeps that resume processing jobs left by stopped instances.", float)
    max_image_pixels: int = option("MAX_IMAGE_PIXELS", 50_000_000, "Largest image (pixels) thumbnailed; larger ones fail as decompression bombs.", int)
    max_image_bytes: int = option("MAX_IMAGE_BYTES", 64 * MiB, "Largest image file (bytes) thumbnailed.", _size)
    max_video_duration: float = option("MAX_VIDEO_DURATION", 6 * 3600.0, "Longest video (seconds) processed.", float)
    thumbnail_size: str = option("THUMBNAIL_SIZE", "320x320", "Bounding box of thumbnails, WIDTHxHEIGHT.")

    # --- processing memory (admission of image and video jobs)
    processing_memory_budget: int = option("PROCESSING_MEMORY_BUDGET", 128 * MiB, "Memory all image and video jobs of the instance may hold at once; each job's cost is estimated before decoding (image: its size from the header, after JPEG shrink-on-load; video: per ffmpeg run by frame size) and waits its turn when the budget is taken; a job larger than the whole budget fails with a reason. Sized for a 512 MiB task next to UPLOAD_MEMORY_BUDGET.", _size)
    processing_video_memory: int = option("PROCESSING_VIDEO_MEMORY", 96 * MiB, "Memory reserved for, and the data-size limit (RLIMIT_DATA) of, an ffmpeg run whose video's frame size is unknown (known sizes are estimated from width x height).", _size)
    processing_queue: int = option("PROCESSING_QUEUE", 64, "Processing jobs that may wait in the instance beyond PROCESSING_CONCURRENCY; more stay pending in MongoDB and are taken when a job ends or at the next sweep.", int)
    processing_queue_per_user: int = option("PROCESSING_QUEUE_PER_USER", 8, "Processing jobs of one user that may wait or run in the instance at once; more stay pending in MongoDB (the sweep skips that user's items while they are at it). Users waiting take turns for the PROCESSING_CONCURRENCY slots.", int)

    # --- processing queue and workers (`mediaserver worker`)
    processing_queue_url: str = option("PROCESSING_QUEUE_URL", "", "SQS queue URL of processing jobs: the gateway sends a message per finished upload and `mediaserver worker` processes them (a gateway with PROCESSING_CONCURRENCY > 0 takes jobs from the queue too); empty: jobs run in this gateway's process, as without workers.")
    sqs_endpoint_url: str = option("SQS_ENDPOINT_URL", "", "Custom SQS endpoint (ElasticMQ, a test server); empty for AWS.")
    processing_max_attempts: int = option("PROCESSING_MAX_ATTEMPTS", 3, "Attempts at one job (counted in MongoDB) before its media is marked failed and its message goes to the dead-letter queue; set the queue's redrive maxReceiveCount to the same number.", int)
    processing_visibility_timeout: int = option("PROCESSING_VISIBILITY_TIMEOUT", 120, "Seconds a received job stays hidden from other workers; extended (with the job's claim in MongoDB) every third of it while the job runs, so only a dead worker's job comes back.", int)
    processing_dead_letter_queue_url: str = option("PROCESSING_DEAD_LETTER_QUEUE_URL", "", "SQS queue that gets the messages of jobs out of attempts when the queue has no redrive policy (with one, SQS moves them); empty: none.")
    processing_queue_wait: int = option("PROCESSING_QUEUE_WAIT", 20, "Seconds one receive from the queue long-polls for messages (1..20); a stopping worker waits at most this long for it.", int)
    worker_port: int = option("WORKER_PORT", 3001, "TCP port of `mediaserver worker`'s /health and /metrics (its only HTTP; keep it unrouted).", int)
    processing_test_delay: float = option("PROCESSING_TEST_DELAY", 0.0, "For tests only: seconds each queued job waits, holding its claim, before it starts (a slow job on demand). Leave 0.", float)

    # --- live events (/api/events)
    events_poll_seconds: float = option("EVENTS_POLL_SECONDS", 1.0, "Seconds between the reads of MongoDB by each open /api/events stream (changes made through other instances reach a stream this much later at most; changes made through this one at once).", float)
    events_max_streams: int = option("EVENTS_MAX_STREAMS", 200, "Open /api/events streams one instance serves at once (more are answered 503 with Retry-After).", int)
    events_max_streams_per_user: int = option("EVENTS_MAX_STREAMS_PER_USER", 4, "Open /api/events streams of one user on one instance (more are answered 429 with Retry-After).", int)
    events_clock_skew: float = option("EVENTS_CLOCK_SKEW", 2.0, "Seconds of clock difference between instances that /api/events tolerates: each read looks this far back before its cursor (changes are sent once per stream all the same).", float)

    # --- downloads
    download_chunk_size: int = option("DOWNLOAD_CHUNK_SIZE", 1 * MiB, "Bytes read from the store per chunk when streaming a download.", _size)

    # --- operations
    metrics_port: int = option("METRICS_PORT", 0, "Serve /metrics on this port only, not on PORT (0: on PORT); keep it unrouted by the load balancer.", int)
    metrics_token: str = option("METRICS_TOKEN", "", "Bearer token required on /metrics (empty: open).")
    emf_namespace: str = option("EMF_NAMESPACE", "MediaServer", "CloudWatch namespace of Embedded Metric Format records in the logs (empty: none).")

    # --- webhooks (integrators' hooks; see README "Webhooks")
    hook_url: str = option("HOOK_URL", "", "Endpoint receiving the signed JSON events (POST); empty: no webhooks.")
    hook_secret: str = option("HOOK_SECRET", "", "Secret of the Mediaserver-Signature HMAC-SHA256 of each event (required with HOOK_URL, unless HOOK_SECRET_SSM_PARAMETER names it).")
    hook_secret_ssm_parameter: str = option("HOOK_SECRET_SSM_PARAMETER", "", "SSM Parameter Store name holding HOOK_SECRET (read at start when set).")
    hook_events: tuple = option("HOOK_EVENTS", ("pre-create", "post-create", "post-finish", "post-terminate", "media-ready", "media-failed"), "Comma-separated events sent: pre-create, post-create, post-receive, post-finish, post-terminate, media-ready, media-failed.", _list)
    hook_timeout: float = option("HOOK_TIMEOUT", 5.0, "Seconds one webhook request (or SQS send) may take; the pre-create answer is awaited this long.", float)
    hook_pre_create_default: str = option("HOOK_PRE_CREATE_DEFAULT", "reject", "What happens to an upload when the pre-create hook gives no usable answer in time: 'reject' (503, retry later) or 'allow'.")
    hook_max_attempts: int = option("HOOK_MAX_ATTEMPTS", 10, "Delivery attempts of one event (per sink) before it is dead-lettered.", int)
    hook_retry_base: float = option("HOOK_RETRY_BASE", 5.0, "Seconds before the first retry of a failed delivery; doubled for each further one (with jitter).", float)
    hook_retry_max: float = option("HOOK_RETRY_MAX", 3600.0, "Longest wait between two delivery attempts, in seconds.", float)
    hook_concurrency: int = option("HOOK_CONCURRENCY", 4, "Events this instance sends at once, per process.", int)
    hook_poll_interval: float = option("HOOK_POLL_INTERVAL", 2.0, "Seconds between looks for due events in the outbox (events committed here are sent at once).", float)
    hook_receive_interval: float = option("HOOK_RECEIVE_INTERVAL", 10.0, "Least seconds between two post-receive events of one upload.", float)
    hook_confirm_grace: float = option("HOOK_CONFIRM_GRACE", 30.0, "Seconds after which an event whose writer stopped before confirming its commit is checked against the committed state (and sent or dropped).", float)
    hook_retention: float = option("HOOK_RETENTION", 7 * 24 * 3600.0, "Seconds an outbox row is kept (delivered and dead ones too); longer-pending ones are dropped.", float)
    hook_max_pending: int = option("HOOK_MAX_PENDING", 100_000, "Undelivered events the outbox may hold; past it new events are dropped (counted in mediaserver_hook_events_dropped_total).", int)
    hook_max_pending_per_user: int = option("HOOK_MAX_PENDING_PER_USER", 10_000, "Undelivered events about one user's uploads the outbox may hold; past it that user's new events are dropped (counted), so one user's flood never takes other users' room under HOOK_MAX_PENDING.", int)
    hook_sqs_queue_url: str = option("HOOK_SQS_QUEUE_URL", "", "SQS queue receiving the same events (a .fifo queue gets the upload as message group and the event id as deduplication id); empty: none.")
    hook_sqs_endpoint_url: str = option("HOOK_SQS_ENDPOINT_URL", "", "Custom SQS endpoint (a test server); empty for AWS.")

    # --- logging
    log_level: str = option("LOG_LEVEL", "INFO", "Logging level.")
    log_format: str = option("LOG_FORMAT", "json", "'json' (one JSON object per line, for CloudWatch) or 'text'.")

    @classmethod
    def options(cls) -> list[tuple[str, Option]]:
        """(attribute name, Option) for every setting, in declaration order."""
        return [(f.name, f.metadata["option"]) for f in dataclasses.fields(cls)]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Read every option from `environ` (default: os.environ); `overrides` win.

        Raises ValueError naming the variable when a value does not parse.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, opt in cls.options():
            raw = environ.get(opt.env)
            if raw is None:
                continue
            try:
                values[name] = opt.parse(raw)
            except ValueError as exc:
                raise ValueError(f"{opt.env}: {exc}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Raise ValueError when settings contradict each other."""
        if self.environment not in ("development", "production"):
            raise ValueError("ENVIRONMENT must be 'development' or 'production'")
        if self.environment == "production":
            if not (self.mongodb_uri or self.mongodb_uri_ssm_parameter):
                raise ValueError("ENVIRONMENT=production needs MONGODB_URI or MONGODB_URI_SSM_PARAMETER "
                                 "(the embedded MongoDB is for development only)")
            if not (self.jwt_secret or self.jwt_secret_ssm_parameter):
                raise ValueError("ENVIRONMENT=production needs JWT_SECRET or JWT_SECRET_SSM_PARAMETER "
                                 "(a generated secret is for development only)")
        if self.shutdown_timeout < 0:
            raise ValueError("SHUTDOWN_TIMEOUT must be 0 or more")
        if self.storage_backend not in ("local", "s3"):
            raise ValueError("STORAGE_BACKEND must be 'local' or 's3'")
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise ValueError("S3_BUCKET is required when STORAGE_BACKEND=s3")
        if self.part_size < 5 * MiB:
            raise ValueError("PART_SIZE must be at least 5 MiB")
        if self.parts_in_flight_per_upload < 0:
            raise ValueError("PARTS_IN_FLIGHT_PER_UPLOAD must be 0 (automatic) or more")
        if self.upload_memory_budget < 2 * self.part_size:
            raise ValueError("UPLOAD_MEMORY_BUDGET must hold at least two parts")
        if self.upload_memory_per_user < self.part_size:
            raise ValueError("UPLOAD_MEMORY_PER_USER must hold at least one part")
        if self.upload_memory_wait <= 0 or self.min_body_rate < 0 or self.min_body_rate_window <= 0:
            raise ValueError("UPLOAD_MEMORY_WAIT and MIN_BODY_RATE_WINDOW must be positive, MIN_BODY_RATE 0 or more")
        if self.max_unfinished_uploads < 1 or self.max_concat_parts < 1 or self.max_upload_metadata < 64:
            raise ValueError("MAX_UNFINISHED_UPLOADS and MAX_CONCAT_PARTS must be 1 or more, MAX_UPLOAD_METADATA 64 bytes or more")
        if self.token_check_cache_seconds < 0 or self.events_keepalive_seconds <= 0:
            raise ValueError("TOKEN_CHECK_CACHE_SECONDS must be 0 or more, EVENTS_KEEPALIVE_SECONDS positive")
        if self.events_poll_seconds <= 0 or self.events_clock_skew < 0 or self.events_max_streams < 1 \
                or self.events_max_streams_per_user < 1:
            raise ValueError("EVENTS_POLL_SECONDS must be positive, EVENTS_CLOCK_SKEW 0 or more, "
                             "EVENTS_MAX_STREAMS and EVENTS_MAX_STREAMS_PER_USER 1 or more")
        if not 64 * 1024 <= self.password_hash_memory <= 1024 * MiB or not 1 <= self.password_hash_time_cost <= 20:
            raise ValueError("PASSWORD_HASH_MEMORY must be 64KiB..1GiB and PASSWORD_HASH_TIME_COST 1..20")
        if not 8 <= self.password_min_length <= 256:
            raise ValueError("PASSWORD_MIN_LENGTH must be 8..256 (NIST SP 800-63B: at least 8)")
        if min(self.login_rate_limit, self.login_account_failure_limit, self.register_rate_limit,
               self.login_failure_window) < 1:
            raise ValueError("LOGIN_RATE_LIMIT, LOGIN_ACCOUNT_FAILURE_LIMIT, REGISTER_RATE_LIMIT and "
                             "LOGIN_FAILURE_WINDOW must be 1 or more")
        if self.jwt_jwks_url:
            if urlsplit(self.jwt_jwks_url).scheme not in ("http", "https") or not urlsplit(self.jwt_jwks_url).hostname:
                raise ValueError("JWT_JWKS_URL must be an http(s) URL")
            if not self.jwt_issuer or not self.jwt_audience:
                raise ValueError("JWT_JWKS_URL needs JWT_ISSUER and JWT_AUDIENCE (tokens of any issuer or "
                                 "audience would be accepted otherwise)")
            if self.environment == "production" and urlsplit(self.jwt_jwks_url).scheme != "https":
                raise ValueError("ENVIRONMENT=production needs an https JWT_JWKS_URL")
            if self.jwt_jwks_cache_seconds < 1 or self.jwt_jwks_refresh_interval < 0 or self.jwt_jwks_timeout <= 0:
                raise ValueError("JWT_JWKS_CACHE_SECONDS must be 1 or more, JWT_JWKS_REFRESH_INTERVAL 0 or more, "
                                 "JWT_JWKS_TIMEOUT positive")
        if not 4096 <= self.request_chunk_size <= 16 * MiB:
            raise ValueError("REQUEST_CHUNK_SIZE must be between 4KiB and 16MiB")
        if self.processing_max_attempts < 1 or not 1 <= self.processing_visibility_timeout <= 43200 \
                or not 1 <= self.processing_queue_wait <= 20 or not 1 <= self.worker_port <= 65535 \
                or self.processing_test_delay < 0 or self.processing_concurrency < 0:
            raise ValueError("PROCESSING_MAX_ATTEMPTS must be 1 or more, PROCESSING_VISIBILITY_TIMEOUT 1..43200 seconds, "
                             "PROCESSING_QUEUE_WAIT 1..20 seconds, WORKER_PORT a TCP port, PROCESSING_TEST_DELAY and "
                             "PROCESSING_CONCURRENCY 0 or more")
        if self.processing_executor not in ("process", "thread"):
            raise ValueError("PROCESSING_EXECUTOR must be 'process' or 'thread'")
        if self.processing_memory_budget < 16 * MiB or self.processing_video_memory < 32 * MiB or self.processing_queue < 0 \
                or self.processing_queue_per_user < 1:
            raise ValueError("PROCESSING_MEMORY_BUDGET must be 16MiB or more, PROCESSING_VIDEO_MEMORY 32MiB or more, "
                             "PROCESSING_QUEUE 0 or more, PROCESSING_QUEUE_PER_USER 1 or more")
        width, _, height = self.thumbnail_size.lower().partition("x")
        if not (width.isascii() and width.isdigit() and height.isascii() and height.isdigit() and 16 <= int(width) <= 4096 and 16 <= int(height) <= 4096):
            raise ValueError("THUMBNAIL_SIZE must be WIDTHxHEIGHT between 16 and 4096")
        if self.hook_url and len(self.hook_secret) < 16 and not self.hook_secret_ssm_parameter:
            raise ValueError("HOOK_URL needs HOOK_SECRET (16 characters or more) or HOOK_SECRET_SSM_PARAMETER")
        if self.hook_url and urlsplit(self.hook_url).scheme not in ("http", "https"):
            raise ValueError("HOOK_URL must be an http(s) URL")
        if unknown := set(self.hook_events) - {"pre-create", "post-create", "post-receive", "post-finish",
                                               "post-terminate", "media-ready", "media-failed"}:
            raise ValueError(f"HOOK_EVENTS names unknown events: {', '.join(sorted(unknown))}")
        if self.hook_pre_create_default not in ("allow", "reject"):
            raise ValueError("HOOK_PRE_CREATE_DEFAULT must be 'allow' or 'reject'")
        if (self.hook_timeout <= 0 or self.hook_max_attempts < 1 or self.hook_retry_base <= 0
                or self.hook_retry_max < self.hook_retry_base or not 1 <= self.hook_concurrency <= 64
                or self.hook_poll_interval <= 0 or self.hook_receive_interval < 0 or self.hook_confirm_grace <= 0
                or self.hook_retention < 3600 or self.hook_max_pending < 1 or self.hook_max_pending_per_user < 1):
            raise ValueError("HOOK_TIMEOUT, HOOK_RETRY_BASE, HOOK_POLL_INTERVAL and HOOK_CONFIRM_GRACE must be positive, "
                             "HOOK_MAX_ATTEMPTS, HOOK_MAX_PENDING and HOOK_MAX_PENDING_PER_USER 1 or more, HOOK_RETRY_MAX at least HOOK_RETRY_BASE, "
                             "HOOK_CONCURRENCY 1..64, HOOK_RECEIVE_INTERVAL 0 or more, HOOK_RETENTION an hour or more")
        if self.log_format not in ("json", "text"):
            raise ValueError("LOG_FORMAT must be 'json' or 'text'")


def parts_in_flight(settings: "Settings") -> int:
    """The window of parts in flight per upload: the setting, or by store when it is 0."""
    if settings.parts_in_flight_per_upload:
        return settings.parts_in_flight_per_upload
    return 3 if settings.storage_backend == "s3" else 2


def describe() -> str:
    """What `mediaserver config` prints: each option's help as a comment, then NAME=default as
    it would be written in the environment (an env file: `FILE_SHA256=true`, `PART_SIZE=8MiB`)."""
    lines = []
    for _, opt in Settings.options():
        lines.append(f"# {opt.help}\n{opt.env}={format_value(opt.parse, opt.default)}")
    return "\n".join(lines)


def describe_json() -> str:
    """`mediaserver config --json`: {NAME: {"default": text as in the environment, "help"}}."""
    import json

    return json.dumps({opt.env: {"default": format_value(opt.parse, opt.default), "help": opt.help}
                       for _, opt in Settings.options()}, indent=2)
