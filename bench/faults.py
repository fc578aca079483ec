"""Fault scenarios against a real gateway process, each run N times; prints what passed.

  a. kill      SIGKILL of the gateway at a random point of a streamed PATCH (a random
               number of bytes sent, then a random pause), restart on the same port and
               data, HEAD, PATCH the rest from the reported offset. Passes when the
               download is byte-identical and the offset is within what was sent and at
               least what HEAD reported just before the kill. Prints the bytes re-sent
               (sent before the kill minus the offset after restart) against the part size.
  b. s3        S3 behind bench/fault_proxy.py answering 500, 503, 503 SlowDown, resetting
               connections or losing answers on a fraction of requests, once with the
               gateway's S3 retries and once without. Every upload must either complete
               byte-identical or fail with an HTTP status and a JSON error, and a failed
               one must resume (HEAD, PATCH) to completion once the faults stop.
  c. mongo     MongoDB (nx-27017) stopped mid-PATCH, alternately frozen (SIGSTOP/SIGCONT)
               and killed then restarted on the same port and data folder, while a PATCH
               streams and HEADs poll. Requests meanwhile must get 503 + Retry-After with
               a JSON error (the streaming PATCH may also get a JSON 409/423, which tus
               clients retry), the offset must never count a byte that was not sent, and
               the upload must complete byte-identical afterwards. Prints what the client saw.
  d. hooks     SIGKILL of a gateway with webhooks (HOOK_URL) between the commits of an upload
               and the delivery of their events, in three ways taken in turn: the receiver is
               down when the upload finishes (the events wait in the outbox); the receiver is
               slow and the kill comes while it is being sent events; the kill comes at a
               random point of the last PATCH (before, during or after the commit; the upload
               is resumed after the restart). The receiver is (back) up, the gateway restarts
               on the same data; a trial passes when post-create and post-finish of the upload
               arrive, correctly signed. Prints N/N delivered, the repeated deliveries (allowed:
               at least once) and the seconds from restart to delivery.

Usage: python bench/faults.py [--trials 20] [--scenarios kill,s3,mongo,hooks] [--size 40MiB]
                              [--part-size 5MiB] [--fault-rate 0.1] [--seed 1] [-v]
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.fault_proxy import FAULTS, FaultProxy, RandomFaults, no_faults  # noqa: E402
from gateway.config import _size  # noqa: E402
from tests.hook_receiver import WebhookReceiver, signature_valid  # noqa: E402
from tests.support import GatewayProcess, free_port, stop_process, wait_for_port  # noqa: E402

MiB = 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"


def mib(n: int | float) -> str:
    return f"{n / MiB:.2f} MiB"


# -- servers -------------------------------------------------------------------------------


class MotoServer:
    """moto's S3 server on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> "MotoServer":
        env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        wait_for_port(self.port, 60)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)


