"""The upload engine: create, concatenate, open sessions, complete, terminate, expire.

It knows object stores only through their interface (and the abilities they
declare) and nothing of HTTP or of the metadata store's driver. State is
committed through a `CommitRepository` and bytes go to the store, so any
instance can continue any upload. The bytes of one request body go through an
`UploadSession` the engine opens and ends; the session never calls back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

from metadata.uploads import ACTIVE, COMPLETE, EXPIRED, UploadRecord
from streaming.buffers import BufferPool
from streaming.commits import CommitRepository
from streaming.concatenation import PlannedPart, plan
from streaming.digests import FileDigests
from streaming.errors import (
    ConcatenationError,
    InvalidLength,
    OffsetMismatch,
    SizeExceeded,
    LeaseLost,
    StorageFailure,
    TooManyUploads,
    UploadError,
    UploadGone,
    UploadLocked,
    UploadNotFound,
    UploadNotWritable,
)
from streaming.events import UploadEvents
from streaming.hooks import Announcer, CreationGate, NoAnnouncements, OpenGate
from streaming.locking import Lease, UploadLocker
from streaming.placement import PlacementPolicy, place_upload
from streaming.session import SessionLimits, UploadSession
from streaming.stores.base import MAX_PARTS, MIN_PART_SIZE, CopiesParts, ObjectStore, PartRef, StoreError, store_part

log = logging.getLogger(__name__)

MiB = 1024 * 1024
TOMBSTONE_SECONDS = 7 * 24 * 3600
JOIN_READ = 64 * 1024  # bytes per read when joining small partials into one part


@dataclass(frozen=True)
class UploadLimits:
    """Bounds of the upload machinery (from config)."""

    max_size: int
    part_size: int
    window: int
    expiration: int
    unfinished_per_owner: int = 100  # active uploads one owner may have
    concat_parts: int = 100  # partial uploads one final may join


def part_size_for(length: int | None, limits: UploadLimits) -> int:
    """The part size for an upload of `length` bytes (None: the largest allowed): the configured
    size, raised in whole MiB when the file would not fit in MAX_PARTS parts."""
    size = max(limits.part_size, MIN_PART_SIZE)
    needed = math.ceil((length if length is not None else limits.max_size) / MAX_PARTS)
    if needed > size:
        size = math.ceil(needed / MiB) * MiB
    return size


class UploadEngine:
    """Everything that happens to uploads, for the protocol layers to call."""

    def __init__(
        self,
        *,
        store: ObjectStore,
        commits: CommitRepository,
        locker: UploadLocker,
        buffers: BufferPool,
        placement: PlacementPolicy,
        events: UploadEvents,
        digests: FileDigests,
        limits: UploadLimits,
        gate: CreationGate | None = None,
        announcer: Announcer | None = None,
    ) -> None:
        """`gate` admits new uploads before anything is stored; `announcer` writes the events of
        creation, completion and termination durably with their commits."""
        self._store = store
        self._gate: CreationGate = gate or OpenGate()
        self._announcer: Announcer = announcer or NoAnnouncements()
        self._commits = commits
        self._locker = locker
        self._buffers = buffers
        self._placement = placement
        self._events = events
        self._digests = digests
        self.limits = limits
        self._sessions: set[UploadSession] = set()
        self._no_sessions = asyncio.Event()
        self._no_sessions.set()

    @property
    def concatenates(self) -> bool:
        """Whether final uploads can be made from partial ones (the store copies parts)."""
        return isinstance(self._store, CopiesParts)

    def part_size_for(self, length: int | None) -> int:
        """The part size for an upload of `length` bytes (unknown: the maximum size)."""
        return part_size_for(length, self.limits)

    def _new_record(self, owner: str | None, length: int | None, metadata: dict[str, str | None], *,
                    part_size: int, concat: str | None = None, concat_parts: tuple[str, ...] = ()) -> UploadRecord:
        now = time.time()
        return UploadRecord(
            id=uuid.uuid4().hex, owner=owner, length=length, part_size=part_size, created_at=now,
            expires_at=now + self.limits.expiration, metadata=metadata, concat=concat, concat_parts=concat_parts)

    def _session(self, record: UploadRecord, lease: Lease, limit: int, eager: bool = True) -> UploadSession:
        return UploadSession(
            record, SessionLimits(limit=limit, window=self.limits.window, expiration=self.limits.expiration, eager=eager),
            store=self._store, buffers=self._buffers, lease=lease, commits=self._commits,
            placement=self._placement, events=self._events, digests=self._digests)

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
        await self._check_unfinished(owner)
        record = await self._admitted(
            self._new_record(owner, length, metadata, part_size=self.part_size_for(length), concat=concat))
        async with self._announcer.announcing("post-create", record):
            record = await self._commits.insert(record)
        self._events.created(record)
        if length == 0:
            record = await self._complete(record, memoryview(b""), None)
        return record

    async def open_stream(self, owner: str | None, metadata: dict[str, str | None], max_size: int) -> UploadSession:
        """A new upload of unknown length and its session, for bodies that are one whole file.

        End it with `finish(session, end_of_file=True)`; on failure `abort` it and `terminate`
        the upload.
        """
        max_size = min(max_size, self.limits.max_size)
        await self._check_unfinished(owner)
        record = await self._admitted(self._new_record(owner, None, metadata, part_size=self.part_size_for(max_size)))
        async with self._announcer.announcing("post-create", record):
            record = await self._commits.insert(record)
        self._events.created(record)
        lease = await self._locker.acquire(record.id, 0)
        return await self._opened(self._session(record, lease, max_size), lease)

    async def _admitted(self, proposed: UploadRecord) -> UploadRecord:
        """`proposed` as the creation gate admits it (its metadata possibly replaced); the gate
        refuses by raising, before anything is stored."""
        metadata = await self._gate.admit(proposed)
        return proposed if metadata is None else proposed.evolve(metadata=dict(metadata))

    async def _check_unfinished(self, owner: str | None) -> None:
        """Raise TooManyUploads when `owner` has as many unfinished uploads as allowed."""
        cap = self.limits.unfinished_per_owner
        if await self._commits.count_unfinished(owner, cap) >= cap:
            raise TooManyUploads(f"you have {cap} unfinished uploads; finish or terminate some first")

    async def _opened(self, session: UploadSession, lease: Lease) -> UploadSession:
        try:
            await session.open()
        except BaseException:
            await lease.release()
            raise
        self._sessions.add(session)
        self._no_sessions.clear()
        return session

    async def sessions_closed(self, timeout: float) -> bool:
        """Wait until every session this engine opened has ended (at most `timeout` seconds);
        True when none is open."""
        try:
            await asyncio.wait_for(self._no_sessions.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def get(self, upload_id: str) -> UploadRecord:
        """The upload's committed state. Raises UploadNotFound or UploadGone."""
        record = await self._commits.get(upload_id)
        if record is None:
            raise UploadNotFound("no such upload")
        if record.status == EXPIRED:
            raise UploadGone("the upload expired")
        if record.status == ACTIVE and record.expires_at < time.time():
            raise UploadGone("the upload expired")
        return record

    async def open_session(
        self, upload_id: str, offset: int, *, length: int | None = None, eager: bool = True,
    ) -> UploadSession:
        """Take the upload's lease and return a session positioned at `offset`.

        `length` sets a deferred length; `eager` False commits nothing before `finish`.
        Raises UploadLocked, UploadNotFound, UploadGone, UploadNotWritable, OffsetMismatch,
        InvalidLength, SizeExceeded, StorageFailure, MetadataFailure; on error the lease
        is released and nothing changed.
        """
        lease = await self._locker.acquire(upload_id)
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
        except BaseException:
            await lease.release()
            raise
        return await self._opened(self._session(record, lease, limit, eager), lease)

    async def _set_length(self, record: UploadRecord, length: int) -> UploadRecord:
        if record.length is not None:
            if record.length != length:
                raise InvalidLength("Upload-Length cannot be changed once set")
            return record
        if length < record.offset:
            raise InvalidLength("Upload-Length is smaller than the upload's offset")
        if length > self.limits.max_size:
            raise SizeExceeded(f"Upload-Length exceeds the maximum of {self.limits.max_size} bytes")
        return await self._commits.save(record.evolve(length=length))

    async def finish(self, session: UploadSession, *, end_of_file: bool = False) -> UploadRecord:
        """Commit what `session` received and complete the upload if it is whole.

        With `end_of_file` the bytes written are the whole file. Safe to call more
        than once (later calls wait for the first). Always closes the session (buffers
        and lease given back). Returns the committed record; raises the session's
        failure after committing whatever was durable before it.
        """
        if session.ending is None:
            session.ending = asyncio.ensure_future(self._finish(session, end_of_file))
        return await asyncio.shield(session.ending)

    async def _finish(self, session: UploadSession, end_of_file: bool) -> UploadRecord:
        try:
            if await session.drain(end_of_file=end_of_file):
                return await self._complete(session.record, session.last_bytes, session.digest)
            return session.record
        finally:
            await session.close()
            self._sessions.discard(session)
            if not self._sessions:
                self._no_sessions.set()

    async def abort(self, session: UploadSession) -> None:
        """End `session` committing nothing more (parts it committed eagerly stay)."""
        session.fail(UploadError("aborted"))
        with contextlib.suppress(Exception):  # the abort itself is the outcome
            await self.finish(session)

    async def concatenate(
        self, owner: str | None, partial_ids: Sequence[str], metadata: dict[str, str | None], is_admin: bool = False
    ) -> UploadRecord:
        """Create a final upload from finished partial uploads of `owner`, assembled in the store.

        Each partial may be named once and joins one final only: it is claimed (a
        compare-and-swap) before any byte is copied, and released again if the final fails.
        Raises ConcatenationError when the store cannot concatenate, a partial is unknown,
        someone else's, not partial, not finished, named twice or already joined, or more
        partials are named than allowed; SizeExceeded past the maximum size.
        """
        if not self.concatenates:
            raise ConcatenationError("this store cannot concatenate uploads")
        if not partial_ids:
            raise ConcatenationError("Upload-Concat: final needs at least one partial upload")
        if len(partial_ids) > self.limits.concat_parts:
            raise ConcatenationError(f"a final upload joins at most {self.limits.concat_parts} partial uploads")
        if len(set(partial_ids)) != len(partial_ids):
            raise ConcatenationError("each partial upload may be named once")
        partials = []
        for upload_id in partial_ids:
            record = await self._commits.get(upload_id)
            if record is None or (record.owner != owner and not is_admin) or record.status == EXPIRED:
                raise ConcatenationError(f"no partial upload {upload_id}")
            if record.concat != "partial":
                raise ConcatenationError(f"upload {upload_id} is not a partial upload")
            if record.status != COMPLETE or not record.key:
                raise ConcatenationError(f"partial upload {upload_id} is not finished")
            if record.consumed_by is not None:
                raise ConcatenationError(f"partial upload {upload_id} was already joined into a final upload")
            partials.append(record)
        length = sum(record.length or 0 for record in partials)
        if length > self.limits.max_size:
            raise SizeExceeded(f"the concatenation exceeds the maximum of {self.limits.max_size} bytes")
        final = await self._admitted(self._new_record(
            owner, length, metadata, part_size=self.part_size_for(length), concat="final",
            concat_parts=tuple(record.id for record in partials)))
        async with self._announcer.announcing("post-create", final):
            final = await self._commits.insert(final)
        claimed: list[UploadRecord] = []
        try:
            for record in partials:
                try:
                    claimed.append(await self._commits.save(record.evolve(consumed_by=final.id)))
                except LeaseLost:
                    raise ConcatenationError(f"partial upload {record.id} was joined meanwhile") from None
            async with self._locker.hold(final.id, 0):
                return await self._assemble(final, claimed)
        except BaseException:
            for record in claimed:
                with contextlib.suppress(UploadError):
                    await self._commits.save(record.evolve(consumed_by=None))
            await self._commits.delete(final.id)
            raise

    async def _assemble(self, final: UploadRecord, partials: Sequence[UploadRecord]) -> UploadRecord:
        store = self._store
        assert isinstance(store, CopiesParts)
        sniff = self._placement.sniff_bytes
        head = b""
        for record in partials:
            if record.length:
                head = b"".join([chunk async for chunk in self._store.read_range(
                    record.key or "", 0, min(record.length, sniff), sniff)])
                break
        placement = place_upload(self._placement, final, head)
        key = placement.key
        try:
            multipart_id = await self._store.create_multipart(key, placement.mime)
            parts: list[PartRef] = []
            try:
                for planned in plan([(record.key or "", record.length or 0) for record in partials]):
                    if planned.copy:
                        piece = planned.pieces[0]
                        etag = await store.copy_part(key, multipart_id, planned.number, piece.key, piece.first, piece.last)
                    else:
                        etag = await self._join(key, multipart_id, planned, final.owner or "")
                    parts.append(PartRef(planned.number, etag, planned.size))
                if not parts:
                    etag = await self._store.upload_part(key, multipart_id, 1, memoryview(b""))
                    parts.append(PartRef(1, etag, 0))
                await self._store.complete_multipart(key, multipart_id, parts)
            except BaseException:
                await self._store.abort_multipart(key, multipart_id)
                raise
        except StoreError as exc:
            raise StorageFailure(f"concatenating the partial uploads failed: {exc}") from exc
        done = final.evolve(
            status=COMPLETE, key=key, content_type=placement.mime, category=placement.category,
            parts_count=len(parts), parts_bytes=final.length or 0, completed_at=time.time())
        async with self._announcer.announcing("post-finish", done):
            done = await self._commits.save(done)
        await self._events.finished(done)
        return done

    async def _join(self, key: str, multipart_id: str, planned: PlannedPart, owner: str) -> str:
        """Store part `planned` from the bytes of its pieces, joined in a buffer from the upload
        memory budget (so many concatenations at once wait for memory rather than exceed it)."""
        buffer = await self._buffers.acquire(planned.size, owner)
        try:
            filled = 0
            for piece in planned.pieces:
                # small reads: big transient chunks in the store's threads would grow the heap
                async for chunk in self._store.read_range(piece.key, piece.first, piece.last + 1, JOIN_READ):
                    buffer[filled : filled + len(chunk)] = chunk
                    filled += len(chunk)
            return await self._store.upload_part(key, multipart_id, planned.number, memoryview(buffer)[:filled])
        finally:
            await self._buffers.release(buffer)

    async def _complete(self, record: UploadRecord, last: memoryview, hasher: Any) -> UploadRecord:
        """Store the last bytes, assemble the object and mark the upload complete.

        `hasher` (sha256 of all the file's bytes, `last` included; None if unknown here)
        gives the file's sha256. A file with no parts is all in `last`: hashed here.
        """
        if hasher is None and record.parts_count == 0 and self._digests.enabled:
            hasher = hashlib.sha256()
            await asyncio.get_running_loop().run_in_executor(None, hasher.update, last)
        try:
            if record.multipart_id is None:
                placement = place_upload(self._placement, record, bytes(last[: self._placement.sniff_bytes]))
                record = record.evolve(key=placement.key, content_type=placement.mime, category=placement.category)
                await self._store.put_object(placement.key, last, placement.mime)
                parts_count = 0
            else:
                parts = [PartRef(p.number, p.etag, p.size) for p in await self._commits.parts(record)]
                if len(last):
                    number = record.parts_count + 1
                    try:
                        etag = await store_part(self._store, record.key or "", record.multipart_id, number, last,
                                                record.parts_bytes)
                    except StoreError:
                        # completed before a crash kept us from recording it: the multipart upload is gone
                        if await self._store.object_size(record.key or "") != record.length:
                            raise
                        etag = ""
                    parts.append(PartRef(number, etag, len(last)))
                await self._complete_multipart(record, parts)
                parts_count = len(parts)
        except StoreError as exc:
            raise StorageFailure(f"completing the upload failed: {exc}") from exc
        done = record.evolve(
            status=COMPLETE, parts_count=parts_count, parts_bytes=record.length or 0, tail_key=None,
            tail_size=0, completed_at=time.time(), sha256=hasher.hexdigest() if hasher is not None else None)
        async with self._announcer.announcing("post-finish", done):
            done = await self._commits.save(done)
        self._events.committed(done, done.offset - record.offset)
        self._digests.forget(done.id)
        await self._cleanup_staging(done)
        await self._events.finished(done)
        return done

    async def _complete_multipart(self, record: UploadRecord, parts: Sequence[PartRef]) -> None:
        try:
            await self._store.complete_multipart(record.key or "", record.multipart_id or "", parts)
        except StoreError:
            # Completed before a crash kept us from recording it? Then the object is there, whole.
            if await self._store.object_size(record.key or "") == record.length:
                return
            raise

    async def _cleanup_staging(self, record: UploadRecord) -> None:
        try:
            await self._store.delete_prefix(f"tus/{record.id}/")
            await self._commits.forget_parts(record.id)
        except (StoreError, UploadError):
            log.warning("could not clean up staging objects", extra={"upload_id": record.id}, exc_info=True)

    async def terminate(self, upload_id: str) -> None:
        """Delete the upload: its multipart upload, staged objects, object and state."""
        async with self._locker.hold(upload_id):
            record = await self._commits.get(upload_id)
            if record is None:
                raise UploadNotFound("no such upload")
            try:
                if record.status == ACTIVE and record.multipart_id and record.key:
                    await self._store.abort_multipart(record.key, record.multipart_id)
                await self._store.delete_prefix(f"tus/{record.id}/")
                if record.status == COMPLETE and record.key:
                    await self._store.delete_object(record.key)
            except StoreError as exc:
                raise StorageFailure(f"deleting the upload's data failed: {exc}") from exc
            async with self._announcer.announcing("post-terminate", record):
                await self._commits.delete(upload_id)
            self._digests.forget(upload_id)
            await self._events.terminated(record)

    async def expire_due(self, now: float | None = None) -> int:
        """Abort every expired active upload no one is writing; return how many."""
        now = time.time() if now is None else now
        expired = 0
        for candidate in await self._commits.expired(now):
            try:
                lease = await self._locker.acquire(candidate.id, wait=0)
            except UploadLocked:
                continue
            try:
                record = await self._commits.get(candidate.id)
                if record is None or record.status != ACTIVE or record.expires_at >= now:
                    continue
                if record.multipart_id and record.key:
                    await self._store.abort_multipart(record.key, record.multipart_id)
                await self._store.delete_prefix(f"tus/{record.id}/")
                await self._commits.forget_parts(record.id)
                record = await self._commits.save(record.evolve(
                    status=EXPIRED, multipart_id=None, tail_key=None, tail_size=0, expires_at=now + TOMBSTONE_SECONDS))
                expired += 1
                self._digests.forget(record.id)
                self._events.expired(record)
            except (StoreError, UploadError):
                log.warning("could not expire upload", extra={"upload_id": candidate.id}, exc_info=True)
            finally:
                await lease.release()
        for partial in await self._commits.expired_partials(now):
            try:
                await self._store.delete_object(partial.key or "")
                await self._commits.delete(partial.id)
                expired += 1
            except (StoreError, UploadError):
                log.warning("could not delete expired partial upload", extra={"upload_id": partial.id}, exc_info=True)
        await self._commits.purge_tombstones(now)
        return expired
