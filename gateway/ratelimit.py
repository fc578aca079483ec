"""Rate limits: fixed windows (like express-rate-limit), token buckets, and failure counts.

Every limiter answers `await limiter.hit(key)` with a `Decision`.
`FixedWindowLimiter` and `TokenBucketLimiter` count in process memory (`decide` is their
synchronous step): each instance its own requests (memory bounded by `max_keys`). `SharedFixedWindowLimiter` keeps its
counts in MongoDB, so N instances behind a load balancer enforce one limit together;
while MongoDB cannot be reached it counts in memory instead of refusing everyone.
`FailureLimiter` counts only what its caller reports as a failure; `LoginGuard` uses two of
them to limit failed sign-ins per client IP and per account.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    policy: str

    def headers(self) -> dict[str, str]:
        """IETF draft RateLimit headers (as express-rate-limit's standardHeaders), Retry-After when refused."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
            "RateLimit-Policy": self.policy,
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(self.reset_seconds, 1))
        return headers


class FixedWindowLimiter:
    """At most `limit` hits per key in each `window` seconds."""

    def __init__(self, limit: int, window: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._counts: dict[str, tuple[float, int]] = {}

    async def hit(self, key: str) -> Decision:
        """Count one request of `key` and say whether it is allowed."""
        return self.decide(key)

    def decide(self, key: str, now: float | None = None) -> Decision:
        """`hit` without the await: count one request of `key` and say whether it is allowed."""
        now = time.monotonic() if now is None else now
        start, count = self._counts.get(key, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        count += 1
        if key not in self._counts and len(self._counts) >= self.max_keys:
            self._evict(now)
        self._counts[key] = (start, count)
        reset = math.ceil(start + self.window - now)
        return Decision(count <= self.limit, self.limit, max(self.limit - count, 0), reset,
                        f"{self.limit};w={int(self.window)}")

    def _evict(self, now: float) -> None:
        for key in [k for k, (start, _) in self._counts.items() if now - start >= self.window]:
            del self._counts[key]
        while len(self._counts) >= self.max_keys:
            self._counts.pop(next(iter(self._counts)))


class TokenBucketLimiter:
    """A sustained `rate` per second per key with bursts up to `burst`."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    async def hit(self, key: str) -> Decision:
        """Take a token for one request of `key` and say whether it is allowed."""
        return self.decide(key)

    def decide(self, key: str, now: float | None = None) -> Decision:
        """`hit` without the await."""
        now = time.monotonic() if now is None else now
        tokens, stamp = self._buckets.get(key, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._buckets.pop(next(iter(self._buckets)))
        self._buckets[key] = (tokens, now)
        reset = 0 if allowed else math.ceil((1 - tokens) / self.rate)
        return Decision(allowed, self.burst, int(tokens), reset, f"{self.burst};w=1;burst={self.burst}")


class SharedFixedWindowLimiter:
    """At most `limit` hits per key in each `window` seconds, counted in MongoDB by all instances."""

    def __init__(self, counters, policy: str, limit: int, window: float, timeout: float = 1.0) -> None:
        self.limit = limit
        self.window = window
        self.policy = policy
        self._counters = counters  # metadata.ratelimits.RateCounterRepository
        self._timeout = timeout
        self._fallback = FixedWindowLimiter(limit, window)

    async def hit(self, key: str) -> Decision:
        """Count one request of `key` and say whether it is allowed."""
        try:
            count, end = await asyncio.wait_for(self._counters.hit(self.policy, key, self.window), self._timeout)
        except Exception:  # noqa: BLE001 - MongoDB away or slow: this instance counts alone meanwhile
            return self._fallback.decide(key)
        reset = max(math.ceil(end - time.time()), 0)
        return Decision(count <= self.limit, self.limit, max(self.limit - count, 0), reset,
                        f"{self.limit};w={int(self.window)}")


class MemoryCounters:
    """Fixed-window counters in process memory with the interface of
    metadata.ratelimits.RateCounterRepository (at most `max_keys` keys; ended windows go first)."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._counts: dict[str, tuple[float, int]] = {}  # name -> (window end, count)

    async def hit(self, policy: str, key: str, window: float, now: float | None = None) -> tuple[int, float]:
        now = time.time() if now is None else now
        name = f"{policy}:{key}"
        end, count = self._counts.get(name, (0.0, 0))
        if end <= now:
            end, count = now + window, 0
        if name not in self._counts and len(self._counts) >= self.max_keys:
            self._evict(now)
        self._counts[name] = (end, count + 1)
        return count + 1, end

    async def peek(self, policy: str, key: str, now: float | None = None) -> tuple[int, float]:
        now = time.time() if now is None else now
        end, count = self._counts.get(f"{policy}:{key}", (now, 0))
        return (count, end) if end > now else (0, now)

    async def clear(self, policy: str, key: str) -> None:
        self._counts.pop(f"{policy}:{key}", None)

    def _evict(self, now: float) -> None:
        for name in [name for name, (end, _) in self._counts.items() if end <= now]:
            del self._counts[name]
        while len(self._counts) >= self.max_keys:
            self._counts.pop(next(iter(self._counts)))


class FailureLimiter:
    """At most `limit` failures per key in each `window` seconds (a window starts at the key's
    first failure): once a key has `limit` failures it is refused until its window ends.
    Successes are not counted; `forgive` clears a key. Counts live in `counters` (MongoDB,
    shared by every instance) or, with None, in process memory; while MongoDB cannot be
    reached this instance counts alone in memory instead of refusing everyone."""

    def __init__(self, policy: str, limit: int, window: float, counters=None, timeout: float = 1.0) -> None:
        self.policy = policy
        self.limit = limit
        self.window = window
        self._counters = counters if counters is not None else MemoryCounters()
        self._fallback = MemoryCounters()
        self._timeout = timeout

    async def _call(self, method: str, *args):
        try:
            return await asyncio.wait_for(getattr(self._counters, method)(self.policy, *args), self._timeout)
        except Exception:  # noqa: BLE001 - MongoDB away or slow: this instance counts alone meanwhile
            return await getattr(self._fallback, method)(self.policy, *args)

    def _decision(self, count: int, end: float, allowed: bool) -> Decision:
        reset = max(math.ceil(end - time.time()), 0)
        return Decision(allowed, self.limit, max(self.limit - count, 0), reset, f"{self.limit};w={int(self.window)}")

    async def check(self, key: str) -> Decision:
        """Whether `key` may try again (fewer than `limit` failures in its window); counts nothing."""
        count, end = await self._call("peek", key)
        return self._decision(count, end, count < self.limit)

    async def failed(self, key: str) -> Decision:
        """Count one failure of `key`; the decision says whether it may try again."""
        count, end = await self._call("hit", key, self.window)
        return self._decision(count, end, count < self.limit)

    async def forgive(self, key: str) -> None:
        """Forget `key`'s failures."""
        await self._call("clear", key)


@dataclass(frozen=True)
class Refusal:
    """Why a sign-in is refused before its password is checked, and the answer's headers."""

    message: str
    decision: Decision


class LoginGuard:
    """Limits failed sign-ins the way OWASP's authentication cheat sheet recommends: per client
    IP and per account, counting only failures (a wrong password, an unknown user).

    - per IP: `per_ip` failures per window from one address, whatever names it tries;
    - per account: `per_account` failures per window against one stored account, from any
      address; a successful sign-in clears the account's count (not the address's, so an
      attacker cannot clear it by signing in to an account of their own).

    Only accounts that exist get a per-account counter (an unknown name is counted by its
    address alone), so names a client makes up cannot grow the counters.
    """

    def __init__(self, per_ip: FailureLimiter, per_account: FailureLimiter) -> None:
        self.per_ip = per_ip
        self.per_account = per_account

    async def refusal(self, ip: str | None, account_id: str | None = None) -> Refusal | None:
        """Why a sign-in from `ip` (to `account_id`; either may be None: not checked) must wait,
        or None when it may go on."""
        decision = await self.per_ip.check(ip) if ip is not None else None
        if decision is not None and not decision.allowed:
            return Refusal(f"too many failed sign-in attempts from this address; retry in "
                           f"{max(decision.reset_seconds, 1)} seconds", decision)
        if account_id is not None:
            decision = await self.per_account.check(account_id)
            if not decision.allowed:
                return Refusal(f"too many failed sign-in attempts for this account; retry in "
                               f"{max(decision.reset_seconds, 1)} seconds", decision)
        return None

    async def failed(self, ip: str, account_id: str | None = None) -> None:
        """Count a failed sign-in from `ip` (against `account_id`, when it names a stored account)."""
        await self.per_ip.failed(ip)
        if account_id is not None:
            await self.per_account.failed(account_id)

    async def succeeded(self, account_id: str) -> None:
        """A sign-in to `account_id` succeeded: its failures are forgiven."""
        await self.per_account.forgive(account_id)
