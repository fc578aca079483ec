"""Leases in MongoDB: at most one live holder per name, across all instances.

A lease is a document {_id: name, holder, expires_at}. It is taken by insert
(unique _id) or, once expired, by a compare-and-swap on (holder, expires_at);
it is kept alive by renewal and given back by delete. A holder that dies stops
renewing, so its lease frees itself after its time to live.
"""

from __future__ import annotations

import time

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from metadata.errors import driver_errors_translated


@driver_errors_translated
class LeaseRepository:
    """Take, renew and release named leases."""

    def __init__(self, db: AsyncDatabase, collection: str = "leases") -> None:
        self._leases = db[collection]

    async def try_acquire(self, name: str, holder: str, ttl: float) -> bool:
        """Take the lease `name` for `holder` unless another live holder has it."""
        now = time.time()
        doc = {"_id": name, "holder": holder, "expires_at": now + ttl}
        try:
            await self._leases.insert_one(doc)
            return True
        except DuplicateKeyError:
            pass
        current = await self._leases.find_one({"_id": name})
        if current is None:
            try:
                await self._leases.insert_one(doc)
                return True
            except DuplicateKeyError:
                return False
        if current["holder"] != holder and current["expires_at"] > now:
            return False
        result = await self._leases.replace_one(
            {"_id": name, "holder": current["holder"], "expires_at": current["expires_at"]}, doc
        )
        return result.matched_count == 1

    async def renew(self, name: str, holder: str, ttl: float) -> bool:
        """Extend `holder`'s lease; False when it is no longer theirs."""
        result = await self._leases.replace_one(
            {"_id": name, "holder": holder},
            {"_id": name, "holder": holder, "expires_at": time.time() + ttl},
        )
        return result.matched_count == 1

    async def release(self, name: str, holder: str) -> None:
        await self._leases.delete_one({"_id": name, "holder": holder})

    async def holder(self, name: str) -> str | None:
        doc = await self._leases.find_one({"_id": name})
        if doc is None or doc["expires_at"] <= time.time():
            return None
        return doc["holder"]
