"""The `mediaserver` command: help, config, register, and resumable uploads with `mediaserver upload`.

The upload and register cases run the real command as a subprocess against a real gateway.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import requests

from gateway.upload_cli import (
    EXIT_BAD_CREDENTIALS,
    EXIT_FILE_MISSING,
    EXIT_INTERRUPTED,
    EXIT_RATE_LIMITED,
    EXIT_REFUSED,
    EXIT_TOKEN_REFUSED,
    EXIT_UNREACHABLE,
    Progress,
)
from tests.support import ROOT, free_port, head, random_bytes, sha256

MiB = 1024 * 1024
PASSWORD = "cli-password-1 long enough"


def cli(*args: str, config=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=cli_env(config), **kwargs)


def cli_env(config) -> dict[str, str]:
    """The environment of a CLI run: its own config folder, no MEDIASERVER_* from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASERVER_")}
    if config is not None:
        env["XDG_CONFIG_HOME"] = str(config)
    return env


def one_error_line(result: subprocess.CompletedProcess, code: int, *phrases: str) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("mediaserver "), line
    for phrase in phrases:
        assert phrase in line, line
    return line


def kept_tokens(config) -> dict:
    return json.loads((config / "mediaserver" / "tokens.json").read_text())


def new_name() -> str:
    return f"cli{time.monotonic_ns() % 10**9}"


