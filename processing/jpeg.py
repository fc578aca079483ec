"""JPEG segments: what a thumbnail keeps of the file's structure, and nothing that describes it.

`strip_metadata` is the last step of every thumbnail, whoever encoded it (Pillow or ffmpeg): it
drops every APPn segment (EXIF, XMP, ICC profiles, IPTC/Photoshop, Adobe, maker data) and every
comment, keeping only the segments a decoder needs (and a plain JFIF header without its own
embedded thumbnail).
"""

from __future__ import annotations

SOI = 0xD8
EOI = 0xD9
SOS = 0xDA
APP0 = 0xE0
APP15 = 0xEF
COM = 0xFE
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0-7: no length field


class NotJpeg(ValueError):
    """The bytes are not a well-formed JPEG."""


def segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment up to the end of image.

    `start` is the offset of the 0xFF that begins the marker; `end` the offset just past its
    payload (for a scan: past its entropy-coded data). Raises NotJpeg when the structure is broken.
    """
    if data[:2] != b"\xff\xd8":
        raise NotJpeg("no start of image")
    found: list[tuple[int, int, int]] = [(SOI, 0, 2)]
    pos = 2
    while pos < len(data):
        if data[pos] != 0xFF:
            raise NotJpeg(f"no marker at offset {pos}")
        start = pos
        while pos < len(data) and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= len(data):
            raise NotJpeg("truncated marker")
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE:
            found.append((marker, start, pos))
            continue
        if marker == EOI:
            found.append((marker, start, pos))
            return found
        if pos + 2 > len(data):
            raise NotJpeg("truncated segment length")
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2 or pos + length > len(data):
            raise NotJpeg(f"bad segment length at offset {start}")
        pos += length
        if marker == SOS:
            pos = _end_of_scan(data, pos)  # the entropy-coded data belongs to its scan
        found.append((marker, start, pos))
    raise NotJpeg("no end of image")


def _end_of_scan(data: bytes, pos: int) -> int:
    """The offset of the first marker after entropy-coded data starting at `pos` (or the end)."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        following = data[pos + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:  # a stuffed 0xFF, a restart marker
            pos += 2
        elif following == 0xFF:
            pos += 1
        else:
            return pos


def _plain_jfif(data: bytes, start: int, end: int) -> bool:
    """An APP0 JFIF header with no embedded thumbnail (16 bytes with its marker's length)."""
    payload = data[start:end]
    return payload[4:9] == b"JFIF\x00" and end - start == 18


def strip_metadata(data: bytes) -> bytes:
    """The JPEG `data` without APPn segments (but a plain JFIF header) and without comments.

    Raises NotJpeg when `data` is not a JPEG.
    """
    kept = []
    for marker, start, end in segments(data):
        if marker == COM or (APP0 <= marker <= APP15 and not (marker == APP0 and _plain_jfif(data, start, end))):
            continue
        kept.append(data[start:end])
    return b"".join(kept)
