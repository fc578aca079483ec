"""The tus 1.0 endpoint (`/files/`): OPTIONS, POST, HEAD, PATCH, DELETE and GET downloads.

Request bodies are streamed (`@stream_request_body`): a PATCH body goes chunk by
chunk into a `PartWriter`, which waits when the store is slower than the
client, so Tornado stops reading the socket. Status codes follow the tus 1.0
specification; every error body is the gateway's JSON error shape.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import tornado.web
from pymongo.errors import PyMongoError

from gateway.base import REJECT_DRAIN_LIMIT, ApiError, BaseHandler
from gateway.downloads import stream_object
from metadata.uploads import COMPLETE, UploadRecord
from streaming.errors import (
    ConcatenationError,
    InvalidLength,
    LeaseLost,
    OffsetMismatch,
    SizeExceeded,
    StorageFailure,
    UploadError,
    UploadGone,
    UploadNotFound,
    UploadNotWritable,
    TypeNotAllowed,
)
from streaming.locking import UploadLocked
from streaming.tus.checksum import ALGORITHMS, Hasher, parse_checksum
from streaming.tus.protocol import (
    EXTENSIONS,
    OFFSET_OCTET_STREAM,
    TUS_RESUMABLE,
    TUS_VERSIONS,
    HeaderError,
    encode_metadata,
    http_date,
    parse_concat_final,
    parse_metadata,
    parse_size,
)
from streaming.writer import PartWriter

log = logging.getLogger("mediaserver.tus")

_background: set[asyncio.Future] = set()
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")

_ERRORS: list[tuple[type[Exception], int, str]] = [
    (UploadNotFound, 404, "upload_not_found"),
    (UploadGone, 410, "upload_gone"),
    (OffsetMismatch, 409, "mismatched_offset"),
    (SizeExceeded, 413, "max_size_exceeded"),
    (InvalidLength, 400, "invalid_length"),
    (UploadNotWritable, 403, "upload_not_writable"),
    (ConcatenationError, 400, "invalid_concat"),
    (LeaseLost, 409, "lease_lost"),
    (StorageFailure, 503, "storage_unavailable"),
    (UploadLocked, 423, "upload_locked"),
    (TypeNotAllowed, 415, "type_not_allowed"),
]


def tus_error(exc: Exception) -> ApiError:
    """The HTTP answer for an upload error."""
    if isinstance(exc, PyMongoError):
        return ApiError(503, "metadata_unavailable", "the metadata store is unavailable; retry later", {"Retry-After": "5"})
    for kind, status, code in _ERRORS:
        if isinstance(exc, kind):
            headers = {"Retry-After": "5"} if status == 503 else {"Retry-After": "1"} if status == 423 else {}
            message = str(exc) or code.replace("_", " ")
            return ApiError(status, code, message, headers)
    return ApiError(500, "internal_error", "internal server error")


@tornado.web.stream_request_body
class TusHandler(BaseHandler):
    """One handler for the collection (`/files/`) and each upload (`/files/<id>`)."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS")
    rate_limit = None

    _writer: PartWriter | None = None
    _rejection: Exception | None = None
    _answered = False
    _discarded = 0
    _hasher: Hasher | None = None
    _expected_digest = b""

    def set_default_headers(self) -> None:
        super().set_default_headers()
        if self.request.method != "GET":
            self.set_header("Tus-Resumable", TUS_RESUMABLE)

    # -- request set-up ---------------------------------------------------------------

    async def admit(self) -> None:
        method = self.request.method
        override = self.request.headers.get("X-HTTP-Method-Override")
        if override and method == "POST":
            method = override.upper()
            if method not in ("PATCH", "DELETE", "HEAD"):
                raise ApiError(400, "invalid_method_override", "X-HTTP-Method-Override must be PATCH, DELETE or HEAD")
            if method == "HEAD":
                # answered as a HEAD, framed as the POST it is (Tornado drops bodies of HEAD requests)
                self.post = self.head  # type: ignore[method-assign]
            else:
                self.request.method = method
        connection = self.request.connection
        connection.set_max_body_size(self.services.settings.max_json_body)  # type: ignore[attr-defined]
        if method == "OPTIONS":
            return
        if method != "GET" and self.request.headers.get("Tus-Resumable") not in TUS_VERSIONS:
            raise ApiError(412, "unsupported_version", "Tus-Resumable must name a supported version",
                           {"Tus-Version": ",".join(TUS_VERSIONS)})
        principal = self.require_user()
        if method not in ("GET", "HEAD"):
            # HEAD stays free: tus clients take any refused HEAD as a lost upload and start over
            await self.check_rate_limit("tus", principal.user_id if principal else self.client_ip())
        upload_id = self.path_args[0] if self.path_args else None
        if upload_id is not None and not _UPLOAD_ID.match(upload_id):
            raise ApiError(404, "upload_not_found", "no such upload")
        try:
            if method == "PATCH":
                if upload_id is None:
                    raise ApiError(405, "method_not_allowed", "PATCH needs an upload URL")
                await self._open_patch(upload_id)
            elif method == "POST":
                if upload_id is not None:
                    raise ApiError(405, "method_not_allowed", "POST goes to the collection URL")
                await self._open_creation()
        except UploadError as exc:
            raise tus_error(exc) from None
        except UploadLocked as exc:
            raise tus_error(exc) from None

    def _checksum(self) -> tuple[str, bytes] | None:
        """The body's expected checksum from the `Upload-Checksum` header, or None.

        A checksum announced as a trailer (`Trailer: Upload-Checksum`) is refused with 400
        before any byte is read: the HTTP server cannot read trailers, and bytes it could
        not verify must not be committed as if they were checked.
        """
        trailers = {name.strip().lower() for name in self.request.headers.get("Trailer", "").split(",")}
        if "upload-checksum" in trailers:
            raise ApiError(400, "checksum_trailer_unsupported",
                           "Upload-Checksum in a trailer is not supported; send it as a request header")
        try:
            return parse_checksum(self.request.headers.get("Upload-Checksum"))
        except HeaderError as exc:
            raise ApiError(400, "invalid_checksum", str(exc)) from None

    def _content_length(self) -> int | None:
        try:
            return parse_size(self.request.headers.get("Content-Length"), "Content-Length")
        except HeaderError as exc:
            raise ApiError(400, "invalid_content_length", str(exc)) from None

    async def _visible(self, upload_id: str) -> UploadRecord:
        """The upload if the caller may see it; 404 otherwise (no existence leak)."""
        record = await self.services.uploads.get(upload_id)
        principal = self.current_user
        if principal is not None and not principal.is_admin and record.owner != principal.user_id:
            raise UploadNotFound("no such upload")
        if principal is None and record.owner is not None:
            raise UploadNotFound("no such upload")
        return record

    async def _open_patch(self, upload_id: str) -> None:
        if self.request.headers.get("Content-Type", "").split(";")[0].strip().lower() != OFFSET_OCTET_STREAM:
            raise ApiError(415, "unsupported_media_type", f"Content-Type must be {OFFSET_OCTET_STREAM}")
        try:
            offset = parse_size(self.request.headers.get("Upload-Offset"), "Upload-Offset")
            length = parse_size(self.request.headers.get("Upload-Length"), "Upload-Length")
        except HeaderError as exc:
            raise ApiError(400, "invalid_header", str(exc)) from None
        if offset is None:
            raise ApiError(400, "missing_offset", "Upload-Offset is required")
        body_length = self._content_length()
        record = await self._visible(upload_id)
        if record.status == COMPLETE and offset == record.length and not body_length:
            self._answer_patch(record)
            return
        if offset != record.offset:
            raise OffsetMismatch(record.offset, offset)
        if length is not None and (length < record.offset or (record.length is not None and length != record.length)):
            raise InvalidLength("Upload-Length cannot be changed once set nor be below the offset")
        target = record.length if record.length is not None else length
        limit = target if target is not None else self.services.settings.tus_max_size
        if body_length is not None and offset + body_length > limit:
            raise SizeExceeded("the body would pass the upload's length")
        await self._start_writer(upload_id, offset, length, self._checksum(), body_length)

    async def _open_creation(self) -> None:
        headers = self.request.headers
        try:
            length = parse_size(headers.get("Upload-Length"), "Upload-Length")
            metadata = parse_metadata(headers.get("Upload-Metadata"))
        except HeaderError as exc:
            raise ApiError(400, "invalid_header", str(exc)) from None
        principal = self.current_user
        owner = principal.user_id if principal else None
        concat_header = (headers.get("Upload-Concat") or "").strip()
        concat = None
        if concat_header == "partial":
            concat = "partial"
        elif concat_header.startswith("final;"):
            if length is not None or headers.get("Upload-Defer-Length") is not None:
                raise ApiError(400, "invalid_concat", "a final upload must not carry Upload-Length")
            try:
                partial_ids = parse_concat_final(concat_header)
            except HeaderError as exc:
                raise ApiError(400, "invalid_concat", str(exc)) from None
            self._created = await self.services.uploads.concatenate(
                owner, partial_ids, metadata, bool(principal and principal.is_admin))
            log.info("upload concatenated", extra={"upload_id": self._created.id, "parts": len(partial_ids)})
            return
        elif concat_header:
            raise ApiError(400, "invalid_concat", "Upload-Concat must be 'partial' or 'final;<urls>'")
        deferred = headers.get("Upload-Defer-Length")
        if deferred is not None and deferred.strip() != "1":
            raise ApiError(400, "invalid_header", "Upload-Defer-Length must be 1")
        if (length is None) == (deferred is None):
            raise ApiError(400, "invalid_length", "exactly one of Upload-Length and Upload-Defer-Length is required")
        body_length = self._content_length() or 0
        with_body = headers.get("Content-Type", "").split(";")[0].strip().lower() == OFFSET_OCTET_STREAM
        max_size = self.services.settings.tus_max_size
        if length is not None and length > max_size:
            raise ApiError(413, "max_size_exceeded", f"Upload-Length exceeds the maximum of {max_size} bytes")
        if with_body and body_length > (length if length is not None else max_size):
            raise ApiError(413, "max_size_exceeded", "the body is longer than Upload-Length")
        checksum = self._checksum() if with_body else None
        record = await self.services.uploads.create(owner, length, metadata, concat=concat)
        self._created = record
        log.info("upload created", extra={"upload_id": record.id, "length": length})
        if with_body and body_length != 0 and record.status != COMPLETE:
            await self._start_writer(record.id, 0, None, checksum, self._content_length())

    async def _start_writer(self, upload_id: str, offset: int, length: int | None,
                            checksum: tuple[str, bytes] | None, body_length: int | None) -> None:
        if checksum is not None:
            self._hasher = ALGORITHMS[checksum[0]]()
            self._expected_digest = checksum[1]
        # commit part by part only when the body cannot be rejected as a whole later
        eager = checksum is None and body_length is not None
        self._writer = await self.services.uploads.open_writer(upload_id, offset, length=length, eager=eager)
        writer = self._writer
        remaining = (writer.record.length if writer.record.length is not None else self.services.settings.tus_max_size) - offset
        # a chunked body may run past the upload: read a little more, so the writer answers 413 JSON
        self.request.connection.set_max_body_size(max(remaining, 0) + REJECT_DRAIN_LIMIT)  # type: ignore[attr-defined]

    # -- body -------------------------------------------------------------------------

    async def data_received(self, chunk: bytes) -> None:
        self.touch()
        if self._writer is None or self._rejection is not None:
            self._discarded += len(chunk)
            return
        try:
            await self._writer.write(chunk)
            if self._hasher is not None:
                self._hasher.update(chunk)
        except (UploadError, UploadLocked, PyMongoError) as exc:
            self._rejection = exc

    def body_buffer(self, limit: int) -> memoryview | None:
        """Where the next body bytes may be received in place (see gateway.in_place_body)."""
        if self._writer is None or self._rejection is not None:
            return None
        return self._writer.receive_buffer(limit)

    async def body_received(self, view: memoryview, count: int) -> None:
        """`count` body bytes arrived at the start of `view` (from body_buffer)."""
        self.touch()
        assert self._writer is not None
        try:
            if self._hasher is not None:
                self._hasher.update(view[:count])
            await self._writer.take_received(count)
        except (UploadError, UploadLocked, PyMongoError) as exc:
            self._rejection = exc

    def on_connection_close(self) -> None:
        """The client went away mid-body: keep what arrived, give the lease back."""
        writer = self._writer
        if writer is not None and not self._answered:
            unverifiable = self._rejection is not None or self._hasher is not None
            ending = writer.abort() if unverifiable else writer.finish()
            task = asyncio.ensure_future(ending)
            _background.add(task)
            task.add_done_callback(_finished_in_background)

    async def _finish_writer(self) -> UploadRecord:
        writer = self._writer
        assert writer is not None
        if self._rejection is not None:
            await writer.abort()
            await self._discard_if_refused(self._rejection, writer)
            raise tus_error(self._rejection)
        if self._hasher is not None and self._hasher.digest() != self._expected_digest:
            await writer.abort()
            raise ApiError(460, "checksum_mismatch", "the body does not match Upload-Checksum")
        try:
            return await writer.finish()
        except (UploadError, PyMongoError) as exc:
            await self._discard_if_refused(exc, writer)
            raise tus_error(exc) from None

    async def _discard_if_refused(self, exc: Exception, writer: PartWriter) -> None:
        """A file of a refused type leaves nothing behind."""
        if isinstance(exc, TypeNotAllowed):
            try:
                await self.services.uploads.terminate(writer.record.id)
            except (UploadError, UploadLocked):
                log.warning("could not discard a refused upload", extra={"upload_id": writer.record.id})

    # -- methods ----------------------------------------------------------------------

    def options(self, upload_id: str | None = None) -> None:
        if self.is_preflight:
            self.answer_preflight()
            return
        self.set_header("Tus-Version", ",".join(TUS_VERSIONS))
        self.set_header("Tus-Max-Size", str(self.services.settings.tus_max_size))
        self.set_header("Tus-Extension", ",".join(EXTENSIONS))
        self.set_header("Tus-Checksum-Algorithm", ",".join(ALGORITHMS))
        self.set_status(204)

    async def post(self, upload_id: str | None = None) -> None:
        record: UploadRecord = self._created
        if self._writer is not None:
            try:
                record = await self._finish_writer()
            except ApiError as exc:
                if exc.status_code != 415:  # a refused type is gone; anything else can be resumed
                    exc.headers["Location"] = self._upload_url(record.id)
                raise
            self.set_header("Upload-Offset", str(record.offset))
        elif self.request.headers.get("Content-Type", "").startswith(OFFSET_OCTET_STREAM):
            self.set_header("Upload-Offset", str(record.offset))
        self._answered = True
        self.set_header("Location", self._upload_url(record.id))
        if record.status != COMPLETE:
            self.set_header("Upload-Expires", http_date(record.expires_at))
        self.set_status(201)

    def _upload_url(self, upload_id: str) -> str:
        return f"{self.base_url()}/files/{upload_id}"

    async def head(self, upload_id: str | None = None) -> None:
        if upload_id is None:
            raise ApiError(405, "method_not_allowed", "HEAD needs an upload URL")
        try:
            record = await self._visible(upload_id)
        except UploadError as exc:
            raise tus_error(exc) from None
        self.set_header("Cache-Control", "no-store")
        self.set_header("Upload-Offset", str(record.offset))
        if record.length is None:
            self.set_header("Upload-Defer-Length", "1")
        else:
            self.set_header("Upload-Length", str(record.length))
        if record.metadata:
            self.set_header("Upload-Metadata", encode_metadata(record.metadata))
        if record.concat == "partial":
            self.set_header("Upload-Concat", "partial")
        elif record.concat == "final":
            self.set_header("Upload-Concat", "final;" + " ".join(self._upload_url(i) for i in record.concat_parts))
        if record.status != COMPLETE:
            self.set_header("Upload-Expires", http_date(record.expires_at))
        self.set_status(200)

    async def patch(self, upload_id: str) -> None:
        if self._answered:
            return
        record = await self._finish_writer()
        self._answer_patch(record)

    def _answer_patch(self, record: UploadRecord) -> None:
        self._answered = True
        self.set_header("Upload-Offset", str(record.offset))
        if record.status != COMPLETE:
            self.set_header("Upload-Expires", http_date(record.expires_at))
        self.set_status(204)
        self.finish()

    async def delete(self, upload_id: str | None = None) -> None:
        if upload_id is None:
            raise ApiError(405, "method_not_allowed", "DELETE needs an upload URL")
        try:
            await self._visible(upload_id)
            await self.services.uploads.terminate(upload_id)
        except (UploadError, UploadLocked) as exc:
            raise tus_error(exc) from None
        log.info("upload terminated", extra={"upload_id": upload_id})
        self.set_status(204)

    async def get(self, upload_id: str | None = None) -> None:
        if upload_id is None:
            raise ApiError(405, "method_not_allowed", "GET needs an upload URL")
        self.clear_header("Tus-Resumable")
        try:
            record = await self._visible(upload_id)
        except UploadError as exc:
            raise tus_error(exc) from None
        if record.status != COMPLETE:
            raise ApiError(404, "upload_not_finished", "the upload is not finished")
        await stream_object(self, record.key or "", record.length or 0, record.content_type, _filename(record))


def _filename(record: UploadRecord) -> str | None:
    return record.metadata.get("filename") or record.metadata.get("name")


def _finished_in_background(task: asyncio.Future) -> None:
    _background.discard(task)
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        log.warning("interrupted upload could not be saved: %s", exc)


def handlers() -> list[tuple[str, type, dict[str, Any]]]:
    """The tus routes."""
    return [
        (r"/files/?", TusHandler, {}),
        (r"/files/([^/]+)/?", TusHandler, {}),
    ]
