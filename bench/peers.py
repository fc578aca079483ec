"""The gateway against the reference tus server (@tus/server) and a direct boto3 upload, same run.

One random SIZE file is uploaded with the same tus client (tus-js-client in node by default, or
tuspy; one streamed PATCH, or one PATCH per --chunk-size bytes)
and the same part size into the same moto S3 server, through:
  (a) the gateway (STORAGE_BACKEND=s3, MongoDB: nx-27017),
  (b) @tus/server + @tus/s3-store (node, bench/peers/server.mjs),
  (c) no server: a direct boto3 multipart upload_file (TransferConfig of the same part size);
then into a local folder through the gateway (STORAGE_BACKEND=local) and through
@tus/server + @tus/file-store.

Prints, for one invocation:
  * per S3 upload: MB/s, seconds, ratio to direct boto3, the server's CPU seconds (user + system,
    all threads) during the upload, how long its threads waited for a CPU while ready to run
    ("waited s", from /proc/PID/task/*/schedstat: a server starved of CPU by the other processes
    on the machine shows it here), how busy the whole machine's CPUs were ("host busy", also
    for the direct upload), and the server's peak RSS (VmHWM of
    the server process over its life), split into its peak while starting and its peak during
    the upload (VmHWM reset through /proc/PID/clear_refs just before the upload; "-" if denied);
  * per local upload: the same without the direct baseline, and the ratio ours/@tus;
  * that every stored object is byte-identical to the file (sha256 read back from moto with
    boto3, or of the file on disk);
  * before round 1, one unmeasured direct upload warms moto up (a fresh moto's first large upload
    is slower, and the gateway goes first in every round);
  * per store, over --rounds rounds: the median MB/s of each server, the ratio of the medians and
    the range of the per-round ratios, the highest peak RSS of each; for S3, both servers' ratio to
    the median direct upload.
The gateway runs from .venv-gateway (its own requirements only, as deployed; made on first use)
unless GATEWAY_PYTHON names another Python (`current`: this one).

The node servers are installed on first use (npm ci in bench/peers) and run as plain `node`
processes, so the RSS measured is the server's own.

With --task-cpu 0.25 --task-memory 512MiB each server runs in its own cgroup with that CPU quota
and memory limit, as Fargate runs a task (bench/task_limits.py; needs root; moto, MongoDB and the
client stay outside), and each round also prints per server: MB/s, CPU seconds per GiB uploaded,
time held back by the quota, the group's peak memory (page cache included) and its peak anonymous
memory (sampled), and OOM kills. With --s3-tls the S3 uploads are repeated against a second moto
served over HTTPS with a CA made at run time (AWS_CA_BUNDLE, NODE_EXTRA_CA_CERTS), as production
talks to S3 (the gateway sends each part unsigned, its CRC32 in a signed header).

Usage: python bench/peers.py [--size 1GiB] [--part-size 8MiB] [--chunk-size 0] [--client tus-js-client|tuspy]
                             [--stores s3,local] [--rounds 3] [--task-cpu 0.25 --task-memory 512MiB]
                             [--s3-tls]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import urlsplit


ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "peers"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tusclient import client as tus_client  # noqa: E402

from bench.upload import (  # noqa: E402
    JWT_SECRET, cpu_seconds, direct_upload, make_file, peak_rss_mib, require_free_space, reset_peak_rss, s3_client,
    start_mongo, start_moto, token, use_shipped_gateway, warm_up_moto,
)
from bench.task_limits import (  # noqa: E402
    TaskGroup, TaskLimits, gateway_python, start_moto_tls, task_columns, task_limits_from_args,
)
from gateway.config import _size  # noqa: E402
from tests.support import GatewayProcess, free_port, stop_process  # noqa: E402

MiB = 1024 * 1024
REGION = "eu-west-2"
BUCKETS = {"ours": "bench-ours", "tus": "bench-tus", "direct": "bench-direct"}
NODE_PACKAGES = ("@tus/server", "@tus/s3-store", "@tus/file-store", "tus-js-client")
Check = Callable[[str], tuple[bool, str]]  # upload URL -> (byte-identical, what was read back)


@dataclass
class Result:
    """One upload: who received it, how long it took, the server's peak RSS, and its check."""

    label: str
    size: int
    seconds: float
    rss_mib: float | None
    start_rss_mib: float | None
    upload_rss_mib: float | None
    identical: bool
    checked: str
    cpu_seconds: float | None = None  # the server process's CPU time (user + system) during the upload
    waited_seconds: float | None = None  # time its threads were ready to run but had no CPU, during the upload
    host_busy: float | None = None  # share of all the machine's CPU time that was busy during the upload
    task: dict | None = None  # with --task-cpu/--task-memory: the server's cgroup figures (task_columns)

    @property
    def mbps(self) -> float:
        return self.size / 1e6 / self.seconds


