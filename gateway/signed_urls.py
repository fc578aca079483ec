"""URLs the gateway signs itself, for stores without presigned URLs (the local store).

A URL names a media item, which file of it (original or thumbnail) and an expiry,
and carries an HMAC-SHA256 of those under a key derived from the JWT secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import urlencode


SIGNATURE_LENGTH = 43  # unpadded URL-safe base64 of an HMAC-SHA256


class UrlSigner:
    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), b"mediaserver signed media urls", hashlib.sha256).digest()

    def _signature(self, media_id: str, kind: str, expires: int) -> str:
        mac = hmac.new(self._key, f"{media_id}:{kind}:{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def sign(self, base_url: str, media_id: str, kind: str, ttl: int, now: float | None = None) -> str:
        """An absolute URL for GET /media/<id>/<kind>, valid for `ttl` seconds."""
        expires = int((time.time() if now is None else now) + ttl)
        query = urlencode({"expires": expires, "signature": self._signature(media_id, kind, expires)})
        return f"{base_url}/media/{media_id}/{kind}?{query}"

    def verify(self, media_id: str, kind: str, expires: str | None, signature: str | None, now: float | None = None) -> bool:
        """Whether the signature matches and the URL has not expired; False for any text a
        client may send (non-ASCII, huge numbers, anything not made by `sign`)."""
        if not expires or not signature or not (expires.isascii() and expires.isdigit() and len(expires) < 16):
            return False
        if len(signature) > SIGNATURE_LENGTH or not signature.isascii():
            return False  # compare_digest refuses non-ASCII text: never hand it any
        if int(expires) < (time.time() if now is None else now):
            return False
        expected = self._signature(media_id, kind, int(expires)).encode("ascii")
        return hmac.compare_digest(expected, signature.encode("ascii"))
