"""Answering GET/HEAD for a stored object: ranges, headers, chunked reads from the store."""

from __future__ import annotations

import socket

import tornado.iostream

from gateway.base import BaseHandler
from gateway.ranges import content_disposition, parse_range, safe_filename
from streaming.stores.base import StoreError


def derived_filename(original: str | None, kind: str, extension: str, fallback_stem: str) -> str:
    """The download name of a file made from another: "<original stem>-<kind>.<extension>".

    "holiday.heic" gives "holiday-thumbnail.jpg"; without an original name, `fallback_stem` is the stem.
    """
    name = safe_filename(original, fallback="")
    stem = name.rsplit(".", 1)[0] if "." in name.strip(".") else name
    stem = stem.strip(" .") or fallback_stem
    return f"{stem[:180]}-{kind}.{extension}"


def limit_send_buffer(handler: BaseHandler, size: int = 32 * 1024) -> None:
    """Keep little unread data queued for this client, so a reader that stops early
    (a video probe seeking through a file) makes the gateway read little from the store."""
    stream = getattr(handler.request.connection, "stream", None)
    sock = getattr(stream, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


async def stream_object(
    handler: BaseHandler, key: str, size: int, content_type: str | None, filename: str | None,
    chunk_size: int | None = None,
) -> None:
    """Answer GET/HEAD for an object with Range support, reading it chunk by chunk.

    Before the first byte is sent, failures propagate (the error table answers them:
    416 for a range outside the object, 404 for a missing object, 503 when the store
    fails); after it, the response is cut short.
    """
    handler.set_header("Accept-Ranges", "bytes")
    handler.set_header("Content-Type", content_type or "application/octet-stream")
    handler.set_header("Content-Disposition", content_disposition(filename))
    handler.set_header("Cache-Control", "private, max-age=0")
    byte_range = parse_range(handler.request.headers.get("Range"), size)
    start, end = (0, size) if byte_range is None else byte_range
    if byte_range is not None:
        handler.set_status(206)
        handler.set_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
    handler.set_header("Content-Length", str(end - start))
    if handler.request.method == "HEAD" or end == start:
        return
    chunk_size = chunk_size or handler.services.settings.download_chunk_size
    read_bytes = handler.services.metrics.store_read_bytes
    sent = False
    try:
        async for chunk in handler.services.store.read_range(key, start, end, chunk_size):
            read_bytes.inc(len(chunk))
            handler.write(chunk)
            sent = True
            await handler.flush()
    except tornado.iostream.StreamClosedError:
        return
    except StoreError:
        if not sent:
            raise
        # the status line is gone: all that is left is to cut the response short
        handler.request.connection.stream.close()  # type: ignore[attr-defined]


