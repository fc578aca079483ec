"""`GET /api/openapi.json`: the OpenAPI 3.1 document of the gateway's HTTP API.

The document is `gateway/openapi.json`, installed with the package (package_data).
It is read and parsed once, on the first request, and served compact; a broken
document fails that request loudly instead of being served.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

from gateway.base import BaseHandler
from gateway.errors import ApiError

DOCUMENT = "openapi.json"


@functools.cache
def document_bytes() -> bytes:
    """The packaged document as compact JSON (read once). Raises FileNotFoundError when it is not installed."""
    raw = resources.files("gateway").joinpath(DOCUMENT).read_bytes()
    return json.dumps(json.loads(raw), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class OpenApiHandler(BaseHandler):
    """Serves the OpenAPI document (no token, no rate limit)."""

    authenticates = False  # never looks at the caller: no account lookup

    rate_limit = None

    def get(self) -> None:
        try:
            body = document_bytes()
        except FileNotFoundError:
            raise ApiError(404, "not_found", "the OpenAPI document is not installed") from None
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.write(body)


def handlers() -> list[tuple[str, type]]:
    return [(r"/api/openapi\.json", OpenApiHandler)]
