"""The REST media API: `/api/media` list, get, delete, upload, and signed file URLs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import tornado.web
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

from gateway.base import BaseHandler
from gateway.downloads import derived_filename, limit_send_buffer, stream_object
from gateway.errors import ApiError, answer_for
from gateway.net import decimal
from gateway.ranges import safe_filename
from metadata.media import CATEGORIES, DELETED, MediaItem
from streaming.errors import MemoryBusy, SizeExceeded, UploadError
from streaming.session import UploadSession

log = logging.getLogger("mediaserver.media")
_ID = r"([0-9a-f]{32})"
_background: set[asyncio.Future] = set()
PROBE_CHUNK_SIZE = 128 * 1024


def _form_filename(options: dict[bytes, bytes]) -> str | None:
    """The file name of a form part, as UTF-8 (or Latin-1 when it is not UTF-8).

    python-multipart's header parser already decodes an RFC 2231 `filename*` into `filename`.
    """
    plain = options.get(b"filename")
    if plain is None:
        return None
    try:
        return plain.decode("utf-8")
    except UnicodeDecodeError:
        return plain.decode("latin-1")


def _int_arg(handler: BaseHandler, name: str, default: int, low: int, high: int) -> int:
    raw = handler.get_query_argument(name, None)
    if raw is None:
        return default
    value = decimal(raw)
    if value is None or not low <= value <= high:
        raise ApiError(400, "validation_error", f"{name} must be an integer from {low} to {high}")
    return value


class MediaListHandler(BaseHandler):
    """GET /api/media: the caller's media, newest first, paginated, filtered by type."""

    async def get(self) -> None:
        principal = self.require_user()
        page = _int_arg(self, "page", 1, 1, 100_000)
        limit = _int_arg(self, "limit", 20, 1, 100)
        category = self.get_query_argument("type", None)
        if category is not None and category not in CATEGORIES:
            raise ApiError(400, "validation_error", f"type must be one of {', '.join(CATEGORIES)}")
        everyone = principal is not None and principal.is_admin and self.get_query_argument("all", "") == "true"
        owner = principal.user_id if principal else None
        items, total = await self.services.media.media.page(owner, category, page, limit, everyone)
        base = self.base_url()
        described = [await self.services.media.describe(item, base) for item in items]
        self.write({"items": described, "page": page, "limit": limit, "total": total,
                    "pages": (total + limit - 1) // limit})


class MediaItemHandler(BaseHandler):
    """GET and DELETE /api/media/<id>."""

    async def _item(self, media_id: str) -> MediaItem:
        principal = self.require_user()
        item = await self.services.media.visible(
            media_id, principal.user_id if principal else None, bool(principal and principal.is_admin))
        if item is None:
            raise ApiError(404, "media_not_found", "no such media")
        return item

    async def get(self, media_id: str) -> None:
        item = await self._item(media_id)
        if item.status == DELETED:
            raise ApiError(404, "media_not_found", "no such media")
        self.set_header("Cache-Control", "no-store")
        self.write(await self.services.media.describe(item, self.base_url()))

    async def delete(self, media_id: str) -> None:
        item = await self._item(media_id)
        await self.services.media.delete(item)
        log.info("media deleted", extra={"media_id": media_id})
        self.set_status(204)


class SignedFileHandler(BaseHandler):
    """GET/HEAD /media/<id>/<original|thumbnail>?expires=..&signature=..: no token, a signature."""

    authenticates = False  # never looks at the caller: no account lookup

    rate_limit = None

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Cross-Origin-Resource-Policy", "cross-origin")

    async def get(self, media_id: str, kind: str) -> None:
        if not self.services.media.signer.verify(media_id, kind, self.get_query_argument("expires", None),
                                                 self.get_query_argument("signature", None)):
            raise ApiError(403, "invalid_signature", "the URL is invalid or expired")
        item = await self.services.media.media.get(media_id)
        key = None if item is None or item.status == DELETED else (item.key if kind == "original" else item.thumbnail_key)
        if item is None or key is None:
            raise ApiError(404, "media_not_found", "no such media")
        size = item.size if kind == "original" else await self.services.store.object_size(key)
        if size is None:
            raise ApiError(404, "media_not_found", "no such media")
        content_type = item.content_type if kind == "original" else "image/jpeg"
        chunk_size = None
        if self.request.remote_ip in ("127.0.0.1", "::1") and self.request.headers.get("Range"):
            # a prober on this host (ffmpeg): read the store in small steps, queue little
            limit_send_buffer(self)
            chunk_size = PROBE_CHUNK_SIZE
        filename = item.filename if kind == "original" else derived_filename(item.filename, kind, "jpg", item.id)
        await stream_object(self, key, size, content_type, filename, chunk_size)

    head = get


@tornado.web.stream_request_body
class MediaUploadHandler(BaseHandler):
    """POST /api/media/upload: one file in multipart/form-data, streamed into the store."""

    _session: UploadSession | None = None
    _parser: MultipartParser | None = None
    _failure: ApiError | None = None
    _done = False
    _file_complete = False

    async def admit(self) -> None:
        await self.check_rate_limit()
        self._principal = self.require_user()
        settings = self.services.settings
        kind, options = parse_options_header(self.request.headers.get("Content-Type", ""))
        if kind != b"multipart/form-data" or not options.get(b"boundary"):
            raise ApiError(415, "unsupported_media_type", "send the file as multipart/form-data (field 'file')")
        body_limit = settings.rest_max_file_size + 1024 * 1024
        declared = self.request.headers.get("Content-Length")
        if (decimal(declared) or 0) > body_limit:
            raise ApiError(413, "file_too_large", f"files are limited to {settings.rest_max_file_size} bytes")
        self.request.connection.set_max_body_size(body_limit)  # type: ignore[attr-defined]
        self._parts = 0
        self._current: dict[str, Any] = {}
        self._header_field = b""
        self._header_value = b""
        self._pending: list[bytes | None] = []
        self._file_seen = False
        self._parser = MultipartParser(options[b"boundary"], callbacks={
            "on_part_begin": self._on_part_begin,
            "on_header_field": lambda data, start, end: self._add_header(field=data[start:end]),
            "on_header_value": lambda data, start, end: self._add_header(value=data[start:end]),
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
        }, max_header_count=8, max_header_size=4096)

    # -- multipart callbacks (synchronous; file bytes are queued for `data_received`) --

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > self.services.settings.rest_max_form_parts:
            raise ApiError(413, "too_many_parts", "too many form parts")
        self._current = {"headers": {}}

    def _add_header(self, field: bytes | None = None, value: bytes | None = None) -> None:
        if field is not None:
            self._header_field += field
        if value is not None:
            self._header_value += value

    def _on_header_end(self) -> None:
        name = self._header_field.decode("latin-1").strip().lower()
        self._current["headers"][name] = self._header_value.strip()
        self._header_field, self._header_value = b"", b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._current["headers"].get("content-disposition", b""))
        field = options.get(b"name", b"").decode("utf-8", "replace")
        filename = _form_filename(options)
        self._current["is_file"] = filename is not None
        if filename is not None:
            if field != "file":
                raise ApiError(400, "unexpected_file", "send the file in the field named 'file'")
            if self._file_seen:
                raise ApiError(400, "too_many_files", "send one file per request")
            self._file_seen = True
            self._pending.append(b"")  # marks the start of the file
            self._filename = safe_filename(filename)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current.get("is_file"):
            self._pending.append(bytes(data[start:end]))

    def _on_part_end(self) -> None:
        if self._current.get("is_file"):
            self._pending.append(None)

    # -- body --------------------------------------------------------------------------

    async def data_received(self, chunk: bytes) -> None:
        self.touch(len(chunk))
        if self._failure is not None or self._parser is None:
            return
        try:
            self._parser.write(chunk)
            pending, self._pending = self._pending, []
            for item in pending:
                if item == b"" and self._session is None:
                    with self.holding_body():
                        self._session = await self.services.uploads.open_stream(
                            self._principal.user_id if self._principal else None,
                            {"filename": self._filename, "source": "rest"},
                            self.services.settings.rest_max_file_size,
                        )
                elif item is None:
                    self._file_complete = True
                elif item:
                    assert self._session is not None
                    with self.holding_body():
                        await self._session.write(item)
        except ApiError as exc:
            self._failure = exc
        except SizeExceeded:
            self._failure = ApiError(413, "file_too_large",
                                     f"files are limited to {self.services.settings.rest_max_file_size} bytes")
        except MultipartParseError:
            self._failure = ApiError(400, "invalid_multipart", "the multipart body is malformed")
        except UploadError as exc:
            self._failure = answer_for(exc) or ApiError(500, "internal_error", "internal server error")
            if isinstance(exc, MemoryBusy) and not self._done:
                # no memory for this file now: answer at once rather than read the rest for nothing
                self._done = True
                await self._discard()
                self.answer_now(self._failure)

    async def _discard(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            engine = self.services.uploads
            await engine.abort(session)
            try:
                await engine.terminate(session.record.id)
            except UploadError:  # leftovers expire with the upload
                log.warning("could not discard a failed REST upload", exc_info=True)

    async def post(self) -> None:
        self._done = True
        if self._failure is None and self._parser is not None:
            try:
                self._parser.finalize()
            except MultipartParseError:
                self._failure = ApiError(400, "invalid_multipart", "the multipart body is malformed")
        if self._failure is None and (self._session is None or not self._file_complete):
            self._failure = ApiError(400, "missing_file", "the form has no complete field 'file'")
        if self._failure is not None:
            await self._discard()
            raise self._failure
        assert self._session is not None
        try:
            record = await self.services.uploads.finish(self._session, end_of_file=True)
        except UploadError:
            await self._discard()
            raise
        item = await self.services.media.media.get(record.id)
        if item is None:
            item = await self.services.media.register(record)
        log.info("REST upload stored", extra={"media_id": record.id, "size": record.length})
        self.set_status(201)
        self.write(await self.services.media.describe(item, self.base_url()))

    def on_connection_close(self) -> None:
        super().on_connection_close()
        if not self._done and self._session is not None:
            task = asyncio.ensure_future(self._discard())
            _background.add(task)
            task.add_done_callback(_background.discard)


def handlers() -> list[tuple[str, type]]:
    return [
        (r"/api/media", MediaListHandler),
        (r"/api/media/upload", MediaUploadHandler),
        (rf"/api/media/{_ID}", MediaItemHandler),
        (rf"/media/{_ID}/(original|thumbnail)", SignedFileHandler),
    ]
