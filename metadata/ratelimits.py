"""Request and failure counters in MongoDB, shared by every instance: a fixed window per key.

A counter is a document {_id: "<policy>:<key>", count, expires_at, expire_at}. A key's window
starts at its first hit and lasts `window` seconds, as in the in-memory limiter. A hit
is normally one $inc on a live counter; a missing or ended counter is started again
with a conditional replacement or an insert, so concurrent instances never lose a count.
`expires_at` (epoch seconds) decides whether a window is live; `expire_at` (the same moment
as a date) carries a TTL index, so MongoDB removes ended counters by itself, and `sweep`
does the same on servers whose TTL monitor lags. The collection holds at most one row per
live key.
"""

from __future__ import annotations

import datetime
import time

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from metadata.errors import driver_errors_translated


@driver_errors_translated
class RateCounterRepository:
    """Count hits per key and window."""

    def __init__(self, db: AsyncDatabase, collection: str = "rate_limits") -> None:
        self._counters = db[collection]

    async def create_indexes(self) -> None:
        await self._counters.create_index([("expire_at", ASCENDING)], expireAfterSeconds=0)

    async def hit(self, policy: str, key: str, window: float, now: float | None = None) -> tuple[int, float]:
        """Count one hit of `key` under `policy`; return the window's count and its end (epoch seconds)."""
        now = time.time() if now is None else now
        name = f"{policy}:{key}"
        fresh = {"count": 1, "expires_at": now + window, "expire_at": _utc(now + window)}
        for _ in range(5):
            live = await self._counters.find_one_and_update(
                {"_id": name, "expires_at": {"$gt": now}}, {"$inc": {"count": 1}},
                return_document=ReturnDocument.AFTER)
            if live is not None:
                return int(live["count"]), float(live["expires_at"])
            # a whole-document replacement keeps the date a date (see the design notes)
            ended = await self._counters.find_one_and_replace(
                {"_id": name, "expires_at": {"$lte": now}}, {"_id": name, **fresh})
            if ended is not None:
                return 1, now + window
            try:
                await self._counters.insert_one({"_id": name, **fresh})
                return 1, now + window
            except DuplicateKeyError:
                continue  # another instance started it: count on it
        raise RuntimeError(f"rate counter {name} kept changing")

    async def peek(self, policy: str, key: str, now: float | None = None) -> tuple[int, float]:
        """The count of `key`'s live window and its end, without counting; (0, now) when none is live."""
        now = time.time() if now is None else now
        doc = await self._counters.find_one({"_id": f"{policy}:{key}", "expires_at": {"$gt": now}})
        if doc is None:
            return 0, now
        return int(doc["count"]), float(doc["expires_at"])

    async def clear(self, policy: str, key: str) -> None:
        """Forget `key`'s count (its next hit starts a new window)."""
        await self._counters.delete_one({"_id": f"{policy}:{key}"})

    async def sweep(self, now: float | None = None) -> int:
        """Delete the counters of windows that have ended; return how many."""
        now = time.time() if now is None else now
        result = await self._counters.delete_many({"expires_at": {"$lte": now}})
        return result.deleted_count


def _utc(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
