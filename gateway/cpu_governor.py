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
store's threads) and sleeps until the bucket is no longer in debt, longer for a body whose user
has more bodies being read than others (`UserShares`), so that one user's many uploads do not
take the ceiling from another user's one. The CPU of child processes (processing workers) is
not counted.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Awaitable, Callable

#: the share of a detected CPU quota bodies may use, leaving the rest for answering requests
QUOTA_SHARE = 0.9
#: debts worth less than this many seconds of the ceiling are not slept off (rounding, not use)
MIN_PAUSE = 1e-6


class UserShares:
    """Each user's share of the bodies being read, as a weight for their pauses: a body of a
    user reading `k` of the `n` bodies of `u` users waits `k * u / n` times the plain pause, so
    every user's bodies together get alike (one body alone, or users with as many bodies each,
    weigh 1: paced as without shares).

    A body counts while it asks at least every `forget_after` seconds; a sweep (at most one
    every `forget_after` seconds) drops the others, so the entries are bounded by the bodies
    read within about twice that time, and each call is O(1) but the sweep.
    """

    def __init__(self, *, forget_after: float = 2.0) -> None:
        self._forget_after = forget_after
        self._bodies: dict[str, dict[int, float]] = {}  # user -> {body: last asked}
        self._count = 0
        self._last_sweep = 0.0

    def seen(self, user: str, body: int, now: float) -> None:
        """`body` of `user` asks to read at `now`."""
        bodies = self._bodies.setdefault(user, {})
        self._count += body not in bodies
        bodies[body] = now
        if now - self._last_sweep >= self._forget_after:
            self._last_sweep = now
            for name, its in list(self._bodies.items()):
                for key in [b for b, asked in its.items() if now - asked > self._forget_after]:
                    del its[key]
                    self._count -= 1
                if not its:
                    del self._bodies[name]

    def weight(self, user: str) -> float:
        """How many times the plain pause a body of `user` waits (1 when `user` is not counted)."""
        mine = len(self._bodies.get(user, ()))
        return mine * len(self._bodies) / self._count if mine else 1.0


class CpuGovernor:
    """Keeps the process's CPU use at or under `cores` on average by delaying body reads, and
    shares what it allows fairly among users: while the process is over its ceiling, a body
    waits in proportion to its user's share of the bodies being read (`UserShares`), so a user
    with many uploads at once waits longer per body than a user with one, and their bytes per
    second come out alike instead of in proportion to their connections."""

    def __init__(self, cores: float, *, burst: float = 0.01,
                 cpu_clock: Callable[[], float] = time.process_time,
                 wall_clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 shares: UserShares | None = None) -> None:
        if cores <= 0:
            raise ValueError("a CPU ceiling must be positive")
        self.cores = cores
        self._capacity = cores * burst
        self._cpu_clock, self._wall_clock, self._sleep = cpu_clock, wall_clock, sleep
        self._shares = shares or UserShares()
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

    def pause_for(self, user: str | None = None, body: int = 0) -> float:
        """Seconds `body` (any key, the same on each of its calls) of `user` should wait before
        its next read: 0 while the process is within its ceiling, else the process's debt in
        seconds of the ceiling, times the user's weight (`UserShares.weight`; 1 with no user)."""
        debt = -self._settle()
        if user is not None:
            self._shares.seen(user, body, self._last_wall)
        if debt <= self.cores * MIN_PAUSE:
            return 0.0
        return debt / self.cores * (self._shares.weight(user) if user is not None else 1.0)

    async def pace(self, user: str | None = None, body: int = 0) -> float:
        """Return once the process is within its ceiling (see `pause_for`): at once, or after
        sleeping. Returns the seconds slept."""
        pause = self.pause_for(user, body)
        if pause <= 0:
            return 0.0
        await self._sleep(pause)
        self.waited += pause
        return pause


class NoGovernor:
    """No ceiling: bodies are read as fast as they come."""

    cores = 0.0
    waited = 0.0

    async def pace(self, user: str | None = None, body: int = 0) -> float:
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
