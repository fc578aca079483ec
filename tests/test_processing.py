"""Type detection, thumbnails and probing of real files the tests make, and hostile ones."""

from __future__ import annotations

import io
import shutil
import subprocess
import threading
import time
import uuid
import zlib
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.jpeg_checks import XMP, assert_no_metadata, swapped_profile
from tests.support import create_upload, head, patch, random_bytes

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def register(gateway) -> dict:
    name = "p" + uuid.uuid4().hex[:10]
    body = requests.post(gateway.url + "/api/auth/register", json={"username": name, "password": "pr0cessing-pw"}).json()
    return {"token": body["token"], "headers": {"Authorization": f"Bearer {body['token']}"}}


@pytest.fixture(scope="module")
def user(gateway) -> dict:
    return register(gateway)


def upload(gateway, user, data: bytes, name: str) -> dict:
    response = requests.post(gateway.url + "/api/media/upload", files={"file": (name, data)}, headers=user["headers"], timeout=120)
    assert response.status_code == 201, response.text
    return response.json()


def settled(gateway, user, media_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = requests.get(f"{gateway.url}/api/media/{media_id}", headers=user["headers"]).json()
        if item["status"] != "processing":
            return item
        time.sleep(0.1)
    raise TimeoutError(f"{media_id} still processing")


def image(fmt: str, size=(640, 480), orientation: int | None = None, **save) -> bytes:
    picture = Image.new("RGB", size, "white")
    picture.paste((200, 0, 0), (0, 0, size[0] // 2, size[1] // 4))  # red block in the top-left
    out = io.BytesIO()
    if orientation:
        exif = picture.getexif()
        exif[0x0112] = orientation
        save["exif"] = exif
    picture.save(out, fmt, **save)
    return out.getvalue()


def fetch_thumbnail(item: dict) -> Image.Image:
    return Image.open(io.BytesIO(thumbnail_bytes(item)))


def thumbnail_bytes(item: dict) -> bytes:
    response = requests.get(item["thumbnailUrl"])
    assert response.status_code == 200
    return response.content


@pytest.mark.parametrize("fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("TIFF", "tiff"), ("BMP", "bmp")])
def test_image_thumbnails(gateway, user, fmt, ext):
    item = settled(gateway, user, upload(gateway, user, image(fmt), f"picture.{ext}")["id"])
    assert item["status"] == "ready", item["reason"]
    assert (item["type"], item["width"], item["height"]) == ("images", 640, 480)
    thumb = fetch_thumbnail(item)
    assert thumb.format == "JPEG" and thumb.size == (320, 240)
    assert not thumb.getexif(), "metadata stripped"


def test_exif_orientation_is_applied(gateway, user):
    item = settled(gateway, user, upload(gateway, user, image("JPEG", (640, 480), orientation=6), "rotated.jpg")["id"])
    assert (item["width"], item["height"]) == (480, 640)
    thumb = fetch_thumbnail(item).convert("RGB")
    assert thumb.size == (240, 320)
    # orientation 6 turns the top-left red block to the top-right
    assert thumb.getpixel((thumb.width - 10, 10))[0] > 150 and thumb.getpixel((10, 10))[1] > 150


def test_animated_gif_uses_first_frame(gateway, user):
    frames = [Image.new("RGB", (100, 50), color) for color in ("blue", "yellow", "green")]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    item = settled(gateway, user, upload(gateway, user, out.getvalue(), "anim.gif")["id"])
    assert item["status"] == "ready"
    r, g, b = fetch_thumbnail(item).convert("RGB").getpixel((5, 5))
    assert b > 150 and r < 100


def make_video(tmp_path: Path, name: str, *args: str, duration: int = 3) -> bytes:
    path = tmp_path / name
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=duration={duration}:size=320x240:rate=25",
                    *args, str(path)], check=True, timeout=120)
    return path.read_bytes()


@pytest.mark.parametrize("name,args,codec", [
    ("fast.mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart"], "h264"),
    ("slow.mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "h264"),
    ("clip.webm", ["-c:v", "libvpx", "-b:v", "200k"], "vp8"),
    ("clip.mov", ["-c:v", "mjpeg"], "mjpeg"),
])
def test_video_probe_and_thumbnail(gateway, user, tmp_path, name, args, codec):
    item = settled(gateway, user, upload(gateway, user, make_video(tmp_path, name, *args), name)["id"])
    assert item["status"] == "ready", item["reason"]
    assert item["type"] == "videos"
    assert (item["width"], item["height"], item["codec"]) == (320, 240, codec)
    assert abs(item["duration"] - 3) < 0.2 and item["frameRate"] == 25
    frame = thumbnail_bytes(item)
    assert Image.open(io.BytesIO(frame)).size == (320, 240)
    assert_no_metadata(frame)  # ffmpeg's encoder comment included


def test_hostile_and_broken_files_fail_their_job_only(gateway, user, tmp_path):
    video = make_video(tmp_path, "whole.mp4", "-c:v", "libx264", "-pix_fmt", "yuv420p")
    truncated = upload(gateway, user, video[: len(video) // 3], "truncated.mp4")
    bomb = io.BytesIO()
    Image.new("1", (30000, 30000)).save(bomb, "PNG")  # 900 MP of zeros: a few hundred KiB compressed
    bomb_item = upload(gateway, user, bomb.getvalue(), "bomb.png")
    corrupt = upload(gateway, user, b"\xff\xd8\xff\xe0" + random_bytes(50_000, seed=60), "corrupt.jpg")
    text = upload(gateway, user, b"I am text pretending to be a photo", "photo.jpg")
    polyglot = upload(gateway, user, image("GIF") + zlib.compress(b"PK\x03\x04 zip tail" * 100), "poly.gif")
    fake_video = upload(gateway, user, b"\x00\x00\x00\x18ftypisom" + random_bytes(100_000, seed=61), "fake.mp4")

    assert settled(gateway, user, truncated["id"])["status"] == "failed"
    failed_bomb = settled(gateway, user, bomb_item["id"])
    assert failed_bomb["status"] == "failed" and "pixels" in failed_bomb["reason"] or "bomb" in failed_bomb["reason"]
    assert settled(gateway, user, corrupt["id"])["status"] == "failed"
    assert settled(gateway, user, fake_video["id"])["status"] == "failed"
    text_item = settled(gateway, user, text["id"])
    assert (text_item["type"], text_item["status"], text_item["thumbnailUrl"]) == ("files", "ready", None)
    assert text_item["filename"] == "photo.jpg" and text_item["contentType"] == "application/octet-stream"
    assert settled(gateway, user, polyglot["id"])["type"] == "images"
    assert requests.get(gateway.url + "/health/detailed").json()["status"] == "ok", "the gateway keeps serving"


def test_disallowed_type_is_refused_and_removed(start_gateway):
    gateway = start_gateway("local", ALLOWED_TYPES="images,video/mp4")
    user = register(gateway)
    url = create_upload(gateway, user["token"], 100)
    response = patch(url, user["token"], 0, b"plain text " * 9 + b"x")
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "type_not_allowed"
    assert head(url, user["token"]).status_code == 404
    rest = requests.post(gateway.url + "/api/media/upload", files={"file": ("a.txt", b"text")}, headers=user["headers"])
    assert rest.status_code == 415
    ok = requests.post(gateway.url + "/api/media/upload", files={"file": ("a.png", image("PNG"))}, headers=user["headers"])
    assert ok.status_code == 201
    assert requests.get(gateway.url + "/api/media", headers=user["headers"]).json()["total"] == 1
    leftovers = [p for p in (gateway.data_dir / "store" / "objects").rglob("*") if p.is_file() and "images" not in p.parts]
    assert not leftovers


def test_queued_jobs_survive_a_stopped_instance(start_gateway):
    idle = start_gateway("local", PROCESSING_CONCURRENCY="0")
    user = register(idle)
    item = upload(idle, user, image("PNG"), "waiting.png")
    time.sleep(0.5)
    assert requests.get(f"{idle.url}/api/media/{item['id']}", headers=user["headers"]).json()["status"] == "processing"
    idle.kill()
    worker = start_gateway("local", share=idle, PROCESSING_CONCURRENCY="2", PROCESSING_SWEEP_INTERVAL="0.5")
    done = settled(worker, user, item["id"])
    assert done["status"] == "ready" and done["thumbnailUrl"]


def test_progress_and_status_events(gateway, user):
    events: list[str] = []
    stream = requests.get(gateway.url + "/api/events", params={"access_token": user["token"]}, stream=True, timeout=30)
    assert stream.status_code == 200
    assert stream.headers["Content-Type"].startswith("text/event-stream")

    def read() -> None:
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("event:"):
                events.append(line.split(":", 1)[1].strip())
            # uploads and media are separate documents: their events need not come in this order
            if {"upload.progress", "upload.completed", "media.status"} <= set(events):
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.3)
    upload(gateway, user, image("JPEG"), "events.jpg")
    reader.join(30)
    stream.close()
    assert "upload.progress" in events and "upload.completed" in events and "media.status" in events
    assert requests.get(gateway.url + "/api/events").status_code == 401


# -- thumbnails carry no metadata -----------------------------------------------------------


@pytest.mark.parametrize("fmt,ext", [("JPEG", "jpg"), ("WEBP", "webp"), ("PNG", "png")])
def test_thumbnails_carry_no_metadata_and_are_srgb(gateway, user, fmt, ext):
    picture = Image.new("RGB", (800, 600), (255, 0, 0))
    exif = Image.Exif()
    exif[0x010E] = "at home, 12 Acacia Avenue"  # ImageDescription
    exif[0x010F] = "PhoneMaker"
    out = io.BytesIO()
    extra = {"comment": "Comment: 12 Acacia Avenue, Springfield"} if fmt == "JPEG" else {}
    picture.save(out, fmt, exif=exif, xmp=XMP, icc_profile=swapped_profile(), **extra)
    item = settled(gateway, user, upload(gateway, user, out.getvalue(), f"tagged.{ext}")["id"])
    assert item["status"] == "ready", item["reason"]
    thumbnail = thumbnail_bytes(item)
    assert_no_metadata(thumbnail)
    r, g, b = Image.open(io.BytesIO(thumbnail)).convert("RGB").getpixel((10, 10))
    assert b > 200 and r < 60, "pixels moved from the source's profile into sRGB"


# -- downloads named after the original -----------------------------------------------------


@pytest.mark.parametrize("name,ascii_name,encoded", [
    ("holiday.png", "holiday-thumbnail.jpg", "holiday-thumbnail.jpg"),
    ("Frühstück am See.png", "Fr_hst_ck am See-thumbnail.jpg", "Fr%C3%BChst%C3%BCck%20am%20See-thumbnail.jpg"),
])
def test_thumbnail_downloads_are_named_after_the_original(gateway, user, name, ascii_name, encoded):
    item = settled(gateway, user, upload(gateway, user, image("PNG"), name)["id"])
    response = requests.get(item["thumbnailUrl"])
    assert response.status_code == 200
    disposition = response.headers["Content-Disposition"]
    assert f'filename="{ascii_name}"' in disposition
    assert f"filename*=UTF-8''{encoded}" in disposition


# -- failure reasons say what went wrong ----------------------------------------------------


def test_failure_reasons_say_what_went_wrong(gateway, user, tmp_path):
    audio = tmp_path / "voice.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(audio)],
                   check=True, timeout=120)
    video = make_video(tmp_path, "whole.mp4", "-c:v", "libx264", "-pix_fmt", "yuv420p")  # index at the end
    bomb = io.BytesIO()
    Image.new("1", (30000, 30000)).save(bomb, "PNG")
    cases = {
        "voice.mp4": (audio.read_bytes(), "the video could not be decoded (no video stream)"),
        "cut.mp4": (video[: len(video) // 3], "the video could not be read"),
        "bomb.png": (bomb.getvalue(), "the image is too large to process (900 megapixels, limit 50 megapixels)"),
        "corrupt.jpg": (b"\xff\xd8\xff\xe0" + random_bytes(50_000, seed=60), None),
    }
    for name, (data, expected) in cases.items():
        item = settled(gateway, user, upload(gateway, user, data, name)["id"])
        assert item["status"] == "failed", (name, item)
        reason = item["reason"]
        assert "ffmpeg" not in reason and "ffprobe" not in reason and "Error" not in reason, reason
        if expected is None:
            assert reason in ("the image is damaged or incomplete", "the file is not a supported image"), reason
        else:
            assert reason.startswith(expected), (name, reason)


# -- processing admitted by a memory budget -------------------------------------------------


def noisy_png(size: tuple[int, int], seed: int) -> bytes:
    """A PNG that compresses little, so its job costs what its pixels say."""
    out = io.BytesIO()
    Image.frombytes("L", size, random_bytes(size[0] * size[1], seed=seed)).convert("RGB").save(out, "PNG", compress_level=1)
    return out.getvalue()


def test_jobs_larger_than_the_processing_budget_fail_with_their_figures(start_gateway, tmp_path):
    gateway = start_gateway("local", PROCESSING_MEMORY_BUDGET="16MiB")
    owner = register(gateway)
    large = upload(gateway, owner, noisy_png((2500, 2000), seed=70), "large.png")  # 5 MP decoded: 20 MB
    small = upload(gateway, owner, image("PNG"), "small.png")
    clip = upload(gateway, owner, make_video(tmp_path, "clip.mp4", "-c:v", "libx264", "-pix_fmt", "yuv420p"), "clip.mp4")
    refused = settled(gateway, owner, large["id"])
    assert refused["status"] == "failed"
    assert refused["reason"].startswith("the image is too large to process (5 megapixels, it needs about ")
    assert refused["reason"].endswith("MiB of memory, limit 16 MiB)")
    assert settled(gateway, owner, small["id"])["status"] == "ready", "a job within the budget runs"
    video = settled(gateway, owner, clip["id"])
    assert video["status"] == "failed" and video["reason"].startswith("the video is too large to process (")


def test_jobs_wait_for_memory_and_every_one_is_made(start_gateway):
    idle = start_gateway("local", PROCESSING_CONCURRENCY="0")
    owner = register(idle)
    # each job costs about 33 MiB (pixels and file copies): one at a time in a 40 MiB budget
    items = [upload(idle, owner, noisy_png((1800, 1500), seed=80 + n), f"wait-{n}.png") for n in range(6)]
    idle.kill()
    worker = start_gateway("local", share=idle, PROCESSING_CONCURRENCY="3", PROCESSING_QUEUE="0",
                           PROCESSING_MEMORY_BUDGET="40MiB", PROCESSING_SWEEP_INTERVAL="3600")
    # the start sweep takes 3 (the queue holds no more); the rest is taken as jobs end, not by a later sweep
    for item in items:
        done = settled(worker, owner, item["id"], timeout=120)
        assert done["status"] == "ready", done["reason"]
    assert "processing job waited for memory" in worker.log()


def test_an_image_whose_header_lies_past_the_first_mebibyte_is_admitted_whole(gateway, user):
    out = io.BytesIO()
    Image.new("RGB", (1200, 900), (0, 0, 255)).save(out, "JPEG", icc_profile=bytes(1_500_000))  # 1.5 MB before the frame header
    item = settled(gateway, user, upload(gateway, user, out.getvalue(), "profiled.jpg")["id"])
    assert item["status"] == "ready", item["reason"]
    assert (item["width"], item["height"]) == (1200, 900)
    thumbnail = thumbnail_bytes(item)
    assert_no_metadata(thumbnail)
    assert Image.open(io.BytesIO(thumbnail)).convert("RGB").getpixel((5, 5))[2] > 200
