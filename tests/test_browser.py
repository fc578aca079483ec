"""The upload page: served with the gateway's security headers, and used end to end in
headless Chromium (playwright-core): sign-up, Dashboard uploads, the gallery, and uploads
that continue after the gateway is killed and restarted, or after the page is reloaded;
its cards (failure reasons, units, video playback, deleting with a confirmation), live
updates that never reload an unchanged thumbnail, a keyboard-only session, and axe-core's
accessibility scan (any serious or critical violation fails).

The gallery screenshot goes to test-artifacts/ at the repository root; the desktop (1280x800)
and phone (390x844) screenshots of the page test go to its tmp_path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import ROOT, GatewayProcess
from tests.test_js_clients import (
    JS, NODE, PASSWORD, Account, MiB, access_log, downloaded_sha256, node_env, node_missing, parse_output, tus_requests,
    upload_id, write_file,
)

STATIC = ROOT / "gateway" / "static"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FAST_LEASES = {"PART_SIZE": "5MiB", "LEASE_TTL": "2", "LEASE_WAIT": "4"}


def browser_missing() -> str | None:
    missing = node_missing("playwright-core", "uppy", "axe-core")
    if missing:
        return missing
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (scripts/install_test_deps.sh installs Debian's chromium)"
    return None


needs_browser = pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")
needs_assets = pytest.mark.skipif(not (STATIC / "vendor" / "uppy.min.js").is_file(),
                                  reason="gateway/static/vendor is missing: run scripts/build_web.sh")


def short_temp_dir() -> Path:
    """A new temporary folder with a short path (Chromium's socket paths must fit in 108 bytes)."""
    base = tempfile.gettempdir()
    if len(base) > 40 and os.path.isdir("/tmp"):
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix="cr-", dir=base))


class BrowserRun:
    """`node tests/js/browser.mjs` with its own TMPDIR (Chromium leaves files there), removed at close."""

    def __init__(self, tmp_path: Path, **values: Any) -> None:
        self.tmp = short_temp_dir()
        self.env = node_env(TMPDIR=self.tmp, CHROMIUM=CHROMIUM, **values)
        self.stderr_path = tmp_path / "browser-stderr.txt"
        with open(self.stderr_path, "w") as stderr:
            self.process = subprocess.Popen(
                [NODE, str(JS / "browser.mjs")], env=self.env, cwd=ROOT,
                stdout=subprocess.PIPE, stderr=stderr, text=True,
            )
        self.lines: list[str] = []

    def wait_for_event(self, name: str, timeout: float) -> dict[str, Any]:
        """Read stdout until `EVENT {"event": name}`; fail if the script ends first."""
        deadline = time.monotonic() + timeout
        for line in self.process.stdout:
            self.lines.append(line)
            if line.startswith("EVENT ") and f'"event":"{name}"' in line:
                return parse_output("RESULT {}\n" + line)[1][0]
            if time.monotonic() > deadline:
                break
        raise AssertionError(f"no {name} event:\n{self.output()}")

    def result(self, timeout: float, gateway: GatewayProcess | None = None, user_id: str | None = None) -> dict[str, Any]:
        """The script's RESULT; on failure, its output and the gateway's requests of `user_id`."""
        try:
            rest, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            rest, _ = self.process.communicate()
        self.lines.append(rest or "")
        if self.process.returncode != 0:
            requests_seen = ""
            if gateway is not None:
                requests_seen = "\n--- gateway requests\n" + "\n".join(
                    f"{e['time']} {e['method']} {e['path']} {e['status']} {e.get('bytes_in')} {e['duration_ms']}ms"
                    for e in access_log(gateway, user_id)[-60:]
                ) + "\n--- gateway log\n" + gateway.log()[-3000:]
            raise AssertionError(f"browser.mjs exited with {self.process.returncode}\n{self.output()}{requests_seen}")
        return parse_output("".join(self.lines))[0]

    def output(self) -> str:
        stderr = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        return "--- stdout\n" + "".join(self.lines)[-4000:] + "\n--- stderr\n" + stderr[-4000:]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def browser_run(tmp_path):
    runs: list[BrowserRun] = []

    def start(**values: Any) -> BrowserRun:
        run = BrowserRun(tmp_path, **values)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.close()


@pytest.fixture(scope="module")
def page_gateway(start_gateway) -> GatewayProcess:
    return start_gateway("local", **FAST_LEASES)


