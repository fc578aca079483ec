"""Request counters in MongoDB, shared by every instance: a fixed window per key.

A counter is a document {_id: "<policy>:<key>", count, expires_at}. A key's window
starts at its first hit and lasts `window` seconds, as in the in-memory limiter. A hit
is normally one $inc on a live counter; a missing or ended counter is started again
with a conditional update or an insert, so concurrent instances never lose a count.
`sweep` deletes ended counters.
"""

from __future__ import annotations

import time

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from metadata.errors import driver_errors_translated


@driver_errors_translated
class RateCounterRepository:
    """Count hits per key and window."""

    def __init__(self, db: AsyncDatabase, collection: str = "rate_limits") -> None:
        self._counters = db[collection]

    async def hit(self, policy: str, key: str, window: float, now: float | None = None) -> tuple[int, float]:
        """Count one hit of `key` under `policy`; return the window's count and its end (epoch seconds)."""
        now = time.time() if now is None else now
        name = f"{policy}:{key}"
        fresh = {"count": 1, "expires_at": now + window}
        for _ in range(5):
            live = await self._counters.find_one_and_update(
                {"_id": name, "expires_at": {"$gt": now}}, {"$inc": {"count": 1}},
                return_document=ReturnDocument.AFTER)
            if live is not None:
                return int(live["count"]), float(live["expires_at"])
            ended = await self._counters.find_one_and_update(
                {"_id": name, "expires_at": {"$lte": now}}, {"$set": fresh})
            if ended is not None:
                return 1, now + window
            try:
                await self._counters.insert_one({"_id": name, **fresh})
                return 1, now + window
            except DuplicateKeyError:
                continue  # another instance started it: count on it
        raise RuntimeError(f"rate counter {name} kept changing")

    async def sweep(self, now: float | None = None) -> int:
        """Delete the counters of windows that have ended; return how many."""
        now = time.time() if now is None else now
        result = await self._counters.delete_many({"expires_at": {"$lte": now}})
        return result.deleted_count
