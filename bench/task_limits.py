"""Fargate-shaped limits for a server under test, and a TLS moto, for the benches.

`TaskLimits(cpu, memory)` puts each server the bench starts into its own cgroup with a CPU quota
(`cpu.max` "25000 100000" for 0.25 vCPU, or v1 `cpu.cfs_quota_us`) and a memory limit
(`memory.max`, or v1 `memory.limit_in_bytes`), as Fargate enforces a task's size. The server is
started through a small shell wrapper that writes its own PID into the group and then execs the
server, so the server and every process it starts count inside the group from their first
instruction. Moto, MongoDB and the client stay outside. `group.stats()` reads the group's CPU time,
throttled time, peak memory and OOM kills; `group.remove()` ends what is left in it (processes the
bench started) and removes it.

`make_tls_certificate(folder)` writes a CA and a certificate for 127.0.0.1 signed by it (made at
run time with `cryptography`) for `start_moto_tls`, which serves moto over HTTPS; AWS_CA_BUNDLE
(botocore) and NODE_EXTRA_CA_CERTS (node) point at the CA.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
MiB = 1024 * 1024


class CgroupUnavailable(Exception):
    """The host cannot give a server its own CPU- and memory-limited cgroup."""


@dataclass
class GroupStats:
    cpu_seconds: float  # user + system of every process in the group, so far
    throttled_seconds: float  # time the group was held back by its CPU quota, so far
    peak_bytes: int | None  # the kernel's high-water mark of the group's memory (page cache included)
    oom_kills: int
    anon_peak_bytes: int = 0  # the highest anonymous memory sampled (every 50 ms) so far
    at_peak: str = ""  # what the highest sampled usage so far was made of


def _read(path: Path) -> str:
    return path.read_text().strip()


def _write(path: Path, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


def _keyed(path: Path) -> dict[str, int]:
    """A `key value` per line file (cpu.stat, memory.events, memory.stat, memory.oom_control)."""
    values = {}
    try:
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                values[parts[0]] = int(parts[1])
    except OSError:
        pass
    return values


class TaskGroup:
    """One cgroup (v2), or one directory per v1 hierarchy, holding one server under test."""

    def __init__(self, limits: "TaskLimits", name: str) -> None:
        self.limits = limits
        self.name = name
        self.version = limits.version
        self.dirs: list[Path] = []
        self._peak_sampled = 0
        self._anon_peak = 0
        self._at_peak: tuple[int, int, int] = (0, 0, 0)  # (usage, anon, file) at the highest sampled usage
        self._sampling = threading.Event()
        self._sampler: threading.Thread | None = None
        try:
            if self.version == 2:
                self.dirs = [CGROUP_ROOT / name]
                self.dirs[0].mkdir()
                _write(self.dirs[0] / "cpu.max", f"{limits.quota_us} {PERIOD_US}")
                _write(self.dirs[0] / "memory.max", str(limits.memory))
                if (self.dirs[0] / "memory.swap.max").exists():
                    _write(self.dirs[0] / "memory.swap.max", "0")  # Fargate tasks have no swap
            else:
                for root in limits.v1_roots:
                    directory = root / name
                    directory.mkdir()
                    self.dirs.append(directory)
                cpu, memory = self._v1("cpu"), self._v1("memory")
                _write(cpu / "cpu.cfs_period_us", str(PERIOD_US))
                _write(cpu / "cpu.cfs_quota_us", str(limits.quota_us))
                _write(memory / "memory.limit_in_bytes", str(limits.memory))
                if (memory / "memory.memsw.limit_in_bytes").exists():
                    with contextlib.suppress(OSError):  # only where swap accounting is on
                        _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory))
        except OSError as exc:
            self.remove()
            raise CgroupUnavailable(f"cannot set up cgroup {name}: {exc}") from exc
        limits.groups.append(self)
        self._sampler = threading.Thread(target=self._sample, daemon=True, name=f"sample-{name}")
        self._sampler.start()

    def _v1(self, controller: str) -> Path:
        return self.limits.v1_roots[self.limits.v1_controllers[controller]] / self.name

    def wrapper(self, program: str | None = None) -> str:
        """A script that enters this group and then execs `program "$@"` (or `"$@"`)."""
        script = self.limits.folder / f"enter-{self.name}{'-' + Path(program).name if program else ''}"
        lines = ["#!/bin/sh", "# made by bench/task_limits.py: join the cgroup, then become the server"]
        lines += [f'echo $$ > "{directory / "cgroup.procs"}" || exit 125' for directory in self.dirs]
        lines.append(f'exec "{program}" "$@"' if program else 'exec "$@"')
        script.write_text("\n".join(lines) + "\n")
        script.chmod(0o755)
        return str(script)

    def pids(self) -> list[int]:
        found: set[int] = set()
        for directory in self.dirs:
            with contextlib.suppress(OSError):
                found.update(int(line) for line in (directory / "cgroup.procs").read_text().split())
        return sorted(found)

    def _memory_now(self) -> tuple[int, int, int]:
        """(usage as charged against the limit, anonymous memory, page cache) of the group now."""
        if self.version == 2:
            directory = self.dirs[0]
            usage = int(_read(directory / "memory.current"))
            stat = _keyed(directory / "memory.stat")
            return usage, stat.get("anon", 0), stat.get("file", 0)
        directory = self._v1("memory")
        usage = int(_read(directory / "memory.usage_in_bytes"))
        stat = _keyed(directory / "memory.stat")
        return usage, stat.get("rss", 0), stat.get("cache", 0)

    def _sample(self) -> None:
        while not self._sampling.wait(0.05):
            try:
                usage, anon, cache = self._memory_now()
            except (OSError, ValueError):
                return
            if usage > self._peak_sampled:
                self._peak_sampled, self._at_peak = usage, (usage, anon, cache)
            self._anon_peak = max(self._anon_peak, anon)

    def at_peak(self) -> str:
        """What the highest sampled usage was made of: anonymous, page cache, the rest (kernel: sockets, slab...)."""
        usage, anon, cache = self._at_peak
        return (f"sampled peak {usage / MiB:.0f} MiB = anon {anon / MiB:.0f} + page cache {cache / MiB:.0f}"
                f" + kernel {(usage - anon - cache) / MiB:.0f} MiB")

    @property
    def anon_peak_bytes(self) -> int:
        """The highest anonymous memory (heap, stacks: what page cache does not explain) sampled every 50 ms."""
        return self._anon_peak

    def stats(self) -> GroupStats:
        if self.version == 2:
            directory = self.dirs[0]
            cpu = _keyed(directory / "cpu.stat")
            peak_file = directory / "memory.peak"
            peak = int(_read(peak_file)) if peak_file.exists() else self._peak_sampled
            return GroupStats(cpu.get("usage_usec", 0) / 1e6, cpu.get("throttled_usec", 0) / 1e6, peak,
                              _keyed(directory / "memory.events").get("oom_kill", 0), self._anon_peak, self.at_peak())
        memory = self._v1("memory")
        usage_file = self._v1("cpuacct") / "cpuacct.usage"
        return GroupStats(int(_read(usage_file)) / 1e9,
                          _keyed(self._v1("cpu") / "cpu.stat").get("throttled_time", 0) / 1e9,
                          int(_read(memory / "memory.max_usage_in_bytes")),
                          _keyed(memory / "memory.oom_control").get("oom_kill", 0), self._anon_peak, self.at_peak())

    def remove(self) -> None:
        """End what is still in the group (processes the bench started) and remove it."""
        self._sampling.set()
        for attempt in range(50):
            left = [directory for directory in self.dirs if directory.exists()]
            if not left:
                break
            if attempt:
                for pid in self.pids():
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.1)
            for directory in left:
                with contextlib.suppress(OSError):
                    directory.rmdir()
        else:
            print(f"warning: could not remove cgroup {self.name} ({', '.join(map(str, self.dirs))})",
                  file=sys.stderr)
        if self in self.limits.groups:
            self.limits.groups.remove(self)


class TaskLimits:
    """Makes one limited cgroup per server under test; exits 2 with one line when the host cannot."""

    def __init__(self, cpu: float, memory: int, folder: Path) -> None:
        self.cpu = cpu
        self.memory = memory
        self.quota_us = max(1000, round(cpu * PERIOD_US))
        self.folder = folder
        self.groups: list[TaskGroup] = []
        self.v1_roots: list[Path] = []
        self.v1_controllers: dict[str, int] = {}
        self._count = 0
        self.version = self._detect()
        self.remove(self.group("probe"))  # fail now, before any server starts, if the group cannot be made

    def describe(self) -> str:
        return (f"task limits: {self.cpu:g} vCPU (cpu quota {self.quota_us}/{PERIOD_US} us), "
                f"memory {self.memory / MiB:.0f} MiB, cgroup v{self.version}; each server in its own group")

    def _detect(self) -> int:
        if os.geteuid() != 0:
            raise CgroupUnavailable("--task-cpu/--task-memory need root (to create cgroups)")
        controllers = CGROUP_ROOT / "cgroup.controllers"
        if controllers.exists():
            available = set(_read(controllers).split())
            if not {"cpu", "memory"} <= available:
                raise CgroupUnavailable(f"cgroup v2 without the cpu and memory controllers ({' '.join(sorted(available))})")
            enabled = set(_read(CGROUP_ROOT / "cgroup.subtree_control").split())
            missing = {"cpu", "memory"} - enabled
            if missing:
                try:
                    _write(CGROUP_ROOT / "cgroup.subtree_control", " ".join(f"+{name}" for name in sorted(missing)))
                except OSError as exc:
                    raise CgroupUnavailable(f"cannot enable {' '.join(sorted(missing))} in "
                                            f"{CGROUP_ROOT}/cgroup.subtree_control: {exc}") from exc
            return 2
        for controller, probe in (("cpu", "cpu.cfs_quota_us"), ("cpuacct", "cpuacct.usage"),
                                  ("memory", "memory.limit_in_bytes")):
            root = CGROUP_ROOT / controller
            if not (root / probe).exists():
                raise CgroupUnavailable(f"no cgroup v2 at {CGROUP_ROOT} and no v1 {controller} hierarchy "
                                        f"({root / probe} missing)")
            real = root.resolve()  # cpu and cpuacct are often one hierarchy (cpu,cpuacct)
            if real not in self.v1_roots:
                self.v1_roots.append(real)
            self.v1_controllers[controller] = self.v1_roots.index(real)
        return 1

    def group(self, label: str) -> TaskGroup:
        self._count += 1
        return TaskGroup(self, f"tusbench-{os.getpid()}-{self._count}-{label}")

    def remove(self, group: TaskGroup) -> None:
        group.remove()

    def close(self) -> None:
        for group in list(self.groups):
            group.remove()


def task_limits_from_args(cpu: str | None, memory: str | None, folder: Path) -> TaskLimits | None:
    """None without the flags; else the limits, or a one-line message and exit 2."""
    if cpu is None and memory is None:
        return None
    from gateway.config import _size

    if cpu is None or memory is None:
        print("--task-cpu and --task-memory go together (e.g. --task-cpu 0.25 --task-memory 512MiB)",
              file=sys.stderr)
        raise SystemExit(2)
    try:
        return TaskLimits(float(cpu), _size(memory), folder)
    except CgroupUnavailable as exc:
        print(f"cannot run the servers with task limits: {exc}", file=sys.stderr)
        raise SystemExit(2)


def premade_s3_model(python: str) -> str:
    """A folder of the trimmed S3 client data, made once by `python` outside any task group, as
    the image build makes it: a gateway started on a fresh DATA_DIR would otherwise make it in a
    child process inside its group (tens of MiB for a moment) on every start."""
    folder = Path(tempfile.gettempdir()) / f"mediaserver-bench-s3-model-{os.getuid()}"
    subprocess.run([python, "-m", "streaming.stores.s3_model", str(folder)], check=True,
                   env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    return str(folder)


@contextlib.contextmanager
def gateway_python(group: TaskGroup | None):
    """While inside, GatewayProcess (tests/support.py) starts the gateway through `group`'s wrapper
    (with the trimmed S3 client data made beforehand, outside the group)."""
    if group is None:
        yield
        return
    before = os.environ.get("GATEWAY_PYTHON")
    os.environ.setdefault("S3_MODEL_DIR", premade_s3_model(before or sys.executable))
    os.environ["GATEWAY_PYTHON"] = group.wrapper(before or sys.executable)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("GATEWAY_PYTHON", None)
        else:
            os.environ["GATEWAY_PYTHON"] = before


def task_columns(stats_before: GroupStats, stats_after: GroupStats, size: int, group: TaskGroup) -> dict[str, float | int | None]:
    """The figures of one upload in a limited group: CPU s per GiB, throttled s, peaks and OOM kills."""
    cpu = stats_after.cpu_seconds - stats_before.cpu_seconds
    return {"cpu_s_per_gib": cpu / (size / 1024 ** 3), "throttled_s": stats_after.throttled_seconds - stats_before.throttled_seconds,
            "peak_mib": (stats_after.peak_bytes or 0) / MiB, "anon_peak_mib": stats_after.anon_peak_bytes / MiB,
            "oom_kills": stats_after.oom_kills, "at_peak": stats_after.at_peak}


# --- TLS moto --------------------------------------------------------------------------------


def make_tls_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a 127.0.0.1/localhost server certificate it signs; returns (ca, cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tus bench CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "tls-ca.pem", folder / "tls-cert.pem", folder / "tls-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def start_moto_tls(folder: Path) -> tuple[subprocess.Popen, str]:
    """moto over HTTPS with a certificate made now; every client started later trusts its CA
    (AWS_CA_BUNDLE for botocore in this process and the gateway, NODE_EXTRA_CA_CERTS for node)."""
    from tests.support import free_port, wait_for_port

    ca, cert, key = make_tls_certificate(folder)
    os.environ["AWS_CA_BUNDLE"] = str(ca)
    os.environ["NODE_EXTRA_CA_CERTS"] = str(ca)
    port = free_port()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    from bench.upload import moto_command

    process = subprocess.Popen(moto_command(port, "-c", str(cert), "-k", str(key)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wait_for_port(port, 60)
    return process, f"https://127.0.0.1:{port}"
