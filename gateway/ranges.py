"""HTTP byte ranges and download names: the pure parts of ranged reads."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$", re.IGNORECASE)
_HUGE = 1 << 64  # stands for any position past every object: numbers of any length compare, never convert


def _position(digits: str) -> int:
    """The value of a Range number of any length (past 19 significant digits: _HUGE)."""
    significant = digits.lstrip("0") or "0"
    return int(significant) if len(significant) <= 19 else _HUGE


class RangeNotSatisfiable(ValueError):
    """The range lies outside the object of `size` bytes."""

    def __init__(self, header: str, size: int) -> None:
        super().__init__(header)
        self.size = size


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (start, end-exclusive) of a single `Range: bytes=...` header, or None for the whole object.

    Multiple ranges and malformed headers are ignored (whole object), as RFC 9110 allows.
    Raises RangeNotSatisfiable when the range starts past the end.
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return None
    if size == 0:
        raise RangeNotSatisfiable(header, size)
    first, last = match.group(1), match.group(2)
    if not first:
        suffix = _position(last)
        if suffix == 0:
            raise RangeNotSatisfiable(header, size)
        return max(size - suffix, 0), size
    start = _position(first)
    end = size if not last else min(_position(last) + 1, size)
    if last and _position(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(header, size)
    return start, end


def safe_filename(name: str | None, fallback: str = "download") -> str:
    """A file name with no path, control characters or quotes."""
    if not name:
        return fallback
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C" and ch not in '"')
    name = name.strip(" .")
    return name[:200] or fallback


def content_disposition(filename: str | None, disposition: str = "inline") -> str:
    """A Content-Disposition header value safe for any file name (RFC 6266 + RFC 8187)."""
    name = safe_filename(filename)
    ascii_name = name.encode("ascii", "replace").decode("ascii").replace("?", "_")
    return f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
