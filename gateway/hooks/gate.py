"""pre-create: HOOK_URL decides whether an upload may be created, before anything is stored.

The receiver gets the signed `pre-create` event and answers within HOOK_TIMEOUT:
200 with `{"reject": {"status": 4xx, "message": "..."}}` refuses the upload with that
status and message; 200 with `{"metadata": {...}}` replaces its metadata (checked like
an Upload-Metadata header); any other 2xx lets it through. No answer in time, another
status, or an answer that cannot be used follows HOOK_PRE_CREATE_DEFAULT.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Awaitable, Callable

from gateway.errors import ApiError
from gateway.hooks.events import PRE_CREATE, event_body, new_event_id, upload_part
from gateway.hooks.sinks import http_client, signed_request
from gateway.tus.headers import MAX_METADATA_PAIRS, HeaderError, encode_metadata, parse_metadata
from metadata.uploads import UploadRecord

log = logging.getLogger("mediaserver.hooks")

MESSAGE_LIMIT = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UnusableAnswer(Exception):
    """The hook's answer is not one the gateway can follow."""


def rejection(answer: Any) -> ApiError:
    """The client's answer for a hook's `reject` object: its 4xx status (else 403) and message."""
    if not isinstance(answer, dict):
        answer = {}
    status = answer.get("status")
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 499:
        status = 403
    message = answer.get("message")
    message = _CONTROL.sub(" ", message).strip()[:MESSAGE_LIMIT] if isinstance(message, str) else ""
    return ApiError(status, "upload_rejected", message or "the upload was refused")


def replacement_metadata(value: Any, max_bytes: int) -> dict[str, str | None]:
    """`value` as upload metadata, held to the rules of an Upload-Metadata header; UnusableAnswer otherwise."""
    if not isinstance(value, dict) or len(value) > MAX_METADATA_PAIRS:
        raise UnusableAnswer(f"metadata must be an object of at most {MAX_METADATA_PAIRS} keys")
    if not all(isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in value.items()):
        raise UnusableAnswer("metadata keys and values must be strings (or null values)")
    try:
        header = encode_metadata(value)
        if len(header) > max_bytes or parse_metadata(header) != value:
            raise UnusableAnswer(f"metadata must encode to at most {max_bytes} bytes of Upload-Metadata")
    except (HeaderError, UnicodeEncodeError):
        raise UnusableAnswer("metadata keys must be free of spaces and commas") from None
    return value


class HttpCreationGate:
    """The engine's CreationGate, asking HOOK_URL."""

    def __init__(self, url: str, secret: str, timeout: float, *, reject_by_default: bool, max_metadata: int,
                 usernames: Callable[[str | None], Awaitable[str | None]], observe: Callable[[str], None],
                 max_clients: int = 16) -> None:
        self._url = url
        self._secret = secret
        self._timeout = timeout
        self._reject_by_default = reject_by_default
        self._max_metadata = max_metadata
        self._usernames = usernames
        self._observe = observe
        self._client = http_client(max_clients)

    async def admit(self, proposed: UploadRecord) -> dict[str, str | None] | None:
        identifier = new_event_id()
        body = event_body(PRE_CREATE, identifier, upload_part(proposed), proposed.owner,
                          await self._usernames(proposed.owner)).encode()
        request = signed_request(self._url, self._secret, identifier, PRE_CREATE, body, self._timeout)
        try:
            response = await self._client.fetch(request, raise_error=False)
            if not 200 <= response.code < 300:
                raise UnusableAnswer(f"HTTP {response.code}")
            answer = _json(response.body or b"")
            if isinstance(answer, dict) and "reject" in answer:
                self._observe("rejected")
                raise rejection(answer["reject"])
            if isinstance(answer, dict) and "metadata" in answer:
                metadata = replacement_metadata(answer["metadata"], self._max_metadata)
                self._observe("replaced")
                return metadata
        except ApiError:
            raise
        except Exception as exc:  # noqa: BLE001 - no usable answer: the configured default decides
            return self._default(exc)
        self._observe("allowed")
        return None

    def _default(self, exc: Exception) -> None:
        log.warning("pre-create hook gave no usable answer", extra={"error": f"{type(exc).__name__}: {exc}"[:200],
                                                                   "reject": self._reject_by_default})
        if self._reject_by_default:
            self._observe("default_rejected")
            raise ApiError(503, "upload_hook_unavailable", "the upload could not be checked; retry later",
                           {"Retry-After": "5"})
        self._observe("default_allowed")
        return None

    def close(self) -> None:
        self._client.close()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None
