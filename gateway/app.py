"""The Tornado application: routes and server settings."""

from __future__ import annotations

import logging

import tornado.httpserver
import tornado.web

from gateway.base import BaseHandler
from gateway.errors import ApiError
from gateway.events import EventsHandler
from gateway.health import DetailedHealthHandler, HealthHandler
from gateway.in_place_body import install as install_in_place_bodies
from gateway.logs import emf
from gateway.metrics import METHODS, MetricsHandler, RouteNamer, method_label
from gateway.net import client_ip, decimal
from gateway.services import Services
from gateway.auth_routes import handlers as auth_handlers
from gateway.media_routes import handlers as media_handlers
from gateway.openapi_route import handlers as openapi_handlers
from gateway.web import handlers as web_handlers
from gateway.tus.handler import handlers as tus_handlers

access_log = logging.getLogger("mediaserver.access")
LOGGED_PATH_LIMIT = 512  # characters of a request path written to the access log


class NotFoundHandler(BaseHandler):
    """Every unknown route: a JSON 404."""

    authenticates = False  # never looks at the caller: no account lookup

    rate_limit = None

    async def admit(self) -> None:
        await super().admit()
        raise ApiError(404, "not_found", "no such route")


class MethodNotAllowedHandler(BaseHandler):
    """Every request with a method the gateway does not serve: a JSON 405 before anything
    else runs (no route, no rate limit, no body read)."""

    authenticates = False  # never looks at the caller: no account lookup

    SUPPORTED_METHODS = ()  # type: ignore[assignment]
    rate_limit = None

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Allow", ", ".join(METHODS))


class GatewayApplication(tornado.web.Application):
    """The Tornado application, refusing unknown methods before routing."""

    def find_handler(self, request, **kwargs):  # type: ignore[no-untyped-def]
        if request.method not in METHODS:
            return self.get_handler_delegate(request, MethodNotAllowedHandler)
        return super().find_handler(request, **kwargs)


def routes(metrics: bool = True) -> list[tuple]:
    """Every route of the gateway: (pattern, handler class[, handler arguments]); without
    /metrics when `metrics` is False (it is then served on METRICS_PORT only)."""
    return [
        (r"/health", HealthHandler),
        (r"/health/detailed", DetailedHealthHandler),
        *([(r"/metrics", MetricsHandler)] if metrics else []),
        (r"/api/events", EventsHandler),
        *openapi_handlers(),
        *auth_handlers(),
        *media_handlers(),
        *tus_handlers(),
        *web_handlers(),
    ]


def make_app(services: Services) -> tornado.web.Application:
    """The application with every route, bound to `services`."""
    settings = services.settings
    rules = routes(metrics=not settings.metrics_port)
    route_of = RouteNamer([rule[0] for rule in rules])
    metrics = services.metrics

    def log_request(handler: tornado.web.RequestHandler) -> None:
        """Metrics and an access log line for every answered request. Nothing the client
        chose reaches a metric label: the route is a template, the method one of a fixed set."""
        request = handler.request
        route = route_of(request.path)
        method = method_label(request.method)
        status = handler.get_status()
        seconds = request.request_time()
        metrics.observe_request(route, method, status, seconds)
        access_log.info(
            "request",
            extra={
                "route": route,
                "method": method,
                "path": request.path[:LOGGED_PATH_LIMIT],
                "status": status,
                "duration_ms": round(seconds * 1000, 1),
                "ip": client_ip(request, settings.trusted_proxy_hops),
                "request_id": getattr(handler, "request_id", "-"),
                "user_id": getattr(handler.current_user, "user_id", "-") if hasattr(handler, "_current_user") else "-",
                "bytes_in": decimal(request.headers.get("Content-Length")) or 0,
                **emf(settings.emf_namespace, {"Service": "mediaserver", "Route": route},
                      {"RequestLatency": (round(seconds * 1000, 1), "Milliseconds"),
                       "ServerErrors": (1 if status >= 500 else 0, "Count")}),
            },
        )

    return GatewayApplication(
        rules,
        services=services,
        default_handler_class=NotFoundHandler,
        log_function=log_request,
        compress_response=False,
        xheaders=False,
    )


def make_metrics_app(services: Services) -> tornado.web.Application:
    """An application serving only /metrics (for METRICS_PORT)."""
    return GatewayApplication([(r"/metrics", MetricsHandler)], services=services,
                              default_handler_class=NotFoundHandler, log_function=lambda handler: None)


def make_server(app: tornado.web.Application, settings) -> tornado.httpserver.HTTPServer:
    """An HTTP server for `app` with the configured limits (bodies are limited per request)."""
    if settings.in_place_bodies:
        install_in_place_bodies()
    return tornado.httpserver.HTTPServer(
        app,
        max_header_size=settings.max_header_size,
        max_body_size=settings.max_json_body,
        idle_connection_timeout=settings.idle_connection_timeout,
        body_timeout=None,
        decompress_request=False,
        chunk_size=settings.request_chunk_size,
    )
