"""HTTP/1.1 requests written byte by byte, for what requests/urllib3 and http.client refuse to send
(made-up or huge methods, non-ASCII bytes in the request target and in header values)."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def is_json(self) -> bool:
        return self.headers.get("content-type", "").startswith("application/json")

    def error(self) -> dict:
        """The `{"error": {"code", "message"}}` body; AssertionError when it is anything else."""
        assert self.is_json, (self.status, self.headers, self.body[:300])
        error = self.json()["error"]
        assert set(error) == {"code", "message"}, error
        assert isinstance(error["code"], str) and isinstance(error["message"], str), error
        return error


def request_bytes(method: bytes | str, target: bytes | str, headers: list[tuple[bytes | str, bytes | str]] = (),
                  body: bytes = b"") -> bytes:
    """The request as sent: `Host`, the given headers, `Content-Length` when there is a body,
    and `Connection: close`. Text is encoded as UTF-8 (bytes are sent as they are)."""

    def raw(value: bytes | str) -> bytes:
        return value if isinstance(value, bytes) else value.encode("utf-8")

    lines = [raw(method) + b" " + raw(target) + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [raw(name) + b": " + raw(value) for name, value in headers]
    if body:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def send(port: int, data: bytes, *, timeout: float = 20, read_body: bool | None = None) -> Answer:
    """Send `data` on a new connection and read the answer's head, and its body when it has a
    Content-Length and `read_body` (default: for 4xx and 5xx answers, which are small).
    Streams (SSE, downloads) are not read: the connection is closed after the head."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server may answer (and close) before reading everything
        received = b""
        while True:
            while b"\r\n\r\n" not in received:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed without an answer; got {received[:200]!r}")
                received += chunk
            head, _, body = received.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            if status >= 200:
                break
            received = body  # an interim answer (100 Continue): the real one follows
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        is_head = data.split(b" ", 1)[0] == b"HEAD"
        if read_body is None:
            read_body = status >= 400 and not is_head
        if read_body and "content-length" in headers:
            length = int(headers["content-length"])
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
            body = body[:length]
        return Answer(status, headers, body)
