"""Rate limits: fixed windows (like express-rate-limit) and token buckets.

Every limiter answers `await limiter.hit(key)` with a `Decision`.
`FixedWindowLimiter` and `TokenBucketLimiter` count in process memory (`decide` is their
synchronous step): each instance its own requests (memory bounded by `max_keys`). `SharedFixedWindowLimiter` keeps its
counts in MongoDB, so N instances behind a load balancer enforce one limit together;
while MongoDB cannot be reached it counts in memory instead of refusing everyone.
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
