"""A ceiling on the process's CPU use, kept by pacing how fast request bodies are read.

On a task with a CPU quota (Fargate: 0.25 vCPU is 25 ms of CPU per 100 ms period), a gateway
that ingests as fast as its clients send uses up each period's quota and is then stopped by the
kernel for the rest of it: every request that arrives meanwhile, a tus client's HEAD included,
waits up to 75 ms per period it spans, and a HEAD that needs a MongoDB round trip spans several.
Kept under the quota, the process is never stopped, and what waits is only the bodies, which the
governor delays a few milliseconds at a time (TCP backpressure slows their senders).

`CpuGovernor(cores)` is a token bucket of CPU seconds, refilled at `cores` per wall-clock second
and holding at most `burst` wall seconds' worth; every body read first calls `pace()`, which
charges the process's CPU time used since the last call (all threads: the event loop and the
store's threads) and sleeps until the bucket is no longer in debt. The CPU of child processes
(processing workers) is not counted.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Awaitable, Callable

#: the share of a detected CPU quota bodies may use, leaving the rest for answering requests
QUOTA_SHARE = 0.9


class CpuGovernor:
    """Keeps the process's CPU use at or under `cores` on average by delaying body reads."""

    def __init__(self, cores: float, *, burst: float = 0.01,
                 cpu_clock: Callable[[], float] = time.process_time,
                 wall_clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if cores <= 0:
            raise ValueError("a CPU ceiling must be positive")
        self.cores = cores
        self._capacity = cores * burst
        self._cpu_clock, self._wall_clock, self._sleep = cpu_clock, wall_clock, sleep
        self._tokens = self._capacity
        self._last_cpu = cpu_clock()
        self._last_wall = wall_clock()
        self.waited = 0.0  # seconds bodies were held back so far

    def _settle(self) -> float:
        """Refill for the wall time passed, charge the CPU used; the tokens left (negative: debt)."""
        cpu, wall = self._cpu_clock(), self._wall_clock()
        self._tokens = min(self._capacity, self._tokens + (wall - self._last_wall) * self.cores)
        self._tokens -= max(0.0, cpu - self._last_cpu)
        self._last_cpu, self._last_wall = cpu, wall
        return self._tokens

    async def pace(self) -> float:
        """Return once the process is within its ceiling: at once, or after sleeping off its
        debt. Returns the seconds slept."""
        debt = -self._settle()
        if debt <= 0:
            return 0.0
        pause = debt / self.cores
        await self._sleep(pause)
        self.waited += pause
        return pause


class NoGovernor:
    """No ceiling: bodies are read as fast as they come."""

    cores = 0.0
    waited = 0.0

    async def pace(self) -> float:
        return 0.0


def cgroup_cpu_quota(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota (in cores) of this process's cgroup or the tightest of its visible
    ancestors, from cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`; None
    when there is none or it cannot be read."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        names = controllers.split(",")
        if controllers == "":  # v2: one unified hierarchy
            folders = [root]
        elif "cpu" in names:
            folders = [root / controllers, root / "cpu", root / "cpu,cpuacct"]
        else:
            continue
        for base in folders:
            if base.is_dir():
                quotas.extend(_quotas_up(base, path.strip("/"), v2=controllers == ""))
                break
    return min(quotas) if quotas else None


def _quotas_up(base: Path, path: str, *, v2: bool) -> list[float]:
    """The quotas set on `base/path` and each ancestor of it under `base`."""
    found = []
    parts = path.split("/") if path else []
    for depth in range(len(parts), -1, -1):
        folder = base.joinpath(*parts[:depth])
        try:
            if v2:
                quota, _, period = (folder / "cpu.max").read_text().strip().partition(" ")
                if quota != "max":
                    found.append(int(quota) / int(period or 100_000))
            else:
                quota_us = int((folder / "cpu.cfs_quota_us").read_text())
                if quota_us > 0:
                    found.append(quota_us / int((folder / "cpu.cfs_period_us").read_text()))
        except (OSError, ValueError):
            continue
    return found


def ingest_cpu_ceiling(setting: str, quota: float | None) -> float | None:
    """The ceiling INGEST_CPU_LIMIT asks for: 'off' none; 'auto' QUOTA_SHARE of `quota` (none
    without a quota); else the number of cores it names."""
    if setting == "off":
        return None
    if setting == "auto":
        return quota * QUOTA_SHARE if quota else None
    return float(setting)
