"""Media items in MongoDB: what a finished upload became, for listing and serving.

Deleted items stay as tombstones (status "deleted") so a repeated DELETE by the
owner is answered the same way as the first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from metadata.documents import Document
from metadata.errors import driver_errors_translated

PROCESSING = "processing"
READY = "ready"
FAILED = "failed"
DELETED = "deleted"
CATEGORIES = ("images", "videos", "files")


@dataclass(frozen=True)
class MediaItem(Document):
    id: str
    owner: str | None
    category: str
    key: str
    size: int
    content_type: str
    filename: str | None
    created_at: float
    status: str = READY
    reason: str | None = None
    thumbnail_key: str | None = None
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    codec: str | None = None
    frame_rate: float | None = None
    sha256: str | None = None
    source: str = "tus"
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = 0
    updated_at: float = 0.0  # when this document was last written (the change cursor of live events)



class MediaConflict(Exception):
    """The item changed since it was read."""


@driver_errors_translated
class MediaRepository:
    def __init__(self, db: AsyncDatabase) -> None:
        self._media = db["media"]

    async def create_indexes(self) -> None:
        await self._media.create_index([("owner", ASCENDING), ("created_at", DESCENDING)])
        await self._media.create_index([("owner", ASCENDING), ("category", ASCENDING), ("created_at", DESCENDING)])
        await self._media.create_index([("status", ASCENDING)])
        await self._media.create_index([("owner", ASCENDING), ("updated_at", ASCENDING)])

    async def insert(self, item: MediaItem) -> MediaItem:
        """Insert `item`; an item with the same id is kept as it is (idempotent)."""
        item = item.evolve(updated_at=time.time())
        try:
            await self._media.insert_one(item.to_document())
        except DuplicateKeyError:
            existing = await self.get(item.id)
            return existing or item
        return item

    async def get(self, media_id: str) -> MediaItem | None:
        doc = await self._media.find_one({"_id": media_id})
        return MediaItem.from_document(doc) if doc else None

    async def save(self, item: MediaItem) -> MediaItem:
        """Compare-and-swap on `version`; raises MediaConflict."""
        updated = item.evolve(version=item.version + 1, updated_at=time.time())
        result = await self._media.replace_one({"_id": item.id, "version": item.version}, updated.to_document())
        if result.matched_count != 1:
            raise MediaConflict(item.id)
        return updated

    async def page(self, owner: str | None, category: str | None, page: int, limit: int,
                   everyone: bool = False) -> tuple[list[MediaItem], int]:
        """Items of `owner` (or of everyone), newest first, and the total count."""
        query: dict[str, Any] = {"status": {"$ne": DELETED}}
        if not everyone:
            query["owner"] = owner
        if category:
            query["category"] = category
        total = await self._media.count_documents(query)
        cursor = self._media.find(query).sort([("created_at", DESCENDING), ("_id", DESCENDING)]).skip((page - 1) * limit).limit(limit)
        return [MediaItem.from_document(d) async for d in cursor], total

    async def changed_since(self, owner: str, since: float, limit: int) -> list[MediaItem]:
        """Up to `limit` items of `owner` (tombstones included) written at or after `since`, oldest change first."""
        cursor = self._media.find({"owner": owner, "updated_at": {"$gte": since}}).sort(
            [("updated_at", ASCENDING), ("_id", ASCENDING)]).limit(limit)
        return [MediaItem.from_document(d) async for d in cursor]

    async def with_status(self, status: str, limit: int = 100,
                          excluding_owners: Sequence[str | None] = ()) -> list[MediaItem]:
        """Up to `limit` items with `status`, but none of `excluding_owners` (None: items without an owner)."""
        query: dict = {"status": status}
        if excluding_owners:
            query["owner"] = {"$nin": list(excluding_owners)}
        cursor = self._media.find(query).limit(limit)
        return [MediaItem.from_document(d) async for d in cursor]

    async def purge_tombstones(self, older_than: float) -> int:
        result = await self._media.delete_many({"status": DELETED, "created_at": {"$lt": older_than}})
        return result.deleted_count
