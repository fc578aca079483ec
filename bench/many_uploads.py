"""Many uploads at once through one gateway process: correctness and peak memory.

Prints, for one invocation and each store in --stores (S3 on a moto server, the local store):
  * how many of UPLOADS concurrent tus uploads of SIZE each (one streamed PATCH per upload,
    as tus-js-client sends by default; each upload by its own user) answered 204 and came
    back byte-identical (sha256 of a GET /files/<id> download against the bytes sent);
  * the aggregate MB/s of the uploads and the gateway's peak RSS (VmHWM), next to its
    UPLOAD_MEMORY_BUDGET and its RSS when idle.

The bytes of each upload are 1 MiB slices of a shared random pool in an order drawn from the
upload's own seed, so the client needs no memory per upload and no two uploads are alike.

With --images N and --videos M the same run also uploads N photos (24 MP JPEGs made at start, each
with its own comment segment) and M short videos (1920x1080 H.264 made with ffmpeg) through the REST
upload, each by its own user, at the same moment as the tus uploads, and waits for their processing:
it prints how many thumbnails were made (fetched: a JPEG without metadata segments) and why any were
not, and how many of the gateway's child processes (processing workers) run inside its task group.

With --task-cpu 0.25 --task-memory 512MiB the gateway runs in its own cgroup with that CPU quota
and memory limit, as Fargate runs a task (bench/task_limits.py; needs root; moto, MongoDB and the
clients stay outside), and each store also prints the group's CPU seconds per GiB, throttled time,
peak memory (page cache included), peak anonymous memory (sampled) and OOM kills. With --s3-tls
moto is served over HTTPS with a CA made at run time (the gateway trusts it through AWS_CA_BUNDLE).

Usage: python bench/many_uploads.py [--uploads 32] [--size 128MiB] [--stores s3,local]
                                  [--images 20] [--videos 2]
                                  [--part-size 8MiB] [--memory-budget 192MiB]
                                  [--task-cpu 0.25 --task-memory 512MiB] [--s3-tls]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from auth.tokens import Principal, TokenIssuer  # noqa: E402
from bench.task_limits import TaskGroup, gateway_python, start_moto_tls, task_columns, task_limits_from_args  # noqa: E402
from bench.upload import (  # noqa: E402
    memory_mib, peak_rss_mib, require_free_space, start_moto, start_mongo, use_shipped_gateway,
)
from gateway.config import _size  # noqa: E402
from processing.jpeg import APP0, APP15, COM, NotJpeg, segments  # noqa: E402
from tests.support import GatewayProcess, free_port  # noqa: E402

MiB = 1024 * 1024
SLICE = MiB
POOL_SLICES = 64
JWT_SECRET = secrets.token_urlsafe(48)


class Payloads:
    """Deterministic upload bodies made of 1 MiB slices of one random pool."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pool = memoryview(os.urandom(POOL_SLICES * SLICE))

    def chunks(self, seed: int) -> Iterator[memoryview]:
        """The body of upload `seed`, in slices of at most 1 MiB (views into the pool, no copies)."""
        rng = random.Random(seed)
        left = self.size
        while left:
            n = min(SLICE, left)
            start = rng.randrange(POOL_SLICES) * SLICE + rng.randrange(0, SLICE - n + 1)
            yield self.pool[start:start + n]
            left -= n

    def sha256(self, seed: int) -> str:
        digest = hashlib.sha256()
        for chunk in self.chunks(seed):
            digest.update(chunk)
        return digest.hexdigest()


@dataclass
class Result:
    seed: int
    status: int | None = None
    error: str = ""
    location: str = ""
    identical: bool = False


def bearer(user: str) -> str:
    return TokenIssuer(JWT_SECRET, 3600).issue(Principal(user, user))[0]