class MongoServer:
    """An nx-27017 MongoDB wire server on a fixed port and data folder, which can be
    frozen (SIGSTOP), thawed (SIGCONT), killed and restarted on the same port and data."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.uri = f"mongodb://127.0.0.1:{self.port}/"
        self.process: subprocess.Popen | None = None
        self.frozen = False

    def start(self, timeout: float = 30) -> "MongoServer":
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from nx_27017.nx_27017 import main; sys.exit(main())",
             "--data-dir", str(self.folder), "--host", "127.0.0.1", "-p", str(self.port),
             "--log-file", str(self.folder / "mongo.log"), "--pid-file", str(self.folder / "mongo.pid")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"nx-27017 exited with {self.process.returncode}")
            try:
                wait_for_port(self.port, 0.5)
                return self
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.frozen = False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            if self.frozen:
                self.thaw()
            self.process.kill()
            self.process.wait(15)

    def restart(self) -> None:
        self.kill()
        deadline = time.monotonic() + 30
        while True:  # the port is free again once the old listener is gone
            try:
                self.start()
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            if self.frozen:
                self.thaw()
            stop_process(self.process)


class Stack:
    """A temp folder, moto, nx-27017, a JWT secret and the gateways started on them."""

    def __init__(self, keep: bool = False) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="bench-faults-"))
        self.keep = keep
        self.secret = secrets.token_urlsafe(48)
        self.moto = MotoServer().start()
        self.mongo = MongoServer(self.folder / "mongo").start()
        self.gateways: list[GatewayProcess] = []

    def env(self, **overrides: Any) -> dict[str, str]:
        env = {
            "HOST": "127.0.0.1", "PORT": str(free_port()), "MONGODB_URI": self.mongo.uri,
            "MONGODB_DB": f"bench_{secrets.token_hex(4)}", "JWT_SECRET": self.secret, "ACCOUNTLESS_TOKENS": "true", "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "text", "PART_SIZE": "5MiB", "STORAGE_BACKEND": "s3", "S3_BUCKET": "bench-faults",
            "S3_ENDPOINT_URL": self.moto.url, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": "eu-west-2", "RATE_LIMIT_REQUESTS": "1000000", "TUS_RATE_BURST": "1000000",
            "TUS_RATE_PER_SECOND": "100000", "PROCESSING_CONCURRENCY": "0",
        }
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    def gateway(self, env: dict[str, str] | None = None, **overrides: Any) -> GatewayProcess:
        env = dict(env) if env is not None else self.env(**overrides)
        data_dir = self.folder / f"gateway-{env['PORT']}"
        data_dir.mkdir(exist_ok=True)
        env.setdefault("DATA_DIR", str(data_dir))
        gateway = GatewayProcess(env, data_dir)
        gateway.start()
        self.gateways.append(gateway)
        return gateway

    def token(self, user: str = "bench") -> str:
        from auth.tokens import Principal, TokenIssuer

        return TokenIssuer(self.secret, 24 * 3600).issue(Principal(user, user))[0]

    def close(self) -> None:
        for gateway in self.gateways:
            gateway.stop()
        self.mongo.stop()
        self.moto.stop()
        if not self.keep:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- a small tus client --------------------------------------------------------------------


def headers(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **TUS, **extra}


@dataclass
class Answer:
    """What a client got: a status (0 when the connection broke), headers, the JSON error code."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    code: str | None = None
    json_error: bool = False
    detail: str = ""

    @property
    def label(self) -> str:
        if self.status == 0:
            return f"connection broken ({self.detail})"
        text = str(self.status)
        if self.code:
            text += f" {self.code}"
        if self.status >= 400 and not self.json_error:
            text += " (no JSON error body!)"
        if self.status in (503, 423, 429) and "Retry-After" not in self.headers:
            text += " (no Retry-After!)"
        return text


def answer_of(response: requests.Response) -> Answer:
    answer = Answer(response.status_code, dict(response.headers))
    if response.status_code >= 400 and response.request.method != "HEAD":
        try:
            error = response.json()["error"]
            answer.code, answer.json_error = error["code"], isinstance(error.get("message"), str)
        except (ValueError, KeyError, TypeError):
            answer.detail = response.text[:200]
    elif response.status_code >= 400:
        answer.json_error = True  # a HEAD answer has no body to carry JSON
    return answer


def call(method: str, url: str, token: str, timeout: float = 60, **kwargs: Any) -> Answer:
    try:
        response = requests.request(method, url, headers=headers(token, **kwargs.pop("extra", {})),
                                    timeout=timeout, **kwargs)
    except requests.RequestException as exc:
        return Answer(0, detail=type(exc).__name__)
    return answer_of(response)


def create(base: str, token: str, length: int | None, timeout: float = 60) -> str:
    extra = {"Upload-Length": str(length)} if length is not None else {"Upload-Defer-Length": "1"}
    response = requests.post(base.rstrip("/") + "/files/", headers=headers(token, **extra), timeout=timeout)
    if response.status_code != 201:
        raise RuntimeError(f"POST /files/ answered {response.status_code}: {response.text[:300]}")
    return response.headers["Location"]


