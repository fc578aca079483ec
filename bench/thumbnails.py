"""Thumbnail cost: the gateway's Pillow path against pyvips, and bytes read for a video frame.

Prints, in one run:
  * for a 24 MP JPEG: median milliseconds and peak RSS of the gateway's make_thumbnail
    (Pillow, shrink-on-load) and of pyvips' thumbnail, each in a fresh process;
  * the same thumbnails run two at a time in the gateway's process pool and in a thread
    pool (PROCESSING_EXECUTOR): wall time, how late the event loop ran meanwhile, peak RSS;
  * for a ~30 MB faststart MP4 uploaded to a gateway (local store, then S3 in moto): how
    many bytes the gateway read from its store while ffprobe + ffmpeg probed it and took
    one frame through its signed URL, as a share of the file.

Usage: python bench/thumbnails.py [--runs 7] [--video-mb 30] [--executor-jobs 12]
Needs: pip install pyvips pyvips-binary (setup.py extra "bench"), ffmpeg.
"""

from __future__ import annotations

import argparse
import json
import time
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORKER = r"""
import json, resource, statistics, sys, time
sys.path.insert(0, sys.argv[1])
method, path, runs = sys.argv[2], sys.argv[3], int(sys.argv[4])
data = open(path, "rb").read()
times = []
if method == "pillow":
    from processing.images import make_thumbnail
    for _ in range(runs):
        started = time.perf_counter()
        result = make_thumbnail(data, 320, 320, 100_000_000)
        times.append(time.perf_counter() - started)
    size = (result.thumbnail_width, result.thumbnail_height)
else:
    import pyvips
    for _ in range(runs):
        started = time.perf_counter()
        image = pyvips.Image.thumbnail_buffer(data, 320, height=320)
        out = image.jpegsave_buffer(Q=82, strip=True)
        times.append(time.perf_counter() - started)
    size = (image.width, image.height)
print(json.dumps({"median_ms": statistics.median(times) * 1000, "min_ms": min(times) * 1000,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "size": size}))
"""

# The gateway's two executor kinds (PROCESSING_EXECUTOR) side by side: JOBS thumbnails of
# one JPEG, two at a time, while an asyncio ticker measures how late the event loop runs.
EXECUTOR_WORKER = r"""
import asyncio, json, resource, sys, time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
sys.path.insert(0, sys.argv[1])
from processing.images import make_thumbnail
from processing.jobs import _worker_init
kind, path, jobs = sys.argv[2], sys.argv[3], int(sys.argv[4])
data = open(path, "rb").read()

async def main():
    if kind == "thread":
        pool = ThreadPoolExecutor(2)
    else:
        pool = ProcessPoolExecutor(2, initializer=_worker_init, initargs=(1 << 30,), max_tasks_per_child=100)
    loop = asyncio.get_running_loop()
    await asyncio.gather(*[loop.run_in_executor(pool, make_thumbnail, data, 320, 320, 100_000_000) for _ in range(2)])
    lags, done = [], False
    async def ticker():
        while not done:
            asked = loop.time()
            await asyncio.sleep(0.005)
            lags.append(loop.time() - asked - 0.005)
    tick = asyncio.ensure_future(ticker())
    started = time.perf_counter()
    await asyncio.gather(*[loop.run_in_executor(pool, make_thumbnail, data, 320, 320, 100_000_000) for _ in range(jobs)])
    seconds = time.perf_counter() - started
    done = True
    await tick
    pool.shutdown()
    lags.sort()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "lag_p99_ms": lags[int(len(lags) * 0.99)] * 1000,
                      "lag_max_ms": lags[-1] * 1000, "rss_mib": own, "child_rss_mib": children}))

asyncio.run(main())
"""


def compare_executors(path: Path, jobs: int) -> dict[str, dict]:
    results = {}
    for kind in ("process", "thread"):
        output = subprocess.run([sys.executable, "-c", EXECUTOR_WORKER, str(ROOT), kind, str(path), str(jobs)],
                                check=True, capture_output=True, text=True).stdout
        results[kind] = json.loads(output)
    return results


def make_jpeg(path: Path) -> None:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (6000, 4000))
    draw = ImageDraw.Draw(image)
    for i in range(0, 6000, 40):
        draw.line([(i, 0), (6000 - i, 4000)], fill=(i % 255, (i * 7) % 255, (i * 13) % 255), width=9)
    image.save(path, "JPEG", quality=92)


def measure(method: str, path: Path, runs: int) -> dict:
    output = subprocess.run([sys.executable, "-c", WORKER, str(ROOT), method, str(path), str(runs)],
                            check=True, capture_output=True, text=True).stdout
    return json.loads(output)


