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
from gateway.metrics import MetricsHandler, RouteNamer
from gateway.net import client_ip, decimal
from gateway.services import Services
from gateway.auth_routes import handlers as auth_handlers
from gateway.media_routes import handlers as media_handlers
from gateway.openapi_route import handlers as openapi_handlers
from gateway.web import handlers as web_handlers
from gateway.tus.handler import handlers as tus_handlers

access_log = logging.getLogger("mediaserver.access")


class NotFoundHandler(BaseHandler):
    """Every unknown route: a JSON 404."""

    rate_limit = None

    async def admit(self) -> None:
        await super().admit()
        raise ApiError(404, "not_found", "no such route")


def make_app(services: Services) -> tornado.web.Application:
    """The application with every route, bound to `services`."""
    settings = services.settings
    routes = [
        (r"/health", HealthHandler),
        (r"/health/detailed", DetailedHealthHandler),
        (r"/metrics", MetricsHandler),
        (r"/api/events", EventsHandler),
        *openapi_handlers(),
        *auth_handlers(),
        *media_handlers(),
        *tus_handlers(),
        *web_handlers(),
    ]
    route_of = RouteNamer([rule[0] for rule in routes])
    metrics = services.metrics

    def log_request(handler: tornado.web.RequestHandler) -> None:
        request = handler.request
        route = route_of(request.path)
        status = handler.get_status()
        seconds = request.request_time()
        metrics.http_requests.labels(route, request.method, str(status)).inc()
        metrics.http_duration.labels(route, request.method).observe(seconds)
        access_log.info(
            "request",
            extra={
                "route": route,
                "method": request.method,
                "path": request.path,
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

    return tornado.web.Application(
        routes,
        services=services,
        default_handler_class=NotFoundHandler,
        log_function=log_request,
        compress_response=False,
        xheaders=False,
    )


def make_metrics_app(services: Services) -> tornado.web.Application:
    """An application serving only /metrics (for METRICS_PORT)."""
    return tornado.web.Application([(r"/metrics", MetricsHandler)], services=services,
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