# --- node peer server --------------------------------------------------------------------


def ensure_node_modules() -> str:
    """Return the node binary; run `npm ci` (or `npm install`) in bench/peers when needed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise SystemExit("bench/peers.py needs node (>= 20.19) and npm on PATH for @tus/server")
    if all((PEERS / "node_modules" / name / "package.json").is_file() for name in NODE_PACKAGES):
        return node
    locked = (PEERS / "package-lock.json").is_file()
    command = [npm, "ci" if locked else "install", "--no-audit", "--no-fund"]
    print(f"bench/peers/node_modules missing: running `{' '.join(['npm', *command[1:]])}` in bench/peers",
          flush=True)
    subprocess.run(command, cwd=PEERS, check=True)
    return node


class NodePeer:
    """`node bench/peers/server.mjs <store>` as a child process (node itself, no npm wrapper)."""

    def __init__(self, node: str, store: str, env: dict[str, str], log_path: Path) -> None:
        self.node = node
        self.store = store
        self.port = free_port()
        self.env = dict(os.environ, **env, HOST="127.0.0.1", PORT=str(self.port))
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.prefix: list[str] = []  # a cgroup wrapper that execs node, with --task-cpu/--task-memory

    @property
    def files_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/files/"

    def start(self, timeout: float = 30) -> None:
        with open(self.log_path, "ab") as log:
            logged_before = log.tell()  # the log is appended to by every round: read only this run's lines
            self.process = subprocess.Popen([*self.prefix, self.node, str(PEERS / "server.mjs"), self.store],
                                            cwd=PEERS, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"@tus/server exited with {self.process.returncode}:\n{self.log()}")
            if "listening on" in self.log_path.read_bytes()[logged_before:].decode(errors="replace"):
                return
            time.sleep(0.05)
        raise TimeoutError(f"@tus/server did not start:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def stop(self) -> None:
        stop_process(self.process)


# --- helpers -------------------------------------------------------------------------------


def create_buckets(s3, names: Iterable[str]) -> None:
    for name in names:
        try:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass  # made by an earlier round


def sha256_chunks(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return sha256_chunks(iter(lambda: fh.read(8 * MiB), b""))


def object_sha256(s3, bucket: str, key: str) -> str:
    return sha256_chunks(s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(8 * MiB))


def keys_of_size(s3, bucket: str, size: int) -> list[str]:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [item["Key"] for item in page.get("Contents", []) if item["Size"] == size]
    return keys


CLIENT = "tus-js-client"  # set by main(): the tus client every server is measured with
LIMITS: TaskLimits | None = None  # set by main() with --task-cpu/--task-memory: one cgroup per server run


def measured_upload(pid: int, files_url: str, source: Path,
                    chunk_size: int) -> tuple[float, str, tuple[float, float, float | None], tuple[float, ...]]:
    """Upload with the chosen client; return seconds, URL, the server's (peak, at start, during upload) RSS
    and, for the upload, the server's CPU seconds, its threads' run-queue wait and the host's busy share."""
    start_rss = peak_rss_mib(pid)
    reset = reset_peak_rss(pid)
    cpu_before, waited_before, host_before = cpu_seconds(pid), run_queue_waits(pid), host_cpu_times()
    if CLIENT == "tuspy":
        seconds, url = tuspy_upload(files_url, source, chunk_size)
    else:
        seconds, url = js_upload(files_url, source, chunk_size)
    rss = peak_rss_mib(pid)
    waited_after = run_queue_waits(pid)
    waited = (sum(total - waited_before.get(thread, 0.0) for thread, total in waited_after.items())
              if waited_after else None)
    return (seconds, url, (max(rss, start_rss), start_rss, rss if reset else None),
            (cpu_seconds(pid) - cpu_before, waited, host_busy_since(host_before)))


