"""The one table from errors to HTTP answers, for tus, REST and downloads alike.

Handlers raise `ApiError` for what they refuse themselves and let the domain
errors of the layers below (upload engine, stores, metadata, accounts, media)
propagate; `answer_for` turns those into the status, machine code, message and
headers the client gets. Every error body is `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

from typing import Callable

import tornado.web

from auth.oidc import KeysUnavailable
from auth.revocation import TokenRevoked
from auth.tokens import InvalidToken, TokenExpired
from gateway.ranges import RangeNotSatisfiable
from metadata.errors import MetadataError, MetadataUnavailable
from metadata.media import MediaConflict
from metadata.users import UserExists
from streaming.errors import (
    ConcatenationError,
    InvalidLength,
    LeaseLost,
    MemoryBusy,
    TooManyUploads,
    MetadataFailure,
    OffsetMismatch,
    SizeExceeded,
    StorageFailure,
    TypeNotAllowed,
    UploadGone,
    UploadLocked,
    UploadNotFound,
    UploadNotWritable,
)
from streaming.stores.base import ObjectNotFound, StoreError

RETRY_SOON = {"Retry-After": "5"}


class ApiError(tornado.web.HTTPError):
    """An error answered to the client as JSON: status, machine code, human message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, log_message=message, reason="Checksum Mismatch" if status == 460 else None)
        self.code = code
        self.message = message
        self.headers = headers or {}


Headers = Callable[[BaseException], dict[str, str]]


def _none(exc: BaseException) -> dict[str, str]:
    return {}


def _retry_soon(exc: BaseException) -> dict[str, str]:
    return dict(RETRY_SOON)


#: (error type, status, code, message for the client or None for str(exc), headers); first match wins
TABLE: list[tuple[type[BaseException], int, str, str | None, Headers]] = [
    # uploads
    (UploadNotFound, 404, "upload_not_found", None, _none),
    (UploadGone, 410, "upload_gone", None, _none),
    (OffsetMismatch, 409, "mismatched_offset", None,
     lambda exc: {"Upload-Offset": str(exc.expected)}),  # type: ignore[attr-defined]
    (SizeExceeded, 413, "max_size_exceeded", None, _none),
    (InvalidLength, 400, "invalid_length", None, _none),
    (UploadNotWritable, 403, "upload_not_writable", None, _none),
    (ConcatenationError, 400, "invalid_concat", None, _none),
    (LeaseLost, 409, "lease_lost", None, _none),
    (UploadLocked, 423, "upload_locked", "the upload is being written by another request; retry shortly",
     lambda exc: {"Retry-After": "1"}),
    (TypeNotAllowed, 415, "type_not_allowed", None, _none),
    (StorageFailure, 503, "storage_unavailable", None, _retry_soon),
    (MemoryBusy, 503, "server_busy", None, _retry_soon),
    (TooManyUploads, 429, "too_many_uploads", None, lambda exc: {"Retry-After": "60"}),
    (MetadataFailure, 503, "metadata_unavailable", "the metadata store is unavailable; retry later", _retry_soon),
    # stores, read directly by downloads and media routes
    (ObjectNotFound, 404, "not_found", "the stored object is missing", _none),
    (StoreError, 503, "storage_unavailable", "the object store failed; retry later", _retry_soon),
    # metadata, read directly by the REST routes
    (MetadataUnavailable, 503, "metadata_unavailable", "the metadata store is unavailable; retry later", _retry_soon),
    (MetadataError, 503, "metadata_error", "the metadata store failed; retry later", _retry_soon),
    # accounts and media
    (UserExists, 409, "user_exists", "that username or email is already registered", _none),
    # refused bearer tokens (a missing one: `token_missing`); the subclasses come first
    (TokenRevoked, 401, "token_revoked", None,
     lambda exc: bearer_challenge("invalid_token", "the token has been revoked")),
    (TokenExpired, 401, "token_expired", "the token has expired; sign in again",
     lambda exc: bearer_challenge("invalid_token", "the token has expired")),
    (InvalidToken, 401, "token_invalid", None,
     lambda exc: bearer_challenge("invalid_token", "the token is not valid")),
    (KeysUnavailable, 503, "identity_provider_unavailable",
     "the identity provider's keys could not be fetched; retry later", _retry_soon),
    (MediaConflict, 409, "conflict", "the media item changed meanwhile; retry", _none),
    # downloads
    (RangeNotSatisfiable, 416, "range_not_satisfiable", "the requested range is outside the file",
     lambda exc: {"Content-Range": f"bytes */{exc.size}"}),  # type: ignore[attr-defined]
]


REALM = "mediaserver"


def bearer_challenge(error: str | None = None, description: str | None = None) -> dict[str, str]:
    """The `WWW-Authenticate` header of a 401 (RFC 6750 section 3): the bare challenge when no
    token came, with `error` and `error_description` when one was refused."""
    value = f'Bearer realm="{REALM}"'
    if error:
        value += f', error="{error}"'
    if description:
        value += f', error_description="{description}"'
    return {"WWW-Authenticate": value}


def token_missing() -> ApiError:
    """The 401 for a request that needs a bearer token and presents none."""
    return ApiError(401, "token_missing", "a bearer token is required (Authorization: Bearer <token>); sign in to get one",
                    bearer_challenge())


def credentials_invalid() -> ApiError:
    """The 401 for a sign-in with an unknown user name or a wrong password (never says which)."""
    return ApiError(401, "credentials_invalid", "wrong username or password", bearer_challenge())


def answer_for(exc: BaseException) -> ApiError | None:
    """The client's answer to `exc`: itself if it is an ApiError, its table row's answer if
    it has one, None for anything else (an internal error)."""
    if isinstance(exc, ApiError):
        return exc
    for kind, status, code, message, headers in TABLE:
        if isinstance(exc, kind):
            return ApiError(status, code, message or str(exc) or code.replace("_", " "), headers(exc))
    return None
