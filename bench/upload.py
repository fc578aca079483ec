"""Upload throughput and memory of the gateway, against a direct boto3 baseline in the same run.

Prints, for one invocation:
  * MB/s of a tus upload (one streamed PATCH, as tus-js-client sends by default) of a
    SIZE file through the gateway into a moto S3 server;
  * MB/s of a direct boto3 multipart upload of the same file, same part size, same server;
  * their ratio and the gateway's peak RSS (rounds alternate, after one unmeasured upload that
    warms moto up);
  * the gateway's peak RSS for uploads of each --local-sizes file into the local store.

Usage: python bench/upload.py [--size 1GiB] [--local-sizes 256MiB,2GiB] [--part-size 8MiB] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import secrets
import subprocess
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import boto3
from boto3.s3.transfer import TransferConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.config import _size  # noqa: E402
from tests.support import GatewayProcess, free_port, wait_for_port  # noqa: E402

MiB = 1024 * 1024
JWT_SECRET = secrets.token_urlsafe(48)


SHIPPED_VENV = ROOT / ".venv-gateway"


def use_shipped_gateway() -> str:
    """Make the benches' gateways run from an install holding only the package's own requirements.

    The test venv also holds moto, schemathesis and their dependencies, which a deployed gateway
    (the Docker image installs only `pip install .`) does not have. The venv is made on first use
    (`pip install -e .`, so it runs this checkout's code) in .venv-gateway. GATEWAY_PYTHON, when
    set, wins (`GATEWAY_PYTHON=current` runs the gateway with this interpreter). Returns a line
    that says which Python runs the gateways.
    """
    chosen = os.environ.get("GATEWAY_PYTHON", "")
    if chosen == "current":
        os.environ["GATEWAY_PYTHON"] = sys.executable
        return f"gateway runs from {sys.executable} (this interpreter)"
    if chosen:
        return f"gateway runs from {chosen} (GATEWAY_PYTHON)"
    python = SHIPPED_VENV / "bin" / "python"
    if not python.exists():
        print("making .venv-gateway (pip install -e . only) for the gateway under test ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(SHIPPED_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", str(ROOT)], check=True)
    os.environ["GATEWAY_PYTHON"] = str(python)
    return "gateway runs from .venv-gateway (pip install -e . only, as deployed)"


def require_free_space(folder: Path, needed: int) -> None:
    """Exit (status 2, one line) when the file system of `folder` has less than `needed` bytes free.

    The bench's files live there and, since moto is started with the same temporary directory,
    every object moto stores above about 5 MiB too (it keeps them in temporary files). A disk that fills
    up mid-run makes moto fail its writes and the gateway answer 503 storage_unavailable, which
    reads like a fault of the gateway rather than of the bench machine."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        print(f"only {free / 2**30:.1f} GiB free where the bench keeps its files and moto its objects "
              f"({folder}); this run needs about {needed / 2**30:.1f} GiB: free some, or point TMPDIR elsewhere",
              file=sys.stderr)
        raise SystemExit(2)


def make_file(path: Path, size: int) -> None:
    block = os.urandom(4 * MiB)
    with open(path, "wb") as fh:
        written = 0
        while written < size:
            n = min(len(block), size - written)
            fh.write(block[:n])
            written += n


def memory_mib(pid: int, field: str = "VmHWM") -> float:
    """A memory line of /proc/PID/status in MiB: VmHWM (peak RSS, the default) or VmRSS."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process `pid` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    return memory_mib(pid, "VmHWM")


def moto_command(port: int, *tls: str) -> list[str]:
    """The command line of a moto server on 127.0.0.1:`port` (`tls`: "-c", cert, "-k", key).

    With gunicorn installed (the bench extra) moto is served as S3 serves: HTTP/1.1 connections
    kept alive (bench/moto_app.py says why that matters); otherwise by `python -m moto.server`.
    """
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port), *tls]
    command = [sys.executable, "-m", "gunicorn", "--chdir", str(Path(__file__).resolve().parents[1]),
               "-b", f"127.0.0.1:{port}", "-w", "1", "-k", "gthread", "--threads", "16",
               "--keep-alive", "75", "--timeout", "600", "--log-level", "warning"]
    if tls:
        command += ["--certfile", tls[1], "--keyfile", tls[3]]
    return command + ["bench.moto_app:app"]


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    process = subprocess.Popen(moto_command(port),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wait_for_port(port, 60)
    return process, f"http://127.0.0.1:{port}"


def start_mongo(folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from nx_27017.nx_27017 import main; sys.exit(main())",
         "--db", str(folder / "bench.sqlite"), "--host", "127.0.0.1", "-p", str(port),
         "--log-file", str(folder / "mongo.log"), "--pid-file", str(folder / "mongo.pid")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, 30)
    return process, f"mongodb://127.0.0.1:{port}/"


def reset_peak_rss(pid: int) -> bool:
    """Set VmHWM back to the current RSS (Linux clear_refs 5); False where not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def token() -> str:
    from auth.tokens import Principal, TokenIssuer

    return TokenIssuer(JWT_SECRET, 3600).issue(Principal("bench", "bench"))[0]


