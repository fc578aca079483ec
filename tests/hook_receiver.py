"""A webhook receiver on loopback for tests and benches: records every request, answers as told.

`answer(event) -> (status, body)` decides each answer (default: 200 with `{}`); `delay`
holds each answer that many seconds. The receiver can be stopped and started again on
the same port (a receiver that is down refuses connections).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from tests.support import free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    event: dict[str, Any]
    at: float


def signature_valid(secret: str, header: str, body: bytes, tolerance: float = 300) -> bool:
    """The check a receiver makes (written here from the documented format, not from the gateway's code)."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    if "t" not in parts or "v1" not in parts or abs(time.time() - int(parts["t"])) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


class WebhookReceiver:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.received: list[Received] = []
        self.answer: Callable[[dict[str, Any]], tuple[int, Any]] = lambda event: (200, {})
        self.delay = 0.0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "WebhookReceiver":
        """Listen (again); a receiver already listening stays as it is."""
        if self._server is not None:
            return self
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    event = json.loads(body)
                except ValueError:
                    event = {}
                with receiver._lock:
                    receiver.received.append(Received(dict(self.headers.items()), body, event, time.time()))
                status, answer = receiver.answer(event)
                if receiver.delay:
                    time.sleep(receiver.delay)
                payload = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self, kind: str | None = None, upload: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if (kind is None or r.event.get("type") == kind)
                    and (upload is None or (r.event.get("upload") or {}).get("id") == upload)]

    def wait_for(self, predicate: Callable[["WebhookReceiver"], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise TimeoutError("the expected webhook requests did not arrive: "
                                   + ", ".join(f"{r.event.get('type')}:{(r.event.get('upload') or {}).get('id')}"
                                               for r in self.events()))
            time.sleep(0.05)
