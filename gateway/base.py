"""The base of every handler: request ids, JSON errors, security headers, CORS, the caller.

Errors leave as `{"error": {"code": "...", "message": "..."}}` with the right
status; clients never see a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import http
import logging
import re
import uuid
from typing import TYPE_CHECKING, Any, Iterator

import tornado.web

from auth.current_user import CurrentUserMixin
from auth.oidc import ExternalTokenVerifier
from auth.revocation import TokenChecker
from auth.tokens import Principal, TokenIssuer
from gateway.body_pace import BodyPace
from gateway.errors import ApiError, answer_for, token_missing
from gateway.net import client_ip, client_protocol, decimal

if TYPE_CHECKING:
    from gateway.services import Services

log = logging.getLogger("mediaserver.http")
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
user_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("user_id", default="-")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

TUS_HEADERS = (
    "Upload-Offset", "Upload-Length", "Upload-Metadata", "Upload-Defer-Length", "Upload-Expires",
    "Upload-Concat", "Upload-Checksum", "Tus-Resumable", "Tus-Version", "Tus-Max-Size",
    "Tus-Extension", "Tus-Checksum-Algorithm",
)
CORS_ALLOW_HEADERS = ", ".join(
    ("Authorization", "Content-Type", "X-Requested-With", "X-Request-Id", "X-HTTP-Method-Override", "Range")
    + TUS_HEADERS
)
CORS_EXPOSE_HEADERS = ", ".join(
    ("Location", "X-Request-Id", "Content-Range", "Accept-Ranges", "Content-Length", "Retry-After",
     "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy")
    + TUS_HEADERS
)
CORS_METHODS = "GET, HEAD, POST, PATCH, DELETE, OPTIONS"



def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _code_for(status: int) -> str:
    if status == 460:
        return "checksum_mismatch"
    try:
        return http.HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


DRAIN_LIMIT = 8 * 1024 * 1024
REJECT_DRAIN_LIMIT = 1024 * 1024  # bodies of refused requests read (and dropped) to keep the connection


@tornado.web.stream_request_body
class BaseHandler(CurrentUserMixin, tornado.web.RequestHandler):
    """Common behaviour of every route.

    Bodies are streamed: small ones are collected (up to MAX_JSON_BODY) for
    `json_body`; larger ones are read and dropped (up to DRAIN_LIMIT, so the
    client receives the 413) or refused at once.
    """

    _body_buffer: bytearray | None = None
    _body_too_large = False

    request_id: str

    @property
    def services(self) -> "Services":
        return self.application.settings["services"]

    def set_default_headers(self) -> None:
        if not hasattr(self, "request_id"):
            rid = self.request.headers.get("X-Request-Id", "")
            self.request_id = rid if _REQUEST_ID.match(rid) else uuid.uuid4().hex
            request_id_var.set(self.request_id)
            user_id_var.set("-")
        self.clear_header("Server")
        self.set_header("X-Request-Id", self.request_id)
        for name, value in self.services.security_headers.items():
            self.set_header(name, value)
        self._set_cors_headers()

    def _set_cors_headers(self) -> None:
        origin = self.request.headers.get("Origin")
        if not origin:
            return
        allowed = self.services.settings.cors_origins
        if "*" in allowed:
            self.set_header("Access-Control-Allow-Origin", "*")
        elif origin in allowed:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.add_header("Vary", "Origin")
        else:
            return
        self.set_header("Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS)

    @property
    def is_preflight(self) -> bool:
        return (
            self.request.method == "OPTIONS"
            and "Origin" in self.request.headers
            and "Access-Control-Request-Method" in self.request.headers
        )

    def answer_preflight(self) -> None:
        """Answer a CORS preflight (204) with what the gateway allows."""
        if self._headers.get("Access-Control-Allow-Origin"):
            self.set_header("Access-Control-Allow-Methods", CORS_METHODS)
            self.set_header("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS)
            self.set_header("Access-Control-Max-Age", "86400")
        self.set_status(204)
        self.finish()

    # -- rate limits -----------------------------------------------------------------

    #: which limiter guards the handler: "rest", "register", "tus" or None (failed sign-ins: LoginGuard)
    rate_limit: str | None = "rest"

    def client_ip(self) -> str:
        return client_ip(self.request, self.services.settings.trusted_proxy_hops)

    def base_url(self) -> str:
        """The gateway's URL as clients reach it (PUBLIC_URL, or scheme and host of the request)."""
        configured = self.services.settings.public_url.rstrip("/")
        if configured:
            return configured
        return f"{client_protocol(self.request, self.services.settings.trusted_proxy_hops)}://{self.request.host}"

    async def check_rate_limit(self, kind: str | None = None, key: str | None = None) -> None:
        """Count this request against limiter `kind`; ApiError 429 with Retry-After past it."""
        kind = kind or self.rate_limit
        if kind is None or self.request.method == "OPTIONS":
            return
        limiter = self.services.limiters[kind]
        decision = await limiter.hit(key or self.client_ip())
        self._rate_headers = decision.headers()
        for name, value in self._rate_headers.items():
            self.set_header(name, value)
        if not decision.allowed:
            self.services.on_rate_limited(kind)
            raise ApiError(429, "too_many_requests", "too many requests; retry later", decision.headers())

    _in_flight = False

    #: whether shutdown waits for this request (long-lived streams say False and are simply closed)
    counted_in_flight = True

    def _count_in_flight(self, delta: int) -> None:
        if self.counted_in_flight and (delta > 0) != self._in_flight:
            self._in_flight = delta > 0
            self.services.requests_in_flight += delta

    #: whether new requests are refused while the gateway drains on shutdown (health says so itself)
    refused_while_draining = True

    async def prepare(self) -> None:
        self._count_in_flight(1)
        if self.services.draining and self.refused_while_draining:
            self._close_after_answer = True
            raise ApiError(503, "shutting_down", "this instance is shutting down; retry (another one will answer)",
                           {"Retry-After": "1"})
        try:
            if self.authenticates and self.request.method != "OPTIONS":
                await self.authenticate()
            await self.admit()
        except Exception as exc:  # noqa: BLE001 - what the error table does not know is re-raised
            answer = answer_for(exc) if not isinstance(exc, tornado.web.HTTPError) else exc
            if answer is None:
                raise
            self._reject(answer)
        if not self._finished and self._expects_body():
            self._arm_watchdog()

    # -- stalled bodies (slow-loris) -----------------------------------------------------

    _watchdog: Any = None
    _pace: BodyPace | None = None

    def _expects_body(self) -> bool:
        headers = self.request.headers
        return bool(decimal(headers.get("Content-Length"))) or "chunked" in headers.get("Transfer-Encoding", "").lower()

    def touch(self, count: int = 0) -> None:
        """Note that `count` body bytes arrived (call from every data_received)."""
        if self._pace is not None:
            self._pace.received(count, asyncio.get_running_loop().time())

    @contextlib.contextmanager
    def holding_body(self) -> Iterator[None]:
        """Mark the block as the gateway holding the body back (waiting for the store or for
        memory): that time does not count against the client's body rate."""
        pace = self._pace
        if pace is None:
            yield
            return
        loop = asyncio.get_running_loop()
        pace.hold(loop.time())
        try:
            yield
        finally:
            pace.release(loop.time())

    def _arm_watchdog(self) -> None:
        """Close the connection when the body sends nothing for IDLE_BODY_TIMEOUT seconds or
        keeps under MIN_BODY_RATE over MIN_BODY_RATE_WINDOW (client time only)."""
        settings = self.services.settings
        loop = asyncio.get_running_loop()
        pace = self._pace = BodyPace(settings.min_body_rate, settings.min_body_rate_window,
                                     settings.idle_body_timeout, loop.time())

        def check() -> None:
            body = getattr(self.request, "_body_future", None)
            if self._finished or (body is not None and body.done()):
                return
            verdict = pace.verdict(loop.time())
            if verdict is not None:
                log.info("closing a request body that is too slow", extra={"reason": verdict})
                self.request.connection.stream.close()  # type: ignore[attr-defined]
                return
            self._watchdog = loop.call_later(pace.next_check(loop.time()) + 0.05, check)

        self._watchdog = loop.call_later(pace.next_check(loop.time()), check)

    def on_finish(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._count_in_flight(-1)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self._count_in_flight(-1)

    async def admit(self) -> None:
        """Checks before the body is read (rate limit, body size); raise ApiError to refuse."""
        await self.check_rate_limit()
        self.limit_body()

    def _reject(self, exc: tornado.web.HTTPError) -> None:
        """Refuse the request with `exc` without losing a keep-alive connection when the body is
        small (it is read and dropped, then the error answered); a large body is not read and the
        answer says `Connection: close`."""
        declared = self.request.headers.get("Content-Length", "0")
        chunked = "chunked" in self.request.headers.get("Transfer-Encoding", "").lower()
        size = decimal(declared) or 0
        if chunked or size > REJECT_DRAIN_LIMIT or self._finished:
            self._close_after_answer = True
            raise exc
        self._rejection = exc
        self._body_buffer = None
        self.request.connection.set_max_body_size(max(size, 1))  # type: ignore[attr-defined]
        setattr(self, self.request.method.lower(), self._answer_rejection)

    def answer_now(self, exc: ApiError) -> None:
        """Answer `exc` at once, mid-body, and close the connection after the answer (the rest of
        the body is not read). For refusals where reading on would only hold resources."""
        if self._finished:
            return
        self._close_after_answer = True
        self.send_error(exc.status_code, exc_info=(type(exc), exc, None))

    async def _answer_rejection(self, *args: Any, **kwargs: Any) -> None:
        raise self._rejection

    def limit_body(self) -> None:
        """Accept a body of at most MAX_JSON_BODY bytes (see the class docstring)."""
        limit = self.services.settings.max_json_body
        declared = self.request.headers.get("Content-Length", "")
        size = decimal(declared) or 0
        if size > DRAIN_LIMIT:
            raise ApiError(413, "body_too_large", f"request bodies are limited to {limit} bytes")
        self._body_too_large = size > limit
        self._body_buffer = bytearray()
        self.request.connection.set_max_body_size(DRAIN_LIMIT)  # type: ignore[attr-defined]

    def data_received(self, chunk: bytes) -> None:
        self.touch(len(chunk))
        buffer = self._body_buffer
        if buffer is None or self._body_too_large:
            return
        if len(buffer) + len(chunk) > self.services.settings.max_json_body:
            self._body_too_large = True
            self._body_buffer = bytearray()
            return
        buffer += chunk

    # -- the caller ------------------------------------------------------------------

    #: whether `prepare` resolves the caller from a presented token (a cached account lookup);
    #: routes that never look at the caller may set False and stay free of that lookup
    authenticates = True

    @property
    def token_issuer(self) -> TokenIssuer:
        return self.services.tokens

    @property
    def token_checker(self) -> TokenChecker:
        return self.services.token_checker

    @property
    def external_tokens(self) -> ExternalTokenVerifier | None:
        return self.services.external_tokens

    def on_principal(self, principal: Principal) -> None:
        user_id_var.set(principal.user_id)

    def require_user(self) -> Principal | None:
        """The caller, or an ApiError 401 when auth is required and the token is missing or invalid
        (`token_revoked` for a token signed out, or whose account was deleted or changed)."""
        principal = self.current_user
        if principal is None and self.services.settings.auth_required:
            raise self.unauthorized()
        return principal

    def unauthorized(self) -> ApiError:
        """The 401 for a request without an accepted token, saying why in its code:
        `token_missing`, `token_expired`, `token_revoked` or `token_invalid` (with the
        RFC 6750 `WWW-Authenticate` challenge)."""
        failure = self.auth_failure
        answer = answer_for(failure) if failure is not None else None
        return answer if answer is not None else token_missing()

    # -- errors ----------------------------------------------------------------------

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        headers: dict[str, str] = {}
        answer = answer_for(exc) if exc is not None else None
        if answer is not None:
            status_code, code, message, headers = answer.status_code, answer.code, answer.message, answer.headers
        elif isinstance(exc, tornado.web.HTTPError):
            code = _code_for(status_code)
            message = exc.log_message if exc.log_message and status_code < 500 else _phrase(status_code)
        else:
            code, message = _code_for(status_code), "internal server error"
        self.set_status(status_code, reason="Checksum Mismatch" if status_code == 460 else None)
        if getattr(self, "_close_after_answer", False):
            self.set_header("Connection", "close")
        for name, value in {**getattr(self, "_rate_headers", {}), **headers}.items():
            self.set_header(name, value)
        self.write_json_error(code, message)

    def options(self, *args: Any) -> None:
        """CORS preflight for every route."""
        self.answer_preflight()

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object; ApiError 400/415 otherwise."""
        if self._body_too_large:
            raise ApiError(413, "body_too_large",
                           f"request bodies are limited to {self.services.settings.max_json_body} bytes")
        content_type = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise ApiError(415, "unsupported_media_type", "send the body as application/json")
        try:
            value = json.loads(bytes(self._body_buffer or b"") or b"null")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
        except RecursionError:
            raise ApiError(400, "invalid_json", "the body is nested too deeply") from None
        if not isinstance(value, dict):
            raise ApiError(400, "invalid_json", "the body must be a JSON object")
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, "invalid_json", "the body has strings that are not valid Unicode") from None
        except RecursionError:
            raise ApiError(400, "invalid_json", "the body is nested too deeply") from None
        return value

    def write_json_error(self, code: str, message: str) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.finish({"error": {"code": code, "message": message}})

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, tornado.web.HTTPError):
            if value.status_code >= 500:
                super().log_exception(typ, value, tb)
            return
        answer = answer_for(value)
        if answer is None:
            super().log_exception(typ, value, tb)
        elif answer.status_code >= 500:  # a dependency failed: one line, no traceback
            log.warning("dependency failure: %s: %s", type(value).__name__, value)
