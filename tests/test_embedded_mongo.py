"""The embedded MongoDB default (no MONGODB_URI): restart after a crash, one gateway per data
folder, owner-only database files. Real gateway and nx-27017 processes throughout."""

from __future__ import annotations

import fcntl
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from metadata.embedded import DataFolderInUse, EmbeddedMongo, process_alive, serving_pid
from tests.support import ROOT, TUS, free_port, random_bytes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and prctl")

JWT_SECRET = "embedded-test-secret-" + "y" * 40
PASSWORD = "embedded-password-1"
DB_FILES = ("metadata.sqlite", "metadata.sqlite-wal", "metadata.sqlite-shm",
            "metadata-server.log", "metadata-server.pid", "metadata.lock")

# Starts the gateway in its own session and then sleeps, never reaping anything. As a child
# subreaper it also inherits the gateway's orphaned server: after a SIGKILL of the gateway's
# process group both stay zombies, and the server's pid file names a PID that still "exists".
UNREAPING_PARENT = r"""
import ctypes, subprocess, sys, time
ctypes.CDLL("libc.so.6", use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
with open(sys.argv[1], "ab") as log:
    gateway = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], stdin=subprocess.DEVNULL,
                               stdout=log, stderr=log, start_new_session=True)
print(gateway.pid, flush=True)
time.sleep(600)
"""


