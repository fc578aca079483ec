"""The rate limiters' counting, with the clock given (pure logic; the HTTP side is in test_rest_api)."""

import asyncio

from gateway.ratelimit import FixedWindowLimiter, SharedFixedWindowLimiter, TokenBucketLimiter


def test_fixed_window_counts_per_key_and_starts_again_after_the_window():
    limiter = FixedWindowLimiter(limit=2, window=10)
    assert [limiter.decide("a", now=100).allowed for _ in range(3)] == [True, True, False]
    refused = limiter.decide("a", now=104)
    assert not refused.allowed and refused.remaining == 0 and refused.reset_seconds == 6
    assert refused.headers()["Retry-After"] == "6"
    assert limiter.decide("b", now=104).allowed, "another key has its own count"
    again = limiter.decide("a", now=110)
    assert again.allowed and again.remaining == 1 and "Retry-After" not in again.headers()


def test_fixed_window_keeps_at_most_max_keys():
    limiter = FixedWindowLimiter(limit=1, window=10, max_keys=3)
    for key in "abcdef":
        limiter.decide(key, now=0)
    assert len(limiter._counts) <= 3


def test_token_bucket_allows_a_burst_then_the_sustained_rate():
    limiter = TokenBucketLimiter(rate=2, burst=3)
    assert [limiter.decide("u", now=0).allowed for _ in range(4)] == [True, True, True, False]
    assert limiter.decide("u", now=0).reset_seconds == 1
    assert limiter.decide("u", now=0.5).allowed, "one token back after 1/rate seconds"
    assert not limiter.decide("u", now=0.5).allowed


def test_hit_answers_as_decide():
    window, bucket = FixedWindowLimiter(limit=1, window=60), TokenBucketLimiter(rate=1, burst=1)
    assert asyncio.run(window.hit("k")).allowed and not asyncio.run(window.hit("k")).allowed
    assert asyncio.run(bucket.hit("k")).allowed and not asyncio.run(bucket.hit("k")).allowed


class _Counters:
    """Stands in for the MongoDB counters: a shared count, or a failure while MongoDB is away."""

    def __init__(self) -> None:
        self.count = 0
        self.away = False

    async def hit(self, policy: str, key: str, window: float) -> tuple[int, float]:
        if self.away:
            raise ConnectionError("MongoDB is away")
        self.count += 1
        return self.count, 2_000_000_000.0


def test_shared_window_uses_the_shared_count_and_falls_back_to_its_own():
    counters = _Counters()
    first = SharedFixedWindowLimiter(counters, "rest", limit=2, window=60)
    second = SharedFixedWindowLimiter(counters, "rest", limit=2, window=60)
    answers = [asyncio.run(limiter.hit("ip")).allowed for limiter in (first, second, first)]
    assert answers == [True, True, False], "two instances count together"
    counters.away = True
    alone = [asyncio.run(first.hit("ip")).allowed for _ in range(3)]
    assert alone == [True, True, False], "without MongoDB the instance counts alone, never refusing everyone"
