"""The tus 1.0 endpoint (`/files/`): OPTIONS, POST, HEAD, PATCH, DELETE and GET downloads.

Request bodies are streamed (`@stream_request_body`): a PATCH body goes chunk by
chunk into an `UploadSession`, which waits when the store is slower than the
client, so Tornado stops reading the socket. Status codes follow the tus 1.0
specification; errors are answered through the gateway's one error table.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import tornado.web

from gateway.base import REJECT_DRAIN_LIMIT, BaseHandler
from gateway.downloads import stream_object
from gateway.errors import ApiError, answer_for
from gateway.tus.checksum import ALGORITHMS, Hasher, parse_checksum
from gateway.tus.headers import (
    OFFSET_OCTET_STREAM,
    TUS_RESUMABLE,
    TUS_VERSIONS,
    HeaderError,
    encode_metadata,
    extensions,
    http_date,
    parse_concat_final,
    parse_metadata,
    parse_size,
)
from metadata.uploads import COMPLETE, UploadRecord
from streaming.errors import (
    InvalidLength,
    MemoryBusy,
    OffsetMismatch,
    SizeExceeded,
    TypeNotAllowed,
    UploadError,
    UploadNotFound,
    UploadNotWritable,
)
from streaming.session import UploadSession

log = logging.getLogger("mediaserver.tus")

_background: set[asyncio.Future] = set()
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


def _is_offset_stream(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == OFFSET_OCTET_STREAM


@tornado.web.stream_request_body
class TusHandler(BaseHandler):
    """One handler for the collection (`/files/`) and each upload (`/files/<id>`)."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS")
    rate_limit = None

    _session: UploadSession | None = None
    _rejection: Exception | None = None
    _answered = False
    _discarded = 0
    _hasher: Hasher | None = None
    _expected_digest = b""
    _eager = False

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
        if method == "PATCH":
            if upload_id is None:
                raise ApiError(405, "method_not_allowed", "PATCH needs an upload URL")
            await self._open_patch(upload_id)
        elif method == "POST":
            if upload_id is not None:
                raise ApiError(405, "method_not_allowed", "POST goes to the collection URL")
            await self._open_creation()

    def _checksum(self) -> tuple[str, bytes] | None:
        """The body's expected checksum from the `Upload-Checksum` header, or None.

        A checksum announced as a trailer (`Trailer: Upload-Checksum`) is refused with 400
        before any byte is read: the HTTP server cannot read trailers, and bytes it could
        not verify must not be committed as if they were checked. A digest of the wrong
        length for its algorithm can match no body: 460 at once, nothing read or committed.
        """
        trailers = {name.strip().lower() for name in self.request.headers.get("Trailer", "").split(",")}
        if "upload-checksum" in trailers:
            raise ApiError(400, "checksum_trailer_unsupported",
                           "Upload-Checksum in a trailer is not supported; send it as a request header")
        try:
            checksum = parse_checksum(self.request.headers.get("Upload-Checksum"))
        except HeaderError as exc:
            raise ApiError(400, "invalid_checksum", str(exc)) from None
        if checksum is not None and len(checksum[1]) != len(ALGORITHMS[checksum[0]]().digest()):
            raise ApiError(460, "checksum_mismatch", "the Upload-Checksum digest has the wrong length for its algorithm")
        return checksum

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
        if not _is_offset_stream(self.request.headers.get("Content-Type")):
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
        if record.concat == "final":
            raise UploadNotWritable("a final concatenated upload takes no data")
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
        await self._open_session(upload_id, offset, length, self._checksum(), body_length)

    async def _open_creation(self) -> None:
        headers = self.request.headers
        limit = self.services.settings.max_upload_metadata
        if len(headers.get("Upload-Metadata") or "") > limit:
            raise ApiError(400, "metadata_too_large", f"Upload-Metadata is limited to {limit} bytes")
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
        with_body = _is_offset_stream(headers.get("Content-Type"))
        if not with_body and (body_length or self._expects_body()):
            raise ApiError(415, "unsupported_media_type",
                           f"a body sent with the creation request must be {OFFSET_OCTET_STREAM}")
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
            await self._open_session(record.id, 0, None, checksum, self._content_length())

    async def _open_session(self, upload_id: str, offset: int, length: int | None,
                            checksum: tuple[str, bytes] | None, body_length: int | None) -> None:
        if checksum is not None:
            self._hasher = ALGORITHMS[checksum[0]]()
            self._expected_digest = checksum[1]
        # commit part by part only when the body cannot be rejected as a whole later
        eager = self._eager = checksum is None and body_length is not None
        session = self._session = await self.services.uploads.open_session(upload_id, offset, length=length, eager=eager)
        remaining = (session.record.length if session.record.length is not None else self.services.settings.tus_max_size) - offset
        # a chunked body may run past the upload: read a little more, so the writer answers 413 JSON
        self.request.connection.set_max_body_size(max(remaining, 0) + REJECT_DRAIN_LIMIT)  # type: ignore[attr-defined]

    # -- body -------------------------------------------------------------------------

    async def data_received(self, chunk: bytes) -> None:
        self.touch(len(chunk))
        if self._session is None or self._rejection is not None:
            self._discarded += len(chunk)
            return
        try:
            with self.holding_body():
                await self._hold_to_cpu_share()
                await self._session.write(chunk)
            if self._hasher is not None:
                self._hasher.update(chunk)
        except UploadError as exc:
            await self._refused_mid_body(exc)

    async def body_buffer(self, limit: int) -> memoryview | None:
        """Where the next body bytes may be received in place (see gateway.in_place_body)."""
        if self._session is None or self._rejection is not None:
            return None
        try:
            with self.holding_body():
                await self._hold_to_cpu_share()
                return await self._session.receive_buffer(limit)
        except UploadError as exc:
            await self._refused_mid_body(exc)
            return None

    async def body_received(self, view: memoryview, count: int) -> None:
        """`count` body bytes arrived at the start of `view` (from body_buffer)."""
        self.touch(count)
        assert self._session is not None
        try:
            if self._hasher is not None:
                self._hasher.update(view[:count])
            with self.holding_body():
                await self._session.take_received(count)
        except UploadError as exc:
            await self._refused_mid_body(exc)

    async def _hold_to_cpu_share(self) -> None:
        """Wait as INGEST_CPU_LIMIT asks, this body counted among its upload owner's (each user's
        bodies together get a fair share of the ceiling)."""
        assert self._session is not None
        await self.services.cpu_governor.pace(self._session.record.owner or "", id(self))

    def on_connection_close(self) -> None:
        """The client went away mid-body: keep what arrived, give the lease back."""
        super().on_connection_close()
        session = self._session
        if session is not None and not self._answered:
            engine = self.services.uploads
            ending = engine.finish(session) if self._keeps_what_arrived() else engine.abort(session)
            task = asyncio.ensure_future(ending)
            _background.add(task)
            task.add_done_callback(_finished_in_background)

    async def _finish_session(self) -> UploadRecord:
        session = self._session
        assert session is not None
        engine = self.services.uploads
        if self._rejection is not None:
            if self._keeps_what_arrived():
                await engine.finish(session)  # a refusal that is not the bytes' fault: keep them
            else:
                await engine.abort(session)
                await self._discard_if_refused(self._rejection, session)
            raise self._rejection
        if self._hasher is not None and self._hasher.digest() != self._expected_digest:
            await engine.abort(session)
            raise ApiError(460, "checksum_mismatch", "the body does not match Upload-Checksum")
        try:
            return await engine.finish(session)
        except UploadError as exc:
            await self._discard_if_refused(exc, session)
            raise

    async def _refused_mid_body(self, exc: UploadError) -> None:
        """Note why the body is refused. Lack of memory is answered at once (503, the connection
        closed, what was durable kept): reading on would only hold the connection; other refusals
        are answered once the body is read, keeping the connection."""
        self._rejection = exc
        if isinstance(exc, MemoryBusy) and self._session is not None and not self._answered:
            self._answered = True
            engine = self.services.uploads
            await (engine.finish(self._session) if self._keeps_what_arrived() else engine.abort(self._session))
            answer = answer_for(exc)
            assert answer is not None
            self.answer_now(answer)

    def _keeps_what_arrived(self) -> bool:
        """Whether the bytes received so far may be committed: the body is committed part by part
        (no checksum to verify first, a known length) and nothing was wrong with the bytes (no
        refusal, or only one for lack of memory on our side)."""
        return self._eager and (self._rejection is None or isinstance(self._rejection, MemoryBusy))

    async def _discard_if_refused(self, exc: Exception, session: UploadSession) -> None:
        """A file of a refused type leaves nothing behind."""
        if isinstance(exc, TypeNotAllowed):
            try:
                await self.services.uploads.terminate(session.record.id)
            except UploadError:
                log.warning("could not discard a refused upload", extra={"upload_id": session.record.id})

    # -- methods ----------------------------------------------------------------------

    def options(self, upload_id: str | None = None) -> None:
        if self.is_preflight:
            self.answer_preflight()
            return
        self.set_header("Tus-Version", ",".join(TUS_VERSIONS))
        self.set_header("Tus-Max-Size", str(self.services.settings.tus_max_size))
        self.set_header("Tus-Extension", ",".join(extensions(
            concatenation=self.services.uploads.concatenates,
            expiration=self.services.settings.upload_expiration > 0)))
        self.set_header("Tus-Checksum-Algorithm", ",".join(ALGORITHMS))
        self.set_status(204)

    async def post(self, upload_id: str | None = None) -> None:
        record: UploadRecord = self._created
        if self._session is not None:
            try:
                record = await self._finish_session()
            except Exception as exc:  # noqa: BLE001 - answered through the error table, with Location
                answer = answer_for(exc)
                if answer is None:
                    raise
                if answer.status_code != 415:  # a refused type is gone; anything else can be resumed
                    answer.headers["Location"] = self._upload_url(record.id)
                raise answer from None
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
        record = await self._visible(upload_id)
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
        record = await self._finish_session()
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
        await self._visible(upload_id)
        await self.services.uploads.terminate(upload_id)
        log.info("upload terminated", extra={"upload_id": upload_id})
        self.set_status(204)

    async def get(self, upload_id: str | None = None) -> None:
        if upload_id is None:
            raise ApiError(405, "method_not_allowed", "GET needs an upload URL")
        self.clear_header("Tus-Resumable")
        record = await self._visible(upload_id)
        if record.status != COMPLETE:
            raise ApiError(404, "upload_not_finished", "the upload is not finished")
        await stream_object(self, record.key or "", record.length or 0, record.content_type, record.filename)


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
