"""Two users on one CPU-bound gateway: one with many uploads at once, one with a single upload.

On a task held to its CPU (INGEST_CPU_LIMIT, or the quota itself), the bytes per second a user
gets depend on how the gateway shares that CPU. Paced per body, a user with N streamed PATCHes
gets N shares to the other user's one; the governor's per-user shares (gateway/cpu_governor.py,
`UserShares`) aim at one share per user. This bench starts one gateway per --ingest-cpu-limits
value (local store by default, or S3 on moto; MongoDB: nx-27017), optionally in a Fargate-shaped
cgroup (--task-cpu 0.25 --task-memory 512MiB), and runs at once:
  * user "many": --many streamed PATCHes of a --size file each,
  * user "one": one streamed PATCH of a --size file.
When the single upload ends, the bytes the many uploads' senders have handed to their sockets
so far are read, so both users' MB/s over the same window are known (within the socket buffers). It prints, per INGEST_CPU_LIMIT value: both users'
MB/s over that window and their ratio (one user's MB/s over the other's: 1 is even, 1/N is per
connection), the total MB/s, and that every upload reached its full offset.

Nothing about time is asserted; the exit status is 1 only when an upload did not complete.

Usage: python -m bench.cpu_shares [--store local|s3] [--size 256MiB] [--many 8]
                                  [--ingest-cpu-limits off,auto] [--task-cpu 0.25 --task-memory 512MiB]
"""

from __future__ import annotations

import argparse
import http.client
import io
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auth.tokens import Principal, TokenIssuer  # noqa: E402
from bench.head_latency import (  # noqa: E402
    bench_servers, create_upload, gateway_env, run_data, stream_patch, task_gateway,
)
from bench.task_limits import task_limits_from_args  # noqa: E402
from bench.upload import JWT_SECRET, make_file, require_free_space, use_shipped_gateway  # noqa: E402
from gateway.config import _size  # noqa: E402

MiB = 1024 * 1024


def bearer_of(user: str) -> str:
    """A token for `user` (the gateway runs with ACCOUNTLESS_TOKENS)."""
    return TokenIssuer(JWT_SECRET, 3600).issue(Principal(user, user))[0]


class CountingFile(io.FileIO):
    """A file whose reads are counted (http.client sends a body as it reads it)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "rb")
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.read_bytes += len(data)
        return data


def run_gateway(args: argparse.Namespace, folder: Path, source: Path, limits, mongo_uri: str, endpoint: str,
                cpu_limit: str, run: int = 1) -> bool:
    """The `run`-th gateway, with INGEST_CPU_LIMIT=`cpu_limit`: both users at once; print; True if all completed."""
    size = source.stat().st_size
    data = run_data(folder, run, cpu_limit)
    env = dict(gateway_env(data, mongo_uri, args.store, endpoint), INGEST_CPU_LIMIT=cpu_limit, LOG_LEVEL="WARNING")
    try:
        with task_gateway(env, data, limits) as (gateway, _):
            many, one = bearer_of("many"), bearer_of("one")
            many_paths = [create_upload(gateway.url, many, size) for _ in range(args.many)]
            one_path = create_upload(gateway.url, one, size)
            many_results: list = []
            one_result: list = []
            many_bodies = [CountingFile(source) for _ in many_paths]
            senders = [threading.Thread(target=stream_patch, args=(gateway.url, many, path, body, size, many_results))
                       for path, body in zip(many_paths, many_bodies)]
            single = threading.Thread(target=stream_patch,
                                      args=(gateway.url, one, one_path, CountingFile(source), size, one_result))
            started = time.perf_counter()
            for thread in senders + [single]:
                thread.start()
            single.join()
            window = time.perf_counter() - started
            many_bytes = sum(body.read_bytes for body in many_bodies)
            for sender in senders:
                sender.join()
            elapsed = time.perf_counter() - started
            one_rate, many_rate = size / window / 1e6, many_bytes / window / 1e6
            print(f"{cpu_limit:>16s} {many_rate:12.1f} {one_rate:12.1f} {one_rate / many_rate if many_rate else 0:10.2f} "
                  f"{window:9.1f} {size * (args.many + 1) / elapsed / 1e6:9.1f}")
            complete = [value == size for value in many_results + one_result]
            if not all(complete):
                print(f"  incomplete uploads: many {many_results}, one {one_result}")
            return all(complete) and len(complete) == args.many + 1
    except http.client.HTTPException as exc:
        print(f"{cpu_limit:>16s} failed: {exc!r}")
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=("s3", "local"), default="local")
    parser.add_argument("--size", default="256MiB", help="bytes of each upload")
    parser.add_argument("--many", type=int, default=8, help="uploads at once of the user with many")
    parser.add_argument("--ingest-cpu-limits", default="off,auto",
                        help="INGEST_CPU_LIMIT of each gateway run, in turn (off: no pacing)")
    parser.add_argument("--task-cpu")
    parser.add_argument("--task-memory")
    args = parser.parse_args()
    size = _size(args.size)
    print(use_shipped_gateway())
    ok = True
    with tempfile.TemporaryDirectory(prefix="cpu-shares-") as name:
        folder = Path(name)
        runs = len(args.ingest_cpu_limits.split(","))
        require_free_space(folder, size * (1 + 2 * runs * (args.many + 1)))  # every run's uploads are kept
        limits = task_limits_from_args(args.task_cpu, args.task_memory, folder)
        source = folder / "source.bin"
        make_file(source, size)
        try:
            with bench_servers(args.store, folder) as (mongo_uri, endpoint):
                print(f"gateway: store {args.store}; {limits.describe() if limits else 'no task limits (the whole machine)'}")
                print(f"user 'many': {args.many} streamed PATCHes of {size / MiB:.0f} MiB; user 'one': one; MB/s of each "
                      "user while the single upload runs (the many's from the bytes their senders handed to the sockets)")
                print(f"{'INGEST_CPU_LIMIT':>16s} {'many MB/s':>12s} {'one MB/s':>12s} {'one/many':>10s} "
                      f"{'window s':>9s} {'all MB/s':>9s}")
                for run, cpu_limit in enumerate(args.ingest_cpu_limits.split(","), 1):
                    ok = run_gateway(args, folder, source, limits, mongo_uri, endpoint, cpu_limit.strip(), run) and ok
        finally:
            if limits is not None:
                limits.close()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
