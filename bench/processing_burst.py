"""A burst of photos uploaded at once: thumbnails made in the gateway, or by 1 or 2 queue workers.

For each setup, one gateway (S3 in moto, MongoDB nx-27017) receives N 24 MP JPEGs (about 10 MB
each, all distinct: one photo made once and cached, each copy with its own comment segment)
through POST /api/media/upload, --parallel at a time from --users users, and the bench prints:
  * the seconds until the burst's last upload was answered 201 and the gateway's ingest MB/s over them (a 503 from
    the gateway's memory budget is retried after its Retry-After, as clients do, and counted;
    a request with no answer within --request-timeout is counted as lost, not retried);
  * the seconds from the burst's start until the last item got its final status (its updated_at
    in MongoDB, read directly, so polling costs the gateway nothing), how many items are ready
    with a thumbnail and how many failed;
  * with --task-cpu/--task-memory: the gateway's CPU seconds, time held back by its quota and
    peak memory in its own cgroup (as a Fargate task), and the workers' in theirs
    (--worker-cpu/--worker-memory, default 1 vCPU / 2 GiB, the worker service's task size).
Setups: "gateway" (no queue, PROCESSING_CONCURRENCY=2: processing in the gateway, as without
workers), "1 worker" and "2 workers" (PROCESSING_QUEUE_URL set, the gateway with
PROCESSING_CONCURRENCY=0, each `mediaserver worker` with PROCESSING_CONCURRENCY=2). moto serves
the SQS queue too; the bucket is emptied between setups.

Usage: python bench/processing_burst.py [--photos 200] [--parallel 32] [--users 32] [--setups gateway,1,2]
                                        [--task-cpu 0.25 --task-memory 512MiB]
                                        [--worker-cpu 1 --worker-memory 2GiB]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
import requests  # noqa: E402
from pymongo import MongoClient  # noqa: E402

from bench.many_uploads import make_photo, with_comment  # noqa: E402
from bench.task_limits import TaskGroup, TaskLimits, gateway_python, task_limits_from_args  # noqa: E402
from auth.tokens import Principal, TokenIssuer  # noqa: E402
from bench.upload import JWT_SECRET, empty_bucket, start_moto, start_mongo, use_shipped_gateway  # noqa: E402
from tests.support import GatewayProcess, free_port, stop_process, wait_for_port  # noqa: E402

MiB = 1024 * 1024
BUCKET = "burst-bench"
CACHE = Path(tempfile.gettempdir()) / "mediaserver-bench"


def cached_photo() -> bytes:
    """The 24 MP JPEG, made once and kept in the temp folder for later runs."""
    path = CACHE / "photo-24mp-v1.jpg"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        data = make_photo()
        part = path.with_suffix(".part")
        part.write_bytes(data)
        part.replace(path)
    return path.read_bytes()


@dataclass
class Result:
    setup: str
    upload_s: float = 0.0
    ingest_mb_s: float = 0.0
    busy_answers: int = 0
    lost: int = 0
    ready_s: float | None = None
    ready: int = 0
    failed: int = 0
    groups: dict[str, tuple[float, float, float, int]] = field(default_factory=dict)  # cpu s, throttled s, peak MiB, OOM kills


class Worker:
    """A `mediaserver worker` process (through its cgroup's wrapper when there is one)."""

    def __init__(self, env: dict[str, str], folder: Path, group: TaskGroup | None) -> None:
        self.port = free_port()
        self.env = dict(os.environ, **env, WORKER_PORT=str(self.port))
        python = os.environ.get("GATEWAY_PYTHON") or sys.executable
        command = [group.wrapper(python) if group else python, "-m", "gateway", "worker"]
        self.log = folder / f"worker-{self.port}.log"
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(command, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(self.port, 60)

    def stop(self) -> None:
        stop_process(self.process, 30)


@dataclass
class Burst:
    seconds: float = 0.0  # until the last upload answered 201
    stored_bytes: int = 0  # of the uploads answered 201
    busy_answers: int = 0  # 503s (memory budget), each retried after its Retry-After
    lost: int = 0  # no answer within the client's timeout, or refused otherwise: not retried


def upload_burst(url: str, photo: bytes, count: int, parallel: int, bearers: list[str], timeout: float) -> Burst:
    """POST `count` distinct copies of `photo`, `parallel` at a time, photo i by user i % len(bearers);
    a 503 is retried after its Retry-After, as clients do."""
    burst = Burst()
    lock = threading.Lock()
    local = threading.local()

    def one(index: int) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        data = with_comment(photo, f"burst photo {index} {uuid.uuid4().hex}")
        for _ in range(50):
            try:
                response = session.post(url + "/api/media/upload",
                                        files={"file": (f"photo-{index}.jpg", data, "image/jpeg")},
                                        headers={"Authorization": f"Bearer {bearers[index % len(bearers)]}"},
                                        timeout=timeout)
            except requests.RequestException:
                local.session = None
                break
            if response.status_code == 503:
                with lock:
                    burst.busy_answers += 1
                time.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            if response.status_code == 201:
                with lock:
                    burst.stored_bytes += len(data)
                    burst.seconds = max(burst.seconds, time.monotonic() - started)
                return
            break
        with lock:
            burst.lost += 1

    started = time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(count)))
    return burst


