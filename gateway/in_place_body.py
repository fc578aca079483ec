"""Request bodies received straight into a handler's own buffer.

Tornado hands a streamed body to `data_received` as `bytes`: the socket is read into
a fresh buffer, appended to the stream's read buffer and copied out again, and the
handler copies it once more into its part buffer. For upload bodies that is four
passes over every byte. A handler that defines

    async body_buffer(limit: int) -> memoryview | None
    async body_received(view: memoryview, count: int) -> None

gets the bytes of a `Content-Length` body read from the socket directly into the view
`body_buffer` returns (`count` bytes at its start), one pass. When `body_buffer` says
None (no room: the body runs past what the handler accepts), when the response was
already sent, or for chunked bodies, the rest of the body takes Tornado's own path
through `data_received`, so refusals behave exactly as before.

`install()` wraps `HTTP1Connection._read_fixed_body`, the one place Tornado reads a
fixed-length body; every other handler is untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from tornado import http1connection
from tornado.log import app_log

# A body whose bytes keep arriving never waits on the socket, so it yields to the event loop
# itself: after this many seconds of reading and hashing, so that a HEAD or a new request waits
# for at most that much of each busy body's work (on a CPU-quota'd task, wall time also jumps
# when the quota stalls the process, and the next read yields).
_YIELD_AFTER = 0.002


class InPlaceReceiver(Protocol):
    async def body_buffer(self, limit: int) -> memoryview | None: ...

    async def body_received(self, view: memoryview, count: int) -> None: ...


def _receiver(delegate: Any) -> InPlaceReceiver | None:
    """The request handler behind Tornado's delegates, if it receives bodies in place."""
    for _ in range(4):
        if delegate is None:
            return None
        handler = getattr(delegate, "handler", None)
        if handler is not None and getattr(delegate, "stream_request_body", False):
            return handler if hasattr(handler, "body_buffer") and hasattr(handler, "body_received") else None
        delegate = getattr(delegate, "delegate", None)
    return None


def install() -> None:
    """Make fixed-length request bodies go straight into in-place receivers (idempotent)."""
    connection = http1connection.HTTP1Connection
    original = getattr(connection, "_read_fixed_body", None)
    if original is None or not asyncio.iscoroutinefunction(original):
        # a Tornado whose body reading differs: keep its own path (every body through data_received)
        app_log.warning("in-place request bodies are off: this Tornado reads bodies differently")
        return
    if getattr(original, "in_place", False):
        return

    async def _read_fixed_body(self: Any, content_length: int, delegate: Any) -> None:
        receiver = _receiver(delegate)
        if receiver is None:
            return await original(self, content_length, delegate)
        loop = asyncio.get_running_loop()
        last_yield = loop.time()
        while content_length > 0:
            view = None if self._write_finished else await receiver.body_buffer(content_length)
            if view is None:
                return await original(self, content_length, delegate)
            try:
                count = await self.stream.read_into(view, partial=True)
                content_length -= count
                try:
                    await receiver.body_received(view, count)
                except Exception:  # noqa: BLE001 - as Tornado treats a failing data_received
                    app_log.error("Uncaught exception in body_received", exc_info=True)
                    raise
            finally:
                with contextlib.suppress(BufferError):
                    view.release()
            if loop.time() - last_yield >= _YIELD_AFTER:
                await asyncio.sleep(0)
                last_yield = loop.time()

    _read_fixed_body.in_place = True  # type: ignore[attr-defined]
    connection._read_fixed_body = _read_fixed_body  # type: ignore[method-assign]