def gateway_env(data_dir: Path) -> dict[str, str]:
    """The environment of a gateway on its embedded defaults: no MONGODB_URI at all."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("MONGODB_", "JWT_", "S3_", "STORAGE_", "DATA_DIR", "PORT", "HOST"))}
    env.update({
        "HOST": "127.0.0.1", "PORT": str(free_port()), "DATA_DIR": str(data_dir), "JWT_SECRET": JWT_SECRET,
        "LOG_FORMAT": "json", "LOG_LEVEL": "INFO", "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        "RATE_LIMIT_REQUESTS": "1000000", "LOGIN_RATE_LIMIT": "1000000", "REGISTER_RATE_LIMIT": "1000000",
        "PROCESSING_CONCURRENCY": "0",
    })
    return env


def url(env: dict[str, str]) -> str:
    return f"http://127.0.0.1:{env['PORT']}"


def wait_healthy(env: dict[str, str], alive, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert alive(), f"gateway exited:\n{log.read_text(errors='replace')[-4000:]}"
        try:
            if requests.get(url(env) + "/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"gateway did not start:\n{log.read_text(errors='replace')[-4000:]}")


def start_gateway(data_dir: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    """`mediaserver serve` in a new session (its own process group), healthy on return."""
    env = gateway_env(data_dir)
    log = data_dir.parent / f"gateway-{env['PORT']}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], cwd=ROOT, env=env,
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    try:
        wait_healthy(env, lambda: process.poll() is None, log)
    except BaseException:
        kill_group(process.pid)
        process.wait(10)
        raise
    return process, env


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_gateway(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            kill_group(process.pid)
            process.wait(10)


def state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return "gone"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_user_and_upload(env: dict[str, str], name: str, data: bytes) -> tuple[str, str]:
    """Register `name` and upload `data` with tus; return (token, upload URL)."""
    response = requests.post(url(env) + "/api/auth/register", json={"username": name, "password": PASSWORD}, timeout=30)
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    response = requests.post(url(env) + "/files/", data=data, timeout=60, headers={
        **TUS, "Authorization": f"Bearer {token}", "Upload-Length": str(len(data)),
        "Content-Type": "application/offset+octet-stream"})
    assert response.status_code == 201, response.text
    assert response.headers["Upload-Offset"] == str(len(data))
    return token, response.headers["Location"].replace(url(env), "")


def assert_still_there(env: dict[str, str], name: str, path: str, data: bytes) -> None:
    response = requests.post(url(env) + "/api/auth/login", json={"username": name, "password": PASSWORD}, timeout=30)
    assert response.status_code == 200, response.text
    token = response.json()["token"]
    response = requests.head(url(env) + path, headers={**TUS, "Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200 and response.headers["Upload-Offset"] == str(len(data))
    response = requests.get(url(env) + path, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert response.status_code == 200 and response.content == data


def test_restart_at_once_after_sigkill_of_the_process_group(tmp_path):
    """SIGKILL of the whole group leaves a pid file naming an unreaped server; the next start
    on the same folder comes up at once, with the data, and the files are owner-only again."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = gateway_env(data_dir)
    log = tmp_path / "crashed-gateway.log"
    parent = subprocess.Popen([sys.executable, "-c", UNREAPING_PARENT, str(log)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    restarted = None
    try:
        gateway_pid = int(parent.stdout.readline())
        wait_healthy(env, lambda: state(gateway_pid) not in ("Z", "gone"), log)
        data = random_bytes(300 * 1024, seed=71)
        _, path = write_user_and_upload(env, "crashy", data)
        server_pid = int((data_dir / "metadata-server.pid").read_text())

        kill_group(gateway_pid)
        deadline = time.monotonic() + 10
        while {state(gateway_pid), state(server_pid)} != {"Z"} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state(server_pid) == "Z", "the killed server stays unreaped (its parent is gone)"
        assert int((data_dir / "metadata-server.pid").read_text()) == server_pid, "a stale pid file is left"
        for name in DB_FILES:  # as an older version left them
            if (data_dir / name).exists():
                os.chmod(data_dir / name, 0o644)

        restarted, env = start_gateway(data_dir)
        assert_still_there(env, "crashy", path, data)
        for name in ("metadata.sqlite", "metadata-server.log", "metadata-server.pid", "metadata.lock"):
            assert mode(data_dir / name) == 0o600, name
    finally:
        if restarted is not None:
            stop_gateway(restarted)
        kill_group(parent.pid)  # the zombies go to init with it
        parent.wait(10)


def test_second_gateway_on_a_folder_in_use_gets_one_clear_line(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "metadata-server.log").write_text("from an earlier run\n")
    os.chmod(data_dir / "metadata-server.log", 0o644)
    first, env = start_gateway(data_dir)
    try:
        data = random_bytes(64 * 1024, seed=72)
        _, path = write_user_and_upload(env, "first", data)
        for name in DB_FILES:  # created owner-only (umask of the server), or made so at start
            if (data_dir / name).exists():
                assert mode(data_dir / name) == 0o600, name
        assert mode(data_dir / "metadata.sqlite") == 0o600

        second = subprocess.run([sys.executable, "-m", "gateway", "serve"], cwd=ROOT, env=gateway_env(data_dir),
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1, second.stderr[-2000:]
        assert second.stderr.strip().splitlines() == [
            f"mediaserver: could not start: the data folder {data_dir} is in use by another gateway (pid {first.pid})"
        ], second.stderr[-2000:]
        assert first.poll() is None
        assert_still_there(env, "first", path, data)
    finally:
        stop_gateway(first)
    assert not (data_dir / "metadata-server.pid").exists(), "a clean stop removes the pid file"
    again, env = start_gateway(data_dir)  # and the folder is free again
    try:
        assert_still_there(env, "first", path, data)
    finally:
        stop_gateway(again)


# -- the data folder's lock and the pid file, in this process --------------------------------


@pytest.mark.parametrize("stale", ["own", "init", "dead", "garbage"])
def test_a_stale_pid_file_never_blocks_a_start(tmp_path, stale):
    """A pid file naming a live process that is not our server (this test, pid 1), a dead PID or
    nothing readable is removed, and the server starts."""
    pid_file = tmp_path / "metadata-server.pid"
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid_file.write_text({"own": str(os.getpid()), "init": "1", "dead": done.stdout.strip(), "garbage": "x\n"}[stale])
    assert serving_pid(pid_file, tmp_path / "metadata.sqlite") is None
    mongo = EmbeddedMongo(tmp_path)
    try:
        mongo.start()
        assert serving_pid(pid_file, mongo.db_file) == mongo._process.pid
        assert serving_pid(pid_file, tmp_path / "other.sqlite") is None
    finally:
        mongo.stop()
    assert not pid_file.exists(), "the server removes its pid file when stopped"


def test_zombie_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while state(child.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process_alive(os.getpid()) and process_alive(1)
    assert not process_alive(child.pid), "exited but not reaped"
    child.wait()
    assert not process_alive(child.pid)


LOCK_HOLDER = r"""
import fcntl, os, subprocess, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()}\n".encode())
if sys.argv[2] == "orphan":  # hand the lock to a child that outlives us, as a crashed gateway's server
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"], pass_fds=(fd,))
else:
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_live_holder_of_the_lock_refuses_at_once(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path / "metadata.lock"), "hold"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(DataFolderInUse, match=rf"is in use by another gateway \(pid {holder.pid}\)"):
            EmbeddedMongo(tmp_path, lock_wait=30).start()
        assert time.monotonic() - started < 5
        assert not (tmp_path / "metadata.sqlite").exists(), "nothing started"
    finally:
        holder.kill()
        holder.wait()


def test_a_crashed_gateways_exiting_server_is_waited_for(tmp_path):
    """The lock outlives the gateway that took it while its server child shuts down: wait for it."""
    subprocess.run([sys.executable, "-c", LOCK_HOLDER, str(tmp_path / "metadata.lock"), "orphan"], check=True)
    fd = os.open(tmp_path / "metadata.lock", os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
    mongo = EmbeddedMongo(tmp_path, lock_wait=20)
    try:
        mongo.start()
        assert mongo.lock_file.read_text().strip() == str(os.getpid())
    finally:
        mongo.stop()


def test_a_lock_held_past_the_wait_is_reported(tmp_path):
    first = EmbeddedMongo(tmp_path)
    first._lock()  # the lock alone: as a folder whose holder's PID reads as this process
    try:
        with pytest.raises(DataFolderInUse, match="is in use by another process"):
            EmbeddedMongo(tmp_path, lock_wait=0.3).start()
    finally:
        first.stop()


def test_a_server_that_cannot_start_is_one_line_with_its_reason(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "metadata.sqlite").write_bytes(b"not a database" * 1000)
    result = subprocess.run([sys.executable, "-m", "gateway", "serve"], cwd=ROOT, env=gateway_env(data_dir),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("mediaserver: could not start: embedded MongoDB server exited with 1: ")
    assert "file is not a database" in line and str(data_dir / "metadata-server.log") in line
    fd = os.open(data_dir / "metadata.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # given up again
    finally:
        os.close(fd)
