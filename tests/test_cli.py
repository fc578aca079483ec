"""The `mediaserver` command: help, config, and resumable uploads with `mediaserver upload`."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import requests

from tests.support import ROOT, head, random_bytes, sha256

MiB = 1024 * 1024


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, **kwargs)


def test_help_and_config():
    for args in (["--help"], ["serve", "--help"], ["config", "--help"], ["upload", "--help"]):
        result = cli(*args)
        assert result.returncode == 0 and "usage:" in result.stdout
    listing = cli("config").stdout
    for name in ("PORT=3000", "MONGODB_URI", "S3_BUCKET", "PART_SIZE", "JWT_SECRET_SSM_PARAMETER", "RATE_LIMIT_REQUESTS"):
        assert name in listing
    bad = subprocess.run([sys.executable, "-m", "gateway", "serve"], cwd=ROOT, capture_output=True, text=True,
                         env={"PATH": "", "PORT": "not-a-port"}, timeout=60)
    assert bad.returncode == 2 and "PORT" in bad.stderr


def test_unreachable_store_at_start_is_one_clear_error(tmp_path):
    """A store that cannot be reached at start: exit status 1 and one line saying why, no traceback."""
    from tests.support import free_port

    env = {"PATH": "", "HOME": str(tmp_path), "DATA_DIR": str(tmp_path), "PORT": str(free_port()),
           "STORAGE_BACKEND": "s3", "S3_BUCKET": "mediaserver-test", "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
           "S3_MAX_ATTEMPTS": "1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    result = subprocess.run([sys.executable, "-m", "gateway", "serve"], cwd=ROOT, capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "mediaserver: could not start:" in result.stderr
    assert "Traceback" not in result.stderr


def register(gateway) -> tuple[str, str]:
    name = f"cli{time.monotonic_ns() % 10**9}"
    response = requests.post(gateway.url + "/api/auth/register", json={"username": name, "password": "cli-password-1"})
    return name, response.json()["token"]


def test_upload_files_and_print_media_urls(start_gateway, tmp_path):
    gateway = start_gateway("local")
    _, token = register(gateway)
    files = []
    for index, size in enumerate((0, 3 * MiB + 5)):
        path = tmp_path / f"file{index}.bin"
        path.write_bytes(random_bytes(size, seed=70 + index))
        files.append(path)
    result = cli("upload", "--server", gateway.url, "--token", token, "--state", str(tmp_path / "state.json"),
                 "--chunk-size", "1", *map(str, files))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, path in zip(lines, files):
        name, url = line.split("\t")
        assert name == str(path)
        assert sha256(requests.get(url).content) == sha256(path.read_bytes())
    assert "100.0%" in result.stderr


def test_interrupted_upload_resumes_on_the_next_run(start_gateway, tmp_path):
    gateway = start_gateway("local", PART_SIZE="5MiB")
    username, token = register(gateway)
    path = tmp_path / "big.bin"
    path.write_bytes(random_bytes(12 * MiB, seed=72))
    state = tmp_path / "state.json"
    args = ["upload", "--server", gateway.url, "--username", username, "--password", "cli-password-1",
            "--state", str(state), "--chunk-size", "1", "--retries", "0", str(path)]
    process = subprocess.Popen([sys.executable, "-m", "gateway", *args], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    url = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            entries = json.loads(state.read_text()).get("_default", {}) if state.exists() else {}
        except ValueError:
            entries = {}  # caught mid-write
        if entries:
            # tuspy stores None for the file before the upload is created
            url = next((entry["url"] for entry in entries.values() if entry.get("url")), None)
            if url:
                if int(head(url, token).headers.get("Upload-Offset", 0)) >= 2 * MiB:
                    break
        time.sleep(0.05)
    assert url, "the CLI stored the upload URL"
    gateway.kill()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1 and "run the same command again" in err
    gateway.start()
    offset = int(head(url, token).headers["Upload-Offset"])
    assert 0 < offset < 12 * MiB
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert f"resuming at {offset}" in again.stderr
    media_url = again.stdout.strip().split("\t")[1]
    assert sha256(requests.get(media_url).content) == sha256(path.read_bytes())