def upload_one(gateway_url: str, payloads: Payloads, result: Result, start: threading.Barrier) -> None:
    """Create an upload and send it in one PATCH; record the status and the upload's path."""
    parts = urlsplit(gateway_url)
    token = bearer(f"concurrent-{result.seed}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=900)
    try:
        conn.request("POST", "/files/", headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(payloads.size),
                                                 "Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        response.read()
        if response.status != 201:
            result.status, result.error = response.status, "creation failed"
            return
        result.location = urlsplit(response.headers["Location"]).path
        start.wait()
        conn.request("PATCH", result.location, body=payloads.chunks(result.seed), headers={
            "Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Length": str(payloads.size),
            "Content-Type": "application/offset+octet-stream", "Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        body = response.read()
        result.status = response.status
        if response.status != 204:
            result.error = body[:200].decode(errors="replace")
    except (OSError, http.client.HTTPException, threading.BrokenBarrierError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def downloaded_sha256(gateway_url: str, result: Result) -> str:
    parts = urlsplit(gateway_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=900)
    try:
        conn.request("GET", result.location,
                     headers={"Authorization": f"Bearer {bearer(f'concurrent-{result.seed}')}"})
        response = conn.getresponse()
        digest = hashlib.sha256()
        while chunk := response.read(MiB):
            digest.update(chunk)
        return digest.hexdigest() if response.status == 200 else f"status {response.status}"
    finally:
        conn.close()


# --- photos and videos processed in the same run ---------------------------------------------


@dataclass
class MediaResult:
    kind: str  # "image" or "video"
    name: str
    data: bytes
    media_id: str = ""
    error: str = ""
    status: str = ""  # the media item's final status
    reason: str = ""
    thumbnail: bool = False  # fetched: a JPEG
    bare: bool = False  # with no APPn segment but JFIF, and no comment


def make_photo() -> bytes:
    """A 24 MP (6000x4000) JPEG of gradients and noise, about 10 MB, as a camera would send."""
    from PIL import Image

    size = (6000, 4000)
    ramp = Image.linear_gradient("L").resize(size)
    picture = Image.merge("RGB", (ramp, Image.effect_noise(size, 24), ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=88)
    return out.getvalue()


def with_comment(jpeg: bytes, text: str) -> bytes:
    """`jpeg` with a comment segment right after its start: a distinct file that carries a comment."""
    payload = text.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def make_video(folder: Path) -> bytes:
    """A 4 s 1920x1080 H.264 MP4 (ffmpeg's test pattern)."""
    path = folder / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=duration=4:size=1920x1080:rate=25",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(path)],
                   check=True, timeout=300)
    return path.read_bytes()


def media_work(images: int, videos: int, folder: Path) -> list[MediaResult]:
    work: list[MediaResult] = []
    if images:
        photo = make_photo()
        work += [MediaResult("image", f"photo-{i}.jpg", with_comment(photo, f"photo {i}, 12 Acacia Avenue"))
                 for i in range(images)]
    if videos:
        if shutil.which("ffmpeg") is None:
            raise SystemExit("--videos needs ffmpeg")
        clip = make_video(folder)
        work += [MediaResult("video", f"clip-{i}.mp4", clip) for i in range(videos)]
    return work


def _media_user(item: MediaResult) -> str:
    return f"media-{item.name.rsplit('.', 1)[0]}"


def upload_media(gateway_url: str, item: MediaResult, start: threading.Barrier) -> None:
    """Upload one photo or video through POST /api/media/upload; record its media id."""
    import requests

    try:
        start.wait()
        response = requests.post(gateway_url + "/api/media/upload", files={"file": (item.name, item.data)},
                                 headers={"Authorization": f"Bearer {bearer(_media_user(item))}"}, timeout=900)
        if response.status_code == 201:
            item.media_id = response.json()["id"]
        else:
            item.error = f"upload answered {response.status_code}: {response.text[:200]}"
    except (OSError, threading.BrokenBarrierError, ValueError) as exc:
        item.error = f"upload: {type(exc).__name__}: {exc}"


def _bare_jpeg(data: bytes) -> bool:
    try:
        found = segments(data)
    except NotJpeg:
        return False
    return not any(marker == COM or (APP0 < marker <= APP15) for marker, _, _ in found)


def settle_media(gateway_url: str, work: list[MediaResult], timeout: float) -> None:
    """Wait until every uploaded item has left "processing"; fetch each thumbnail made."""
    import requests

    deadline = time.monotonic() + timeout
    for item in work:
        if not item.media_id:
            continue
        headers = {"Authorization": f"Bearer {bearer(_media_user(item))}"}
        described: dict = {}
        while time.monotonic() < deadline:
            try:
                described = requests.get(f"{gateway_url}/api/media/{item.media_id}", headers=headers, timeout=60).json()
            except (OSError, ValueError) as exc:
                item.error = f"status: {type(exc).__name__}: {exc}"
                break
            if described.get("status") != "processing":
                break
            time.sleep(0.5)
        item.status, item.reason = described.get("status", "unknown"), described.get("reason") or ""
        if item.status == "ready" and described.get("thumbnailUrl"):
            try:
                thumb = requests.get(described["thumbnailUrl"], timeout=60)
            except OSError as exc:
                item.error = f"thumbnail: {type(exc).__name__}: {exc}"
                continue
            item.thumbnail = thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"
            item.bare = item.thumbnail and _bare_jpeg(thumb.content)


def descendants(pid: int) -> list[int]:
    """Every process started by `pid`, and by them (from /proc/PID/task/*/children)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def run_store(label: str, gateway: GatewayProcess, payloads: Payloads, uploads: int,
              group: TaskGroup | None = None, work: list[MediaResult] | None = None) -> bool:
    """Run `uploads` concurrent uploads (and the photos and videos of `work`) through `gateway`;
    print the figures; True when all uploads are identical and every thumbnail was made."""
    idle = memory_mib(gateway.process.pid, "VmRSS")
    group_before = group.stats() if group else None
    results = [Result(seed=seed) for seed in range(uploads)]
    work = [MediaResult(w.kind, w.name, w.data) for w in work or []]
    start = threading.Barrier(uploads + len(work) + 1)
    threads = [threading.Thread(target=upload_one, args=(gateway.url, payloads, r, start), daemon=True)
               for r in results]
    threads += [threading.Thread(target=upload_media, args=(gateway.url, item, start), daemon=True) for item in work]
    for thread in threads:
        thread.start()
    try:
        start.wait(timeout=120)
    except threading.BrokenBarrierError:
        pass
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    settle_media(gateway.url, work, timeout=900)
    media_seconds = time.perf_counter() - started
    children = descendants(gateway.process.pid) if gateway.process.poll() is None else []
    in_group = set(group.pids()) if group else set()
    group_after = group.stats() if group else None
    try:
        peak = peak_rss_mib(gateway.process.pid)
    except OSError:  # the gateway is gone (OOM-killed in its task group, say)
        peak = float("nan")
    for result in results:
        if result.status == 204:
            try:
                result.identical = downloaded_sha256(gateway.url, result) == payloads.sha256(result.seed)
            except (OSError, http.client.HTTPException) as exc:  # the gateway is gone
                result.error = f"download: {type(exc).__name__}: {exc}"
    ok = sum(r.status == 204 for r in results)
    identical = sum(r.identical for r in results)
    total_mb = uploads * payloads.size / 1e6
    print(f"{label}: {uploads} concurrent uploads of {payloads.size / MiB:.0f} MiB")
    print(f"  answered 204        : {ok}/{uploads}")
    print(f"  byte-identical      : {identical}/{uploads}")
    print(f"  aggregate throughput: {total_mb / seconds:8.1f} MB/s ({seconds:.1f} s for {total_mb:.0f} MB)")
    print(f"  gateway RSS idle    : {idle:.0f} MiB")
    print(f"  gateway peak RSS    : {peak:.0f} MiB")
    thumbnails_ok = True
    for kind in ("image", "video"):
        items = [w for w in work if w.kind == kind]
        if items:
            made = sum(w.thumbnail for w in items)
            thumbnails_ok &= made == len(items)
            print(f"  {kind} thumbnails made : {made}/{len(items)} ({sum(w.bare for w in items)} without "
                  f"metadata segments), all settled {media_seconds:.1f} s after the start")
    if work and group is not None:
        print(f"  gateway children in the task group: {sum(c in in_group for c in children)}/{len(children)} "
              "(processing workers; ffmpeg runs are children too while they last)")
    for item in work:
        if not item.thumbnail:
            print(f"  {item.name}: {item.status or 'not uploaded'} {item.reason} {item.error}".rstrip())
    if group is not None:
        task = task_columns(group_before, group_after, uploads * payloads.size, group)
        print(f"  task group CPU      : {task['cpu_s_per_gib']:.2f} CPU s/GiB, throttled {task['throttled_s']:.1f} s")
        print(f"  task group memory   : peak {task['peak_mib']:.0f} MiB (page cache included), "
              f"anonymous peak {task['anon_peak_mib']:.0f} MiB (sampled), OOM kills {task['oom_kills']}")
        print(f"                        {task['at_peak']}")
    for result in results:
        if result.status != 204 or not result.identical:
            print(f"  upload {result.seed}: status {result.status} {result.error}")
    return identical == uploads and thumbnails_ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=32)
    parser.add_argument("--size", default="128MiB")
    parser.add_argument("--stores", default="s3,local")
    parser.add_argument("--images", type=int, default=0, help="also upload this many 24 MP JPEGs (thumbnailed)")
    parser.add_argument("--videos", type=int, default=0, help="also upload this many short 1080p videos (thumbnailed)")
    parser.add_argument("--part-size", default="8MiB")
    parser.add_argument("--memory-budget", default="192MiB", help="the gateway's UPLOAD_MEMORY_BUDGET")
    parser.add_argument("--task-cpu", help="run the gateway in its own cgroup with this many vCPU (e.g. 0.25), "
                                           "as Fargate limits a task; needs root and --task-memory")
    parser.add_argument("--task-memory", help="the cgroup's memory limit (e.g. 512MiB), with --task-cpu")
    parser.add_argument("--s3-tls", action="store_true", help="serve moto over HTTPS (self-signed CA made now)")
    args = parser.parse_args()
    payloads = Payloads(_size(args.size))
    print(use_shipped_gateway())
    print(f"part size {args.part_size}, UPLOAD_MEMORY_BUDGET {args.memory_budget}")
    all_identical = True
    with tempfile.TemporaryDirectory(prefix="bench-concurrent-") as tmp:
        folder = Path(tmp)
        require_free_space(folder, 2 * args.uploads * _size(args.size))  # objects and their parts in moto
        limits = task_limits_from_args(args.task_cpu, args.task_memory, folder)
        if limits:
            print(limits.describe() + " (moto, MongoDB and the clients outside)")
        moto, endpoint = start_moto_tls(folder) if args.s3_tls else start_moto()
        if args.s3_tls:
            print(f"moto over TLS at {endpoint}")
        mongo, mongo_uri = start_mongo(folder)
        work = media_work(args.images, args.videos, folder)
        if work:
            print(f"and {args.images} photos of 24 MP ({sum(len(w.data) for w in work if w.kind == 'image') / 1e6:.0f} MB), "
                  f"{args.videos} videos of 1920x1080, uploaded at the same moment")
        try:
            for store in [s.strip() for s in args.stores.split(",") if s.strip()]:
                data_dir = folder / store
                data_dir.mkdir()
                env = {"HOST": "127.0.0.1", "PORT": str(free_port()), "DATA_DIR": str(data_dir),
                       "MONGODB_URI": mongo_uri, "JWT_SECRET": JWT_SECRET, "ACCOUNTLESS_TOKENS": "true", "LOG_LEVEL": "WARNING",
                       "PART_SIZE": args.part_size, "UPLOAD_MEMORY_BUDGET": args.memory_budget,
                       "RATE_LIMIT_REQUESTS": "1000000",  # the bench polls each media item's status
                       "STORAGE_BACKEND": store, "S3_BUCKET": "concurrent", "S3_ENDPOINT_URL": endpoint,
                       "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "eu-west-2"}
                gateway = GatewayProcess(env, data_dir)
                group = limits.group(f"gateway-{store}") if limits else None
                try:
                    with gateway_python(group):
                        gateway.start()
                    label = ("S3 (moto over TLS)" if args.s3_tls else "S3 (moto)") if store == "s3" else "local store"
                    all_identical &= run_store(label, gateway, payloads, args.uploads, group, work)
                finally:
                    gateway.stop()
                    if group is not None:
                        group.remove()
        finally:
            if limits is not None:
                limits.close()
            for process in (moto, mongo):
                process.terminate()
                process.wait()
    return 0 if all_identical else 1


if __name__ == "__main__":
    sys.exit(main())