def run_setup(setup: str, args, photo: bytes, moto: str, mongo: str, folder: Path,
              gateway_limits: TaskLimits | None, worker_limits: TaskLimits | None) -> Result:
    result = Result(setup)
    workers_wanted = 0 if setup == "gateway" else int(setup)
    database = f"burst_{uuid.uuid4().hex[:8]}"
    run = uuid.uuid4().hex[:8]  # owners of this setup's items (nx-27017 may keep every database in one file)
    owners = [f"burst-{run}-{n}" for n in range(args.users)]
    env = {
        "HOST": "127.0.0.1", "PORT": str(free_port()), "DATA_DIR": str(folder / setup), "MONGODB_URI": mongo,
        "MONGODB_DB": database, "JWT_SECRET": JWT_SECRET, "STORAGE_BACKEND": "s3", "S3_BUCKET": BUCKET,
        "S3_ENDPOINT_URL": moto, "SQS_ENDPOINT_URL": moto, "AWS_REGION": "eu-west-2",
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "LOG_FORMAT": "json", "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_REQUESTS": "1000000", "LOGIN_RATE_LIMIT": "1000000", "TUS_RATE_BURST": "1000000",
        "ACCOUNTLESS_TOKENS": "true",
    }
    if workers_wanted:
        sqs = boto3.client("sqs", region_name="eu-west-2", endpoint_url=moto,
                           aws_access_key_id="bench", aws_secret_access_key="bench")
        env["PROCESSING_QUEUE_URL"] = sqs.create_queue(QueueName=f"burst-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        env["PROCESSING_CONCURRENCY"] = "0"
    (folder / setup).mkdir(parents=True, exist_ok=True)
    gateway_group = gateway_limits.group("gateway") if gateway_limits else None
    worker_groups = [worker_limits.group(f"worker{n}") for n in range(workers_wanted)] if worker_limits else []
    gateway = GatewayProcess(env, folder / setup)
    workers: list[Worker] = []
    try:
        with gateway_python(gateway_group):
            gateway.start(60)
        for n in range(workers_wanted):
            workers.append(Worker(dict(env, PROCESSING_CONCURRENCY=str(args.worker_concurrency)), folder / setup,
                                  worker_groups[n] if worker_groups else None))
        before = {name: group.stats() for name, group in
                  [("gateway", gateway_group)] + [(f"worker {n + 1}", g) for n, g in enumerate(worker_groups)] if group}
        started = time.monotonic()
        started_at = time.time()  # the items' updated_at is wall-clock time
        issuer = TokenIssuer(JWT_SECRET, 3600)
        burst = upload_burst(gateway.url, photo, args.photos, args.parallel,
                             [issuer.issue(Principal(owner, owner))[0] for owner in owners], args.request_timeout)
        result.upload_s, result.busy_answers, result.lost = burst.seconds, burst.busy_answers, burst.lost
        result.ingest_mb_s = burst.stored_bytes / 1e6 / burst.seconds
        with MongoClient(mongo) as client:
            media = client[database]["media"]
            deadline = started + args.timeout
            while time.monotonic() < deadline:
                if media.count_documents({"owner": {"$in": owners}, "status": "processing"}) == 0:
                    # when the last item got its final status (not when this poll saw it, nor after
                    # a lost request's client timeout)
                    last = max((doc.get("updated_at") or 0 for doc in media.find({"owner": {"$in": owners}})),
                               default=0)
                    result.ready_s = (last - started_at) if last else time.monotonic() - started
                    break
                time.sleep(0.2)
            result.ready = sum(1 for doc in media.find({"owner": {"$in": owners}, "status": "ready"})
                               if doc.get("thumbnail_key"))
            result.failed = media.count_documents({"owner": {"$in": owners}, "status": "failed"})
        groups = {"gateway": gateway_group, **{f"worker {n + 1}": g for n, g in enumerate(worker_groups)}}
        for name, group in groups.items():
            if group is None:
                continue
            stats = group.stats()
            result.groups[name] = (stats.cpu_seconds - before[name].cpu_seconds,
                                   stats.throttled_seconds - before[name].throttled_seconds,
                                   (stats.peak_bytes or 0) / MiB, stats.oom_kills)
    finally:
        for worker in workers:
            worker.stop()
        gateway.stop()
        for group in [gateway_group, *worker_groups]:
            if group is not None:
                group.remove()
        empty_bucket(moto, BUCKET)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=200, help="photos in the burst (24 MP JPEGs)")
    parser.add_argument("--parallel", type=int, default=32, help="uploads in flight at once")
    parser.add_argument("--users", type=int, default=32, help="users the photos are spread over (round robin)")
    parser.add_argument("--request-timeout", type=float, default=120, help="client seconds per upload request")
    parser.add_argument("--setups", default="gateway,1,2", help="comma-separated: gateway, 1, 2 (workers)")
    parser.add_argument("--worker-concurrency", type=int, default=2, help="PROCESSING_CONCURRENCY of each worker")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for every thumbnail")
    parser.add_argument("--task-cpu", help="run the gateway in its own cgroup with this many vCPU (e.g. 0.25)")
    parser.add_argument("--task-memory", help="the gateway cgroup's memory limit (e.g. 512MiB), with --task-cpu")
    parser.add_argument("--worker-cpu", default="1", help="each worker's vCPU with --task-cpu (default 1)")
    parser.add_argument("--worker-memory", default="2GiB", help="each worker's memory with --task-cpu (default 2GiB)")
    args = parser.parse_args()
    print(use_shipped_gateway())
    with tempfile.TemporaryDirectory(prefix="burst-") as tmp:
        folder = Path(tmp)
        gateway_limits = task_limits_from_args(args.task_cpu, args.task_memory, folder)
        worker_limits = task_limits_from_args(args.worker_cpu, args.worker_memory, folder) if gateway_limits else None
        if gateway_limits and worker_limits:
            print("gateway " + gateway_limits.describe() + "; workers " + worker_limits.describe().split(": ", 1)[1])
        photo = cached_photo()
        print(f"{args.photos} photos of 24 MP, {len(photo) / 1e6:.1f} MB each ({args.photos * len(photo) / 1e6:.0f} MB), "
              f"{args.parallel} uploads in flight, {args.users} users; {os.cpu_count()} CPUs on this host")
        moto_process, moto = start_moto()
        mongo_process, mongo = start_mongo(folder)
        boto3.client("s3", region_name="eu-west-2", endpoint_url=moto, aws_access_key_id="bench",
                     aws_secret_access_key="bench").create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
        results = []
        try:
            for setup in args.setups.split(","):
                print(f"running: {setup} ...", flush=True)
                results.append(run_setup(setup.strip(), args, photo, moto, mongo, folder, gateway_limits, worker_limits))
        finally:
            stop_process(moto_process)
            stop_process(mongo_process)
            for limits in (gateway_limits, worker_limits):
                if limits is not None:
                    limits.close()
    print()
    print(f"{'processing in':<14} {'upload s':>9} {'ingest MB/s':>12} {'all ready s':>12} {'ready':>6} {'failed':>7} "
          f"{'503s':>6} {'lost':>5}")
    for r in results:
        where = "gateway" if r.setup == "gateway" else f"{r.setup} worker{'s' if r.setup != '1' else ''}"
        ready = f"{r.ready_s:.1f}" if r.ready_s is not None else "timeout"
        print(f"{where:<14} {r.upload_s:>9.1f} {r.ingest_mb_s:>12.1f} {ready:>12} {r.ready:>6} {r.failed:>7} "
              f"{r.busy_answers:>6} {r.lost:>5}")
    if any(r.groups for r in results):
        print()
        print(f"{'processing in':<14} {'process':<10} {'CPU s':>7} {'throttled s':>12} {'peak MiB':>9} {'OOM kills':>10}")
        for r in results:
            where = "gateway" if r.setup == "gateway" else f"{r.setup} worker{'s' if r.setup != '1' else ''}"
            for name, (cpu, throttled, peak, ooms) in r.groups.items():
                print(f"{where:<14} {name:<10} {cpu:>7.1f} {throttled:>12.1f} {peak:>9.0f} {ooms:>10}")


if __name__ == "__main__":
    main()
