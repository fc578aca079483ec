"""Processing jobs in MongoDB: who works on a media item now, and how many attempts it had.

One document per media item waiting for processing through the queue:
{_id: media id, attempts, holder, lease_until, enqueued_at, version}. A worker claims
the job before working on it (at most one live holder; each claim counts an attempt),
keeps the claim alive while it works, and forgets the job once the item's final status
is saved. Every change is a compare-and-swap on `version` (whole-document replace), so
two workers racing for one job never both win.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from metadata.documents import Document
from metadata.errors import driver_errors_translated

_RACES = 5  # compare-and-swap retries before giving up to the other writer


@dataclass(frozen=True)
class Job(Document):
    id: str  # the media item's id
    attempts: int = 0
    holder: str | None = None
    lease_until: float = 0.0
    enqueued_at: float = 0.0
    version: int = 0

    def held(self, now: float | None = None) -> bool:
        """Whether a live holder works on the job."""
        return self.holder is not None and self.lease_until > (time.time() if now is None else now)


@driver_errors_translated
class JobRepository:
    """Claims, renewals, attempt counts and send marks of processing jobs."""

    def __init__(self, db: AsyncDatabase, collection: str = "processing_jobs") -> None:
        self._jobs = db[collection]

    async def get(self, media_id: str) -> Job | None:
        doc = await self._jobs.find_one({"_id": media_id})
        return Job.from_document(doc) if doc else None

    async def claim(self, media_id: str, holder: str, ttl: float) -> Job | None:
        """Take the job for `holder` for `ttl` seconds and count one attempt; None when another
        live holder has it."""
        for _ in range(_RACES):
            now = time.time()
            current = await self.get(media_id)
            if current is not None and current.held(now) and current.holder != holder:
                return None
            base = current or Job(media_id)
            claimed = await self._swap(current, base.evolve(attempts=base.attempts + 1, holder=holder,
                                                            lease_until=now + ttl))
            if claimed is not None:
                return claimed
        return None

    async def renew(self, media_id: str, holder: str, ttl: float) -> bool:
        """Keep `holder`'s claim alive `ttl` more seconds; False when the claim is no longer theirs."""
        result = await self._jobs.update_one({"_id": media_id, "holder": holder},
                                             {"$set": {"lease_until": time.time() + ttl}})
        return result.matched_count == 1

    async def release(self, media_id: str, holder: str) -> None:
        """Give the claim back (the attempt stays counted): the job may be claimed again at once."""
        await self._jobs.update_one({"_id": media_id, "holder": holder}, {"$set": {"lease_until": 0.0}})

    async def forget(self, media_id: str) -> None:
        """The item's final status is saved: the job is over."""
        await self._jobs.delete_one({"_id": media_id})

    async def mark_enqueued(self, media_id: str, unless_since: float) -> bool:
        """Record that a message for the job is being sent now; False (send nothing) when one was
        sent at or after `unless_since`, or a live holder works on it. One caller wins per period."""
        for _ in range(_RACES):
            now = time.time()
            current = await self.get(media_id)
            if current is not None and (current.held(now) or current.enqueued_at >= unless_since):
                return False
            if await self._swap(current, (current or Job(media_id)).evolve(enqueued_at=now)) is not None:
                return True
        return False

    async def _swap(self, current: Job | None, wanted: Job) -> Job | None:
        """Write `wanted` if the stored job is still `current` (absent when None); None on a race."""
        if current is None:
            try:
                await self._jobs.insert_one(wanted.evolve(version=1).to_document())
            except DuplicateKeyError:
                return None
            return wanted.evolve(version=1)
        updated = wanted.evolve(version=current.version + 1)
        result = await self._jobs.replace_one({"_id": current.id, "version": current.version}, updated.to_document())
        return updated if result.matched_count == 1 else None
