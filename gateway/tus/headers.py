"""tus 1.0 header grammar: versions, extensions, metadata, numbers, dates. No I/O."""

from __future__ import annotations

import base64
import binascii
import email.utils
import re

TUS_RESUMABLE = "1.0.0"
TUS_VERSIONS = ("1.0.0",)
OFFSET_OCTET_STREAM = "application/offset+octet-stream"
MAX_METADATA_PAIRS = 64

_DIGITS = re.compile(r"^[0-9]{1,19}$")
_KEY = re.compile(r"^[^\s,]+$")
_MAX_INT = 2**63 - 1


class HeaderError(ValueError):
    """A tus header is malformed; the message says which and why."""


def parse_size(value: str | None, name: str) -> int | None:
    """A non-negative decimal integer header, None when absent. Raises HeaderError."""
    if value is None:
        return None
    value = value.strip()
    if not _DIGITS.match(value) or int(value) > _MAX_INT:
        raise HeaderError(f"{name} must be a non-negative integer")
    return int(value)


def parse_metadata(header: str | None) -> dict[str, str | None]:
    """Decode Upload-Metadata ("key base64,key2,key3 base64") into a dict.

    Keys must be unique and free of spaces and commas; values must be strict base64
    of UTF-8 text. Raises HeaderError on anything else.
    """
    result: dict[str, str | None] = {}
    if header is None or not header.strip():
        return result
    pairs = header.split(",")
    if len(pairs) > MAX_METADATA_PAIRS:
        raise HeaderError(f"Upload-Metadata has more than {MAX_METADATA_PAIRS} pairs")
    for pair in pairs:
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not parts[0] or not _KEY.match(parts[0]):
            raise HeaderError("Upload-Metadata must be comma-separated 'key base64value' pairs")
        key = parts[0]
        if key in result:
            raise HeaderError(f"Upload-Metadata repeats the key {key!r}")
        if len(parts) == 1 or parts[1] == "":
            result[key] = None
            continue
        try:
            value = base64.b64decode(parts[1], validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise HeaderError(f"Upload-Metadata value of {key!r} is not base64 of UTF-8 text") from None
        result[key] = value
    return result


def encode_metadata(metadata: dict[str, str | None]) -> str:
    """The Upload-Metadata header for `metadata`."""
    items = []
    for key, value in metadata.items():
        if value is None:
            items.append(key)
        else:
            items.append(f"{key} {base64.b64encode(value.encode('utf-8')).decode('ascii')}")
    return ",".join(items)


def parse_concat_final(header: str) -> list[str]:
    """The upload ids named by `Upload-Concat: final;<url> <url> ...` (absolute URLs or paths)."""
    _, _, urls = header.partition(";")
    ids = []
    for url in urls.split():
        path = url.split("?", 1)[0].rstrip("/")
        upload_id = path.rsplit("/", 1)[-1]
        if "/files/" not in f"/{path.split('://', 1)[-1].split('/', 1)[-1]}" or not re.match(r"^[0-9a-f]{32}$", upload_id):
            raise HeaderError(f"Upload-Concat names an invalid upload URL: {url[:100]}")
        ids.append(upload_id)
    if not ids:
        raise HeaderError("Upload-Concat: final needs the partial upload URLs")
    return ids


def extensions(*, concatenation: bool, expiration: bool) -> list[str]:
    """The tus extensions to advertise in Tus-Extension, given what the configured store and
    settings actually do (concatenation needs a store that copies parts; expiration, an
    expiry time)."""
    names = ["creation", "creation-with-upload", "creation-defer-length", "termination"]
    if expiration:
        names.append("expiration")
    names.append("checksum")
    if concatenation:
        names.append("concatenation")
    return names


def http_date(timestamp: float) -> str:
    """An RFC 9110 HTTP-date, as Upload-Expires wants."""
    return email.utils.formatdate(timestamp, usegmt=True)
