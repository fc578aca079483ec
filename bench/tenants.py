"""Two tenants on one gateway process: a user who stalls the upload memory, and many joins at once.

`tests/test_tenants.py` reproduces these attacks scaled down; this bench runs them at full size
against one gateway process it starts itself (local store by default, `--store s3` on a moto
server; MongoDB on an nx-27017 server), with the gateway's default memory settings unless flags
override them (UPLOAD_MEMORY_BUDGET, UPLOAD_MEMORY_PER_USER, UPLOAD_MEMORY_WAIT, MIN_BODY_RATE,
MIN_BODY_RATE_WINDOW, IDLE_BODY_TIMEOUT, PART_SIZE). Users are registered through
`/api/auth/register` (the gateway checks every token against its account in MongoDB).

Prints, for one invocation:
  1. The stall attack. User A creates ATTACK_UPLOADS uploads of ATTACK_SIZE and opens as many
     raw-socket PATCHes, each declaring the whole ATTACK_SIZE, sending one byte every
     TRICKLE_EVERY seconds (until the gateway answers or closes each of them, or a deadline).
     Meanwhile user B uploads TUS_SIZE with tus (one streamed PATCH) and REST_SIZE with
     `POST /api/media/upload` (multipart). Printed: B's seconds for both without the attack
     (baseline, same invocation, same gateway) and under the attack, their ratio (the goal: under
     2x), every B upload checked byte for byte; what A's connections got (how many 503
     `server_busy`, how many closed without an answer for being too slow, after how long), A's
     committed offsets afterwards (HEAD), the gateway's log lines about it, and the gateway's peak
     RSS during the attack against UPLOAD_MEMORY_BUDGET + its idle RSS (the goal: within).
  2. Parallel concatenations. CONCAT_USERS users upload FINALS x PARTIALS_PER_FINAL partial
     uploads of a few MiB each (all under 5 MiB, so the gateway must join them in memory, not copy
     them server-side), then FINALS `Upload-Concat: final;...` POSTs go at once (one thread each).
     Printed: their statuses and latencies, whether every final's bytes match the expected join
     (sha256 of a download), and the gateway's peak RSS against UPLOAD_MEMORY_BUDGET + idle RSS.
     Several users by default, so the whole budget is in play (one user is held to
     UPLOAD_MEMORY_PER_USER) and each stays far under MAX_UNFINISHED_UPLOADS.

Peak RSS is the kernel's VmHWM, reset (/proc/PID/clear_refs) at the start of each measured
phase, cross-checked by sampling VmRSS every 0.1 s; the highest sample is split into its kinds
(Shmem: the part buffers, which are shared anonymous maps; Anon: the Python heap and malloc;
File: code and libraries). The part buffers handed out are sampled from /metrics. The gateway
inherits the bench's environment (e.g. MALLOC_ARENA_MAX reaches it).
Nothing about time is asserted: the exit status is 1 only when bytes came back wrong or the
gateway died, else 0.

Usage: python bench/tenants.py [--store local|s3] [--rate-window SECONDS] [--phases attack,concat]
                               [--attack-uploads 24] [--attack-size 50MiB] [--trickle-every 2]
                               [--tus-size 64MiB] [--rest-size 16MiB] [--rounds 2]
                               [--finals 100] [--partials-per-final 3] [--concat-users 4]
                               [--memory-budget B] [--memory-per-user B] [--memory-wait S] ...
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import re
import secrets
import select
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.upload import memory_mib, reset_peak_rss, start_moto, start_mongo, use_shipped_gateway  # noqa: E402
from gateway.config import Settings, _size  # noqa: E402
from tests.support import GatewayProcess, free_port, raw_patch  # noqa: E402

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # partials smaller than this are joined in memory (streaming/concatenation.py)
PASSWORD = "bench-tenant-pass-2468"
JWT_SECRET = secrets.token_urlsafe(48)
TUS = {"Tus-Resumable": "1.0.0"}
POOL = memoryview(os.urandom(64 * MiB))  # upload bodies are slices of this pool (no generation cost)


# -- the gateway and its memory ---------------------------------------------------------------

def alive(gateway: GatewayProcess) -> bool:
    """The gateway process runs and answers /health with 200."""
    if gateway.process is None or gateway.process.poll() is not None:
        return False
    try:
        conn = http.client.HTTPConnection("127.0.0.1", int(gateway.env["PORT"]), timeout=10)
        conn.request("GET", "/health")
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False


def buffer_bytes(gateway: GatewayProcess) -> float | None:
    """`mediaserver_upload_buffer_bytes` from /metrics: part buffers handed out now."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", int(gateway.env["PORT"]), timeout=5)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
    except (OSError, http.client.HTTPException):
        return None
    match = re.search(r"^mediaserver_upload_buffer_bytes ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else None


def rss_parts(pid: int) -> str:
    """The kinds of resident memory: part buffers are shared anonymous maps (RssShmem),
    the Python heap and malloc are RssAnon, code and libraries RssFile."""
    return ", ".join(f"{name[3:]} {memory_mib(pid, name):.0f}" for name in ("RssShmem", "RssAnon", "RssFile"))


class Sampler(threading.Thread):
    """Samples the gateway's VmRSS every 0.1 s (with its kinds at the highest sample) and its
    handed-out part buffers every 0.5 s."""

    def __init__(self, gateway: GatewayProcess) -> None:
        super().__init__(daemon=True)
        self.gateway = gateway
        self.max_rss = 0.0
        self.max_parts = ""
        self.max_buffers = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        pid = self.gateway.process.pid
        tick = 0
        while not self.done.is_set():
            try:
                rss = memory_mib(pid, "VmRSS")
                if rss > self.max_rss:
                    self.max_rss, self.max_parts = rss, rss_parts(pid)
            except OSError:
                return
            if tick % 5 == 0:
                held = buffer_bytes(self.gateway)
                if held is not None:
                    self.max_buffers = max(self.max_buffers, held)
            tick += 1
            self.done.wait(0.1)

    def stop(self) -> "Sampler":
        self.done.set()
        self.join(10)
        return self


def log_lines(gateway: GatewayProcess, since: int) -> tuple[list[dict], int]:
    """The gateway's JSON log records written after byte `since` of its log, and the new end."""
    try:
        with open(gateway.log_path, "rb") as fh:
            fh.seek(since)
            data = fh.read()
    except OSError:
        return [], since
    records = []
    for line in data.decode(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            records.append({"level": "RAW", "logger": "-", "message": line})
    return records, since + len(data)


def print_log_summary(records: list[dict], indent: str = "  ") -> None:
    """Counts of what matters in a phase's log: slow-body closes, 5xx answers, warnings, errors."""
    slow = Counter(r.get("reason", "?") for r in records if r.get("message") == "closing a request body that is too slow")
    access = [r for r in records if r.get("logger") == "mediaserver.access"]
    statuses = Counter(r.get("status") for r in access)
    server_errors = [r for r in access if isinstance(r.get("status"), int) and r["status"] >= 500]
    print(f"{indent}gateway log: {len(access)} requests answered, statuses "
          f"{', '.join(f'{s}: {n}' for s, n in sorted(statuses.items(), key=lambda i: str(i[0])))}")
    print(f"{indent}  'closing a request body that is too slow': "
          f"{', '.join(f'{reason}: {n}' for reason, n in slow.items()) or 'none'}")
    by_status = Counter((r.get("status"), r.get("route"), r.get("method")) for r in server_errors)
    for (status, route, method), n in by_status.items():
        print(f"{indent}  {n} x {status} on {method} {route}")
    notable = [r for r in records if r.get("level") in ("WARNING", "ERROR", "CRITICAL", "RAW")]
    for (level, message), n in Counter((r.get("level"), str(r.get("message"))[:200]) for r in notable).most_common(12):
        print(f"{indent}  {n} x {level}: {message}")
    for record in [r for r in records if r.get("exception")][:2]:
        print(indent + "  traceback: " + record["exception"].strip().splitlines()[-1][:300])


# -- users and small HTTP calls ---------------------------------------------------------------

def connection(gateway: GatewayProcess, timeout: float = 300) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", int(gateway.env["PORT"]), timeout=timeout)


def call(gateway: GatewayProcess, method: str, path: str, headers: dict[str, str],
         body: bytes | memoryview | None = None, timeout: float = 300) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: (status, headers with lower-case names, body)."""
    conn = connection(gateway, timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


def register(gateway: GatewayProcess, label: str) -> str:
    """A new registered user's bearer token."""
    name = f"bench-{label}-{secrets.token_hex(3)}"
    status, _, body = call(gateway, "POST", "/api/auth/register", {"Content-Type": "application/json"},
                           json.dumps({"username": name, "password": PASSWORD}).encode(), timeout=60)
    if status != 201:
        raise RuntimeError(f"registering {name} answered {status}: {body[:300]!r}")
    return json.loads(body)["token"]


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def error_code(body: bytes) -> str:
    try:
        return json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return body[:80].decode(errors="replace")


def download_sha256(gateway: GatewayProcess, path: str, token: str) -> str:
    """sha256 of GET `path` (a finished upload), or 'status N' / the error."""
    conn = connection(gateway, 300)
    try:
        conn.request("GET", path, headers=bearer(token))
        response = conn.getresponse()
        digest = hashlib.sha256()
        while chunk := response.read(MiB):
            digest.update(chunk)
        return digest.hexdigest() if response.status == 200 else f"status {response.status}"
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def pool_slice(rng: random.Random, size: int) -> memoryview:
    start = rng.randrange(0, len(POOL) - size + 1)
    return POOL[start:start + size]


# -- user B: one tus upload and one REST upload ------------------------------------------------

@dataclass
class Outcome:
    kind: str
    seconds: float = float("nan")
    status: int | None = None
    error: str = ""
    path: str = ""  # where the bytes can be downloaded (GET /files/<id>)
    started: float = 0.0  # perf_counter at the start

    @property
    def ok(self) -> bool:
        return self.status in (201, 204) and not self.error


def b_tus(gateway: GatewayProcess, token: str, data: memoryview) -> Outcome:
    """Create an upload and send `data` in one streamed PATCH; time both requests."""
    outcome = Outcome("tus", started=time.perf_counter())
    conn = connection(gateway, 300)
    try:
        conn.request("POST", "/files/", headers=bearer(token, **TUS, **{"Upload-Length": str(len(data))}))
        response = conn.getresponse()
        body = response.read()
        if response.status != 201:
            outcome.status, outcome.error = response.status, error_code(body)
            return outcome
        outcome.path = urlsplit(response.headers["Location"]).path
        conn.request("PATCH", outcome.path, body=data, headers=bearer(token, **TUS, **{
            "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}))
        response = conn.getresponse()
        body = response.read()
        outcome.seconds = time.perf_counter() - outcome.started
        outcome.status = response.status
        if response.status != 204:
            outcome.error = error_code(body)
        elif response.headers.get("Upload-Offset") != str(len(data)):
            outcome.error = f"Upload-Offset {response.headers.get('Upload-Offset')}"
    except (OSError, http.client.HTTPException) as exc:
        outcome.seconds = time.perf_counter() - outcome.started
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    return outcome


def multipart_body(data: memoryview) -> tuple[bytes, str]:
    boundary = "bench" + secrets.token_hex(12)
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b-rest.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + bytes(data) + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def b_rest(gateway: GatewayProcess, token: str, body: bytes, content_type: str) -> Outcome:
    """POST /api/media/upload with a prepared multipart body; time it."""
    outcome = Outcome("rest", started=time.perf_counter())
    try:
        status, _, answer = call(gateway, "POST", "/api/media/upload",
                                 bearer(token, **{"Content-Type": content_type}), body)
        outcome.seconds = time.perf_counter() - outcome.started
        outcome.status = status
        if status == 201:
            outcome.path = f"/files/{json.loads(answer)['id']}"
        else:
            outcome.error = error_code(answer)
    except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
        outcome.seconds = time.perf_counter() - outcome.started
        outcome.error = f"{type(exc).__name__}: {exc}"
    return outcome


@dataclass
class BRound:
    tus: Outcome
    rest: Outcome

    @property
    def seconds(self) -> float:
        return self.tus.seconds + self.rest.seconds


class UserB:
    def __init__(self, gateway: GatewayProcess, token: str, tus_size: int, rest_size: int) -> None:
        rng = random.Random(7)
        self.gateway, self.token = gateway, token
        self.tus_data = pool_slice(rng, tus_size)
        self.rest_data = pool_slice(rng, rest_size)
        self.tus_sha = hashlib.sha256(self.tus_data).hexdigest()
        self.rest_sha = hashlib.sha256(self.rest_data).hexdigest()
        self.rest_body, self.rest_type = multipart_body(self.rest_data)

    def round(self) -> BRound:
        tus = b_tus(self.gateway, self.token, self.tus_data)
        rest = b_rest(self.gateway, self.token, self.rest_body, self.rest_type)
        return BRound(tus, rest)

    def wrong_bytes(self, rounds: list[BRound]) -> list[str]:
        """Downloads of B's accepted uploads that differ from what B sent."""
        wrong = []
        for r in rounds:
            for outcome, expected in ((r.tus, self.tus_sha), (r.rest, self.rest_sha)):
                if outcome.ok:
                    got = download_sha256(self.gateway, outcome.path, self.token)
                    if got != expected:
                        wrong.append(f"{outcome.kind} {outcome.path}: {got[:24]}")
        return wrong


def describe_round(r: BRound) -> str:
    parts = []
    for outcome in (r.tus, r.rest):
        text = f"{outcome.kind} {outcome.seconds:6.2f} s"
        if not outcome.ok:
            text += f" [{outcome.status} {outcome.error}]"
        parts.append(text)
    return ", ".join(parts)


# -- user A: trickling PATCHes -----------------------------------------------------------------

@dataclass
class Stall:
    """One of A's raw-socket PATCHes."""

    url: str
    sock: socket.socket | None
    opened: float
    sent: int = 1
    received: bytes = b""
    ended: float | None = None
    status: int | None = None
    code: str = ""
    how: str = ""  # "answered", "closed", "reset", "deadline"


def _answer_complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return match is None or len(body) >= int(match.group(1))


def _end(stall: Stall, how: str, now: float) -> None:
    stall.ended, stall.how = now, how
    if stall.received.startswith(b"HTTP/"):
        stall.how = "answered"
        try:
            stall.status = int(stall.received.split(b" ", 2)[1])
        except (IndexError, ValueError):
            stall.status = -1
        stall.code = error_code(stall.received.partition(b"\r\n\r\n")[2])
    if stall.sock is not None:
        stall.sock.close()
        stall.sock = None


def trickle(stalls: list[Stall], every: float, deadline: float) -> None:
    """Send one byte on every open PATCH each `every` seconds; note each answer or close as it
    comes; stop when all have ended or at `deadline` (monotonic), closing what is left."""
    next_send = time.monotonic() + every
    while True:
        now = time.monotonic()
        open_ = [s for s in stalls if s.sock is not None]
        if not open_ or now >= deadline:
            break
        readable, _, _ = select.select([s.sock for s in open_], [], [], max(min(next_send, deadline) - now, 0.0))
        now = time.monotonic()
        for stall in [s for s in open_ if s.sock in readable]:
            try:
                chunk = stall.sock.recv(65536)
            except ConnectionResetError:
                _end(stall, "reset", now)
                continue
            except OSError:
                _end(stall, "closed", now)
                continue
            if not chunk:
                _end(stall, "closed", now)
            else:
                stall.received += chunk
                if _answer_complete(stall.received):
                    _end(stall, "answered", now)
        if now >= next_send:
            for stall in [s for s in stalls if s.sock is not None]:
                try:
                    stall.sock.send(b"x")
                    stall.sent += 1
                except OSError:
                    pass  # closed by the gateway: the next select sees it
            next_send += every
    for stall in stalls:
        if stall.sock is not None:
            _end(stall, "deadline", time.monotonic())


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low:.1f} s" if high - low < 0.05 else f"{low:.1f}-{high:.1f} s"


# -- phase 1: the stall attack ------------------------------------------------------------------

def attack_phase(gateway: GatewayProcess, settings: Settings, args: argparse.Namespace, idle_rss: float,
                 idle_parts: str, log_at: int) -> tuple[bool, int]:
    """Run the stall attack; print its figures. Returns (bytes all right, log offset)."""
    pid = gateway.process.pid
    size = _size(args.attack_size)
    a, b_token = register(gateway, "a"), register(gateway, "b")
    b = UserB(gateway, b_token, _size(args.tus_size), _size(args.rest_size))
    print(f"\n1. stall attack: user A trickles {args.attack_uploads} PATCHes declaring {args.attack_size} each "
          f"(1 byte every {args.trickle_every:g} s); user B uploads {args.tus_size} (tus, one PATCH) "
          f"and {args.rest_size} (REST multipart)")

    baseline = []
    for i in range(args.rounds):
        r = b.round()
        baseline.append(r)
        print(f"  B without the attack, round {i + 1}: {describe_round(r)}")

    urls = []
    for _ in range(args.attack_uploads):
        status, headers, body = call(gateway, "POST", "/files/", bearer(a, **TUS, **{"Upload-Length": str(size)}))
        if status != 201:
            raise RuntimeError(f"A's upload creation answered {status}: {body[:300]!r}")
        urls.append(headers["location"])

    rss_before = memory_mib(pid, "VmRSS")
    reset = reset_peak_rss(pid)
    sampler = Sampler(gateway)
    sampler.start()
    attack_start = time.monotonic()
    stalls = []
    for url in urls:
        stalls.append(Stall(url, raw_patch(url, a, 0, size, b"x"), time.monotonic()))
    # the gateway gives up on a stalled body after the rate window (or the idle timeout when the
    # rate check is off) plus waits for memory: give it that much and a margin, then stop anyway
    limit = (settings.min_body_rate_window if settings.min_body_rate > 0 else settings.idle_body_timeout)
    deadline = attack_start + limit + settings.upload_memory_wait + args.trickle_every + 30
    trickler = threading.Thread(target=trickle, args=(stalls, args.trickle_every, deadline), daemon=True)
    trickler.start()

    # B starts once A holds what it can (its share of the part buffers), at most 5 s after
    share = min(settings.upload_memory_per_user, settings.upload_memory_budget)
    expected = min(share // settings.part_size, len(stalls)) * settings.part_size  # 50 MiB uploads use PART_SIZE parts
    held = 0.0
    while time.monotonic() < attack_start + 5:
        held = buffer_bytes(gateway) or 0.0
        if held >= expected:
            break
        time.sleep(0.2)
    print(f"  A's {len(stalls)} PATCHes open; part buffers handed out when B starts: {held / MiB:.0f} MiB "
          f"(A's share: {expected / MiB:.0f} MiB), {time.monotonic() - attack_start:.1f} s into the attack")

    attacked = []
    for i in range(args.rounds):
        start = time.monotonic() - attack_start
        open_at_start = sum(s.sock is not None for s in stalls)
        r = b.round()
        attacked.append(r)
        print(f"  B under the attack,    round {i + 1}: {describe_round(r)}   "
              f"(from {start:.1f} s to {time.monotonic() - attack_start:.1f} s of the attack; "
              f"A's PATCHes open at its start: {open_at_start}/{len(stalls)})")

    trickler.join(max(deadline - time.monotonic(), 0) + 10)
    attack_seconds = time.monotonic() - attack_start
    peak = memory_mib(pid, "VmHWM")
    sampler.stop()
    if not reset:
        peak = sampler.max_rss

    # what A got, and what A's uploads kept
    offsets = []
    for url in urls:
        status, headers, _ = call(gateway, "HEAD", urlsplit(url).path, bearer(a, **TUS))
        offsets.append(int(headers.get("upload-offset", -1)) if status == 200 else -status)
    print(f"  A's connections ({attack_seconds:.1f} s until the last one ended), and the offsets their uploads "
          f"committed afterwards (HEAD, bytes of {size}):")
    groups: dict[str, list[tuple[Stall, int]]] = {}
    for stall, offset in zip(stalls, offsets):
        if stall.how == "answered":
            key = f"answered {stall.status} {stall.code}"
        elif stall.how in ("closed", "reset"):
            key = "closed by the gateway without an answer" + (" (reset)" if stall.how == "reset" else "")
        else:
            key = "still open at the bench's deadline (closed by the bench)"
        groups.setdefault(key, []).append((stall, offset))
    for key, members in groups.items():
        after = [s.ended - s.opened for s, _ in members if s.ended is not None]
        sent = [s.sent for s, _ in members]
        kept = Counter(o for _, o in members)
        same = sum(o == s.sent for s, o in members)
        print(f"    {len(members):3d} {key}, after {spread(after)}; bytes A sent on each: "
              f"{min(sent)}-{max(sent)}; offsets: {', '.join(f'{n} x {o}' for o, n in sorted(kept.items()))} "
              f"({same} equal to all A sent)")

    base_tus = statistics.median(r.tus.seconds for r in baseline)
    base_rest = statistics.median(r.rest.seconds for r in baseline)
    att_tus = statistics.median(r.tus.seconds for r in attacked)
    att_rest = statistics.median(r.rest.seconds for r in attacked)
    print(f"  B, median of {args.rounds} round(s):   without attack   under attack   ratio (goal < 2)")
    print(f"    tus {args.tus_size:>8}         {base_tus:10.2f} s   {att_tus:10.2f} s   {att_tus / base_tus:6.2f}")
    print(f"    REST {args.rest_size:>7}         {base_rest:10.2f} s   {att_rest:10.2f} s   {att_rest / base_rest:6.2f}")
    print(f"    both                {base_tus + base_rest:10.2f} s   {att_tus + att_rest:10.2f} s   "
          f"{(att_tus + att_rest) / (base_tus + base_rest):6.2f}")
    failed = [o for r in baseline + attacked for o in (r.tus, r.rest) if not o.ok]
    for o in failed:
        print(f"    B's {o.kind} upload failed: {o.status} {o.error}")
    wrong = b.wrong_bytes(baseline + attacked)
    accepted = sum(o.ok for r in baseline + attacked for o in (r.tus, r.rest))
    print(f"  B's accepted uploads byte-identical (sha256 of a download): {accepted - len(wrong)}/{accepted}")
    for line in wrong:
        print(f"    WRONG BYTES: {line}")

    budget = settings.upload_memory_budget / MiB
    print(f"  gateway RSS: idle {idle_rss:.0f} MiB, before the attack {rss_before:.0f} MiB, "
          f"peak during the attack {peak:.0f} MiB")
    print(f"    against UPLOAD_MEMORY_BUDGET + idle RSS = {budget:.0f} + {idle_rss:.0f} = {budget + idle_rss:.0f} MiB: "
          f"{'within' if peak <= budget + idle_rss else 'BEYOND'} (peak part buffers handed out: "
          f"{sampler.max_buffers / MiB:.0f} MiB)")
    print(f"    highest sample {sampler.max_rss:.0f} MiB: {sampler.max_parts} MiB; idle: {idle_parts} MiB")
    records, log_at = log_lines(gateway, log_at)
    print_log_summary(records)
    return not wrong, log_at


# -- phase 2: parallel concatenations ----------------------------------------------------------

@dataclass
class Final:
    index: int
    token: str
    sizes: list[int]
    seed: int
    partials: list[str] = field(default_factory=list)
    expected: str = ""
    status: int | None = None
    seconds: float = float("nan")
    path: str = ""
    error: str = ""
    got: str = ""


def upload_partials(gateway: GatewayProcess, final: Final) -> None:
    """Upload `final`'s partials (creation-with-upload, one request each) and note the expected join."""
    rng = random.Random(final.seed)
    digest = hashlib.sha256()
    for size in final.sizes:
        data = pool_slice(rng, size)
        status, headers, body = call(gateway, "POST", "/files/", bearer(final.token, **TUS, **{
            "Upload-Length": str(size), "Upload-Concat": "partial",
            "Content-Type": "application/offset+octet-stream"}), data)
        if status != 201 or headers.get("upload-offset") != str(size):
            raise RuntimeError(f"partial upload answered {status}, offset {headers.get('upload-offset')}: {body[:300]!r}")
        final.partials.append(headers["location"])
        digest.update(data)
    final.expected = digest.hexdigest()


def post_final(gateway: GatewayProcess, final: Final, start: threading.Barrier) -> None:
    try:
        start.wait(120)
    except threading.BrokenBarrierError:
        pass
    started = time.perf_counter()
    try:
        status, headers, body = call(gateway, "POST", "/files/", bearer(final.token, **TUS, **{
            "Upload-Concat": "final;" + " ".join(final.partials)}), timeout=600)
        final.status = status
        if status == 201:
            final.path = urlsplit(headers["location"]).path
        else:
            final.error = error_code(body)
    except (OSError, http.client.HTTPException) as exc:
        final.error = f"{type(exc).__name__}: {exc}"
    final.seconds = time.perf_counter() - started


def concat_phase(gateway: GatewayProcess, settings: Settings, args: argparse.Namespace, idle_rss: float,
                 idle_parts: str, log_at: int) -> tuple[bool, int]:
    """Run the parallel concatenations; print their figures. Returns (bytes all right, log offset)."""
    pid = gateway.process.pid
    low, high = _size(args.partial_min), _size(args.partial_max)
    tokens = [register(gateway, f"c{i}") for i in range(args.concat_users)]
    rng = random.Random(11)
    finals = [Final(i, tokens[i % len(tokens)], [rng.randint(low, high) for _ in range(args.partials_per_final)],
                    seed=1000 + i) for i in range(args.finals)]
    total = sum(sum(f.sizes) for f in finals)
    print(f"\n2. {args.finals} parallel concatenations: {args.concat_users} users, "
          f"{args.partials_per_final} partials of {args.partial_min}-{args.partial_max} per final "
          f"({args.finals * args.partials_per_final} partials, {total / MiB:.0f} MiB)")
    started = time.perf_counter()
    with ThreadPoolExecutor(args.upload_threads) as pool:
        list(pool.map(lambda f: upload_partials(gateway, f), finals))
    print(f"  partials uploaded in {time.perf_counter() - started:.1f} s")

    rss_before = memory_mib(pid, "VmRSS")
    reset = reset_peak_rss(pid)
    sampler = Sampler(gateway)
    sampler.start()
    barrier = threading.Barrier(len(finals) + 1)
    threads = [threading.Thread(target=post_final, args=(gateway, f, barrier), daemon=True) for f in finals]
    for thread in threads:
        thread.start()
    try:
        barrier.wait(120)
    except threading.BrokenBarrierError:
        pass
    started = time.perf_counter()
    for thread in threads:
        thread.join(max(started + 660 - time.perf_counter(), 0.1))
    seconds = time.perf_counter() - started
    peak = memory_mib(pid, "VmHWM")
    sampler.stop()
    if not reset:
        peak = sampler.max_rss
    left = buffer_bytes(gateway)

    statuses = Counter(f.status if f.status is not None else f.error for f in finals)
    latencies = sorted(f.seconds for f in finals if f.status == 201)
    print(f"  final POSTs answered in {seconds:.1f} s: "
          f"{', '.join(f'{s}: {n}' for s, n in sorted(statuses.items(), key=lambda i: str(i[0])))}")
    if latencies:
        print(f"    latency of the 201s: min {latencies[0]:.2f} s, median {statistics.median(latencies):.2f} s, "
              f"max {latencies[-1]:.2f} s")
    for f in [f for f in finals if f.status != 201][:10]:
        print(f"    final {f.index}: {f.status} {f.error}")

    def check(final: Final) -> None:
        final.got = download_sha256(gateway, final.path, final.token)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(check, [f for f in finals if f.status == 201]))
    created = [f for f in finals if f.status == 201]
    wrong = [f for f in created if f.got != f.expected]
    print(f"  finals byte-identical to the join of their partials (sha256 of a download): "
          f"{len(created) - len(wrong)}/{len(created)}")
    for f in wrong[:10]:
        print(f"    WRONG BYTES: final {f.index} ({f.path}): {f.got[:24]}")

    budget = settings.upload_memory_budget / MiB
    print(f"  gateway RSS: idle {idle_rss:.0f} MiB, before the finals {rss_before:.0f} MiB, "
          f"peak during the finals {peak:.0f} MiB")
    print(f"    against UPLOAD_MEMORY_BUDGET + idle RSS = {budget:.0f} + {idle_rss:.0f} = {budget + idle_rss:.0f} MiB: "
          f"{'within' if peak <= budget + idle_rss else 'BEYOND'} (peak part buffers handed out: "
          f"{sampler.max_buffers / MiB:.0f} MiB; handed out after the finals: "
          f"{'?' if left is None else f'{left / MiB:.0f} MiB'})")
    print(f"    highest sample {sampler.max_rss:.0f} MiB: {sampler.max_parts} MiB; idle: {idle_parts} MiB")
    records, log_at = log_lines(gateway, log_at)
    print_log_summary(records)
    return not wrong, log_at


# -- main -----------------------------------------------------------------------------------------

OVERRIDES = (  # flag attribute -> the gateway's environment variable
    ("part_size", "PART_SIZE"),
    ("memory_budget", "UPLOAD_MEMORY_BUDGET"),
    ("memory_per_user", "UPLOAD_MEMORY_PER_USER"),
    ("memory_wait", "UPLOAD_MEMORY_WAIT"),
    ("min_body_rate", "MIN_BODY_RATE"),
    ("rate_window", "MIN_BODY_RATE_WINDOW"),
    ("idle_body_timeout", "IDLE_BODY_TIMEOUT"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=("local", "s3"), default="local")
    parser.add_argument("--phases", default="attack,concat", help="which of attack,concat to run")
    parser.add_argument("--attack-uploads", type=int, default=24)
    parser.add_argument("--attack-size", default="50MiB")
    parser.add_argument("--trickle-every", type=float, default=2.0, help="seconds between A's bytes")
    parser.add_argument("--tus-size", default="64MiB")
    parser.add_argument("--rest-size", default="16MiB")
    parser.add_argument("--rounds", type=int, default=2, help="B's rounds without and under the attack")
    parser.add_argument("--finals", type=int, default=100)
    parser.add_argument("--partials-per-final", type=int, default=3)
    parser.add_argument("--partial-min", default="2MiB")
    parser.add_argument("--partial-max", default="4.75MiB", help="below 5MiB, so partials are joined in memory")
    parser.add_argument("--concat-users", type=int, default=4)
    parser.add_argument("--upload-threads", type=int, default=8, help="client threads uploading the partials")
    parser.add_argument("--keep", action="store_true", help="keep the bench's folder (gateway log) and print where")
    group = parser.add_argument_group("gateway settings (default: the gateway's own defaults)")
    group.add_argument("--part-size")
    group.add_argument("--memory-budget", help="UPLOAD_MEMORY_BUDGET")
    group.add_argument("--memory-per-user", help="UPLOAD_MEMORY_PER_USER")
    group.add_argument("--memory-wait", help="UPLOAD_MEMORY_WAIT, seconds")
    group.add_argument("--min-body-rate", help="MIN_BODY_RATE, bytes per second")
    group.add_argument("--rate-window", help="MIN_BODY_RATE_WINDOW, seconds (30 by default)")
    group.add_argument("--idle-body-timeout", help="IDLE_BODY_TIMEOUT, seconds")
    args = parser.parse_args()
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    if phases - {"attack", "concat"} or not phases:
        parser.error("--phases takes attack and/or concat")
    if _size(args.partial_max) >= MIN_PART_SIZE or _size(args.partial_min) < 1 or _size(args.partial_min) > _size(args.partial_max):
        parser.error("partials must be 1 byte <= --partial-min <= --partial-max < 5MiB")
    if args.rounds < 1 or args.attack_uploads < 1 or args.finals < 1 or args.concat_users < 1 or args.trickle_every <= 0:
        parser.error("counts must be 1 or more, --trickle-every positive")
    print(use_shipped_gateway())

    folder = Path(tempfile.mkdtemp(prefix="bench-tenants-"))
    moto = endpoint = None
    if args.store == "s3":
        moto, endpoint = start_moto()
    mongo, mongo_uri = start_mongo(folder)
    data_dir = folder / "gw"
    data_dir.mkdir()
    env = {"HOST": "127.0.0.1", "PORT": str(free_port()), "DATA_DIR": str(data_dir), "MONGODB_URI": mongo_uri,
           "JWT_SECRET": JWT_SECRET, "LOG_LEVEL": "INFO", "STORAGE_BACKEND": args.store}
    if args.store == "s3":
        env.update({"S3_BUCKET": "tenants", "S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench",
                    "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "eu-west-2"})
    for attribute, variable in OVERRIDES:
        if getattr(args, attribute) is not None:
            env[variable] = getattr(args, attribute)
    settings = Settings.from_env(dict(os.environ, **env))  # what the gateway will read
    print(f"store {args.store}; gateway settings: PART_SIZE {settings.part_size / MiB:g} MiB, "
          f"UPLOAD_MEMORY_BUDGET {settings.upload_memory_budget / MiB:g} MiB, "
          f"UPLOAD_MEMORY_PER_USER {settings.upload_memory_per_user / MiB:g} MiB, "
          f"UPLOAD_MEMORY_WAIT {settings.upload_memory_wait:g} s, MIN_BODY_RATE {settings.min_body_rate} B/s over "
          f"MIN_BODY_RATE_WINDOW {settings.min_body_rate_window:g} s, IDLE_BODY_TIMEOUT {settings.idle_body_timeout:g} s, "
          f"MAX_UNFINISHED_UPLOADS {settings.max_unfinished_uploads}, MAX_CONCAT_PARTS {settings.max_concat_parts}")
    if args.partials_per_final > settings.max_concat_parts:
        print(f"  note: {args.partials_per_final} partials per final is past MAX_CONCAT_PARTS: the finals will be refused")

    gateway = GatewayProcess(env, data_dir)
    all_right = True
    wall = time.monotonic()
    try:
        gateway.start()
        idle_rss, idle_parts = memory_mib(gateway.process.pid, "VmRSS"), rss_parts(gateway.process.pid)
        print(f"gateway pid {gateway.process.pid}, idle RSS {idle_rss:.0f} MiB ({idle_parts} MiB)")
        log_at = 0
        if "attack" in phases:
            right, log_at = attack_phase(gateway, settings, args, idle_rss, idle_parts, log_at)
            all_right &= right
            if not alive(gateway):
                print("THE GATEWAY DIED or stopped answering /health after the attack")
                all_right = False
        if "concat" in phases and gateway.process.poll() is None:
            right, log_at = concat_phase(gateway, settings, args, idle_rss, idle_parts, log_at)
            all_right &= right
            if not alive(gateway):
                print("THE GATEWAY DIED or stopped answering /health after the concatenations")
                all_right = False
        print(f"\ngateway alive and healthy at the end: {alive(gateway)}; bench took {time.monotonic() - wall:.0f} s")
    except Exception as exc:  # noqa: BLE001 - print what happened, with the gateway's last words
        print(f"\nBENCH STOPPED: {type(exc).__name__}: {exc}")
        print(f"gateway running: {gateway.process is not None and gateway.process.poll() is None}")
        print(gateway.log()[-3000:])
        all_right = False
    finally:
        gateway.stop()
        for process in (mongo, moto):
            if process is not None:
                process.terminate()
                process.wait()
        if args.keep:
            print(f"bench folder kept: {folder} (gateway log {gateway.log_path})")
        else:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
    return 0 if all_right else 1


if __name__ == "__main__":
    sys.exit(main())