def patch(url: str, token: str, offset: int, data: bytes | memoryview, timeout: float = 300) -> Answer:
    return call("PATCH", url, token, timeout=timeout, data=bytes(data),
                extra={"Upload-Offset": str(offset), "Content-Type": OCTETS})


def head_offset(url: str, token: str, timeout: float = 30) -> int | None:
    answer = call("HEAD", url, token, timeout=timeout)
    if answer.status != 200:
        return None
    return int(answer.headers["Upload-Offset"])


def wait_head(url: str, token: str, timeout: float = 60) -> int:
    """HEAD until it answers 200 (the service may still be coming back); the offset."""
    deadline = time.monotonic() + timeout
    while True:
        offset = head_offset(url, token, timeout=10)
        if offset is not None:
            return offset
        if time.monotonic() > deadline:
            raise TimeoutError(f"HEAD {url} never answered 200")
        time.sleep(0.3)


def download_sha256(url: str, token: str, timeout: float = 300) -> str:
    digest = hashlib.sha256()
    with requests.get(url, headers={"Authorization": f"Bearer {token}"}, stream=True, timeout=timeout) as response:
        if response.status_code != 200:
            raise RuntimeError(f"GET answered {response.status_code}: {response.text[:300]}")
        declared = int(response.headers.get("Content-Length", "-1"))
        size = 0
        for chunk in response.iter_content(1 * MiB):
            digest.update(chunk)
            size += len(chunk)
        if declared >= 0 and size != declared:
            raise RuntimeError(f"GET sent {size} of {declared} bytes")
    return digest.hexdigest()


def resume(url: str, token: str, data: bytes, timeout: float = 120) -> Answer:
    """HEAD, then PATCH the rest from the server's offset; retries 409/423/503/broken connections."""
    deadline = time.monotonic() + timeout
    while True:
        offset = wait_head(url, token, timeout=max(1.0, deadline - time.monotonic()))
        if offset == len(data):
            return Answer(204, {"Upload-Offset": str(offset)})
        answer = patch(url, token, offset, memoryview(data)[offset:])
        if answer.status == 204 or time.monotonic() > deadline or answer.status not in (0, 409, 423, 503):
            return answer
        time.sleep(float(answer.headers.get("Retry-After", "0.5")) if answer.status in (423, 503) else 0.3)


def resume_and_verify(url: str, token: str, data: bytes, checks: list[str]) -> bool:
    """Resume the upload to its end, compare the download with `data`, then delete the upload.
    Adds what went wrong to `checks`; True when the download is byte-identical."""
    answer = resume(url, token, data)
    identical = False
    if answer.status != 204:
        checks.append(f"resume answered {answer.label}")
    elif download_sha256(url, token) != sha256(data):
        checks.append("download differs from the file sent")
    else:
        identical = True
    call("DELETE", url, token)
    return identical


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class StreamedPatch:
    """One PATCH whose body is sent by a thread at `rate` bytes/s (None: as fast as possible).

    `sent` counts the body bytes handed to the socket; `answer` is what came back.
    `stop_after(n)` makes the sender stall after n bytes (the socket stays open).
    """

    def __init__(self, url: str, token: str, offset: int, body: bytes | memoryview, rate: float | None = None,
                 piece: int = 256 * 1024, timeout: float = 120) -> None:
        self.url, self.token, self.offset, self.body = url, token, offset, memoryview(body)
        self.rate, self.piece, self.timeout = rate, piece, timeout
        self.sent = 0
        self.answer: Answer | None = None
        self.sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "StreamedPatch":
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> Answer:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("the PATCH did not finish")
        assert self.answer is not None
        return self.answer

    def _run(self) -> None:
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        started = time.monotonic()

        def body() -> Iterator[bytes]:
            for start in range(0, len(self.body), self.piece):
                chunk = bytes(self.body[start : start + self.piece])
                if self.rate:
                    due = started + (start + len(chunk)) / self.rate
                    pause = due - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                yield chunk
                self.sent += len(chunk)

        try:
            conn.request("PATCH", parts.path, body=body(), headers=headers(
                self.token, **{"Upload-Offset": str(self.offset), "Content-Type": OCTETS,
                               "Content-Length": str(len(self.body))}))
        except OSError as exc:
            # the server closed the connection mid-body; it may still have answered first
            self.answer = self._read(conn) or Answer(0, detail=type(exc).__name__)
            conn.close()
            return
        self.answer = self._read(conn) or Answer(0, detail="no answer")
        conn.close()

    @staticmethod
    def _read(conn: http.client.HTTPConnection) -> Answer | None:
        try:
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException):
            return None
        answer = Answer(response.status, dict(response.headers))
        if response.status >= 400:
            try:
                error = json.loads(raw)["error"]
                answer.code, answer.json_error = error["code"], True
            except (ValueError, KeyError, TypeError):
                answer.detail = raw[:200].decode("latin-1")
        return answer


