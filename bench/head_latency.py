"""How fast the gateway answers a tus HEAD while it ingests at full speed.

tus clients resume with HEAD; a gateway busy taking bytes must still answer it promptly. This
bench starts one gateway (S3 on moto, or the local store; MongoDB: nx-27017), optionally in a
Fargate-shaped cgroup (--task-cpu 0.25 --task-memory 512MiB, bench/task_limits.py), creates one
small upload to ask about, and sends HEAD requests for it on a kept-alive connection every
--interval seconds:
  1. while the gateway is idle (--probes of them), then
  2. while --uploads streamed PATCHes of a --size file each run at once (one PATCH per file,
     as tus-js-client and Uppy send by default), until they end.
A GET /health (no MongoDB, no auth) is timed the same way beside it: its latency is the event
loop's own, and the difference to HEAD's is the upload's lookup in MongoDB. The HEADs' durations
in the gateway's access log (from their headers being read to the answer) tell the time spent
handling them from the time spent waiting for the process to read them.
It prints, for each phase, the HEAD latency median, p95, p99 and maximum, the number of HEADs and
how many failed, and for the ingest phase the MB/s taken and, in a cgroup, the task's CPU seconds
per GiB and throttled seconds. The probes cost CPU too: after the idle phase, 100 back-to-back
HEADs and 100 GET /health time what one of each costs the gateway, and the ingest phase's CPU per
GiB is printed also without the probes it answered (at that idle cost). A probe leaves --interval
after the previous one or as soon as it is answered, whichever is later, so a gateway that answers
slowly is asked less often: compare the HEAD counts of the runs, not only their MB/s. Every upload
is checked to have reached its full offset.

Each measurement runs once per --ingest-cpu-limits value (INGEST_CPU_LIMIT: off, the baseline,
then auto, which paces bodies to 90% of the task's CPU quota; a value may come more than once,
for repeated runs), each on a fresh gateway.

Usage: python -m bench.head_latency [--store s3|local] [--size 512MiB] [--uploads 2]
                                    [--interval 0.05] [--ingest-cpu-limits off,auto]
                                    [--task-cpu 0.25 --task-memory 512MiB] [--s3-tls]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import BinaryIO, Iterator
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.task_limits import (  # noqa: E402
    TaskGroup, gateway_python, start_moto_tls, task_limits_from_args,
)
from bench.upload import (  # noqa: E402
    JWT_SECRET, cpu_seconds, make_file, require_free_space, s3_client, start_mongo, start_moto, token,
)
from gateway.config import _size  # noqa: E402
from tests.support import GatewayProcess, free_port, stop_process  # noqa: E402

MiB = 1024 * 1024
BUCKET = "head-latency"
REGION = "eu-west-2"


def percentile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of `values` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def connection(url: str, timeout: float = 60) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout, blocksize=MiB)


def create_upload(base: str, bearer: str, size: int) -> str:
    """POST a tus upload of `size` bytes; its path."""
    conn = connection(base)
    conn.request("POST", "/files/", headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(size),
                                             "Authorization": f"Bearer {bearer}"})
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 201, response.status
    return urlsplit(response.headers["Location"]).path


def stream_patch(base: str, bearer: str, path: str, body: BinaryIO, size: int, result: list) -> None:
    """Send the `size` bytes of `body` (a file, closed here) as one PATCH to `path`; append the
    final offset (or the error) to `result`."""
    try:
        with body:
            conn = connection(base, timeout=1800)
            conn.request("PATCH", path, body=body, headers={
                "Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Length": str(size),
                "Content-Type": "application/offset+octet-stream", "Authorization": f"Bearer {bearer}"})
            response = conn.getresponse()
            answer = response.read()
            conn.close()
        result.append(int(response.headers.get("Upload-Offset", -1)) if response.status == 204
                      else f"status {response.status}: {answer[:200].decode(errors='replace')}")
    except Exception as exc:  # noqa: BLE001 - reported in the table
        result.append(repr(exc))


class HeadProbe:
    """HEADs of one upload (or, with `method` GET, another request) every `interval` seconds on
    one kept-alive connection, timed."""

    def __init__(self, base: str, bearer: str, path: str, interval: float, method: str = "HEAD") -> None:
        self._base, self._bearer, self._path, self._interval = base, bearer, path, interval
        self._method = method
        self.latencies: list[float] = []
        self.failures = 0

    def run(self, until: threading.Event | None = None, count: int | None = None) -> None:
        conn = connection(self._base, timeout=30)
        while (until is None or not until.is_set()) and (count is None or len(self.latencies) + self.failures < count):
            started = time.perf_counter()
            try:
                conn.request(self._method, self._path, headers={"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {self._bearer}"})
                response = conn.getresponse()
                response.read()
                if response.status == 200 and (self._method != "HEAD" or response.headers.get("Upload-Offset") is not None):
                    self.latencies.append(time.perf_counter() - started)
                else:
                    self.failures += 1
            except (OSError, http.client.HTTPException):
                self.failures += 1
                conn.close()
                conn = connection(self._base, timeout=30)
            time.sleep(max(0.0, self._interval - (time.perf_counter() - started)))
        conn.close()

    def row(self, phase: str) -> str:
        if not self.latencies:
            return f"{phase:28s} no answers ({self.failures} failed)"
        ms = [value * 1000 for value in self.latencies]
        return (f"{phase:28s} {statistics.median(ms):8.1f} {percentile(ms, 0.95):8.1f} {percentile(ms, 0.99):8.1f} "
                f"{max(ms):8.1f} {len(ms):6d} {self.failures:6d}")


def served_ms(log_path: Path, method: str, skip: int = 0) -> list[float]:
    """The gateway's own duration (ms, from its access log) of each `method` request, after the
    first `skip` of them: the time from its headers being read to its answer."""
    durations = []
    with open(log_path, errors="replace") as log:
        for line in log:
            if '"duration_ms"' not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("method") == method and entry.get("status") == 200:
                durations.append(float(entry["duration_ms"]))
    return durations[skip:]


def served_row(phase: str, durations: list[float]) -> str:
    if not durations:
        return f"{phase:28s} none logged"
    return (f"{phase:28s} {statistics.median(durations):8.1f} {percentile(durations, 0.95):8.1f} "
            f"{percentile(durations, 0.99):8.1f} {max(durations):8.1f} {len(durations):6d}")


def gateway_env(folder: Path, mongo_uri: str, store: str, endpoint: str) -> dict[str, str]:
    env = {"HOST": "127.0.0.1", "PORT": str(free_port()), "DATA_DIR": str(folder), "MONGODB_URI": mongo_uri,
           "JWT_SECRET": JWT_SECRET, "ACCOUNTLESS_TOKENS": "true", "LOG_LEVEL": "INFO", "LOG_FORMAT": "json",
           "STORAGE_BACKEND": store}
    if store == "s3":
        env.update({"S3_BUCKET": BUCKET, "S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench",
                    "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": REGION})
    return env


@contextlib.contextmanager
def bench_servers(store: str, folder: Path, tls: bool = False) -> Iterator[tuple[str, str]]:
    """(MongoDB URI, S3 endpoint or "") of an nx-27017 server and, for `store` s3, a moto server
    (over TLS with `tls`) holding the bench's bucket; both stopped afterwards."""
    moto = mongo = None
    try:
        mongo, mongo_uri = start_mongo(folder)
        endpoint = ""
        if store == "s3":
            moto, endpoint = start_moto_tls(folder) if tls else start_moto()
            s3_client(endpoint).create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield mongo_uri, endpoint
    finally:
        for process in (moto, mongo):
            stop_process(process)


