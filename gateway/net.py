"""Who is on the other end: client address and protocol behind trusted proxies."""

from __future__ import annotations

from tornado.httputil import HTTPServerRequest


def decimal(text: str | None) -> int | None:
    """The value of a plain ASCII decimal (as HTTP headers and query numbers are), else None."""
    if text and text.isascii() and text.isdigit() and len(text) <= 19:
        return int(text)
    return None


def client_ip(request: HTTPServerRequest, trusted_hops: int) -> str:
    """The client's address: with N trusted proxies (e.g. 1 for an ALB), the Nth
    X-Forwarded-For entry from the right; the socket peer otherwise."""
    peer = request.remote_ip or "unknown"
    if trusted_hops <= 0:
        return peer
    forwarded = [item.strip() for item in request.headers.get("X-Forwarded-For", "").split(",") if item.strip()]
    if len(forwarded) >= trusted_hops:
        return forwarded[-trusted_hops]
    return forwarded[0] if forwarded else peer


def client_protocol(request: HTTPServerRequest, trusted_hops: int) -> str:
    """http or https as the client used it (X-Forwarded-Proto from a trusted proxy)."""
    if trusted_hops > 0:
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip().lower()
        if proto in ("http", "https"):
            return proto
    return request.protocol
