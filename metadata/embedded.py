"""The embedded MongoDB: an `nx-27017` wire-protocol server over one SQLite file.

Started by the gateway when no MONGODB_URI is configured, on a free loopback
port, with its file in the data folder, and stopped with the gateway (also when
the gateway is killed: the child asks the kernel for SIGTERM on parent death).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

_LAUNCH = "import sys; from nx_27017.nx_27017 import main; sys.exit(main())"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedMongo:
    """A child `nx-27017` process serving `db_file`; `uri` is valid after `start()`."""

    def __init__(self, data_dir: str | os.PathLike, startup_timeout: float = 30.0) -> None:
        self.data_dir = Path(data_dir)
        self.db_file = self.data_dir / "metadata.sqlite"
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self._process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        if self.port is None:
            raise RuntimeError("embedded MongoDB is not started")
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self) -> str:
        """Start the server and wait until it accepts connections; return its URI."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        last_error = "did not start"
        for _ in range(3):
            port = free_port()
            log = open(self.data_dir / "metadata-server.log", "ab")
            self._process = subprocess.Popen(
                [
                    sys.executable, "-c", _LAUNCH,
                    "--db", str(self.db_file), "--host", "127.0.0.1", "-p", str(port),
                    "--log-file", str(self.data_dir / "metadata-server.log"),
                    "--pid-file", str(self.data_dir / "metadata-server.pid"),
                ],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
            log.close()
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    last_error = f"exited with {self._process.returncode}"
                    break
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        self.port = port
                        return self.uri
                except OSError:
                    time.sleep(0.1)
            else:
                last_error = "timed out"
            self.stop()
        raise RuntimeError(f"embedded MongoDB server {last_error}; see {self.data_dir / 'metadata-server.log'}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
