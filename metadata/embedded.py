"""The embedded MongoDB: an `nx-27017` wire-protocol server over one SQLite file.

Started by the gateway when no MONGODB_URI is configured, on a free loopback
port, with its file in the data folder, and stopped with the gateway (also when
the gateway is killed: the child asks the kernel for SIGTERM on parent death).

One gateway at a time owns a data folder: it holds an exclusive `flock` on
`metadata.lock` there, shared with its server child, for as long as either of
them lives. The kernel drops the lock when both are gone (however they died),
so a restart after a crash never trips over a stale pid file, and a second
gateway on a folder in use is refused with `DataFolderInUse`. The server's
files are readable by their owner only (0600).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import importlib.util
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

from metadata.errors import MetadataError

log = logging.getLogger(__name__)

_LAUNCH = "import sys; from nx_27017.nx_27017 import main; sys.exit(main())"
_PR_SET_PDEATHSIG = 1
_PRIVATE = 0o600
_UMASK = 0o077


class EmbeddedMongoError(MetadataError):
    """The embedded MongoDB server could not be started."""


class DataFolderInUse(EmbeddedMongoError):
    """Another gateway (or its embedded server) uses this data folder."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid > 0 else None


def process_alive(pid: int) -> bool:
    """True when `pid` names a process that runs (a zombie, dead but not reaped, does not)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        stat_line = ""
    if stat_line:
        return stat_line.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serving_pid(pid_file: Path, db_file: Path) -> int | None:
    """The PID in `pid_file` when it names a live nx-27017 server of `db_file`, else None.

    A pid file left by a killed server may name nothing, a zombie, or (after the PID was
    reused, as in a container restart) an unrelated process: none of them counts.
    """
    pid = _read_pid(pid_file)
    if pid is None or pid == os.getpid() or not process_alive(pid):
        return None
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None  # gone, or not ours to read: not a server this gateway could have started
    if not any("nx_27017" in arg or "nx-27017" in arg for arg in args):
        return None
    wanted = os.path.realpath(db_file)
    for flag, value in zip(args, args[1:]):
        if flag == "--db" and os.path.realpath(os.path.join(f"/proc/{pid}/cwd", value)) == wanted:
            return pid
    return None


class EmbeddedMongo:
    """A child `nx-27017` process serving `db_file`; `uri` is valid after `start()`."""

    def __init__(self, data_dir: str | os.PathLike, startup_timeout: float = 30.0, lock_wait: float = 10.0) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.db_file = self.data_dir / "metadata.sqlite"
        self.log_file = self.data_dir / "metadata-server.log"
        self.pid_file = self.data_dir / "metadata-server.pid"
        self.lock_file = self.data_dir / "metadata.lock"
        self.startup_timeout = startup_timeout
        self.lock_wait = lock_wait  # how long a crashed gateway's server may take to exit
        self.port: int | None = None
        self._process: subprocess.Popen | None = None
        self._lock_fd: int | None = None

    @property
    def uri(self) -> str:
        if self.port is None:
            raise RuntimeError("embedded MongoDB is not started")
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self) -> str:
        """Start the server and wait until it accepts connections; return its URI.

        Raises DataFolderInUse when another gateway uses the data folder, and
        EmbeddedMongoError when the server does not start (or nx-27017 is not installed).
        """
        if importlib.util.find_spec("nx_27017") is None:
            raise EmbeddedMongoError("the embedded MongoDB server (nx-27017) is not installed: "
                                     "pip install 'mediaserver-gateway[embedded]', or set MONGODB_URI")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._make_private()
            return self._start_server()
        except BaseException:
            self.stop()
            raise

    def _start_server(self) -> str:
        last_error = "did not start"
        for _ in range(3):
            self._remove_stale_pid_file()
            port = free_port()
            log_fd = os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _PRIVATE)
            log_start = os.fstat(log_fd).st_size
            try:
                self._process = subprocess.Popen(
                    [
                        sys.executable, "-c", _LAUNCH,
                        "--db", str(self.db_file), "--host", "127.0.0.1", "-p", str(port),
                        # its log reaches the file through stderr; its own copy would double each line
                        "--log-file", os.devnull, "--pid-file", str(self.pid_file),
                    ],
                    stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, umask=_UMASK,
                    # the server shares the folder's lock: it stays taken until both are gone
                    pass_fds=() if self._lock_fd is None else (self._lock_fd,),
                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
                )
            finally:
                os.close(log_fd)
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    last_error = f"exited with {self._process.returncode}{self._log_reason(log_start)}"
                    break
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        self.port = port
                        return self.uri
                except OSError:
                    time.sleep(0.1)
            else:
                last_error = "timed out"
            self._stop_process()
        raise EmbeddedMongoError(f"embedded MongoDB server {last_error}; see {self.log_file}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and give up the data folder."""
        try:
            self._stop_process()
        finally:
            self._unlock()

    def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    # -- the data folder's lock -------------------------------------------------------

    def _lock(self) -> None:
        """Take the data folder's lock, waiting `lock_wait` for a crashed gateway's server to exit."""
        if self._lock_fd is not None:
            return
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _PRIVATE)
        try:
            deadline = time.monotonic() + self.lock_wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        # a file system without flock: run unguarded, as before the lock existed
                        log.warning("data folder lock unavailable", extra={"path": str(self.lock_file), "error": str(exc)})
                        os.close(fd)
                        return
                holder = _read_pid(self.lock_file)
                if holder is not None and holder != os.getpid() and process_alive(holder):
                    raise DataFolderInUse(f"the data folder {self.data_dir} is in use by another gateway (pid {holder})")
                if time.monotonic() >= deadline:
                    server = _read_pid(self.pid_file)
                    if server is not None and process_alive(server):
                        raise DataFolderInUse(f"the data folder {self.data_dir} is in use by the embedded MongoDB "
                                              f"server (pid {server}) of a gateway that has exited")
                    raise DataFolderInUse(f"the data folder {self.data_dir} is in use by another process "
                                          f"(it holds {self.lock_file})")
                time.sleep(0.1)  # the holder is gone: its server child is still shutting down
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd

    def _unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # releases the flock (the server child, now gone, shared it)

    def _remove_stale_pid_file(self) -> None:
        """Remove the server's pid file unless it names a live server of this folder.

        With the folder's lock held every pid file is stale; one naming a live server of
        our database file means a server that no lock guards (started by hand, or by a
        gateway without the lock): refuse rather than run two servers on one file.
        """
        pid = serving_pid(self.pid_file, self.db_file)
        if pid is not None:
            raise DataFolderInUse(f"the data folder {self.data_dir} is in use by an embedded MongoDB server (pid {pid})")
        try:
            self.pid_file.unlink()
        except FileNotFoundError:
            pass

    def _make_private(self) -> None:
        """Owner-only modes for the database, its journal files, the server's log and pid file."""
        names = [self.db_file.name + suffix for suffix in ("", "-wal", "-shm", "-journal")]
        names += [self.log_file.name, self.pid_file.name, self.lock_file.name]
        for name in names:
            path = self.data_dir / name
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) & ~_PRIVATE:
                os.chmod(path, _PRIVATE)

    def _log_reason(self, offset: int) -> str:
        """The server's last error line written since `offset` of its log, as ': <message>'."""
        try:
            with open(self.log_file, "rb") as log_fh:
                log_fh.seek(offset)
                lines = log_fh.read(64 * 1024).decode(errors="replace").splitlines()
        except OSError:
            return ""
        errors = [line for line in lines if " - ERROR - " in line or "Error" in line]
        if not errors:
            return ""
        return ": " + errors[-1].rpartition(" - ")[2].strip()[:300]
