"""Media type detection from the first bytes of a file (magic numbers).

The client's Content-Type and file name are never trusted for the type; the
file name only suggests an extension for files of no known media type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SNIFF_BYTES = 4096

IMAGES = "images"
VIDEOS = "videos"
FILES = "files"


@dataclass(frozen=True)
class DetectedType:
    """What the bytes are: a category (images/videos/files), an extension and a MIME type."""

    category: str
    extension: str
    mime: str


_FTYP_BRANDS: dict[bytes, tuple[str, str, str]] = {
    b"heic": (IMAGES, "heic", "image/heic"),
    b"heix": (IMAGES, "heic", "image/heic"),
    b"heim": (IMAGES, "heic", "image/heic"),
    b"heis": (IMAGES, "heic", "image/heic"),
    b"mif1": (IMAGES, "heif", "image/heif"),
    b"msf1": (IMAGES, "heif", "image/heif"),
    b"avif": (IMAGES, "avif", "image/avif"),
    b"avis": (IMAGES, "avif", "image/avif"),
    b"qt  ": (VIDEOS, "mov", "video/quicktime"),
    b"M4V ": (VIDEOS, "m4v", "video/x-m4v"),
    b"M4VH": (VIDEOS, "m4v", "video/x-m4v"),
    b"M4A ": (FILES, "m4a", "audio/mp4"),
    b"3gp4": (VIDEOS, "3gp", "video/3gpp"),
    b"3gp5": (VIDEOS, "3gp", "video/3gpp"),
    b"3g2a": (VIDEOS, "3g2", "video/3gpp2"),
}

_SAFE_EXTENSION = re.compile(r"^[a-z0-9]{1,8}$")
# Extensions that claim a media type: never given to bytes that are not that type.
_MEDIA_EXTENSIONS = {
    "jpg", "jpeg", "png", "gif", "webp", "tif", "tiff", "bmp", "heic", "heif", "avif", "svg",
    "mp4", "m4v", "mov", "webm", "mkv", "avi", "flv", "ts", "mpg", "mpeg", "3gp", "3g2",
}


def _ebml_doctype(head: bytes) -> bytes | None:
    marker = head.find(b"\x42\x82")
    if marker < 0:
        return None
    size_byte = head[marker + 2 : marker + 3]
    if not size_byte:
        return None
    length = size_byte[0] & 0x7F if size_byte[0] & 0x80 else 0
    return head[marker + 3 : marker + 3 + length] if length else None


def _is_mpeg_ts(head: bytes) -> bool:
    return len(head) >= 188 * 3 and all(head[i] == 0x47 for i in (0, 188, 376))


def detect(head: bytes, filename: str | None = None) -> DetectedType:
    """The type of a file whose first bytes are `head` (at least SNIFF_BYTES when the file has them)."""
    if head.startswith(b"\xff\xd8\xff"):
        return DetectedType(IMAGES, "jpg", "image/jpeg")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return DetectedType(IMAGES, "png", "image/png")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return DetectedType(IMAGES, "gif", "image/gif")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return DetectedType(IMAGES, "webp", "image/webp")
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return DetectedType(VIDEOS, "avi", "video/x-msvideo")
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return DetectedType(IMAGES, "tiff", "image/tiff")
    if head[:2] == b"BM" and len(head) >= 26 and head[6:10] == b"\x00\x00\x00\x00":
        return DetectedType(IMAGES, "bmp", "image/bmp")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _FTYP_BRANDS:
            return DetectedType(*_FTYP_BRANDS[brand])
        return DetectedType(VIDEOS, "mp4", "video/mp4")
    if head[:4] == b"\x1a\x45\xdf\xa3":
        doctype = _ebml_doctype(head[:64])
        if doctype == b"webm":
            return DetectedType(VIDEOS, "webm", "video/webm")
        return DetectedType(VIDEOS, "mkv", "video/x-matroska")
    if head[:3] == b"FLV":
        return DetectedType(VIDEOS, "flv", "video/x-flv")
    if head[:4] == b"\x00\x00\x01\xba":
        return DetectedType(VIDEOS, "mpg", "video/mpeg")
    if _is_mpeg_ts(head):
        return DetectedType(VIDEOS, "ts", "video/mp2t")
    if head[:4] == b"OggS":
        return DetectedType(FILES, "ogg", "application/ogg")
    if head[:5] == b"%PDF-":
        return DetectedType(FILES, "pdf", "application/pdf")
    if head[:4] == b"PK\x03\x04":
        return DetectedType(FILES, "zip", "application/zip")
    return DetectedType(FILES, _extension_from_name(filename), "application/octet-stream")


def _extension_from_name(filename: str | None) -> str:
    if filename and "." in filename:
        candidate = filename.rsplit(".", 1)[1].lower()
        if _SAFE_EXTENSION.match(candidate) and candidate not in _MEDIA_EXTENSIONS:
            return candidate
    return "bin"


def object_key(upload_id: str, detected: DetectedType) -> str:
    """Where a finished file lives: media/<category>/<id>.<ext>."""
    return f"media/{detected.category}/{upload_id}.{detected.extension}"