@contextlib.contextmanager
def task_gateway(env: dict[str, str], data: Path, limits) -> Iterator[tuple[GatewayProcess, TaskGroup | None]]:
    """A gateway started with `env` on `data`, in its own task group under `limits` (when given);
    stopped, and its group removed, afterwards."""
    group: TaskGroup | None = limits.group("ours") if limits else None
    gateway = GatewayProcess(env, data)
    try:
        with gateway_python(group):
            gateway.start(timeout=120)
        yield gateway, group
    finally:
        gateway.stop()
        if group is not None:
            group.remove()


def probe_cpu_ms(gateway: GatewayProcess, group: TaskGroup | None, bearer: str, path: str,
                 count: int = 100) -> dict[str, float]:
    """CPU milliseconds the idle gateway spends on one HEAD of `path` and on one GET /health, each
    timed over `count` back-to-back requests (its task group's CPU, or its process's without one):
    what the probes themselves take from the task while it ingests."""
    def cpu() -> float:
        return group.stats().cpu_seconds if group is not None else cpu_seconds(gateway.process.pid)

    costs = {}
    for method, target in (("HEAD", path), ("GET", "/health")):
        probe = HeadProbe(gateway.url, bearer, target, 0.0, method=method)
        before = cpu()
        probe.run(count=count)
        costs[method] = (cpu() - before) * 1000 / count
    return costs


def run_data(folder: Path, run: int, cpu_limit: str) -> Path:
    """A fresh data folder in `folder` for the `run`-th gateway of a bench (INGEST_CPU_LIMIT
    `cpu_limit`); numbered, so that a value may be measured twice."""
    data = folder / f"data-{run}-{cpu_limit}"
    data.mkdir()
    return data