def make_png(path: Path) -> None:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (800, 600))
    draw = ImageDraw.Draw(image)
    for y in range(600):
        draw.line([(0, y), (799, y)], fill=(40 + y // 4, 90 + y // 8, 200 - y // 4))
    draw.ellipse([250, 150, 550, 450], fill=(250, 200, 60))
    image.save(path)


def page_problems(result: dict[str, Any]) -> list[str]:
    return result.get("problems", [])


# -- the page as served ---------------------------------------------------------------------

@needs_assets
@pytest.mark.parametrize("path", ["/", "/upload"])
def test_page_is_served_with_security_headers(page_gateway, path):
    response = requests.get(page_gateway.url + path, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    html = response.text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "no inline scripts (CSP script-src 'self')"
    assert not re.search(r"\son[a-z]+=", html), "no inline event handlers"
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert {a.split("?")[0] for a in assets} >= {
        "/static/app.js", "/static/app.css", "/static/vendor/uppy.min.js", "/static/vendor/uppy.min.css"}
    for asset in assets:
        assert "?v=" in asset, "assets are named by content"
        served = requests.get(page_gateway.url + asset, timeout=10)
        assert served.status_code == 200, asset
        assert served.headers["Content-Security-Policy"] == response.headers["Content-Security-Policy"]
        assert "max-age" in served.headers.get("Cache-Control", "")
    assert requests.get(page_gateway.url + "/static/app.js", timeout=10).headers["Cache-Control"] == "no-cache"


@needs_assets
def test_static_files_stay_inside_the_static_folder(page_gateway):
    for path in ("/static/nothing-here.js", "/static/../app.py", "/static/%2e%2e/app.py"):
        response = requests.get(page_gateway.url + path, timeout=10)
        assert response.status_code in (403, 404), path
        assert "X-Request-Id" in response.headers
    assert requests.post(page_gateway.url + "/static/app.js", timeout=10).status_code == 405


# -- in the browser -------------------------------------------------------------------------

def run_gallery(gateway: GatewayProcess, browser_run, files: list[Path], screenshot: Path | None) -> dict[str, Any]:
    """Sign up through the page, upload `files`, wait for the gallery (and thumbnails)."""
    run = browser_run(
        GATEWAY_URL=gateway.url, MODE="gallery", USERNAME="page-" + os.urandom(4).hex(), PASSWORD=PASSWORD,
        FILES=os.pathsep.join(str(f) for f in files), WAIT_THUMBNAILS="1",
        SCREENSHOT=screenshot or "", TIMEOUT_MS="40000",
    )
    return run.result(timeout=50, gateway=gateway)


@needs_browser
def test_upload_page_uploads_and_lists_media(page_gateway, tmp_path, browser_run):
    picture = tmp_path / "sunrise.png"
    make_png(picture)
    big, big_digest = write_file(tmp_path, "archive.bin", 12 * MiB, seed=201)
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "upload-page.png"
    result = run_gallery(page_gateway, browser_run, [picture, big], screenshot)

    assert page_problems(result) == []
    uploaded = {f["name"]: f for f in result["upload"]["successful"]}
    assert set(uploaded) == {"sunrise.png", "archive.bin"} and result["upload"]["failed"] == []
    items = {item["filename"]: item for item in result["items"]}
    assert set(items) == {"sunrise.png", "archive.bin"}
    assert items["sunrise.png"]["status"] == "ready"
    assert items["sunrise.png"]["thumbnail"]["loaded"], items["sunrise.png"]
    assert items["archive.bin"]["thumbnail"] is None
    assert items["archive.bin"]["placeholder"] == "file" and items["archive.bin"]["status"] == "ready"
    assert items["archive.bin"]["size"] == "12 MiB", "computed in 1024s, labelled in binary units"
    assert screenshot.stat().st_size > 10_000
    token = requests.post(page_gateway.url + "/api/auth/login", timeout=10,
                          json={"username": result["account"], "password": PASSWORD}).json()["token"]
    assert downloaded_sha256(uploaded["archive.bin"]["uploadURL"], token) == big_digest


@needs_browser
def test_thumbnails_from_the_s3_store_are_shown(start_gateway, tmp_path, browser_run):
    gateway = start_gateway("s3")
    picture = tmp_path / "s3-picture.png"
    make_png(picture)
    result = run_gallery(gateway, browser_run, [picture], None)
    [item] = result["items"]
    assert item["status"] == "ready"
    assert page_problems(result) == [], "thumbnails are served by the gateway (CSP img-src 'self')"
    assert item["thumbnail"] and item["thumbnail"]["loaded"], item


@needs_browser
def test_upload_continues_after_the_gateway_is_killed(start_gateway, tmp_path, browser_run):
    gateway = start_gateway("local", **FAST_LEASES)
    account = Account(gateway)
    size = 48 * MiB
    path, digest = write_file(tmp_path, "movie.bin", size, seed=202)
    run = browser_run(
        GATEWAY_URL=gateway.url, MODE="interrupt", USERNAME=account.username, PASSWORD=account.password,
        FILE=path, PAUSE_PERCENT="30", UPLOAD_BYTES_PER_SECOND=str(16 * 1000 * 1000), TIMEOUT_MS="45000",
    )
    midway = run.wait_for_event("midway", timeout=30)
    assert 0 < midway["progress"][0]["sent"] < size
    gateway.kill()
    killed_at = time.time()
    gateway.start()
    result = run.result(timeout=45, gateway=gateway, user_id=account.user_id)

    [uploaded] = result["upload"]["successful"]
    assert result["upload"]["failed"] == []
    assert downloaded_sha256(uploaded["uploadURL"], account.token) == digest
    seen = [e for e in access_log(gateway, account.user_id)
            if tus_requests([e], upload_id(uploaded["uploadURL"]))]
    methods = [e["method"] for e in seen]
    assert methods.count("POST") == 1, methods
    after = [e for e in seen if _epoch(e["time"]) >= killed_at]
    assert after and after[0]["method"] == "HEAD", [(e["method"], e["status"]) for e in seen]
    finishing = [e for e in after if e["method"] == "PATCH" and e["status"] == 204]
    assert finishing, [(e["method"], e["status"]) for e in after]
    assert 0 < finishing[-1]["bytes_in"] <= size - 5 * MiB, "the upload continued from the durable parts"
    [item] = result["items"]
    assert item["filename"] == "movie.bin"


@needs_browser
def test_upload_continues_after_a_page_reload(page_gateway, tmp_path, browser_run):
    account = Account(page_gateway)
    size = 24 * MiB
    path, digest = write_file(tmp_path, "reloaded.bin", size, seed=203)
    run = browser_run(
        GATEWAY_URL=page_gateway.url, MODE="reload", USERNAME=account.username, PASSWORD=account.password,
        FILE=path, PAUSE_PERCENT="30", UPLOAD_BYTES_PER_SECOND=str(16 * 1000 * 1000), TIMEOUT_MS="40000",
    )
    result = run.result(timeout=50, gateway=page_gateway, user_id=account.user_id)
    assert page_problems(result) == []
    assert result["storedBeforeResume"], "the Tus plugin kept the upload URL across the reload"
    assert result["storedAfter"] == [], "a finished upload's URL is forgotten"
    [uploaded] = result["upload"]["successful"]
    assert downloaded_sha256(uploaded["uploadURL"], account.token) == digest
    seen = tus_requests(access_log(page_gateway, account.user_id), upload_id(uploaded["uploadURL"]))
    methods = [m for m, _, _ in seen]
    assert methods.count("POST") == 1, seen
    assert "HEAD" in methods, seen
    patches = [e for e in access_log(page_gateway, account.user_id)
               if e["method"] == "PATCH" and e["status"] == 204]
    assert 0 < patches[-1]["bytes_in"] < size, "the last PATCH sent only what the server lacked"


def _epoch(stamp: str) -> float:
    """Seconds since the epoch of a log time like 2026-01-02T03:04:05.678Z."""
    import calendar

    whole, _, millis = stamp.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + int(millis or 0) / 1000


# -- what the page shows and does (tests/js/page.mjs) --------------------------------------

def run_page(tmp_path: Path, browser_run_env: dict[str, Any], timeout: float) -> dict[str, Any]:
    temp = short_temp_dir()
    try:
        result = subprocess.run([NODE, str(JS / "page.mjs")], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                                env=node_env(TMPDIR=temp, CHROMIUM=CHROMIUM, **browser_run_env))
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    (tmp_path / "page-stderr.txt").write_text(result.stderr)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return parse_output(result.stdout)[0]


def serious(violations: list[dict[str, Any]]) -> list[str]:
    """axe-core violations that fail the page: serious or critical ones."""
    return [f"{v['impact']} {v['id']}: {v['help']} at {v['nodes']}" for v in violations
            if v["impact"] in ("serious", "critical")]


def make_video(path: Path) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=duration=4:size=320x240:rate=15", "-c:v", "libvpx", "-b:v", "200k", str(path)],
                   check=True, timeout=60)


@needs_browser
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is missing")
def test_page_cards_live_updates_video_delete_and_accessibility(page_gateway, tmp_path):
    picture, broken, video = tmp_path / "sunrise.png", tmp_path / "broken.jpg", tmp_path / "clip.webm"
    make_png(picture)
    broken.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(20_000))  # a JPEG's signature, then noise
    make_video(video)
    other, _ = write_file(tmp_path, "unrelated.bin", 12 * MiB, seed=204)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    result = run_page(tmp_path, dict(
        GATEWAY_URL=page_gateway.url, MODE="features", USERNAME="cards-" + os.urandom(4).hex(), PASSWORD=PASSWORD,
        IMAGE=picture, BROKEN=broken, VIDEO=video, OTHER=other, UPLOAD_BYTES_PER_SECOND=str(8 * 1000 * 1000),
        SCREENSHOT_DIR=shots, TIMEOUT_MS="100000"), timeout=120)

    assert result["problems"] == []
    assert result["upload"]["failed"] == [] and result["otherUpload"]["failed"] == []
    cards = result["cards"]
    # the failure reason is text on the card, not only a tooltip
    failed = cards["broken.jpg"]
    assert failed["status"] == "failed" and failed["reasonVisible"] and failed["reason"], failed
    assert failed["reason"] in failed["text"]
    assert cards["sunrise.png"]["status"] == "ready" and cards["sunrise.png"]["thumbnail"]["loaded"]
    assert cards["sunrise.png"]["reason"] is None
    assert re.fullmatch(r"\d+(\.\d)? KiB", failed["size"]), failed["size"]
    assert cards["clip.webm"]["play"] and cards["clip.webm"]["deleteLabel"] == "Delete clip.webm"
    # another upload progressed and finished: the image's tile and its <img> stayed as they were
    assert result["thumbnailRequests"] == {"before": 1, "after": 1}
    assert result["imageTileKept"] and result["imageSrcAfter"] == cards["sunrise.png"]["thumbnail"]["src"]
    assert result["eventStreams"] == 1, "one event stream, no polling"
    # the video played in the page, read through the gateway's signed URL
    assert result["video"]["readyState"] >= 2 and result["video"]["currentTime"] > 0
    assert f"/media/{cards['clip.webm']['id']}/original" in result["video"]["src"]
    reads = [e["status"] for e in access_log(page_gateway) if e["path"] == f"/media/{cards['clip.webm']['id']}/original"]
    assert 206 in reads, f"the browser read the video with range requests: {reads}"
    # deleting asks first, in a modal dialog with a name; cancel keeps the item, confirm deletes it
    assert result["dialog"]["modal"] and result["dialog"]["label"] == "Delete this file?"
    assert "broken.jpg" in result["dialog"]["text"] and result["dialog"]["focused"] == "Cancel"
    assert result["afterCancel"]
    gone = requests.get(f"{page_gateway.url}/api/media/{result['deletedId']}", timeout=10,
                        headers={"Authorization": f"Bearer {result['token']}"})
    assert gone.status_code == 404
    # the password rules are on the register form, tied to the password field
    rules = " ".join(result["passwordRules"].split())
    assert "at least 12 characters" in rules and "commonly used" in rules and "username" in rules
    # both widths render without a horizontal scroll bar; the screenshots are kept in tmp_path
    assert not result["phoneOverflow"]
    for name in ("desktop.png", "phone.png"):
        assert (shots / name).stat().st_size > 10_000
    # axe-core: nothing serious or critical, signed out or in, in the dialogs, at either width
    (tmp_path / "axe.json").write_text(json.dumps(result["axe"], indent=1))
    for scan, violations in result["axe"].items():
        assert serious(violations) == [], (scan, violations)


@needs_browser
def test_page_works_with_the_keyboard_only(page_gateway, tmp_path):
    account = Account(page_gateway)
    picture = tmp_path / "keys.png"
    make_png(picture)
    result = run_page(tmp_path, dict(
        GATEWAY_URL=page_gateway.url, MODE="keyboard", USERNAME=account.username, PASSWORD=account.password,
        FILE=picture, TIMEOUT_MS="80000"), timeout=100)
    assert result["problems"] == []
    order = [stop["name"] for stop in result["order"]]
    # the tab order reaches, in this order: the sign-in fields, the file picker, upload, delete
    positions = [order.index(name) for name in ("#login", "#password", "#sign-in", "browse", "upload", "delete")]
    assert positions == sorted(positions), order
    assert result["uploaded"] == 1
    # every control focused on the way shows where the focus is
    assert [stop["name"] for stop in result["order"] if not stop["indicator"]] == []
    # the dialog takes the focus (on Cancel), Delete is the next stop, and the focus lands in the gallery after
    assert result["inDialog"]["name"] == "#confirm-delete-no"
    assert result["confirm"]["name"] == "#confirm-delete-yes"
    assert result["afterDelete"]["name"] == "#gallery-title"
