"""The upload page: `/` and `/upload`, and its assets under `/static/` (from gateway/static/).

Both carry the gateway's security headers (CSP `script-src 'self'`: the page has no
inline script). The page names its assets with a content hash (`?v=...`), so they
can be cached for long; the page itself is revalidated on every visit. Their errors (a missing
asset, a wrong method) are plain text, not the API's JSON: a browser loads these URLs.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import tornado.web

from gateway.base import BaseHandler

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PREFIX = "/static/"
_ASSET_REF = re.compile(r'(src|href)="/static/([^"?#]+)"')


class PlainErrors:
    """Errors as one line of plain text (`404 Not Found`), for URLs a browser loads.

    BaseHandler.write_error still decides the status and headers (Retry-After, Connection);
    only the body is text instead of the API's JSON.
    """

    def write_json_error(self: Any, code: str, message: str) -> None:
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        reason = self._reason
        self.finish(f"{self.get_status()} {reason}" + ("" if message == reason else f": {message}") + "\n")


class StaticAssetHandler(PlainErrors, BaseHandler, tornado.web.StaticFileHandler):
    """Files under gateway/static/: ETag, Last-Modified, ranges; cached for years under `?v=` URLs."""

    authenticates = False  # never looks at the caller: no account lookup

    rate_limit = None

    def initialize(self, path: str, default_filename: str | None = None) -> None:  # type: ignore[override]
        tornado.web.StaticFileHandler.initialize(self, path, default_filename)

    async def admit(self) -> None:
        if self.request.method not in ("GET", "HEAD", "OPTIONS"):
            raise tornado.web.HTTPError(405)

    @classmethod
    def get_content_version(cls, abspath: str) -> str:
        """A short content hash (for `?v=` and the ETag)."""
        digest = hashlib.sha256()
        for chunk in cls.get_content(abspath):
            digest.update(chunk)
        return digest.hexdigest()[:20]

    def set_extra_headers(self, path: str) -> None:
        if not self.get_query_argument("v", None):
            self.set_header("Cache-Control", "no-cache")


class UploadPageHandler(PlainErrors, BaseHandler):
    """The upload page (gateway/static/index.html with versioned asset URLs)."""

    authenticates = False  # never looks at the caller: no account lookup

    rate_limit = None

    async def admit(self) -> None:
        if self.request.method not in ("GET", "HEAD", "OPTIONS"):
            raise tornado.web.HTTPError(405)

    def get(self) -> None:
        try:
            html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
        except OSError:
            raise tornado.web.HTTPError(404, "the upload page is not installed") from None
        settings = {"static_path": str(STATIC_DIR), "static_url_prefix": STATIC_PREFIX,
                    "static_hash_cache": not self.application.settings.get("debug", False)}

        def versioned(match: re.Match[str]) -> str:
            url = StaticAssetHandler.make_static_url(settings, match.group(2))
            return f'{match.group(1)}="{url}"'

        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.write(_ASSET_REF.sub(versioned, html))

    def head(self) -> None:
        self.get()


def handlers() -> list[tuple[str, type, dict[str, Any]] | tuple[str, type]]:
    return [
        (r"/", UploadPageHandler),
        (r"/upload/?", UploadPageHandler),
        (r"/static/(.+)", StaticAssetHandler, {"path": str(STATIC_DIR)}),
    ]