def raw_patch_socket(url: str, token: str, offset: int, declared: int, body: bytes | memoryview) -> socket.socket:
    """A PATCH head declaring `declared` bytes, then `body`; the socket is left open."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
    head = "\r\n".join([
        f"PATCH {parts.path} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}", f"Authorization: Bearer {token}",
        "Tus-Resumable: 1.0.0", f"Content-Type: {OCTETS}", f"Upload-Offset: {offset}", f"Content-Length: {declared}",
        "", ""]).encode()
    sock.sendall(head)
    sock.sendall(body)
    return sock


# -- scenario a: SIGKILL mid-upload ------------------------------------------------------------


def scenario_kill(stack: Stack, trials: int, size: int, part_size: int, rng: random.Random, verbose: bool) -> bool:
    print(f"a. SIGKILL of the gateway mid-PATCH, restart, resume: {trials} trials, {mib(size)} uploads, "
          f"part size {mib(part_size)}, S3 (moto)")
    gateway = stack.gateway(PART_SIZE=str(part_size), LEASE_TTL="3", LEASE_WAIT="8")
    token = stack.token("kill")
    passed = 0
    resent: list[int] = []
    problems: list[str] = []
    restart_seconds: list[float] = []
    for trial in range(trials):
        data = payload(size, seed=rng.randrange(1 << 30))
        url = create(gateway.url, token, size)
        sent = rng.randrange(1, size)
        pause = rng.uniform(0.0, 1.0)
        sock = raw_patch_socket(url, token, 0, size, memoryview(data)[:sent])
        time.sleep(pause)
        before = head_offset(url, token, timeout=10) or 0
        gateway.kill()
        sock.close()
        started = time.monotonic()
        gateway.start()
        restart_seconds.append(time.monotonic() - started)
        after = wait_head(url, token)
        checks = []
        if not before <= after <= sent:
            checks.append(f"offset {after} outside [{before}, {sent}]")
        resume_and_verify(url, token, data, checks)
        resent.append(sent - after)
        if checks:
            problems.append(f"trial {trial}: " + "; ".join(checks))
        else:
            passed += 1
        if verbose:
            print(f"   trial {trial:2}: sent {sent:>10} pause {pause:.2f}s head-before-kill {before:>10} "
                  f"offset-after-restart {after:>10} re-sent {mib(sent - after):>10} "
                  f"{'ok' if not checks else checks}")
    worst = max(resent) if resent else 0
    over = sum(1 for r in resent if r > part_size)
    print(f"   passed {passed}/{trials} (byte-identical, offset within [HEAD before kill, bytes sent])")
    print(f"   re-sent after restart: max {mib(worst)} = {worst / part_size:.2f} parts, mean "
          f"{mib(sum(resent) / max(len(resent), 1))}; part size {mib(part_size)}; "
          f"{over}/{trials} trials re-sent more than one part")
    print(f"   target (at most one part): {'met' if worst <= part_size else 'NOT met'}; "
          f"restart took {min(restart_seconds):.1f}-{max(restart_seconds):.1f} s")
    for problem in problems:
        print("   FAILED", problem)
    return passed == trials


# -- scenario b: S3 faults -------------------------------------------------------------------


def scenario_s3(stack: Stack, trials: int, size: int, part_size: int, rate: float, rng: random.Random,
                verbose: bool, kinds: tuple[str, ...] = FAULTS) -> bool:
    print(f"b. S3 faults through bench/fault_proxy.py: {rate:.0%} of S3 requests fail with one of "
          f"{', '.join(kinds)}; {trials} trials per setting, uploads up to {mib(size)}")
    ok = True
    proxy = FaultProxy(stack.moto.url).start()
    try:
        for attempts, setting in (("5", "with the gateway's S3 retries (S3_MAX_ATTEMPTS=5)"),
                                  ("0", "without S3 retries (S3_MAX_ATTEMPTS=0)")):
            try:
                gateway = stack.gateway(PART_SIZE=str(part_size), S3_ENDPOINT_URL=proxy.url, S3_MAX_ATTEMPTS=attempts,
                                        LEASE_TTL="3", LEASE_WAIT="8")
            except RuntimeError:
                # S3_MAX_ATTEMPTS=0 means "no retries" while it is passed to botocore as `max_attempts`
                # (retries); once it counts attempts, 0 is refused and 1 means no retries
                attempts, setting = "1", "without S3 retries (S3_MAX_ATTEMPTS=1)"
                gateway = stack.gateway(PART_SIZE=str(part_size), S3_ENDPOINT_URL=proxy.url, S3_MAX_ATTEMPTS=attempts,
                                        LEASE_TTL="3", LEASE_WAIT="8")
            token = stack.token(f"s3-{attempts}")
            proxy.reset_stats()
            outcomes: collections.Counter[str] = collections.Counter()
            failures: collections.Counter[str] = collections.Counter()
            downloads: collections.Counter[str] = collections.Counter()
            resumed = wrong = lost = 0
            for trial in range(trials):
                length = rng.choice([rng.randrange(1, part_size), rng.randrange(part_size, size + 1),
                                     rng.randrange(part_size, size + 1)])
                data = payload(length, seed=rng.randrange(1 << 30))
                url = create(gateway.url, token, length)
                proxy.policy = RandomFaults(rate, kinds, seed=rng.randrange(1 << 30))
                pieces = rng.choice([1, 1, 2, 3])
                cuts = sorted({0, length, *[rng.randrange(1, length) for _ in range(pieces - 1)]} if length > 1 else {0, length})
                failure: Answer | None = None
                for start, end in zip(cuts, cuts[1:]):
                    answer = patch(url, token, start, memoryview(data)[start:end])
                    if answer.status != 204:
                        failure = answer
                        break
                if failure is None:
                    outcomes["completed while S3 failed"] += 1
                    # a download under faults: whole and identical, or a clean failure
                    try:
                        downloads["identical" if download_sha256(url, token) == sha256(data) else "WRONG BYTES"] += 1
                    except RuntimeError as exc:
                        downloads[f"failed cleanly ({str(exc)[:40]})"] += 1
                    except requests.RequestException as exc:
                        downloads[f"failed cleanly ({type(exc).__name__})"] += 1
                else:
                    outcomes["failed, then resumed"] += 1
                    failures[failure.label] += 1
                    if failure.status == 0 or not failure.json_error:
                        ok = False
                proxy.policy = no_faults
                if failure is not None:
                    answer = resume(url, token, data)
                    if answer.status == 204:
                        resumed += 1
                    else:
                        lost += 1
                        print(f"   trial {trial}: resume after the faults answered {answer.label}")
                        continue
                if download_sha256(url, token) != sha256(data):
                    wrong += 1
                    print(f"   trial {trial}: WRONG BYTES in the download")
                call("DELETE", url, token)
                if verbose:
                    print(f"   S3_MAX_ATTEMPTS={attempts} trial {trial:2}: {length:>9} bytes in {len(cuts) - 1} PATCHes: "
                          f"{'completed' if failure is None else 'failed with ' + failure.label + ', resumed'}")
            stats = proxy.stats()
            failed = outcomes["failed, then resumed"]
            print(f"   {setting}: {outcomes['completed while S3 failed']}/{trials} completed "
                  f"during faults, {failed} failed cleanly -> {resumed}/{failed} resumed to completion after the "
                  f"faults stopped; wrong bytes: {wrong}; unresumable: {lost}")
            if failures:
                print("      failures seen by the client: " + ", ".join(f"{n} x {k}" for k, n in failures.most_common()))
            if downloads:
                print("      downloads during faults: " + ", ".join(f"{n} x {k}" for k, n in downloads.most_common()))
            print(f"      proxy: {sum(stats['requests'].values())} S3 requests, faults injected "
                  f"{dict(sorted(stats['faults'].items()))} into {dict(sorted(stats['faulted_operations'].items()))}")
            ok = ok and wrong == 0 and lost == 0 and downloads.get("WRONG BYTES", 0) == 0
            gateway.stop()
    finally:
        proxy.stop()
    return ok


# -- scenario c: MongoDB stopped ----------------------------------------------------------------


def scenario_mongo(stack: Stack, trials: int, size: int, part_size: int, outage: float, rng: random.Random,
                   verbose: bool) -> bool:
    print(f"c. MongoDB stopped for {outage:.0f} s mid-PATCH (alternately SIGSTOP/SIGCONT and kill/restart): "
          f"{trials} trials, {mib(size)} uploads")
    gateway = stack.gateway(PART_SIZE=str(part_size), MONGODB_TIMEOUT="2", LEASE_TTL="6", LEASE_WAIT="8")
    token = stack.token("mongo")
    during: dict[str, collections.Counter[str]] = {"freeze": collections.Counter(), "restart": collections.Counter()}
    streamed: dict[str, collections.Counter[str]] = {"freeze": collections.Counter(), "restart": collections.Counter()}
    slowest: dict[str, float] = {"freeze": 0.0, "restart": 0.0}
    passed = identical = offsets_ok = answers_ok = 0
    problems: list[str] = []
    for trial in range(trials):
        mode = "freeze" if trial % 2 == 0 else "restart"
        data = payload(size, seed=rng.randrange(1 << 30))
        url = create(gateway.url, token, size)
        first = part_size + rng.randrange(1, part_size)
        assert patch(url, token, 0, memoryview(data)[:first]).status == 204
        rate = (size - first) / (outage + 4.0)  # the body keeps flowing before, during and after the outage
        stream = StreamedPatch(url, token, first, memoryview(data)[first:], rate=rate).start()
        time.sleep(rng.uniform(0.5, 1.5))
        if mode == "freeze":
            stack.mongo.freeze()
        else:
            stack.mongo.kill()
        stopped_at = time.monotonic()
        checks = []
        while time.monotonic() - stopped_at < outage:
            asked = time.monotonic()
            answer = call("HEAD", url, token, timeout=40)
            took = time.monotonic() - asked
            slowest[mode] = max(slowest[mode], took)
            during[mode][answer.label] += 1
            if answer.status != 503 or "Retry-After" not in answer.headers:
                checks.append(f"HEAD during the outage answered {answer.label}")
            time.sleep(0.3)
        if mode == "freeze":
            stack.mongo.thaw()
        else:
            stack.mongo.restart()
        try:
            answer = stream.join(timeout=120)
            streamed[mode][answer.label] += 1
            # 204 (it rode out the outage), 503 (+ Retry-After) or a 409/423 a tus client retries
            if answer.status not in (204, 409, 423, 503) or (answer.status != 204 and not answer.json_error) \
                    or (answer.status == 503 and "Retry-After" not in answer.headers):
                checks.append(f"the streaming PATCH got {answer.label}")
        except TimeoutError:
            streamed[mode]["no answer within 120 s"] += 1
            checks.append("the streaming PATCH got no answer")
        answers_ok += not checks
        offset = wait_head(url, token)
        if not first <= offset <= first + stream.sent:
            checks.append(f"offset {offset} outside [{first}, {first + stream.sent}]")
        else:
            offsets_ok += 1
        identical += resume_and_verify(url, token, data, checks)
        if checks:
            problems.append(f"trial {trial} ({mode}): " + "; ".join(checks))
        else:
            passed += 1
        if verbose:
            print(f"   trial {trial:2} ({mode}): streamed PATCH -> {streamed[mode]}, offset after {offset}, "
                  f"{'ok' if not checks else checks}")
    print(f"   passed {passed}/{trials}: byte-identical after MongoDB returned {identical}/{trials}; offset after "
          f"the outage within [committed before, bytes sent] {offsets_ok}/{trials}; every answer during the outage "
          f"a 503 + Retry-After (the streaming PATCH: a JSON 503/409/423, or 204) {answers_ok}/{trials}")
    for mode, title in (("freeze", "SIGSTOP"), ("restart", "kill + restart")):
        print(f"   {title}: HEAD during the outage: " + ", ".join(f"{n} x {k}" for k, n in during[mode].most_common())
              + f" (slowest answer {slowest[mode]:.1f} s)")
        print(f"   {title}: the PATCH streaming through the outage got: "
              + ", ".join(f"{n} x {k}" for k, n in streamed[mode].most_common()))
    reasons = collections.Counter(check for problem in problems for check in problem.split(": ", 1)[1].split("; "))
    for reason, count in reasons.most_common():
        print(f"   FAILED in {count} trials: {reason}")
    return passed == trials


# -- scenario d: SIGKILL between a commit and the delivery of its webhook events ------------------


HOOK_MODES = ("receiver-down", "mid-delivery", "mid-commit")


def scenario_hooks(stack: Stack, trials: int, part_size: int, rng: random.Random, verbose: bool) -> bool:
    print(f"d. SIGKILL between commit and webhook delivery, restart: {trials} trials "
          f"({', '.join(HOOK_MODES)} in turn), uploads up to 12 MiB, S3 (moto)")
    secret = secrets.token_hex(24)
    receiver = WebhookReceiver()
    gateway = stack.gateway(PART_SIZE=str(part_size), LEASE_TTL="3", LEASE_WAIT="8", HOOK_URL=receiver.url,
                            HOOK_SECRET=secret, HOOK_EVENTS="post-create,post-finish", HOOK_TIMEOUT="2",
                            HOOK_RETRY_BASE="0.5", HOOK_RETRY_MAX="2", HOOK_POLL_INTERVAL="0.5",
                            HOOK_CONFIRM_GRACE="2", HOOK_MAX_ATTEMPTS="1000")
    token = stack.token("hooks")
    passed = 0
    delays: list[float] = []
    problems: list[str] = []
    uploads: list[tuple[str, str]] = []  # (upload, mode)
    complete_before_kill = 0
    for trial in range(trials):
        mode = HOOK_MODES[trial % len(HOOK_MODES)]
        size = rng.randrange(1, 12 * MiB)
        data = payload(size, seed=rng.randrange(1 << 30))
        pause = rng.uniform(0.0, 1.0)
        receiver.delay = 0.0
        if mode == "receiver-down":
            receiver.stop()
        else:
            receiver.start()
            receiver.delay = rng.uniform(0.5, 1.5) if mode == "mid-delivery" else 0.0
        url = create(gateway.url, token, size)
        upload = url.rstrip("/").rsplit("/", 1)[-1]
        uploads.append((upload, mode))
        if mode == "mid-commit":
            sock = raw_patch_socket(url, token, 0, size, memoryview(data))
            time.sleep(pause * 0.3)
            gateway.kill()
            sock.close()
        else:
            answer = patch(url, token, 0, data)
            if answer.status != 204:
                problems.append(f"trial {trial} ({mode}): PATCH answered {answer.label}")
            time.sleep(pause)
            gateway.kill()
        receiver.delay = 0.0
        receiver.start()
        restarted = time.monotonic()
        gateway.start()
        checks: list[str] = []
        at_restart = wait_head(url, token)
        if mode == "mid-commit":
            complete_before_kill += at_restart == size
            resumed = resume(url, token, data)
            if resumed.status != 204:
                checks.append(f"resume answered {resumed.label}")
        try:
            receiver.wait_for(lambda r: {e.event.get("type") for e in r.events(upload=upload)}
                              >= {"post-create", "post-finish"}, timeout=60)
            delays.append(time.monotonic() - restarted)
        except TimeoutError:
            checks.append("post-create and post-finish did not both arrive within 60 s of the restart")
        if any(not signature_valid(secret, e.headers.get("Mediaserver-Signature", ""), e.body, tolerance=3600)
               for e in receiver.events(upload=upload)):
            checks.append("a delivery is not correctly signed")
        if checks:
            problems.append(f"trial {trial} ({mode}): " + "; ".join(checks))
        else:
            passed += 1
        if verbose:
            print(f"   trial {trial:2}: {mode:13} size {size:>9} pause {pause:.2f}s offset at restart {at_restart:>9} "
                  f"deliveries {len(receiver.events(upload=upload))} {'ok' if not checks else checks}")
    time.sleep(3)  # deliveries cut short by a kill are sent again once their lease runs out
    deliveries = {mode: collections.Counter(e.event.get("id") for u, m in uploads if m == mode
                                            for e in receiver.events(upload=u)) for mode in HOOK_MODES}
    repeated = ", ".join(f"{mode} {sum(n - 1 for n in counts.values())}" for mode, counts in deliveries.items())
    receiver.stop()
    print(f"   delivered {passed}/{trials} (post-create and post-finish of every upload, signed)")
    print(f"   mid-commit trials whose upload was complete at the restart (committed before the kill): "
          f"{complete_before_kill}/{sum(1 for t in range(trials) if HOOK_MODES[t % len(HOOK_MODES)] == 'mid-commit')}")
    print(f"   events {sum(len(c) for c in deliveries.values())}; repeated deliveries by mode: {repeated} "
          f"(at least once: a kill during a delivery sends it again)")
    if delays:
        print(f"   seconds from restart to delivery: min {min(delays):.1f}, max {max(delays):.1f}, "
              f"mean {sum(delays) / len(delays):.1f}")
    for problem in problems:
        print("   FAILED", problem)
    return passed == trials


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--scenarios", default="kill,s3,mongo")
    parser.add_argument("--size", default="40MiB", help="upload size (kill, mongo); largest upload (s3)")
    parser.add_argument("--part-size", default="5MiB")
    parser.add_argument("--fault-rate", type=float, default=0.1)
    parser.add_argument("--faults", default=",".join(FAULTS), help="fault kinds for the s3 scenario")
    parser.add_argument("--outage", type=float, default=6.0, help="seconds MongoDB stays stopped")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (gateway logs)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    size, part_size = _size(args.size), _size(args.part_size)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    rng = random.Random(args.seed)
    results: dict[str, bool] = {}
    with Stack(keep=args.keep) as stack:
        print(f"seed {args.seed}; temp folder {stack.folder}" if args.keep else f"seed {args.seed}")
        for name in chosen:
            started = time.monotonic()
            if name == "kill":
                results[name] = scenario_kill(stack, args.trials, size, part_size, rng, args.verbose)
            elif name == "s3":
                kinds = tuple(k for k in args.faults.split(",") if k)
                results[name] = scenario_s3(stack, args.trials, size, part_size, args.fault_rate, rng, args.verbose, kinds)
            elif name == "mongo":
                results[name] = scenario_mongo(stack, args.trials, size, part_size, args.outage, rng, args.verbose)
            elif name == "hooks":
                results[name] = scenario_hooks(stack, args.trials, part_size, rng, args.verbose)
            else:
                parser.error(f"unknown scenario {name!r}")
            print(f"   ({time.monotonic() - started:.0f} s)")
    print("summary: " + ", ".join(f"{name} {'PASS' if ok else 'FAIL'}" for name, ok in results.items()))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