def tus_upload(gateway: GatewayProcess, path: Path) -> float:
    """Create an upload and send the whole file in one streamed PATCH; return seconds."""
    size = path.stat().st_size
    bearer = token()
    parts = urlsplit(gateway.url)
    started = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600, blocksize=1 * MiB)
    conn.request("POST", "/files/", headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(size),
                                             "Authorization": f"Bearer {bearer}"})
    response = conn.getresponse()
    response.read()
    assert response.status == 201, response.status
    location = urlsplit(response.headers["Location"]).path
    with open(path, "rb") as fh:
        conn.request("PATCH", location, body=fh, headers={
            "Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Length": str(size),
            "Content-Type": "application/offset+octet-stream", "Authorization": f"Bearer {bearer}"})
        response = conn.getresponse()
        body = response.read()
    elapsed = time.perf_counter() - started
    assert response.status == 204, (response.status, body)
    assert response.headers["Upload-Offset"] == str(size)
    conn.close()
    return elapsed


def s3_client(endpoint: str):
    """A boto3 S3 client for the bench's moto server."""
    return boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-2",
                        aws_access_key_id="bench", aws_secret_access_key="bench")


def direct_upload(endpoint: str, bucket: str, path: Path, part_size: int) -> float:
    s3 = s3_client(endpoint)
    config = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size)
    started = time.perf_counter()
    s3.upload_file(str(path), bucket, f"direct/{path.name}", Config=config,
                   ExtraArgs={"ServerSideEncryption": "AES256"})
    return time.perf_counter() - started


def warm_up_moto(endpoint: str, source: Path, part_size: int) -> float:
    """One unmeasured direct upload of `source` into moto, then deleted; returns its MB/s.

    A fresh moto takes its first large upload markedly slower than later ones (its heap grows):
    without this, whichever side goes first in round 1 would be measured against a cold server.
    """
    bucket = "bench-warm-up"
    s3 = s3_client(endpoint)
    try:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    seconds = direct_upload(endpoint, bucket, source, part_size)
    empty_bucket(endpoint, bucket)
    return source.stat().st_size / seconds / 1e6


def empty_bucket(endpoint: str, bucket: str) -> None:
    """Delete every object and unfinished multipart upload in `bucket`."""
    s3 = s3_client(endpoint)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])
    for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--local-sizes", default="256MiB,2GiB")
    parser.add_argument("--part-size", default="8MiB")
    parser.add_argument("--rounds", type=int, default=3, help="alternating gateway/direct rounds on S3")
    args = parser.parse_args()
    size, part_size = _size(args.size), _size(args.part_size)
    print(use_shipped_gateway())

    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        folder = Path(tmp)
        moto, endpoint = start_moto()
        mongo, mongo_uri = start_mongo(folder)
        try:
            source = folder / "source.bin"
            make_file(source, size)
            env = {"HOST": "127.0.0.1", "DATA_DIR": str(folder / "gw"), "MONGODB_URI": mongo_uri,
                   "JWT_SECRET": JWT_SECRET, "ACCOUNTLESS_TOKENS": "true", "LOG_LEVEL": "WARNING", "PART_SIZE": str(part_size),
                   "STORAGE_BACKEND": "s3", "S3_BUCKET": "bench", "S3_ENDPOINT_URL": endpoint,
                   "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "eu-west-2"}
            (folder / "gw").mkdir()
            gateway = GatewayProcess(dict(env, PORT=str(free_port())), folder / "gw")
            gateway.start()
            gateway_runs, direct_runs = [], []
            print(f"warm-up: one unmeasured direct upload into moto ({warm_up_moto(endpoint, source, part_size):.1f} MB/s)")
            try:
                # alternating rounds, moto emptied after each upload: both meet the same server state,
                # and a slow spell of the machine hits both sides
                for _ in range(args.rounds):
                    direct_runs.append(direct_upload(endpoint, "bench", source, part_size))
                    empty_bucket(endpoint, "bench")
                    gateway_runs.append(tus_upload(gateway, source))
                    empty_bucket(endpoint, "bench")
                gateway_rss = peak_rss_mib(gateway.process.pid)
            finally:
                gateway.stop()
            gateway_seconds, direct_seconds = statistics.median(gateway_runs), statistics.median(direct_runs)
            mb = size / 1e6
            print(f"S3 (moto), {args.size} file, part size {args.part_size}, {args.rounds} alternating rounds (medians)")
            print(f"  gateway tus upload : {mb / gateway_seconds:8.1f} MB/s  "
                  f"(rounds: {', '.join(f'{mb / t:.0f}' for t in gateway_runs)})")
            print(f"  direct boto3       : {mb / direct_seconds:8.1f} MB/s  "
                  f"(rounds: {', '.join(f'{mb / t:.0f}' for t in direct_runs)})")
            print(f"  ratio gateway/direct: {direct_seconds / gateway_seconds:.2f}")
            print(f"  gateway peak RSS   : {gateway_rss:.0f} MiB")
            source.unlink()

            print("local store")
            for label in [s for s in args.local_sizes.split(",") if s]:
                local_size = _size(label)
                local_source = folder / f"local-{label}.bin"
                make_file(local_source, local_size)
                data_dir = folder / f"local-{label}"
                data_dir.mkdir()
                local = GatewayProcess(dict(env, PORT=str(free_port()), STORAGE_BACKEND="local",
                                            DATA_DIR=str(data_dir)), data_dir)
                local.start()
                try:
                    seconds = tus_upload(local, local_source)
                    rss = peak_rss_mib(local.process.pid)
                finally:
                    local.stop()
                print(f"  {label:>7}: {local_size / 1e6 / seconds:8.1f} MB/s, gateway peak RSS {rss:.0f} MiB")
                local_source.unlink()
        finally:
            moto.terminate()
            mongo.terminate()
            moto.wait()
            mongo.wait()


if __name__ == "__main__":
    main()
