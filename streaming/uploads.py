"""The upload state machine: create, write, complete, terminate, expire.

It knows object stores only through their interface and nothing of HTTP.
State lives in MongoDB (through `UploadRepository`) and bytes in the store,
so any instance can continue any upload.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import uuid
from dataclasses import dataclass
from collections import OrderedDict
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence

from metadata.uploads import ACTIVE, COMPLETE, EXPIRED, UploadRecord, UploadRepository, VersionConflict
from processing.detect import SNIFF_BYTES, detect, object_key
from streaming.buffers import BufferPool
from streaming.concatenation import plan
from streaming.errors import (
    ConcatenationError,
    InvalidLength,
    LeaseLost,
    OffsetMismatch,
    SizeExceeded,
    TypeNotAllowed,
    StorageFailure,
    UploadGone,
    UploadNotFound,
    UploadNotWritable,
)
from streaming.locking import UploadLocked, UploadLocker
from streaming.stores.base import MAX_PARTS, MIN_PART_SIZE, ObjectStore, PartRef, StoreError
from streaming.writer import PartWriter

log = logging.getLogger(__name__)

MiB = 1024 * 1024
TOMBSTONE_SECONDS = 7 * 24 * 3600
HASH_STATES_KEPT = 4096

CompletionHook = Callable[[UploadRecord], Awaitable[None]]


@dataclass(frozen=True)
class UploadLimits:
    """Bounds of the upload machinery (from config)."""

    max_size: int
    part_size: int
    window: int
    expiration: int
    file_sha256: bool = True  # compute each finished file's sha256 while it streams


class UploadService:
    """Everything that happens to uploads, for the protocol layers to call."""

    def __init__(
        self,
        store: ObjectStore,
        repo: UploadRepository,
        locker: UploadLocker,
        buffers: BufferPool,
        limits: UploadLimits,
    ) -> None:
        self.store = store
        self.repo = repo
        self.locker = locker
        self.buffers = buffers
        self.limits = limits
        self.window = limits.window
        self.completion_hooks: list[CompletionHook] = []
        self.type_allowed: Callable[[Any], bool] = lambda detected: True
        self.deletion_hooks: list[CompletionHook] = []
        self.byte_observers: list[Callable[[int], None]] = []
        # observation points for metrics: events ("created", "finished", "terminated",
        # "expired"), and +1/-1 as writers open and close and as parts go to the store
        self.event_observers: list[Callable[[str], None]] = []
        self.writer_observers: list[Callable[[int], None]] = []
        self.part_observers: list[Callable[[int], None]] = []
        self.progress_observers: list[Callable[[UploadRecord], None]] = []
        self._background: set[asyncio.Future] = set()
        # upload id -> (parts hashed, sha256 of those parts): lets the next PATCH on this
        # instance continue the file's sha256 without re-reading anything
        self._hashes: OrderedDict[str, tuple[int, Any]] = OrderedDict()

    # -- helpers used by PartWriter -------------------------------------------------

    def new_expiry(self) -> float:
        return time.time() + self.limits.expiration

    def hash_state(self, record: UploadRecord) -> Any:
        """A sha256 object covering parts 1..parts_count of `record`, or None if unknown here
        (always None when file digests are off)."""
        if not self.limits.file_sha256:
            return None
        if record.parts_count == 0:
            return hashlib.sha256()
        kept = self._hashes.get(record.id)
        if kept is None or kept[0] != record.parts_count:
            return None
        return kept[1].copy()

    def keep_hash_state(self, record: UploadRecord, hasher: Any) -> None:
        """Remember the sha256 of `record`'s committed parts (bounded, least recently used dropped)."""
        if hasher is None:
            self._hashes.pop(record.id, None)
            return
        self._hashes[record.id] = (record.parts_count, hasher)
        self._hashes.move_to_end(record.id)
        while len(self._hashes) > HASH_STATES_KEPT:
            self._hashes.popitem(last=False)

    def emit(self, event: str) -> None:
        for observer in self.event_observers:
            observer(event)

    def count(self, observers: list[Callable[[int], None]], delta: int) -> None:
        for observer in observers:
            observer(delta)

    def bytes_committed(self, count: int, record: UploadRecord | None = None) -> None:
        for observer in self.byte_observers:
            observer(count)
        if record is not None:
            for progress in self.progress_observers:
                progress(record)

    async def discard_object(self, key: str) -> None:
        """Delete an object that is no longer referenced; failures are only logged."""
        try:
            await self.store.delete_object(key)
        except StoreError:
            log.warning("could not delete unreferenced object", extra={"key": key}, exc_info=True)

    def part_size_for(self, length: int | None) -> int:
        """The part size for an upload of `length` bytes (unknown: the maximum size)."""
        size = max(self.limits.part_size, MIN_PART_SIZE)
        needed = math.ceil((length if length is not None else self.limits.max_size) / MAX_PARTS)
        if needed > size:
            size = math.ceil(needed / MiB) * MiB
        return size

    # -- lifecycle --------------------------------------------------------------------

    async def create(
        self,
        owner: str | None,
        length: int | None,
        metadata: dict[str, str | None],
        *,
        concat: str | None = None,
    ) -> UploadRecord:
        """Register a new upload. `length` None defers it; `concat` "partial" marks a part of a
        later concatenation. Raises SizeExceeded past the maximum."""
        if length is not None and length > self.limits.max_size:
            raise SizeExceeded(f"Upload-Length exceeds the maximum of {self.limits.max_size} bytes")
        now = time.time()
        record = UploadRecord(
            id=uuid.uuid4().hex,
            owner=owner,
            length=length,
            part_size=self.part_size_for(length),
            created_at=now,
            expires_at=now + self.limits.expiration,
            metadata=metadata,
            concat=concat,
        )
        record = await self.repo.insert(record)
        self.emit("created")
        if length == 0:
            record = await self.complete(record, memoryview(b""))
        return record

    async def open_stream(self, owner: str | None, metadata: dict[str, str | None], max_size: int) -> PartWriter:
        """A new upload of unknown length and its writer, for bodies that are one whole file.

        Finish the writer with `end_of_file=True`; on failure call `terminate`.
        """
        if max_size > self.limits.max_size:
            max_size = self.limits.max_size
        now = time.time()
        record = await self.repo.insert(UploadRecord(
            id=uuid.uuid4().hex, owner=owner, length=None, part_size=self.part_size_for(max_size),
            created_at=now, expires_at=now + self.limits.expiration, metadata=metadata))
        self.emit("created")
        lease = await self.locker.acquire(record.id, 0)
        try:
            writer = PartWriter(self, record, lease, max_size)
            await writer.open()
            return writer
        except BaseException:
            await self.locker.release(lease)
            raise

    async def concatenate(
        self, owner: str | None, partial_ids: Sequence[str], metadata: dict[str, str | None], is_admin: bool = False
    ) -> UploadRecord:
        """Create a final upload from finished partial uploads of `owner`, assembled in the store.

        Raises ConcatenationError when a partial is unknown, someone else's, not partial or
        not finished, and SizeExceeded past the maximum size.
        """
        if not partial_ids:
            raise ConcatenationError("Upload-Concat: final needs at least one partial upload")
        partials = []
        for upload_id in partial_ids:
            record = await self.repo.get(upload_id)
            if record is None or (record.owner != owner and not is_admin) or record.status == EXPIRED:
                raise ConcatenationError(f"no partial upload {upload_id}")
            if record.concat != "partial":
                raise ConcatenationError(f"upload {upload_id} is not a partial upload")
            if record.status != COMPLETE or not record.key:
                raise ConcatenationError(f"partial upload {upload_id} is not finished")
            partials.append(record)
        length = sum(record.length or 0 for record in partials)
        if length > self.limits.max_size:
            raise SizeExceeded(f"the concatenation exceeds the maximum of {self.limits.max_size} bytes")
        now = time.time()
        final = await self.repo.insert(UploadRecord(
            id=uuid.uuid4().hex, owner=owner, length=length, part_size=self.part_size_for(length),
            created_at=now, expires_at=now + self.limits.expiration, metadata=metadata,
            concat="final", concat_parts=tuple(record.id for record in partials)))
        try:
            async with self.locker.hold(final.id, 0):
                return await self._assemble(final, partials)
        except BaseException:
            await self.repo.delete(final.id)
            raise

    async def _assemble(self, final: UploadRecord, partials: Sequence[UploadRecord]) -> UploadRecord:
        head = b""
        for record in partials:
            if record.length:
                head = b"".join([chunk async for chunk in self.store.read_range(
                    record.key or "", 0, min(record.length, SNIFF_BYTES), SNIFF_BYTES)])
                break
        detected = detect(head, _filename(final))
        key = self._key_for(final, detected)
        try:
            multipart_id = await self.store.create_multipart(key, detected.mime)
            parts: list[PartRef] = []
            try:
                for planned in plan([(record.key or "", record.length or 0) for record in partials]):
                    if planned.copy:
                        piece = planned.pieces[0]
                        etag = await self.store.copy_part(key, multipart_id, planned.number, piece.key, piece.first, piece.last)
                    else:
                        joined = bytearray()
                        for piece in planned.pieces:
                            async for chunk in self.store.read_range(piece.key, piece.first, piece.last + 1, 1024 * 1024):
                                joined += chunk
                        etag = await self.store.upload_part(key, multipart_id, planned.number, memoryview(joined))
                    parts.append(PartRef(planned.number, etag, planned.size))
                if not parts:
                    etag = await self.store.upload_part(key, multipart_id, 1, memoryview(b""))
                    parts.append(PartRef(1, etag, 0))
                await self.store.complete_multipart(key, multipart_id, parts)
            except BaseException:
                await self.store.abort_multipart(key, multipart_id)
                raise
        except StoreError as exc:
            raise StorageFailure(f"concatenating the partial uploads failed: {exc}") from exc
        done = await self.repo.save(final.evolve(
            status=COMPLETE, key=key, content_type=detected.mime, parts_count=len(parts),
            parts_bytes=final.length or 0, completed_at=time.time()))
        self.emit("finished")
        await self._run_hooks(self.completion_hooks, done)
        return done

    async def get(self, upload_id: str) -> UploadRecord:
        """The upload's committed state. Raises UploadNotFound or UploadGone."""
        record = await self.repo.get(upload_id)
        if record is None:
            raise UploadNotFound("no such upload")
        if record.status == EXPIRED:
            raise UploadGone("the upload expired")
        if record.status == ACTIVE and record.expires_at < time.time():
            raise UploadGone("the upload expired")
        return record

    async def open_writer(
        self, upload_id: str, offset: int, *, length: int | None = None, wait: float | None = None,
        eager: bool = True,
    ) -> PartWriter:
        """Take the upload's lease and return a writer positioned at `offset`.

        `length` sets a deferred length; `eager` False commits nothing before `finish`. Raises UploadLocked, UploadNotFound, UploadGone,
        UploadNotWritable, OffsetMismatch, InvalidLength, StorageFailure; on error the
        lease is released and nothing changed.
        """
        lease = await self.locker.acquire(upload_id, wait)
        try:
            record = await self.get(upload_id)
            if record.concat == "final":
                raise UploadNotWritable("a final concatenated upload takes no data")
            if record.offset != offset:
                raise OffsetMismatch(record.offset, offset)
            if record.status != ACTIVE:
                raise SizeExceeded("the upload is already complete")
            if length is not None:
                record = await self._set_length(record, length)
            limit = record.length if record.length is not None else self.limits.max_size
            writer = PartWriter(self, record, lease, limit, eager)
            await writer.open()
            return writer
        except BaseException:
            await self.locker.release(lease)
            raise

    async def _set_length(self, record: UploadRecord, length: int) -> UploadRecord:
        if record.length is not None:
            if record.length != length:
                raise InvalidLength("Upload-Length cannot be changed once set")
            return record
        if length < record.offset:
            raise InvalidLength("Upload-Length is smaller than the upload's offset")
        if length > self.limits.max_size:
            raise SizeExceeded(f"Upload-Length exceeds the maximum of {self.limits.max_size} bytes")
        return await self.repo.save(record.evolve(length=length))

    async def start_multipart(self, record: UploadRecord, head: bytes) -> UploadRecord:
        """Choose the final key from the file's first bytes and open the multipart upload."""
        detected = detect(head, _filename(record))
        key = self._key_for(record, detected)
        try:
            multipart_id = await self.store.create_multipart(key, detected.mime)
        except StoreError as exc:
            raise StorageFailure(f"could not start the multipart upload: {exc}") from exc
        try:
            return await self.repo.save(record.evolve(key=key, content_type=detected.mime, multipart_id=multipart_id))
        except VersionConflict:
            await self.store.abort_multipart(key, multipart_id)
            raise LeaseLost("the upload was changed by another writer") from None

    def _key_for(self, record: UploadRecord, detected) -> str:
        """Partial uploads are staging data; everything else is media of an allowed type."""
        if record.concat == "partial":
            return f"partials/{record.id}"
        if not self.type_allowed(detected):
            raise TypeNotAllowed(f"files of type {detected.mime} are not accepted")
        return object_key(record.id, detected)

    async def complete(self, record: UploadRecord, last: memoryview, hasher: Any = None) -> UploadRecord:
        """Store the last bytes, assemble the object and mark the upload complete.

        `hasher` (sha256 of all the file's bytes, `last` included; None if unknown here)
        gives the file's sha256. A file with no parts is all in `last`: hashed here.
        """
        if hasher is None and record.parts_count == 0 and self.limits.file_sha256:
            hasher = hashlib.sha256()
            await asyncio.get_running_loop().run_in_executor(None, hasher.update, last)
        try:
            if record.multipart_id is None:
                detected = detect(bytes(last[:SNIFF_BYTES]), _filename(record))
                record = record.evolve(key=self._key_for(record, detected), content_type=detected.mime)
                await self.store.put_object(record.key or "", last, detected.mime)
                parts_count = 0
            else:
                parts = [PartRef(p.number, p.etag, p.size) for p in await self.repo.committed_parts(record)]
                if len(last):
                    number = record.parts_count + 1
                    etag = await self.store.upload_part(record.key or "", record.multipart_id, number, last,
                                                        offset=record.parts_bytes)
                    parts.append(PartRef(number, etag, len(last)))
                await self._complete_multipart(record, parts)
                parts_count = len(parts)
        except StoreError as exc:
            raise StorageFailure(f"completing the upload failed: {exc}") from exc
        try:
            done = await self.repo.save(
                record.evolve(
                    status=COMPLETE,
                    parts_count=parts_count,
                    parts_bytes=record.length or 0,
                    tail_key=None,
                    tail_size=0,
                    completed_at=time.time(),
                    sha256=hasher.hexdigest() if hasher is not None else None,
                )
            )
        except VersionConflict:
            raise LeaseLost("the upload was changed by another writer") from None
        self.bytes_committed(len(last) - record.tail_size, done)
        self.emit("finished")
        self._hashes.pop(done.id, None)
        await self._cleanup_staging(done)
        await self._run_hooks(self.completion_hooks, done)
        return done

    async def _complete_multipart(self, record: UploadRecord, parts: Sequence[PartRef]) -> None:
        try:
            await self.store.complete_multipart(record.key or "", record.multipart_id or "", parts)
        except StoreError:
            # Completed before a crash kept us from recording it? Then the object is there, whole.
            if await self.store.object_size(record.key or "") == record.length:
                return
            raise

    async def _cleanup_staging(self, record: UploadRecord) -> None:
        try:
            await self.store.delete_prefix(f"tus/{record.id}/")
            await self.repo.forget_parts(record.id)
        except Exception:  # noqa: BLE001 - leftovers are harmless and swept on expiry
            log.warning("could not clean up staging objects", extra={"upload_id": record.id}, exc_info=True)

    async def _run_hooks(self, hooks: list[CompletionHook], record: UploadRecord) -> None:
        for hook in hooks:
            try:
                await hook(record)
            except Exception:  # noqa: BLE001 - a hook failure must not undo a stored upload
                log.exception("upload hook failed", extra={"upload_id": record.id})

    async def terminate(self, upload_id: str) -> None:
        """Delete the upload: its multipart upload, staged objects, object and state."""
        async with self.locker.hold(upload_id):
            record = await self.repo.get(upload_id)
            if record is None:
                raise UploadNotFound("no such upload")
            try:
                if record.status == ACTIVE and record.multipart_id and record.key:
                    await self.store.abort_multipart(record.key, record.multipart_id)
                await self.store.delete_prefix(f"tus/{record.id}/")
                if record.status == COMPLETE and record.key:
                    await self.store.delete_object(record.key)
            except StoreError as exc:
                raise StorageFailure(f"deleting the upload's data failed: {exc}") from exc
            await self.repo.delete(upload_id)
            self.emit("terminated")
            await self._run_hooks(self.deletion_hooks, record)

    async def expire_due(self, now: float | None = None) -> int:
        """Abort every expired active upload no one is writing; return how many."""
        now = time.time() if now is None else now
        expired = 0
        for candidate in await self.repo.expired(now):
            try:
                lease = await self.locker.acquire(candidate.id, wait=0)
            except UploadLocked:
                continue
            try:
                record = await self.repo.get(candidate.id)
                if record is None or record.status != ACTIVE or record.expires_at >= now:
                    continue
                if record.multipart_id and record.key:
                    await self.store.abort_multipart(record.key, record.multipart_id)
                await self.store.delete_prefix(f"tus/{record.id}/")
                await self.repo.forget_parts(record.id)
                await self.repo.save(
                    record.evolve(status=EXPIRED, multipart_id=None, tail_key=None, tail_size=0,
                                  expires_at=now + TOMBSTONE_SECONDS)
                )
                expired += 1
                self.emit("expired")
            except (StoreError, VersionConflict):
                log.warning("could not expire upload", extra={"upload_id": candidate.id}, exc_info=True)
            finally:
                await self.locker.release(lease)
        for partial in await self.repo.expired_partials(now):
            try:
                await self.store.delete_object(partial.key or "")
                await self.repo.delete(partial.id)
                expired += 1
            except StoreError:
                log.warning("could not delete expired partial upload", extra={"upload_id": partial.id}, exc_info=True)
        await self.repo.purge_tombstones(now)
        return expired

    def read(self, record: UploadRecord, start: int, end: int, chunk_size: int) -> AsyncIterator[bytes]:
        """Bytes start..end-1 of a finished upload."""
        if record.status != COMPLETE or not record.key:
            raise UploadNotWritable("the upload is not finished")
        return self.store.read_range(record.key, start, end, chunk_size)


def _filename(record: UploadRecord) -> str | None:
    for name in ("filename", "name"):
        value = record.metadata.get(name)
        if value:
            return value
    return None