def register(gateway) -> tuple[str, str]:
    name = new_name()
    response = requests.post(gateway.url + "/api/auth/register", json={"username": name, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return name, response.json()["token"]


@pytest.fixture(scope="module")
def server(start_gateway):
    return start_gateway("local", PART_SIZE="5MiB")


def test_help_and_config():
    for args in (["--help"], ["serve", "--help"], ["config", "--help"], ["upload", "--help"], ["register", "--help"]):
        result = cli(*args)
        assert result.returncode == 0 and "usage:" in result.stdout
    assert "exit status" in cli("upload", "--help").stdout
    listing = cli("config").stdout
    for line in ("PORT=3000", "CORS_ORIGINS=*", "FILE_SHA256=true", "PART_SIZE=8MiB", "S3_BUCKET=", "RATE_LIMIT_REQUESTS=100"):
        assert line in listing.splitlines()
    values = [line.partition("=")[2] for line in listing.splitlines() if not line.startswith("#")]
    assert not [value for value in values if value in ("True", "False") or value.startswith("(")]
    as_json = json.loads(cli("config", "--json").stdout)
    assert as_json["PART_SIZE"]["default"] == "8MiB" and as_json["CORS_ORIGINS"]["default"] == "*"
    bad = subprocess.run([sys.executable, "-m", "gateway", "serve"], cwd=ROOT, capture_output=True, text=True,
                         env={"PATH": "", "PORT": "not-a-port"}, timeout=60)
    assert bad.returncode == 2 and "PORT" in bad.stderr


def test_config_read_only_in_part_ends_quietly():
    """`mediaserver config | head -1`: the reader goes away early; no traceback, exit 0."""
    listing = subprocess.Popen([sys.executable, "-m", "gateway", "config"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    listing.stdout.close()  # gone before the listing is written (it would fit in the pipe's buffer)
    errors = listing.stderr.read().decode()
    assert listing.wait(60) == 0 and "Traceback" not in errors and "BrokenPipe" not in errors


def test_unreachable_store_at_start_is_one_clear_error(tmp_path):
    """A store that cannot be reached at start: exit status 1 and one line saying why, no traceback."""
    env = {"PATH": "", "HOME": str(tmp_path), "DATA_DIR": str(tmp_path), "PORT": str(free_port()),
           "STORAGE_BACKEND": "s3", "S3_BUCKET": "mediaserver-test", "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
           "S3_MAX_ATTEMPTS": "1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    result = subprocess.run([sys.executable, "-m", "gateway", "serve"], cwd=ROOT, capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "mediaserver: could not start:" in result.stderr
    assert "Traceback" not in result.stderr


def test_register_then_upload_with_the_kept_token(server, tmp_path):
    """register keeps the token (0600, keyed by the normalised URL); upload uses it, with or
    without a trailing slash, and prints links that say how long they are valid."""
    config = tmp_path / "config"
    name = new_name()
    result = cli("register", "--server", server.url + "/", "--username", name, "--password", PASSWORD, config=config)
    assert result.returncode == 0, result.stderr
    assert f"registered {name}" in result.stdout
    path = config / "mediaserver" / "tokens.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(kept_tokens(config)) == [server.url]
    files = []
    for index, size in enumerate((0, 3 * MiB + 5)):
        file = tmp_path / f"file{index}.bin"
        file.write_bytes(random_bytes(size, seed=70 + index))
        files.append(file)
    # a wrong password: the kept token of this user is used, so no login happens
    result = cli("upload", "--server", server.url + "/", "--username", name, "--password", "wrong",
                 "--state", str(tmp_path / "state.json"), "--chunk-size", "1", *map(str, files), config=config)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, file in zip(lines, files):
        shown, url, validity = line.split("\t")
        assert shown == str(file)
        assert validity.startswith("(valid for 1 h, until ") and " UTC" in validity
        assert sha256(requests.get(url).content) == sha256(file.read_bytes())
    assert "100.0%" in result.stderr
    again = cli("register", "--server", server.url, "--username", name, "--password", PASSWORD, config=config)
    one_error_line(again, EXIT_REFUSED, "409", "already registered")


def test_interrupted_upload_resumes_on_the_next_run_without_logging_in_again(start_gateway, tmp_path):
    gateway = start_gateway("local", PART_SIZE="5MiB")
    config = tmp_path / "config"
    username, token = register(gateway)
    path = tmp_path / "big.bin"
    path.write_bytes(random_bytes(12 * MiB, seed=72))
    state = tmp_path / "state.json"
    args = ["upload", "--server", gateway.url, "--username", username, "--password", PASSWORD,
            "--state", str(state), "--chunk-size", "1", "--retries", "0", str(path)]
    process = subprocess.Popen([sys.executable, "-m", "gateway", *args], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=cli_env(config))
    url = wait_for_upload(state, token, 2 * MiB)
    gateway.kill()
    out, err = process.communicate(timeout=60)
    assert process.returncode == EXIT_UNREACHABLE and "Traceback" not in err, err
    assert "cannot reach the server" in err and "run again to resume" in err
    gateway.start()
    offset = int(head(url, token).headers["Upload-Offset"])
    assert 0 < offset < 12 * MiB
    args[args.index(PASSWORD)] = "wrong password"  # the kept token is used: no login
    again = cli(*args, config=config)
    assert again.returncode == 0, again.stderr
    assert f"resuming at {offset} of {12 * MiB} bytes" in again.stderr
    media_url = again.stdout.strip().split("\t")[1]
    assert sha256(requests.get(media_url).content) == sha256(path.read_bytes())


def wait_for_upload(state, token: str, at_least: int) -> str:
    """The upload URL the running CLI keeps in `state`, once the server holds `at_least` bytes."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            entries = json.loads(state.read_text()).get("_default", {}) if state.exists() else {}
        except ValueError:
            entries = {}  # caught mid-write
        url = next((entry["url"] for entry in entries.values() if entry.get("url")), None)
        if url and int(head(url, token).headers.get("Upload-Offset", 0)) >= at_least:
            return url
        time.sleep(0.02)
    raise AssertionError("the CLI did not store its upload URL")


def test_ctrl_c_leaves_one_line_and_the_next_run_resumes(server, tmp_path):
    _, token = register(server)
    path = tmp_path / "big.bin"
    path.write_bytes(random_bytes(16 * MiB, seed=73))
    state = tmp_path / "state.json"
    args = ["upload", "--server", server.url, "--token", token, "--state", str(state), "--chunk-size", "1", str(path)]
    process = subprocess.Popen([sys.executable, "-m", "gateway", *args], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=cli_env(tmp_path / "config"))
    wait_for_upload(state, token, MiB)
    server.process.send_signal(signal.SIGSTOP)  # the CLI now waits in a request
    try:
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        server.process.send_signal(signal.SIGCONT)
    assert process.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mediaserver upload: big.bin: interrupted at ") and last.endswith(
        f" of {16 * MiB} bytes; run again to resume"), last
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert "resuming at" in again.stderr
    assert sha256(requests.get(again.stdout.split("\t")[1]).content) == sha256(path.read_bytes())


def test_failures_are_one_line_with_their_exit_status(server, tmp_path):
    config = tmp_path / "config"
    file = tmp_path / "a.bin"
    file.write_bytes(b"x" * 1000)
    common = ["--state", str(tmp_path / "state.json"), str(file)]
    nowhere = f"http://127.0.0.1:{free_port()}"
    one_error_line(cli("upload", "--server", nowhere, "--token", "abc", *common, config=config),
                   EXIT_UNREACHABLE, "cannot reach the server", "refused")
    one_error_line(cli("upload", "--server", nowhere, "--username", "bob", "--password", "x", *common, config=config),
                   EXIT_UNREACHABLE, "cannot reach the server")
    one_error_line(cli("upload", "--server", server.url, "--token", "abc", str(tmp_path / "missing.bin"), config=config),
                   EXIT_FILE_MISSING, "missing.bin")
    one_error_line(cli("upload", "--server", server.url, "--username", "nobody-here", "--password", "wrong", *common,
                       config=config), EXIT_BAD_CREDENTIALS, "wrong username or password")
    one_error_line(cli("upload", "--server", server.url, "--token", "not-a-token", *common, config=config),
                   EXIT_TOKEN_REFUSED, "the token was refused")
    from auth.tokens import Principal, TokenIssuer
    from tests.conftest import JWT_SECRET

    expired = TokenIssuer(JWT_SECRET, 60).issue(Principal("u1", "u1", "user"), now=time.time() - 3600)[0]
    one_error_line(cli("upload", "--server", server.url, "--token", expired, *common, config=config),
                   EXIT_TOKEN_REFUSED, "expired")
    one_error_line(cli("upload", "--server", server.url, *common, config=config), 2, "mediaserver register")


def test_a_refused_kept_token_is_dropped_and_replaced_by_one_login(server, tmp_path):
    config = tmp_path / "config"
    username, _ = register(server)
    (config / "mediaserver").mkdir(parents=True)
    (config / "mediaserver" / "tokens.json").write_text(json.dumps(
        {server.url: {"token": "revoked-or-garbage", "username": username, "expires": None}}))
    file = tmp_path / "a.bin"
    file.write_bytes(random_bytes(1000, seed=74))
    common = ["--server", server.url, "--state", str(tmp_path / "state.json"), str(file)]
    # without a username there is no way to a new token: say so, and forget the refused one
    one_error_line(cli("upload", *common, config=config), EXIT_TOKEN_REFUSED, "kept for")
    assert kept_tokens(config) == {}
    (config / "mediaserver" / "tokens.json").write_text(json.dumps(
        {server.url: {"token": "revoked-or-garbage", "username": username, "expires": None}}))
    result = cli("upload", "--username", username, "--password", PASSWORD, *common, config=config)
    assert result.returncode == 0, result.stderr
    kept = kept_tokens(config)[server.url]
    assert kept["token"] != "revoked-or-garbage" and kept["expires"] > time.time()


def test_rate_limits_and_refusals_carry_the_servers_words(start_gateway, tmp_path):
    gateway = start_gateway("local", LOGIN_RATE_LIMIT="3", TUS_MAX_SIZE="1MiB")
    config = tmp_path / "config"
    name = new_name()
    result = cli("register", "--server", gateway.url, "--username", name, "--password", PASSWORD, config=config)
    assert result.returncode == 0, result.stderr
    big = tmp_path / "big.bin"
    big.write_bytes(b"y" * (MiB + 1))
    one_error_line(cli("upload", "--server", gateway.url, "--state", str(tmp_path / "s.json"), str(big), config=config),
                   EXIT_REFUSED, "413", "max_size_exceeded")
    for _ in range(5):  # failed logins count against the login limit
        response = requests.post(gateway.url + "/api/auth/login", json={"username": name, "password": "wrong"})
        if response.status_code == 429:
            break
    assert response.status_code == 429
    line = one_error_line(cli("upload", "--server", gateway.url, "--username", name + "x", "--password", "wrong",
                              "--state", str(tmp_path / "s.json"), str(big), config=config),
                          EXIT_RATE_LIMITED, "rate limited", "retry in ")
    seconds = int(line.split("retry in ")[1].split(" s")[0])
    assert 0 < seconds <= 900


def test_rates_count_only_the_bytes_sent_in_this_run(monkeypatch, capsys):
    clock = iter([100.0, 100.0, 102.0])
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    progress = Progress(quiet=False)
    progress.begin("resumed.bin", 100 * MiB, 90 * MiB)
    progress.advance(92 * MiB)
    last = capsys.readouterr().err.split("\r")[-1]
    assert last.rstrip().endswith(" 1.0 MiB/s"), last
    assert "92.0%" in last


def test_server_urls_are_kept_under_one_normal_form(tmp_path):
    from gateway.token_cache import CachedToken, TokenCache, normalise_server

    for given in ("http://LocalHost:3000/", "http://localhost:3000", "localhost:3000", "http://localhost:3000//"):
        assert normalise_server(given) == "http://localhost:3000"
    assert normalise_server("https://media.example.com:443/base/") == "https://media.example.com/base"
    for bad in ("ftp://host", "http://", "http://host:99999"):
        with pytest.raises(ValueError):
            normalise_server(bad)
    cache = TokenCache(tmp_path / "mediaserver" / "tokens.json")
    cache.put("http://a", "not-a-jwt", "alice")
    cache.put("http://b", "other", None)
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    assert cache.get("http://a") == CachedToken("not-a-jwt", "alice", None)
    cache.drop("http://a")
    assert cache.get("http://a") is None and cache.get("http://b").token == "other"
    assert not CachedToken("t", None, time.time() + 60).usable()  # in its last minutes: not used
    assert CachedToken("t", None, time.time() + 3600).usable()
