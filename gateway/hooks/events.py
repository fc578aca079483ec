"""Event bodies and their signature.

Every event is one JSON object: `id` (the idempotency key, the same on every delivery
attempt), `type`, `time` (ISO 8601, UTC), `upload` {id, size, offset, metadata, key},
`user` {id, username} (null for anonymous uploads) and, for media events, `media`.
The signature header is `Mediaserver-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>" with HOOK_SECRET>`, computed anew for each attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from metadata.media import MediaItem
from metadata.uploads import UploadRecord

PRE_CREATE = "pre-create"
#: notification events, delivered through the outbox
NOTIFICATIONS = ("post-create", "post-receive", "post-finish", "post-terminate", "media-ready", "media-failed")
EVENTS = (PRE_CREATE, *NOTIFICATIONS)
SIGNATURE_HEADER = "Mediaserver-Signature"


def event_id(kind: str, subject: str, detail: str = "") -> str:
    """The id of the event `kind` about `subject`: the same whenever the same event is prepared again."""
    return "evt_" + hashlib.sha256(f"{kind}:{subject}:{detail}".encode()).hexdigest()[:32]


def new_event_id() -> str:
    """A fresh id, for events that are never stored (pre-create)."""
    return "evt_" + uuid.uuid4().hex


def iso_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


def upload_part(record: UploadRecord) -> dict[str, Any]:
    return {"id": record.id, "size": record.length, "offset": record.offset, "metadata": dict(record.metadata),
            "key": record.key}


def media_part(item: MediaItem) -> dict[str, Any]:
    return {"id": item.id, "status": item.status, "reason": item.reason, "category": item.category,
            "contentType": item.content_type, "size": item.size, "filename": item.filename, "sha256": item.sha256,
            "width": item.width, "height": item.height, "duration": item.duration}


def event_body(kind: str, identifier: str, upload: dict[str, Any], user_id: str | None, username: str | None,
               media: dict[str, Any] | None = None, now: float | None = None) -> str:
    """The JSON text of one event."""
    event: dict[str, Any] = {
        "id": identifier, "type": kind, "time": iso_time(time.time() if now is None else now),
        "upload": upload, "user": None if user_id is None else {"id": user_id, "username": username},
    }
    if media is not None:
        event["media"] = media
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The Mediaserver-Signature value of `body`, signed at `timestamp` (default: now)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify(secret: str, header: str, body: bytes, tolerance: float = 300, now: float | None = None) -> bool:
    """Whether `header` is a valid signature of `body` made within `tolerance` seconds of `now`."""
    fields: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        fields.setdefault(name, []).append(value)
    try:
        t = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, given) for given in fields.get("v1", []))