def run_queue_waits(pid: int) -> dict[str, float]:
    """Seconds each live thread of `pid` has spent ready to run but waiting for a CPU ({} if the
    kernel keeps no schedstat). Threads that end between two readings drop out of the sum."""
    waits: dict[str, float] = {}
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return waits
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/schedstat") as fh:
                waits[thread] = int(fh.read().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            continue
    return waits


def host_cpu_times() -> tuple[int, int]:
    """Busy and total CPU ticks of the whole machine so far (/proc/stat)."""
    with open("/proc/stat") as fh:
        ticks = [int(value) for value in fh.readline().split()[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def host_busy_since(before: tuple[int, int]) -> float | None:
    busy, total = host_cpu_times()
    return (busy - before[0]) / (total - before[1]) if total > before[1] else None


def files_of_size(folder: Path, size: int) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file() and path.stat().st_size == size]


def empty_bucket(s3, bucket: str) -> None:
    """Delete what a run left in moto, so later uploads meet the same server state."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])


def js_upload(files_url: str, path: Path, chunk_size: int) -> tuple[float, str]:
    """POST + PATCHes with tus-js-client in node (one streamed PATCH when chunk_size is 0)."""
    env = dict(os.environ, FILES_URL=files_url, FILE=str(path), TOKEN=token(), CHUNK_SIZE=str(chunk_size))
    done = subprocess.run([shutil.which("node") or "node", str(PEERS / "upload.mjs")], env=env, cwd=PEERS,
                          capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"tus-js-client failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return float(result["seconds"]), str(result["url"])


def tuspy_upload(files_url: str, path: Path, chunk_size: int) -> tuple[float, str]:
    """POST + one PATCH per chunk_size bytes with tuspy (the whole file when 0); return seconds and the URL."""
    client = tus_client.TusClient(files_url, headers={"Authorization": f"Bearer {token()}"})
    uploader = client.uploader(file_path=str(path), chunk_size=chunk_size or path.stat().st_size,
                               metadata={"filename": path.name, "filetype": "application/octet-stream"})
    started = time.perf_counter()
    uploader.upload()
    elapsed = time.perf_counter() - started
    assert uploader.offset == path.stat().st_size, (uploader.offset, uploader.url)
    return elapsed, uploader.url


def upload_id(url: str) -> str:
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


def gateway_env(folder: Path, mongo_uri: str, endpoint: str, part_size: int) -> dict[str, str]:
    return {"HOST": "127.0.0.1", "DATA_DIR": str(folder), "MONGODB_URI": mongo_uri,
            "JWT_SECRET": JWT_SECRET, "ACCOUNTLESS_TOKENS": "true", "LOG_LEVEL": "WARNING", "PART_SIZE": str(part_size),
            "STORAGE_BACKEND": "s3", "S3_BUCKET": BUCKETS["ours"], "S3_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": REGION,
            "PORT": str(free_port())}


def check_objects(s3, bucket: str, keys: list[str], expected: str) -> tuple[bool, str]:
    """Read each key back from moto; identical when there is one at least and all match."""
    digests = [object_sha256(s3, bucket, key) for key in keys]
    where = ", ".join(f"s3://{bucket}/{key}" for key in keys) or f"no object of the size in {bucket}"
    return bool(digests) and all(digest == expected for digest in digests), where


def check_files(paths: list[Path], root: Path, expected: str) -> tuple[bool, str]:
    digests = [file_sha256(path) for path in paths]
    where = ", ".join(str(path.relative_to(root)) for path in paths) or "no file of the size"
    return bool(digests) and all(digest == expected for digest in digests), where


# --- the runs ------------------------------------------------------------------------------


def run_gateway(label: str, env: dict[str, str], source: Path, chunk_size: int,
                verify: Check) -> Result:
    data_dir = Path(env["DATA_DIR"])
    data_dir.mkdir(parents=True, exist_ok=True)
    return run_peer(label, GatewayProcess(env, data_dir), source, chunk_size, verify)


def run_peer(label: str, peer: "NodePeer | GatewayProcess", source: Path, chunk_size: int,
             verify: Check) -> Result:
    """Start `peer` (in its own limited cgroup with --task-cpu/--task-memory), upload `source`
    through it, check what was stored, stop it."""
    group: TaskGroup | None = LIMITS.group("ours" if isinstance(peer, GatewayProcess) else "tus") if LIMITS else None
    task = None
    try:
        if group is not None and isinstance(peer, NodePeer):
            peer.prefix = [group.wrapper()]
        with gateway_python(group if isinstance(peer, GatewayProcess) else None):
            peer.start()
        before = group.stats() if group else None
        try:
            seconds, url, rss, cpu = measured_upload(peer.process.pid, peer.files_url, source, chunk_size)
        except Exception as exc:
            if group is not None and group.stats().oom_kills:
                raise RuntimeError(f"{label} was OOM-killed in its task group "
                                   f"({group.stats().oom_kills} kills, memory {LIMITS.memory / MiB:.0f} MiB)") from exc
            raise
        if group is not None:
            task = task_columns(before, group.stats(), source.stat().st_size, group)
        identical, checked = verify(url)
    finally:
        peer.stop()
        if group is not None:
            group.remove()
    return Result(label, source.stat().st_size, seconds, *rss, identical, checked, *cpu, task=task)


def run_s3(node: str, folder: Path, endpoint: str, mongo_uri: str, source: Path, expected: str,
           part_size: int, chunk_size: int, tag: str = "s3") -> tuple[Result, Result, Result]:
    s3 = s3_client(endpoint)
    create_buckets(s3, BUCKETS.values())
    size = source.stat().st_size

    ours = run_gateway("gateway (ours)", gateway_env(folder / f"gw-{tag}", mongo_uri, endpoint, part_size),
                       source, chunk_size,
                       lambda url: check_objects(s3, BUCKETS["ours"], keys_of_size(s3, BUCKETS["ours"], size),
                                                 expected))
    empty_bucket(s3, BUCKETS["ours"])

    (folder / "node-tmp").mkdir(exist_ok=True)
    peer = NodePeer(node, "s3", {"S3_ENDPOINT": endpoint, "S3_BUCKET": BUCKETS["tus"], "AWS_REGION": REGION,
                                 "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                                 "PART_SIZE": str(part_size), "TMPDIR": str(folder / "node-tmp")},
                    folder / f"tus-{tag}.log")
    theirs = run_peer("@tus/server + @tus/s3-store", peer, source, chunk_size,
                      lambda url: check_objects(s3, BUCKETS["tus"], [upload_id(url)], expected))
    empty_bucket(s3, BUCKETS["tus"])

    host_before = host_cpu_times()
    seconds = direct_upload(endpoint, BUCKETS["direct"], source, part_size)
    host_busy = host_busy_since(host_before)
    direct = Result("direct boto3 multipart", size, seconds, None, None, None,
                    *check_objects(s3, BUCKETS["direct"], [f"direct/{source.name}"], expected), host_busy=host_busy)
    empty_bucket(s3, BUCKETS["direct"])
    return ours, theirs, direct


def run_local(node: str, folder: Path, endpoint: str, mongo_uri: str, source: Path, expected: str,
              part_size: int, chunk_size: int) -> tuple[Result, Result]:
    size = source.stat().st_size
    ours_dir, theirs_dir = folder / "gw-local", folder / "tus-local"
    env = dict(gateway_env(ours_dir, mongo_uri, endpoint, part_size), STORAGE_BACKEND="local")
    ours = run_gateway("gateway (ours)", env, source, chunk_size,
                       lambda url: check_files(files_of_size(ours_dir, size), folder, expected))
    shutil.rmtree(ours_dir, ignore_errors=True)

    theirs_dir.mkdir()
    peer = NodePeer(node, "file", {"DATA_DIR": str(theirs_dir)}, folder / "tus-file.log")
    theirs = run_peer("@tus/server + @tus/file-store", peer, source, chunk_size,
                      lambda url: check_files([theirs_dir / upload_id(url)], folder, expected))
    shutil.rmtree(theirs_dir, ignore_errors=True)
    return ours, theirs


# --- printing ------------------------------------------------------------------------------


def rss_text(value: float | None) -> str:
    return f"{value:.0f} MiB" if value is not None else "-"


def print_rows(results: Iterable[Result], baseline: Result | None) -> None:
    ratio_head = "vs direct" if baseline else ""
    print(f"  {'':30} {'MB/s':>8} {'seconds':>8} {ratio_head:>9} {'peak RSS':>9} {'at start':>9}"
          f" {'in upload':>9} {'CPU s':>6} {'waited s':>8} {'host busy':>9}  byte-identical")
    for result in results:
        ratio = f"{result.mbps / baseline.mbps:.2f}" if baseline else ""
        cpu = f"{result.cpu_seconds:.2f}" if result.cpu_seconds is not None else "-"
        waited = f"{result.waited_seconds:.2f}" if result.waited_seconds is not None else "-"
        busy = f"{result.host_busy:.0%}" if result.host_busy is not None else "-"
        print(f"  {result.label:30} {result.mbps:8.1f} {result.seconds:8.1f} {ratio:>9}"
              f" {rss_text(result.rss_mib):>9} {rss_text(result.start_rss_mib):>9} {rss_text(result.upload_rss_mib):>9}"
              f" {cpu:>6} {waited:>8} {busy:>9}  {'yes' if result.identical else 'NO'}")


def print_task_rows(results: Iterable[Result]) -> None:
    """The servers' cgroup figures for one round (with --task-cpu/--task-memory)."""
    results = [result for result in results if result.task]
    if not results or LIMITS is None:
        return
    print(f"  in a task of {LIMITS.cpu:g} vCPU, {LIMITS.memory / MiB:.0f} MiB (own cgroup per server):")
    print(f"  {'':30} {'MB/s':>8} {'CPU s/GiB':>9} {'throttled s':>11} {'group peak':>10} {'anon peak':>9} {'OOM kills':>9}")
    for result in results:
        task = result.task
        print(f"  {result.label:30} {result.mbps:8.1f} {task['cpu_s_per_gib']:9.2f} {task['throttled_s']:11.2f}"
              f" {task['peak_mib']:6.0f} MiB {task['anon_peak_mib']:5.0f} MiB {task['oom_kills']:9d}  {task['at_peak']}")


def task_summary(store: str, ours: list[Result], theirs: list[Result]) -> list[str]:
    if LIMITS is None:
        return []
    def line(name: str, results: list[Result]) -> str:
        return (f"{name} {statistics.median(r.mbps for r in results):.1f} MB/s, "
                f"{statistics.median(r.task['cpu_s_per_gib'] for r in results):.2f} CPU s/GiB, "
                f"throttled {statistics.median(r.task['throttled_s'] for r in results):.1f} s, "
                f"group peak {max(r.task['peak_mib'] for r in results):.0f} MiB "
                f"(anon {max(r.task['anon_peak_mib'] for r in results):.0f} MiB), "
                f"OOM kills {sum(r.task['oom_kills'] for r in results)}")
    return [f"{' ' * len(store)}  in {LIMITS.cpu:g} vCPU/{LIMITS.memory / MiB:.0f} MiB: {line('ours', ours)}",
            f"{' ' * len(store)}  {' ' * len(f'in {LIMITS.cpu:g} vCPU/{LIMITS.memory / MiB:.0f} MiB:')} {line('@tus', theirs)}"]


def print_checks(results: Iterable[Result]) -> None:
    for result in results:
        print(f"    sha256 {'matches' if result.identical else 'DIFFERS'}: {result.label}: {result.checked}")


def summary(store: str, ours: list[Result], theirs: list[Result], direct: list[Result] | None = None) -> list[str]:
    """Lines for one store over all rounds: median MB/s, the range of per-round ratios, highest peak RSS."""
    def median_mbps(results: list[Result]) -> float:
        return statistics.median(result.mbps for result in results)

    ratios = [a.mbps / b.mbps for a, b in zip(ours, theirs)]
    lines = [f"{store}: ours {median_mbps(ours):.1f} MB/s vs @tus/server {median_mbps(theirs):.1f} MB/s "
             f"(medians of {len(ours)}; ratio of medians {median_mbps(ours) / median_mbps(theirs):.2f}, "
             f"per round {min(ratios):.2f}..{max(ratios):.2f}), "
             f"peak RSS ours {max(r.rss_mib or 0 for r in ours):.0f} MiB vs theirs {max(r.rss_mib or 0 for r in theirs):.0f} MiB"]
    if direct:
        lines.append(f"{' ' * len(store)}  direct boto3 {median_mbps(direct):.1f} MB/s: ours {median_mbps(ours) / median_mbps(direct):.2f}x, "
                     f"@tus/server {median_mbps(theirs) / median_mbps(direct):.2f}x of direct (ratios of medians)")
    return lines + task_summary(store, ours, theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--part-size", default="8MiB")
    parser.add_argument("--chunk-size", default="0",
                        help="bytes per PATCH; 0: one PATCH for the whole file (tus-js-client's and Uppy's default)")
    parser.add_argument("--client", choices=("tus-js-client", "tuspy"), default="tus-js-client",
                        help="the tus client used for every server")
    parser.add_argument("--stores", default="s3,local", help="which of s3,local to compare")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of every upload; the summary gives medians (single runs vary by about 20%%)")
    parser.add_argument("--task-cpu", help="run each server in its own cgroup with this many vCPU (e.g. 0.25), "
                                           "as Fargate limits a task; needs root and --task-memory")
    parser.add_argument("--task-memory", help="the cgroup's memory limit (e.g. 512MiB), with --task-cpu")
    parser.add_argument("--s3-tls", action="store_true",
                        help="also upload to a second moto served over HTTPS (self-signed CA made now), "
                             "as botocore and @tus/s3-store talk to AWS; prints plain-HTTP and TLS figures")
    args = parser.parse_args()
    stores = {name.strip() for name in args.stores.split(",")}
    global CLIENT, LIMITS
    CLIENT = args.client
    size, part_size, chunk_size = _size(args.size), _size(args.part_size), _size(args.chunk_size)
    node = ensure_node_modules()
    print(use_shipped_gateway())

    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        folder = Path(tmp)
        require_free_space(folder, 4 * size)  # the source, an object and its parts in moto, or two stored files
        LIMITS = task_limits_from_args(args.task_cpu, args.task_memory, folder)
        if LIMITS:
            print(LIMITS.describe() + " (moto, MongoDB and the client outside)")
        moto = mongo = moto_tls = None
        try:
            moto, endpoint = start_moto()
            width = 6 if args.s3_tls else 5
            s3_runs = [("s3", "S3 store (moto)", "S3".ljust(width), endpoint)] if "s3" in stores else []
            if "s3" in stores and args.s3_tls:
                moto_tls, tls_endpoint = start_moto_tls(folder)
                s3_runs.append(("s3-tls", "S3 store (moto over TLS)", "S3 TLS", tls_endpoint))
            mongo, mongo_uri = start_mongo(folder)
            source = folder / "source.bin"
            make_file(source, size)
            expected = file_sha256(source)
            print(f"{args.size} random file, client {args.client}, "
                  f"{'one PATCH' if not chunk_size else 'chunk size ' + args.chunk_size}, part size {args.part_size}")

            for tag, title, _, url in s3_runs:
                print(f"warm-up: one unmeasured direct upload into moto{' over TLS' if tag == 's3-tls' else ''} "
                      f"({warm_up_moto(url, source, part_size):.1f} MB/s)")
            results: list[Result] = []
            rounds: dict[str, list[tuple[Result, ...]]] = {"s3": [], "s3-tls": [], "local": []}
            for number in range(1, args.rounds + 1):
                for tag, title, _, url in s3_runs:
                    s3_ours, s3_theirs, direct = run_s3(node, folder, url, mongo_uri, source, expected,
                                                        part_size, chunk_size, tag)
                    print(f"{title}, round {number}/{args.rounds}")
                    print_rows((s3_ours, s3_theirs, direct), direct)
                    print_task_rows((s3_ours, s3_theirs))
                    print_checks((s3_ours, s3_theirs, direct))
                    results += [s3_ours, s3_theirs, direct]
                    rounds[tag].append((s3_ours, s3_theirs, direct))
                if "local" in stores:
                    local_ours, local_theirs = run_local(node, folder, endpoint, mongo_uri, source, expected,
                                                         part_size, chunk_size)
                    print(f"local disk store, round {number}/{args.rounds}")
                    print_rows((local_ours, local_theirs), None)
                    print_task_rows((local_ours, local_theirs))
                    print_checks((local_ours, local_theirs))
                    print(f"  ratio ours/@tus: {local_ours.mbps / local_theirs.mbps:.2f}")
                    results += [local_ours, local_theirs]
                    rounds["local"].append((local_ours, local_theirs))
            lines = []
            for tag, _, name, _ in s3_runs:
                ours_s3, theirs_s3, direct_s3 = (list(column) for column in zip(*rounds[tag]))
                lines += summary(name, ours_s3, theirs_s3, direct_s3)
            if rounds["local"]:
                ours_local, theirs_local = (list(column) for column in zip(*rounds["local"]))
                lines += summary("local".ljust(width), ours_local, theirs_local)
            print("summary")
            for line in lines:
                print("  " + line)
            if not all(result.identical for result in results):
                raise SystemExit("some uploads were not byte-identical (see the table)")
        finally:
            if LIMITS is not None:
                LIMITS.close()
            for process in (moto, moto_tls, mongo):
                if process is not None:
                    process.terminate()
            for process in (moto, moto_tls, mongo):
                if process is not None:
                    try:
                        process.wait(15)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()


if __name__ == "__main__":
    main()
