"""Upload state in MongoDB: one document per upload, one per committed part.

Every change of an upload document is a whole-document compare-and-swap on its
`version` field, so two instances can never both commit the same step.
Timestamps are epoch seconds (floats).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from metadata.documents import Document
from metadata.errors import driver_errors_translated

ACTIVE = "active"
COMPLETE = "complete"
EXPIRED = "expired"


class VersionConflict(Exception):
    """The upload changed since it was read (another writer committed first)."""


@dataclass(frozen=True)
class PartRecord:
    number: int
    etag: str
    size: int


@dataclass(frozen=True)
class UploadRecord(Document):
    """The durable state of one tus upload."""

    id: str
    owner: str | None
    length: int | None
    part_size: int
    created_at: float
    expires_at: float
    metadata: dict[str, str | None] = field(default_factory=dict)
    status: str = ACTIVE
    key: str | None = None
    content_type: str | None = None
    category: str | None = None  # media category of the file (images, videos, files), from its bytes
    multipart_id: str | None = None
    parts_count: int = 0
    parts_bytes: int = 0
    tail_key: str | None = None
    tail_size: int = 0
    concat: str | None = None
    concat_parts: tuple[str, ...] = ()
    consumed_by: str | None = None  # a partial upload: the final upload that joined it (each partial joins one)
    completed_at: float | None = None
    sha256: str | None = None
    version: int = 0
    updated_at: float = 0.0  # when this document was last written (the change cursor of live events)

    @property
    def offset(self) -> int:
        """Bytes durably stored: committed parts plus the persisted tail."""
        return self.parts_bytes + self.tail_size

    @property
    def filename(self) -> str | None:
        """The file name the client declared in its metadata, if any."""
        return self.metadata.get("filename") or self.metadata.get("name") or None

    def to_document(self) -> dict[str, Any]:
        doc = super().to_document()
        doc["concat_parts"] = list(self.concat_parts)
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> "UploadRecord":
        return super().from_document(dict(doc, concat_parts=tuple(doc.get("concat_parts") or ()),
                                          metadata=dict(doc.get("metadata") or {})))


@driver_errors_translated
class UploadRepository:
    """Reads and compare-and-swap writes of upload documents and their parts."""

    def __init__(self, db: AsyncDatabase) -> None:
        self._uploads = db["uploads"]
        self._parts = db["upload_parts"]

    async def create_indexes(self) -> None:
        await self._uploads.create_index([("status", ASCENDING), ("expires_at", ASCENDING)])
        await self._uploads.create_index([("owner", ASCENDING)])
        await self._uploads.create_index([("owner", ASCENDING), ("updated_at", ASCENDING)])
        await self._parts.create_index([("upload", ASCENDING), ("number", ASCENDING)])

    async def insert(self, record: UploadRecord) -> UploadRecord:
        record = record.evolve(updated_at=time.time())
        await self._uploads.insert_one(record.to_document())
        return record

    async def get(self, upload_id: str) -> UploadRecord | None:
        doc = await self._uploads.find_one({"_id": upload_id})
        return UploadRecord.from_document(doc) if doc else None

    async def save(self, record: UploadRecord) -> UploadRecord:
        """Write `record` if the stored version is still `record.version`.

        Returns the record with its new version; raises VersionConflict otherwise.
        """
        updated = record.evolve(version=record.version + 1, updated_at=time.time())
        result = await self._uploads.replace_one(
            {"_id": record.id, "version": record.version}, updated.to_document()
        )
        if result.matched_count != 1:
            raise VersionConflict(record.id)
        return updated

    async def delete(self, upload_id: str) -> None:
        await self._uploads.delete_one({"_id": upload_id})
        await self._parts.delete_many({"upload": upload_id})

    async def save_part(self, upload_id: str, part: PartRecord) -> None:
        """Record the ETag of an uploaded part (counted only once the upload's parts_count covers it)."""
        doc = {"_id": f"{upload_id}:{part.number:05d}", "upload": upload_id,
               "number": part.number, "etag": part.etag, "size": part.size}
        await self._parts.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    async def committed_parts(self, record: UploadRecord) -> list[PartRecord]:
        """The parts 1..parts_count of `record`, in order; raises LookupError if one is missing."""
        cursor = self._parts.find({"upload": record.id, "number": {"$lte": record.parts_count}}).sort("number", ASCENDING)
        parts = [PartRecord(d["number"], d["etag"], d["size"]) async for d in cursor]
        if [p.number for p in parts] != list(range(1, record.parts_count + 1)):
            raise LookupError(f"upload {record.id}: part records are incomplete")
        return parts

    async def changed_since(self, owner: str, since: float, limit: int) -> list[UploadRecord]:
        """Up to `limit` uploads of `owner` written at or after `since`, oldest change first."""
        cursor = self._uploads.find({"owner": owner, "updated_at": {"$gte": since}}).sort(
            [("updated_at", ASCENDING), ("_id", ASCENDING)]).limit(limit)
        return [UploadRecord.from_document(d) async for d in cursor]

    async def count_unfinished(self, owner: str | None, limit: int) -> int:
        """How many active uploads `owner` has, counting up to `limit`."""
        return await self._uploads.count_documents({"owner": owner, "status": ACTIVE}, limit=limit)

    async def forget_parts(self, upload_id: str) -> None:
        await self._parts.delete_many({"upload": upload_id})

    async def expired(self, now: float | None = None, limit: int = 100) -> list[UploadRecord]:
        """Active uploads whose expiry has passed."""
        now = time.time() if now is None else now
        cursor = self._uploads.find({"status": ACTIVE, "expires_at": {"$lt": now}}).limit(limit)
        return [UploadRecord.from_document(d) async for d in cursor]

    async def expired_partials(self, now: float | None = None, limit: int = 100) -> list[UploadRecord]:
        """Finished partial uploads whose expiry has passed (kept until then for reuse)."""
        now = time.time() if now is None else now
        cursor = self._uploads.find({"status": COMPLETE, "concat": "partial", "expires_at": {"$lt": now}}).limit(limit)
        return [UploadRecord.from_document(d) async for d in cursor]

    async def purge_tombstones(self, now: float | None = None) -> int:
        """Delete expired-upload tombstones whose own time is up."""
        now = time.time() if now is None else now
        result = await self._uploads.delete_many({"status": EXPIRED, "expires_at": {"$lt": now}})
        return result.deleted_count

