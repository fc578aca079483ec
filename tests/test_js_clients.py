"""tus-js-client (Node) against a real gateway: plain, resumed, deferred-length, rate-limited
and parallel uploads, checked byte for byte and against the gateway's access log.

The client scripts are tests/js/*.mjs; their npm packages come from web/ (scripts/build_web.sh).
The helpers here are shared with test_browser.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import ROOT, GatewayProcess, download, random_bytes, sha256

MiB = 1024 * 1024
JS = ROOT / "tests" / "js"
NODE_MODULES = ROOT / "web" / "node_modules"
PASSWORD = "Upl0ad-secret"
NODE = shutil.which("node")


def node_missing(*packages: str) -> str | None:
    """Why the Node scripts cannot run here, or None."""
    if NODE is None:
        return "node is not installed (scripts/build_web.sh installs it)"
    for package in packages:
        if not (NODE_MODULES / package / "package.json").is_file():
            return f"web/node_modules/{package} is missing: run scripts/build_web.sh"
    return None


pytestmark = pytest.mark.skipif(node_missing("tus-js-client") is not None,
                                reason=node_missing("tus-js-client") or "")


# -- helpers (also used by test_browser.py) -----------------------------------------------

class Account:
    """A user registered through the API."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self.username = "js-" + secrets.token_hex(5)
        self.password = PASSWORD
        response = requests.post(gateway.url + "/api/auth/register", timeout=30,
                                 json={"username": self.username, "password": self.password})
        assert response.status_code == 201, response.text
        body = response.json()
        self.token: str = body["token"]
        self.user_id: str = body["user"]["id"]


def write_file(folder: Path, name: str, size: int, seed: int) -> tuple[Path, str]:
    """A file of `size` deterministic random bytes; returns its path and sha256."""
    data = random_bytes(size, seed)
    path = folder / name
    path.write_bytes(data)
    return path, sha256(data)


def node_env(**values: Any) -> dict[str, str]:
    environment = dict(os.environ)
    environment.update({key: str(value) for key, value in values.items()})
    return environment


