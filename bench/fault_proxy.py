"""A fault-injecting HTTP/1.1 proxy for S3 (or any HTTP server), for benches and tests.

`FaultProxy(upstream, policy)` listens on a loopback port and forwards every request to
`upstream` over its own keep-alive connection, byte for byte: the request head as it
came, bodies framed by Content-Length or chunked transfer coding (so aws-chunked,
streaming-signed bodies pass unchanged), interim `100 Continue` answers, and responses
framed by Content-Length, chunks or end of connection. For the requests its policy
picks, it answers instead:

  "500"       500 InternalError (S3 XML error body), after reading the request body
  "503"       503 ServiceUnavailable
  "slowdown"  503 with <Code>SlowDown</Code>, as S3 throttles
  "reset"     a TCP reset before the request reaches the upstream
  "lost"      forwards the request (the upstream acts on it), then resets the client's
              connection instead of answering: the client cannot know it succeeded

A policy is any callable `policy(request) -> fault or None`; `RandomFaults`,
`FailOnce` and `FailAll` cover the usual cases and can be swapped at any time
(`proxy.policy = ...`). The proxy runs its own event loop in a thread:

    with FaultProxy("http://127.0.0.1:5000", FailOnce({"UploadPart"})) as proxy:
        ... S3_ENDPOINT_URL=proxy.url ...
        proxy.stats()   # requests per S3 operation, faults per kind

`python bench/fault_proxy.py --upstream http://127.0.0.1:5000 --port 5001 --rate 0.1`
runs one on its own until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import signal
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Iterable
from urllib.parse import parse_qsl, urlsplit

FAULTS = ("500", "503", "slowdown", "reset", "lost")
_ERRORS = {
    "500": (500, "Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "Service Unavailable", "ServiceUnavailable", "Please reduce your request rate."),
    "slowdown": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
}
_HEAD_LIMIT = 1024 * 1024
_COPY_CHUNK = 256 * 1024


@dataclass
class Request:
    """One request as the proxy saw it (the head is forwarded exactly as received)."""

    method: str
    target: str
    headers: dict[str, str]
    head: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.target.partition("?")[2], keep_blank_values=True))

    @property
    def operation(self) -> str:
        operation = s3_operation(self.method, self.target)
        if operation == "UploadPart" and "x-amz-copy-source" in self.headers:
            return "UploadPartCopy"
        return operation

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()

    @property
    def content_length(self) -> int:
        value = self.headers.get("content-length", "0").strip()
        return int(value) if value.isdigit() else 0

    @property
    def expects_continue(self) -> bool:
        return self.headers.get("expect", "").lower() == "100-continue"

    @property
    def wants_close(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"


def s3_operation(method: str, target: str) -> str:
    """The S3 API operation a request is (path-style addressing), e.g. "UploadPart"."""
    path, _, raw_query = target.partition("?")
    query = dict(parse_qsl(raw_query, keep_blank_values=True))
    has_key = len([p for p in path.split("/") if p]) >= 2
    if method == "PUT":
        if "partNumber" in query and "uploadId" in query:
            return "UploadPart"
        return "PutObject" if has_key else "CreateBucket"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        if "delete" in query:
            return "DeleteObjects"
        return "PostObject"
    if method == "GET":
        if not has_key:
            return "ListObjectsV2" if query.get("list-type") == "2" else ("ListMultipartUploads" if "uploads" in query else "ListObjects")
        return "ListParts" if "uploadId" in query else "GetObject"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if method == "DELETE":
        if "uploadId" in query:
            return "AbortMultipartUpload"
        return "DeleteObject" if has_key else "DeleteBucket"
    return method


# -- policies ----------------------------------------------------------------------------

Policy = Callable[[Request], "str | None"]


def no_faults(request: Request) -> str | None:
    return None


class RandomFaults:
    """Each request of `operations` (all when None) fails with probability `rate`, with a
    kind drawn from `kinds`. Seeded, thread-safe."""

    def __init__(self, rate: float, kinds: Iterable[str] = FAULTS, operations: Iterable[str] | None = None,
                 seed: int | None = None) -> None:
        self.rate = rate
        self.kinds = tuple(kinds)
        for kind in self.kinds:
            if kind not in FAULTS:
                raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULTS)}")
        self.operations = set(operations) if operations is not None else None
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> str | None:
        if self.operations is not None and request.operation not in self.operations:
            return None
        with self._lock:
            if self._random.random() >= self.rate:
                return None
            return self._random.choice(self.kinds)


class FailOnce:
    """The first attempt of every distinct request (method and URL) of `operations` fails
    with `kind`; its retries pass. Deterministic: every UploadPart fails exactly once."""

    def __init__(self, operations: Iterable[str], kind: str = "500", limit: int | None = None) -> None:
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}")
        self.operations = set(operations)
        self.kind = kind
        self.limit = limit
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> str | None:
        if request.operation not in self.operations:
            return None
        with self._lock:
            identity = (request.method, request.target)
            if identity in self._seen or (self.limit is not None and len(self._seen) >= self.limit):
                return None
            self._seen.add(identity)
            return self.kind


class FailAll:
    """Every request of `operations` (all when None) fails with `kind`: an outage."""

    def __init__(self, kind: str = "503", operations: Iterable[str] | None = None) -> None:
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}")
        self.kind = kind
        self.operations = set(operations) if operations is not None else None

    def __call__(self, request: Request) -> str | None:
        if self.operations is not None and request.operation not in self.operations:
            return None
        return self.kind


# -- HTTP plumbing ---------------------------------------------------------------------


def _parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    fields = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        fields.append((name.strip().lower(), value.strip()))
    return lines[0], fields


def parse_request(head: bytes) -> Request:
    start, fields = _parse_head(head)
    parts = start.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError(f"bad request line {start[:100]!r}")
    headers: dict[str, str] = {}
    for name, value in fields:
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return Request(parts[0], parts[1], headers, head)


async def _copy_exactly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None, count: int) -> None:
    while count > 0:
        data = await reader.read(min(count, _COPY_CHUNK))
        if not data:
            raise asyncio.IncompleteReadError(b"", count)
        count -= len(data)
        if writer is not None:
            writer.write(data)
            await writer.drain()


async def _copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None) -> None:
    """Copy a chunked body (chunks, last chunk, trailers) exactly as it is framed."""
    while True:
        line = await reader.readuntil(b"\r\n")
        if writer is not None:
            writer.write(line)
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while True:  # trailer fields, then the empty line
                trailer = await reader.readuntil(b"\r\n")
                if writer is not None:
                    writer.write(trailer)
                if trailer == b"\r\n":
                    break
            if writer is not None:
                await writer.drain()
            return
        await _copy_exactly(reader, writer, size + 2)


async def _copy_request_body(request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None) -> None:
    if request.chunked:
        await _copy_chunked(reader, writer)
    elif request.content_length:
        await _copy_exactly(reader, writer, request.content_length)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashed or overloaded server would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


def _error_response(kind: str, request: Request) -> bytes:
    status, reason, code, message = _ERRORS[kind]
    request_id = uuid.uuid4().hex[:16].upper()
    body = b"" if request.method == "HEAD" else (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{request.path}</Resource><RequestId>{request_id}</RequestId></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"x-amz-request-id: {request_id}\r\n"
        "Content-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}\r\n"
        "\r\n"
    ).encode()
    return head + body


class _Upstream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @property
    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


class _Stop(Exception):
    """End this client connection (after an answer that leaves it unusable)."""


class HttpProxy:
    """An HTTP/1.1 forwarding proxy on 127.0.0.1 with hooks to choose upstreams and faults.

    Runs its own event loop in a thread (`start`/`stop`, or `with`). Subclasses override
    `pick(request)` (index into `upstreams`) and `decide(request)` (a fault or None).
    """

    def __init__(self, upstreams: list[str], port: int = 0, host: str = "127.0.0.1") -> None:
        self.upstreams = []
        for url in upstreams:
            parts = urlsplit(url if "://" in url else f"http://{url}")
            if parts.scheme != "http":
                raise ValueError(f"only http:// upstreams can be proxied: {url}")
            self.upstreams.append((parts.hostname or "127.0.0.1", parts.port or 80))
        self.host = host
        self.port = port
        self.requests: collections.Counter[str] = collections.Counter()
        self.faults: collections.Counter[tuple[str, str]] = collections.Counter()
        self.per_upstream: collections.Counter[int] = collections.Counter()
        self.routed: collections.Counter[tuple[str, int]] = collections.Counter()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._clients: set[asyncio.Task] = set()

    # -- hooks
    def pick(self, request: Request) -> int:
        return 0

    def decide(self, request: Request) -> str | None:
        return None

    def label(self, request: Request) -> str:
        """The name requests are counted under in `stats()` (the S3 operation)."""
        return request.operation

    # -- lifecycle
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "HttpProxy":
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(asyncio.start_server(
                    self._serve_client, self.host, self.port, limit=_HEAD_LIMIT, reuse_address=True))
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"{type(self).__name__}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._clients):
                task.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)
            self._thread = None
            self._loop = None

    def __enter__(self) -> "HttpProxy":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stats(self) -> dict[str, dict]:
        """Requests seen per S3 operation, faults injected per kind and per operation, and the
        requests forwarded to each upstream (in all and per operation: `routed`)."""
        with self._lock:
            by_kind: collections.Counter[str] = collections.Counter()
            by_operation: collections.Counter[str] = collections.Counter()
            for (operation, kind), count in self.faults.items():
                by_kind[kind] += count
                by_operation[operation] += count
            routed: dict[str, dict[int, int]] = {}
            for (label, index), count in self.routed.items():
                routed.setdefault(label, {})[index] = count
            return {"requests": dict(self.requests), "faults": dict(by_kind), "faulted_operations": dict(by_operation),
                    "per_upstream": dict(self.per_upstream), "routed": routed}

    def reset_stats(self) -> None:
        with self._lock:
            self.requests.clear()
            self.faults.clear()
            self.per_upstream.clear()
            self.routed.clear()

    # -- serving
    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        upstreams: dict[int, _Upstream] = {}
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                try:
                    request = parse_request(head)
                except ValueError:
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                fault = self.decide(request)
                with self._lock:
                    self.requests[self.label(request)] += 1
                    if fault is not None:
                        self.faults[(request.operation, fault)] += 1
                if fault == "reset":
                    _reset(writer)
                    return
                if fault in _ERRORS:
                    if request.expects_continue:
                        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await _copy_request_body(request, reader, None)
                    writer.write(_error_response(fault, request))
                    await writer.drain()
                    if request.wants_close:
                        return
                    continue
                index = self.pick(request)
                with self._lock:
                    self.per_upstream[index] += 1
                    self.routed[(self.label(request), index)] += 1
                await self._forward(request, reader, writer, index, upstreams, lost=fault == "lost")
                if request.wants_close:
                    return
        except (_Stop, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            return
        except asyncio.CancelledError:
            pass
        finally:
            for upstream in upstreams.values():
                upstream.close()
            if not writer.is_closing():
                writer.close()
            self._clients.discard(task)

    async def _forward(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       index: int, upstreams: dict[int, _Upstream], lost: bool) -> None:
        upstream = upstreams.get(index)
        if upstream is None or not upstream.usable:
            if upstream is not None:
                upstream.close()
            host, port = self.upstreams[index]
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection(host, port, limit=_HEAD_LIMIT)
            except OSError:
                _reset(writer)  # the upstream is down: the client sees a refused/broken connection
                raise _Stop() from None
            upstream = upstreams[index] = _Upstream(upstream_reader, upstream_writer)
        upstream.writer.write(request.head)
        body = asyncio.ensure_future(_copy_request_body(request, reader, upstream.writer))
        try:
            while True:
                try:
                    head = await upstream.reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    # the upstream broke the connection: so does the proxy
                    upstreams.pop(index).close()
                    _reset(writer)
                    raise _Stop() from None
                status_line, fields = _parse_head(head)
                status = int(status_line.split(" ")[1])
                if 100 <= status < 200 and status != 101:
                    if not lost:
                        writer.write(head)
                        await writer.drain()
                    continue
                break
            if not body.done():
                # answered before the whole request body arrived: forward the answer, then
                # close both sides (the rest of the body cannot be told from a next request)
                if not lost:
                    writer.write(head)
                await self._copy_response_body(request, status, fields, upstream, None if lost else writer)
                if lost:
                    _reset(writer)
                else:
                    await writer.drain()
                upstreams.pop(index).close()
                raise _Stop()
            await body
            if not lost:
                writer.write(head)
            until_close = await self._copy_response_body(request, status, fields, upstream, None if lost else writer)
            response_headers = dict(fields)
            if until_close or response_headers.get("connection", "").lower() == "close":
                upstreams.pop(index).close()
            if lost:
                _reset(writer)
                raise _Stop()
            await writer.drain()
            if until_close:
                raise _Stop()
        finally:
            if not body.done():
                body.cancel()
                await asyncio.gather(body, return_exceptions=True)

    @staticmethod
    async def _copy_response_body(request: Request, status: int, fields: list[tuple[str, str]],
                                  upstream: _Upstream, writer: asyncio.StreamWriter | None) -> bool:
        """Copy the response body; True when it was framed by closing the connection."""
        if request.method == "HEAD" or status in (204, 304):
            return False
        headers = dict(fields)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            await _copy_chunked(upstream.reader, writer)
            return False
        if "content-length" in headers:
            await _copy_exactly(upstream.reader, writer, int(headers["content-length"]))
            return False
        while True:
            data = await upstream.reader.read(_COPY_CHUNK)
            if not data:
                return True
            if writer is not None:
                writer.write(data)
                await writer.drain()


class FaultProxy(HttpProxy):
    """Forwards to one upstream; `policy(request)` picks the requests that fail (see module doc)."""

    def __init__(self, upstream: str, policy: Policy = no_faults, port: int = 0) -> None:
        super().__init__([upstream], port)
        self.policy = policy

    def decide(self, request: Request) -> str | None:
        return self.policy(request)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:5000")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.1, help="fraction of requests that fail")
    parser.add_argument("--kinds", default=",".join(FAULTS), help=f"comma-separated faults from {', '.join(FAULTS)}")
    parser.add_argument("--operations", default="", help="only these S3 operations fail (e.g. UploadPart,PutObject)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    operations = [o for o in args.operations.split(",") if o] or None
    policy = RandomFaults(args.rate, [k for k in args.kinds.split(",") if k], operations, args.seed)
    proxy = FaultProxy(args.upstream, policy, args.port).start()
    print(f"fault proxy {proxy.url} -> {args.upstream} (rate {args.rate}, faults {args.kinds})", flush=True)
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    proxy.stop()
    print(proxy.stats())


if __name__ == "__main__":
    main()