def store_bytes_read(gateway) -> float:
    import requests

    text = requests.get(gateway.url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("mediaserver_store_read_bytes_total "):
            return float(line.split()[1])
    return 0.0


def video_bytes_read(folder: Path, megabytes: int, store: str) -> tuple[int, float, dict]:
    """Upload a faststart MP4 to a gateway and count the bytes it reads from its store to process it."""
    import requests

    from bench.upload import JWT_SECRET, start_moto, start_mongo, token
    from tests.support import GatewayProcess, free_port

    video = folder / "video.mp4"
    seconds = 30
    bitrate = megabytes * 8 * 1000 // seconds
    if not video.exists():
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=duration={seconds}:size=1280x720:rate=30",
                        "-f", "lavfi", "-i", f"nullsrc=s=1280x720:d={seconds},geq=random(1)*255:128:128",
                        "-filter_complex", "[0][1]blend=all_mode=addition:all_opacity=0.3",
                        "-c:v", "libx264", "-preset", "ultrafast", "-b:v", f"{bitrate}k", "-maxrate", f"{bitrate}k",
                        "-bufsize", f"{bitrate}k", "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(video)],
                       check=True, timeout=600)
    mongo, mongo_uri = start_mongo(folder)
    moto = None
    data_dir = folder / f"gateway-{store}"
    data_dir.mkdir(exist_ok=True)
    env = {"HOST": "127.0.0.1", "PORT": str(free_port()), "DATA_DIR": str(data_dir), "MONGODB_URI": mongo_uri,
           "MONGODB_DB": f"thumbs_{store}", "JWT_SECRET": JWT_SECRET, "ACCOUNTLESS_TOKENS": "true", "LOG_LEVEL": "WARNING", "STORAGE_BACKEND": store}
    if store == "s3":
        moto, endpoint = start_moto()
        env.update({"S3_BUCKET": "bench", "S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench",
                    "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "eu-west-2"})
    gateway = GatewayProcess(env, data_dir)
    gateway.start()
    try:
        headers = {"Authorization": f"Bearer {token()}"}
        with open(video, "rb") as fh:
            item = requests.post(gateway.url + "/api/media/upload", files={"file": ("video.mp4", fh)},
                                 headers=headers, timeout=300).json()
        before = store_bytes_read(gateway)
        for _ in range(600):
            item = requests.get(f"{gateway.url}/api/media/{item['id']}", headers=headers, timeout=10).json()
            if item["status"] != "processing":
                break
            time.sleep(0.1)
        return video.stat().st_size, store_bytes_read(gateway) - before, item
    finally:
        gateway.stop()
        mongo.terminate()
        if moto is not None:
            moto.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--video-mb", type=int, default=30)
    parser.add_argument("--executor-jobs", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-thumbs-") as tmp:
        folder = Path(tmp)
        jpeg = folder / "photo.jpg"
        make_jpeg(jpeg)
        print(f"24 MP JPEG ({jpeg.stat().st_size / 1e6:.1f} MB) -> 320x320 thumbnail, {args.runs} runs each, fresh process")
        results = {method: measure(method, jpeg, args.runs) for method in ("pillow", "pyvips")}
        for method, result in results.items():
            print(f"  {method:7}: median {result['median_ms']:6.1f} ms (min {result['min_ms']:6.1f}), "
                  f"peak RSS {result['peak_rss_mib']:5.0f} MiB, thumbnail {result['size'][0]}x{result['size'][1]}")
        print(f"  time ratio pillow/pyvips: {results['pillow']['median_ms'] / results['pyvips']['median_ms']:.2f}")
        executors = compare_executors(jpeg, args.executor_jobs)
        print(f"{args.executor_jobs} thumbnails of that JPEG, two at a time, event loop ticking every 5 ms")
        for kind, result in executors.items():
            print(f"  {kind:7} pool: {result['seconds']:5.2f} s, event-loop lag p99 {result['lag_p99_ms']:6.1f} ms "
                  f"(max {result['lag_max_ms']:6.1f}), peak RSS {result['rss_mib']:4.0f} MiB"
                  + (f" + largest worker {result['child_rss_mib']:4.0f} MiB" if kind == "process" else ""))
        print(f"  time ratio process/thread: {executors['process']['seconds'] / executors['thread']['seconds']:.2f}")
        for store in ("local", "s3"):
            size, read, item = video_bytes_read(folder, args.video_mb, store)
            print(f"faststart MP4 of {size / 1e6:.1f} MB, {store} store: processing ({item['status']}, "
                  f"{item.get('width')}x{item.get('height')}, {item.get('duration')} s) read {read / 1e6:.2f} MB "
                  f"from the store = {100 * read / size:.1f}% of the file")


if __name__ == "__main__":
    main()