def run_gateway(args: argparse.Namespace, folder: Path, source: Path, limits, mongo_uri: str, endpoint: str,
                cpu_limit: str, run: int = 1) -> None:
    """Start the `run`-th gateway, with INGEST_CPU_LIMIT=`cpu_limit`; measure both phases, print, stop it."""
    size = source.stat().st_size
    data = run_data(folder, run, cpu_limit)
    env = dict(gateway_env(data, mongo_uri, args.store, endpoint), INGEST_CPU_LIMIT=cpu_limit)
    with task_gateway(env, data, limits) as (gateway, group):
        bearer = token()
        probe_path = create_upload(gateway.url, bearer, 1024)
        print(f"\nINGEST_CPU_LIMIT={cpu_limit}")
        print(f"{'phase':28s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'max ms':>8s} {'HEADs':>6s} {'failed':>6s}")
        idle = HeadProbe(gateway.url, bearer, probe_path, args.interval)
        idle_health = HeadProbe(gateway.url, bearer, "/health", args.interval, method="GET")
        health_thread = threading.Thread(target=idle_health.run, kwargs={"count": args.probes})
        health_thread.start()
        idle.run(count=args.probes)
        health_thread.join()
        print(idle.row("idle: HEAD"))
        print(idle_health.row("idle: GET /health"))
        costs = probe_cpu_ms(gateway, group, bearer, probe_path)
        print(f"idle: CPU per request {costs['HEAD']:.2f} ms (HEAD), {costs['GET']:.2f} ms (GET /health)")
        idle_heads = len(served_ms(gateway.log_path, "HEAD"))

        paths = [create_upload(gateway.url, bearer, size) for _ in range(args.uploads)]
        results: list = []
        before = group.stats() if group else None
        started = time.perf_counter()
        senders = [threading.Thread(target=stream_patch, args=(gateway.url, bearer, path, open(source, "rb"), size, results))
                   for path in paths]
        done = threading.Event()
        busy = HeadProbe(gateway.url, bearer, probe_path, args.interval)
        busy_health = HeadProbe(gateway.url, bearer, "/health", args.interval, method="GET")
        probers = [threading.Thread(target=probe.run, kwargs={"until": done}) for probe in (busy, busy_health)]
        for thread in probers + senders:
            thread.start()
        for sender in senders:
            sender.join()
        elapsed = time.perf_counter() - started
        done.set()
        for prober in probers:
            prober.join()
        print(busy.row("full ingest: HEAD"))
        print(busy_health.row("full ingest: GET /health"))
        print(served_row("full ingest: HEAD in gateway", served_ms(gateway.log_path, "HEAD", idle_heads)))
        total = size * args.uploads
        line = f"ingest: {total / elapsed / 1e6:.1f} MB/s over {elapsed:.1f} s"
        if group is not None and before is not None:
            after = group.stats()
            gib = total / 1024 ** 3
            task_cpu = after.cpu_seconds - before.cpu_seconds
            probes_cpu = (costs["HEAD"] * len(busy.latencies) + costs["GET"] * len(busy_health.latencies)) / 1000
            line += (f"; task CPU {task_cpu / gib:.2f} s per GiB ({(task_cpu - probes_cpu) / gib:.2f} without the "
                     f"probes' {probes_cpu:.1f} s at their idle cost), "
                     f"throttled {after.throttled_seconds - before.throttled_seconds:.1f} s, "
                     f"peak {(after.peak_bytes or 0) / MiB:.0f} MiB, OOM kills {after.oom_kills}")
        print(line)
        complete = sum(1 for value in results if value == size)
        print(f"uploads complete: {complete}/{args.uploads}" + ("" if complete == args.uploads else f" ({results})"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=("s3", "local"), default="s3")
    parser.add_argument("--size", default="512MiB", help="bytes of each ingesting upload")
    parser.add_argument("--uploads", type=int, default=2, help="ingesting uploads at once")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between HEADs")
    parser.add_argument("--probes", type=int, default=200, help="HEADs while idle")
    parser.add_argument("--ingest-cpu-limits", default="off,auto",
                        help="INGEST_CPU_LIMIT of each gateway run, in turn (off: no pacing, the baseline)")
    parser.add_argument("--task-cpu")
    parser.add_argument("--task-memory")
    parser.add_argument("--s3-tls", action="store_true", help="S3 over TLS (moto with a certificate made now)")
    args = parser.parse_args()
    size = _size(args.size)

    with tempfile.TemporaryDirectory(prefix="head-latency-") as name:
        folder = Path(name)
        runs = len(args.ingest_cpu_limits.split(","))
        require_free_space(folder, size * (1 + args.uploads * (runs + 1)))  # moto keeps every run's objects
        limits = task_limits_from_args(args.task_cpu, args.task_memory, folder)
        source = folder / "source.bin"
        make_file(source, size)
        try:
            with bench_servers(args.store, folder, args.s3_tls) as (mongo_uri, endpoint):
                print(f"gateway: store {args.store}{' over TLS' if args.s3_tls else ''}; "
                      f"{limits.describe() if limits else 'no task limits (the whole machine)'}")
                print(f"HEAD every {args.interval * 1000:.0f} ms on one kept-alive connection; ingest: "
                      f"{args.uploads} streamed PATCH(es) of {size / MiB:.0f} MiB at once; "
                      "'in gateway': from its headers read to its answer (access log)")
                for run, cpu_limit in enumerate(args.ingest_cpu_limits.split(","), 1):
                    run_gateway(args, folder, source, limits, mongo_uri, endpoint, cpu_limit.strip(), run)
        finally:
            if limits is not None:
                limits.close()


if __name__ == "__main__":
    main()