def parse_output(stdout: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The RESULT object and the EVENT objects a script printed."""
    result: dict[str, Any] | None = None
    events = []
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
        elif line.startswith("EVENT "):
            events.append(json.loads(line[len("EVENT "):]))
    assert result is not None, f"the script printed no RESULT:\n{stdout[-4000:]}"
    return result, events


def run_node(script: str, timeout: float = 50, **values: Any) -> dict[str, Any]:
    """Run tests/js/<script> with `values` in its environment; its RESULT, or a failure with its output."""
    completed = subprocess.run(
        [NODE, str(JS / script)], env=node_env(**values), cwd=ROOT,
        capture_output=True, text=True, timeout=timeout,
    )
    assert completed.returncode == 0, (
        f"{script} exited with {completed.returncode}\n--- stdout\n{completed.stdout[-4000:]}"
        f"\n--- stderr\n{completed.stderr[-4000:]}"
    )
    return parse_output(completed.stdout)[0]


def access_log(gateway: GatewayProcess, user_id: str | None = None) -> list[dict[str, Any]]:
    """The gateway's JSON access-log entries (method, path, status, bytes_in, ...), oldest first."""
    entries = []
    for line in gateway.log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{") or '"mediaserver.access"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if user_id is None or entry.get("user_id") == user_id:
            entries.append(entry)
    return entries


def tus_requests(entries: list[dict[str, Any]], upload_id: str | None = None) -> list[tuple[str, str, int]]:
    """(method, path, status) of the tus requests in `entries`; creations and `upload_id`'s requests."""
    picked = []
    for entry in entries:
        path = entry["path"].rstrip("/")
        if not path.startswith("/files"):
            continue
        if upload_id is not None and path not in ("/files", f"/files/{upload_id}"):
            continue
        picked.append((entry["method"], path, entry["status"]))
    return picked


def upload_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def downloaded_sha256(url: str, token: str) -> str:
    return hashlib.sha256(download(url, token)).hexdigest()


# -- tests ----------------------------------------------------------------------------------

@pytest.fixture
def account(gateway: GatewayProcess) -> Account:
    return Account(gateway)


def test_plain_upload_is_byte_identical(gateway, account, tmp_path):
    path, digest = write_file(tmp_path, "plain.bin", 7 * MiB + 123, seed=101)
    result = run_node("tus_client.mjs", GATEWAY_URL=gateway.url, TOKEN=account.token, FILE=path, MODE="plain")
    assert [r["method"] for r in result["requests"]] == ["POST", "PATCH"]
    assert downloaded_sha256(result["url"], account.token) == digest
    media = requests.get(f"{gateway.url}/api/media/{upload_id(result['url'])}", timeout=10,
                         headers={"Authorization": f"Bearer {account.token}"})
    assert media.status_code == 200, media.text
    assert media.json()["filename"] == "plain.bin"
    assert media.json()["size"] == path.stat().st_size


@pytest.mark.parametrize("resume_with", ["url", "storage"])
def test_aborted_upload_resumes_without_a_new_post(gateway, account, tmp_path, resume_with):
    path, digest = write_file(tmp_path, "resume.bin", 12 * MiB + 11, seed=102)
    pause_at = 7 * MiB + 5  # past the first 5 MiB part: a durable part plus a tail
    result = run_node("tus_client.mjs", GATEWAY_URL=gateway.url, TOKEN=account.token, FILE=path, MODE="resume",
                      PAUSE_AT=pause_at, RESUME_WITH=resume_with, URL_STORAGE=tmp_path / "tus-urls.json")
    assert result["url"] == result["firstUrl"]
    assert [r["method"] for r in result["firstRequests"]] == ["POST", "PATCH"]

    resumed = result["requests"]
    methods = [r["method"] for r in resumed]
    assert "POST" not in methods, f"the resume created a new upload: {methods}"
    assert methods[0] == "HEAD" and methods[-1] == "PATCH", methods
    # every PATCH starts where the HEAD before it said the server is
    for before, patch in zip(resumed, resumed[1:]):
        if patch["method"] == "PATCH" and before["method"] == "HEAD":
            assert patch["offset"] == before["serverOffset"], resumed
    final = resumed[-1]
    assert final["status"] == 204 and int(final["serverOffset"]) == path.stat().st_size
    assert 5 * MiB <= int(final["offset"]) <= pause_at, "the resume continued from what the server kept"
    if resume_with == "storage":
        assert result["resumedFrom"] == result["firstUrl"]
        assert result["leftInStorage"] == 0, "removeFingerprintOnSuccess forgets the finished upload"

    assert downloaded_sha256(result["url"], account.token) == digest
    seen = tus_requests(access_log(gateway, account.user_id), upload_id(result["url"]))
    assert [m for m, _, _ in seen].count("POST") == 1, seen
    assert ("HEAD", f"/files/{upload_id(result['url'])}", 200) in seen


def test_deferred_length_upload(gateway, account, tmp_path):
    path, digest = write_file(tmp_path, "deferred.bin", 6 * MiB + 1000, seed=103)
    result = run_node("tus_client.mjs", GATEWAY_URL=gateway.url, TOKEN=account.token, FILE=path, MODE="deferred",
                      CHUNK_SIZE=2 * MiB)
    creation, *patches = result["requests"]
    assert creation["method"] == "POST" and creation["deferLength"] == "1" and creation["length"] is None
    assert [p["method"] for p in patches] == ["PATCH"] * 4
    assert patches[-1]["length"] == str(path.stat().st_size), "the last PATCH declares the length"
    assert all(p["length"] is None for p in patches[:-1])
    assert downloaded_sha256(result["url"], account.token) == digest


def test_parallel_uploads_concatenate(gateway, account, tmp_path):
    extensions = requests.options(gateway.files_url, headers={"Tus-Resumable": "1.0.0"}, timeout=10)
    assert "concatenation" in extensions.headers["Tus-Extension"].split(","), "both stores copy parts"
    path, digest = write_file(tmp_path, "parallel.bin", 9 * MiB + 7, seed=104)
    result = run_node("tus_client.mjs", GATEWAY_URL=gateway.url, TOKEN=account.token, FILE=path, MODE="parallel",
                      PARALLEL=3)
    posts = [r for r in result["requests"] if r["method"] == "POST"]
    assert [p["concat"] for p in posts[:3]] == ["partial"] * 3
    assert posts[3]["concat"].startswith("final;") and len(posts) == 4
    assert downloaded_sha256(result["url"], account.token) == digest


@pytest.fixture(scope="module")
def rate_limited_gateway(start_gateway) -> GatewayProcess:
    """A gateway allowing 2 tus requests per second per user, bursts of 3."""
    return start_gateway("local", PART_SIZE="5MiB", TUS_RATE_PER_SECOND="2", TUS_RATE_BURST="3")


def test_rate_limited_upload_is_retried_to_the_end(rate_limited_gateway, tmp_path):
    gateway = rate_limited_gateway
    account = Account(gateway)
    path, digest = write_file(tmp_path, "limited.bin", 1300 * 1024, seed=105)
    result = run_node("tus_client.mjs", GATEWAY_URL=gateway.url, TOKEN=account.token, FILE=path, MODE="retry",
                      CHUNK_SIZE=256 * 1024)
    assert downloaded_sha256(result["url"], account.token) == digest
    assert result["retriedStatuses"], "the rate limit was never reached"
    refused = [r for r in result["requests"] if r.get("status") == 429]
    assert all(r["retryAfter"] for r in refused), "every 429 carries Retry-After"
    seen = tus_requests(access_log(gateway, account.user_id))
    assert [m for m, _, _ in seen].count("POST") == 1, "the retries continued the upload"
    assert any(m == "PATCH" and status == 429 for m, _, status in seen), seen


@pytest.fixture(scope="module")
def slow_limited_gateway(start_gateway) -> GatewayProcess:
    """A gateway allowing one tus request per 5 seconds per user, bursts of 2."""
    return start_gateway("local", PART_SIZE="5MiB", TUS_RATE_PER_SECOND="0.2", TUS_RATE_BURST="2")


def test_rate_limited_head_does_not_restart_the_upload(slow_limited_gateway, tmp_path):
    """A client resuming while over its rate limit must not be told its upload is gone."""
    gateway = slow_limited_gateway
    account = Account(gateway)
    path, _ = write_file(tmp_path, "probe.bin", 2 * MiB, seed=106)
    headers = {"Authorization": f"Bearer {account.token}", "Tus-Resumable": "1.0.0"}
    created = requests.post(gateway.files_url, timeout=10, headers={**headers, "Upload-Length": str(2 * MiB)})
    assert created.status_code == 201, created.text
    url = created.headers["Location"]
    first = requests.patch(url, data=path.read_bytes()[:MiB], timeout=10, headers={
        **headers, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert first.status_code == 204, first.text  # the burst is used up now

    result = run_node("tus_client.mjs", timeout=20, GATEWAY_URL=gateway.url, TOKEN=account.token, FILE=path,
                      MODE="probe", UPLOAD_URL=url, TIMEOUT_MS=15000)
    methods = [(r["method"], r.get("status")) for r in result["requests"]]
    assert methods[0] == ("HEAD", 200), f"HEAD is not rate limited: {methods} ({result.get('error')})"
    assert all(m != "POST" for m, _ in methods), methods


def test_creation_with_upload_sends_the_file_on_the_post(gateway, account, tmp_path):
    path, digest = write_file(tmp_path, "with-post.bin", 3 * MiB + 17, seed=106)
    result = run_node("tus_client.mjs", GATEWAY_URL=gateway.url, TOKEN=account.token, FILE=path,
                      MODE="creation-with-upload")
    assert [(r["method"], r["status"]) for r in result["requests"]] == [("POST", 201)], result["requests"]
    assert int(result["requests"][0]["serverOffset"]) == path.stat().st_size
    assert downloaded_sha256(result["url"], account.token) == digest


def test_abort_with_termination_deletes_the_upload(gateway, account, tmp_path):
    path, _ = write_file(tmp_path, "terminated.bin", 9 * MiB, seed=107)
    result = run_node("tus_client.mjs", GATEWAY_URL=gateway.url, TOKEN=account.token, FILE=path,
                      MODE="terminate", PAUSE_AT=6 * MiB)
    methods = [(r["method"], r.get("status")) for r in result["requests"]]
    assert ("DELETE", 204) in methods, methods
    gone = requests.head(result["url"], headers={"Tus-Resumable": "1.0.0",
                                                 "Authorization": f"Bearer {account.token}"}, timeout=10)
    assert gone.status_code in (404, 410)
    seen = tus_requests(access_log(gateway, account.user_id), upload_id(result["url"]))
    assert ("DELETE", f"/files/{upload_id(result['url'])}", 204) in seen


@pytest.fixture(scope="module")
def expiring_gateway(start_gateway) -> GatewayProcess:
    """Unfinished uploads expire 2 s after their last write; the reaper looks every half second."""
    return start_gateway("local", PART_SIZE="5MiB", UPLOAD_EXPIRATION="2", REAPER_INTERVAL="0.5")


def test_expired_upload_is_started_again_by_the_client(expiring_gateway, tmp_path):
    """tus-js-client resuming an expired upload URL gets a 4xx on HEAD and creates a new upload."""
    account = Account(expiring_gateway)
    path, digest = write_file(tmp_path, "expired.bin", 2 * MiB + 5, seed=108)
    data = path.read_bytes()
    headers = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {account.token}"}
    created = requests.post(expiring_gateway.files_url, timeout=10,
                            headers={**headers, "Upload-Length": str(len(data))})
    assert created.status_code == 201
    old_url = requests.compat.urljoin(expiring_gateway.files_url, created.headers["Location"])
    first = requests.patch(old_url, data=data[:MiB], timeout=30, headers={
        **headers, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert first.status_code == 204 and first.headers.get("Upload-Expires")
    deadline = time.monotonic() + 30
    while requests.head(old_url, headers=headers, timeout=10).status_code == 200:
        assert time.monotonic() < deadline, "the upload never expired"
        time.sleep(0.2)
    result = run_node("tus_client.mjs", GATEWAY_URL=expiring_gateway.url, TOKEN=account.token, FILE=path,
                      MODE="plain", UPLOAD_URL=old_url)
    steps = [(r["method"], r.get("status")) for r in result["requests"]]
    assert steps[0][0] == "HEAD" and steps[0][1] in (404, 410), steps
    assert [m for m, _ in steps[1:]] == ["POST", "PATCH"], steps
    assert result["url"] != old_url
    assert downloaded_sha256(result["url"], account.token) == digest
