"""Test helpers: free ports, gateway processes, small tus calls."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
TUS = {"Tus-Resumable": "1.0.0"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def stop_process(process: subprocess.Popen | None, timeout: float = 15) -> None:
    """Terminate `process` if it runs; kill it when it has not exited after `timeout` seconds."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class GatewayProcess:
    """A `mediaserver serve` child process with its own environment."""

    #: the `mediaserver` command it runs, what it is called in messages, the setting naming its port
    command, name, port_setting = "serve", "gateway", "PORT"

    def __init__(self, env: dict[str, str], data_dir: Path) -> None:
        self.env = env
        self.data_dir = Path(data_dir)
        self.process: subprocess.Popen | None = None
        self.log_path = self.data_dir / f"{self.name}-{env[self.port_setting]}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env[self.port_setting]}"

    @property
    def files_url(self) -> str:
        return f"{self.url}/files/"

    def start(self, timeout: float = 30) -> None:
        environment = dict(os.environ)
        environment.update(self.env)
        environment["PYTHONPATH"] = str(ROOT) + os.pathsep + environment.get("PYTHONPATH", "")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [os.environ.get("GATEWAY_PYTHON") or sys.executable, "-m", "gateway", self.command], env=environment,
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not start:\n{self.log()}")

    def log(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
            return "\n".join(line for line in lines if "mediaserver.access" not in line)[-8000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as in a crash."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        stop_process(self.process)

    def restart(self) -> None:
        self.stop()
        self.start()


def auth(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **TUS, **headers}


def create_upload(gateway: GatewayProcess, token: str, length: int | None, **headers: str) -> str:
    """POST a new upload; return its URL."""
    extra = {"Upload-Length": str(length)} if length is not None else {"Upload-Defer-Length": "1"}
    response = requests.post(gateway.files_url, headers=auth(token, **extra, **headers), timeout=30)
    assert response.status_code == 201, response.text
    return response.headers["Location"]


def patch(url: str, token: str, offset: int, data: bytes, **headers: str) -> requests.Response:
    return requests.patch(
        url, data=data, timeout=60,
        headers=auth(token, **{"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream", **headers}),
    )


def head(url: str, token: str) -> requests.Response:
    return requests.head(url, headers=auth(token), timeout=30)


def download(url: str, token: str) -> bytes:
    response = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
    assert response.status_code == 200, response.text
    return response.content


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def random_bytes(size: int, seed: int = 0) -> bytes:
    """Deterministic incompressible bytes."""
    return random.Random(seed).randbytes(size)


def raw_patch(url: str, token: str, offset: int, declared: int, body: bytes, *, finish: bool = False) -> socket.socket:
    """Send a PATCH head declaring `declared` body bytes, then `body`; return the open socket.

    With `finish` the caller expects `body` to be the whole body; otherwise closing the
    socket leaves the request cut off mid-body.
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    head_lines = [
        f"PATCH {parts.path} HTTP/1.1",
        f"Host: {parts.hostname}:{parts.port}",
        f"Authorization: Bearer {token}",
        "Tus-Resumable: 1.0.0",
        "Content-Type: application/offset+octet-stream",
        f"Upload-Offset: {offset}",
        f"Content-Length: {declared}",
        "", "",
    ]
    sock.sendall("\r\n".join(head_lines).encode())
    view = memoryview(body)
    while view:
        sent = sock.send(view[: 256 * 1024])
        view = view[sent:]
    return sock


def read_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before a status line")
        data += chunk
    return int(data.split(b" ", 2)[1])


def wait_for_offset(url: str, token: str, predicate, timeout: float = 30) -> int:
    """Poll HEAD until predicate(offset) holds; return the offset."""
    deadline = time.monotonic() + timeout
    offset = -1
    while time.monotonic() < deadline:
        response = head(url, token)
        if response.status_code == 200:
            offset = int(response.headers["Upload-Offset"])
            if predicate(offset):
                return offset
        time.sleep(0.1)
    raise TimeoutError(f"offset stayed at {offset}")
