"""Committing upload state: the engine's view of the upload documents in the metadata store.

Each step is a compare-and-swap on the upload's version: when another writer
committed first, the step raises `LeaseLost` (this writer must stop), never
overwrites. Metadata store failures come out as `MetadataFailure`.
"""

from __future__ import annotations

from typing import Sequence

from metadata.uploads import PartRecord, UploadRecord, UploadRepository, VersionConflict
from streaming.errors import LeaseLost, metadata_failures


class CommitRepository:
    """Reads and compare-and-swap commits of uploads, their parts and tails."""

    def __init__(self, uploads: UploadRepository) -> None:
        self._uploads = uploads

    async def get(self, upload_id: str) -> UploadRecord | None:
        """The upload as last committed, or None."""
        with metadata_failures():
            return await self._uploads.get(upload_id)

    async def insert(self, record: UploadRecord) -> UploadRecord:
        """Store a new upload."""
        with metadata_failures():
            return await self._uploads.insert(record)

    async def save(self, record: UploadRecord) -> UploadRecord:
        """Commit `record` over the version it was read at; LeaseLost if someone else committed since."""
        with metadata_failures():
            try:
                return await self._uploads.save(record)
            except VersionConflict:
                raise LeaseLost("the upload was changed by another writer") from None

    async def commit_part(self, record: UploadRecord, part: PartRecord, expires_at: float) -> UploadRecord:
        """Count `part` (the next one after the committed parts) in the upload's offset.

        The part's token is recorded first, so a committed count never names a part
        whose token is unknown. Any stored tail is superseded (its bytes are in the part).
        """
        with metadata_failures():
            await self._uploads.save_part(record.id, part)
        return await self.save(record.evolve(
            parts_count=part.number, parts_bytes=record.parts_bytes + part.size,
            tail_key=None, tail_size=0, expires_at=expires_at))

    async def commit_tail(self, record: UploadRecord, key: str, size: int, expires_at: float) -> UploadRecord:
        """Count the `size` bytes stored in the tail object `key` in the upload's offset."""
        return await self.save(record.evolve(tail_key=key, tail_size=size, expires_at=expires_at))

    async def parts(self, record: UploadRecord) -> Sequence[PartRecord]:
        """The committed parts 1..parts_count of `record`, in order."""
        with metadata_failures():
            return await self._uploads.committed_parts(record)

    async def count_unfinished(self, owner: str | None, limit: int) -> int:
        """How many active uploads `owner` has, counting up to `limit`."""
        with metadata_failures():
            return await self._uploads.count_unfinished(owner, limit)

    async def delete(self, upload_id: str) -> None:
        """Forget the upload and its parts."""
        with metadata_failures():
            await self._uploads.delete(upload_id)

    async def forget_parts(self, upload_id: str) -> None:
        """Forget the upload's part tokens (once they are assembled or discarded)."""
        with metadata_failures():
            await self._uploads.forget_parts(upload_id)

    async def expired(self, now: float) -> list[UploadRecord]:
        """Active uploads whose expiry has passed."""
        with metadata_failures():
            return await self._uploads.expired(now)

    async def expired_partials(self, now: float) -> list[UploadRecord]:
        """Finished partial uploads whose expiry has passed."""
        with metadata_failures():
            return await self._uploads.expired_partials(now)

    async def purge_tombstones(self, now: float) -> int:
        """Delete tombstones of expired uploads whose own time is up."""
        with metadata_failures():
            return await self._uploads.purge_tombstones(now)
