"""The bytes of one request body going into one upload.

An `UploadSession` fills a part buffer from the body. Each full part is sent
to the store while the next one fills, with at most `window` parts in flight
(a part is in flight, holding its buffer, until it is stored); each part is
committed as soon as it and every part before it are durable, so the committed
offset never counts a byte the store does not hold and a crash loses at most
the parts not yet durable. At most `window` more stored parts may wait for
their commit. When the body ends (or the client goes away) `drain` stores the
bytes too few for a part as the upload's tail object and counts them in the
offset; the next session starts from that tail. When the upload is whole,
`drain` leaves the last bytes in the buffer for the engine to complete with.

A session is given everything it works with; it knows no engine, no HTTP and
no particular store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from metadata.uploads import PartRecord, UploadRecord
from streaming.buffers import BufferPool
from streaming.commits import CommitRepository
from streaming.digests import FileDigests
from streaming.errors import LeaseLost, SizeExceeded, StorageFailure, UploadError
from streaming.events import UploadEvents
from streaming.locking import Lease
from streaming.placement import PlacementPolicy, place_upload
from streaming.stores.base import ObjectStore, StoreError, store_part

log = logging.getLogger(__name__)

def tail_key(upload_id: str) -> str:
    """A fresh key for an upload's tail object (never overwritten, so a stale writer cannot clobber it)."""
    return f"tus/{upload_id}/tail-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class SessionLimits:
    """How a session may use memory and how long an upload lives."""

    limit: int  # the upload's offset may not pass this (its length, or the largest size allowed)
    window: int  # parts in flight at most
    expiration: float  # seconds an upload lives after its last commit
    eager: bool = True  # commit each part once durable; False: only in `drain` (bodies that may yet be refused)


class UploadSession:
    """Writes one request body into an upload whose lease it holds.

    Open with `open`; feed with `write` (or `receive_buffer` + `take_received`);
    end with `drain` then `close`, or `fail` then `close` to commit nothing more.
    """

    def __init__(
        self,
        record: UploadRecord,
        limits: SessionLimits,
        *,
        store: ObjectStore,
        buffers: BufferPool,
        lease: Lease,
        commits: CommitRepository,
        placement: PlacementPolicy,
        events: UploadEvents,
        digests: FileDigests,
    ) -> None:
        self._record = record
        self._limits = limits
        self._store = store
        self._buffers = buffers
        self._lease = lease
        self._commits = commits
        self._placement = placement
        self._events = events
        self._digests = digests
        self._part_size = record.part_size
        self._owner = record.owner or ""
        # the part buffer is taken when body bytes arrive, not before; the stored tail's bytes
        # count as filled from the start and are read into the buffer when it is taken
        self._buffer: mmap.mmap | None = None
        self._fill = record.tail_size
        self._tail_pending = record.tail_size > 0
        self._durable_in_buffer = record.tail_size
        self._next_number = record.parts_count + 1
        # the task of each part sent and not yet committed; how many of them still hold their
        # buffer (not yet stored); set whenever one gives its buffer back or a task ends
        self._tasks: deque[asyncio.Future] = deque()
        self._storing = 0
        self._progress = asyncio.Event()
        self._failure: BaseException | None = None
        # once draining or closed the session takes no more bytes; writes between deciding to
        # send a part and handing it over are counted, so `drain` can wait for them to settle
        self._stopping = False
        self._handing_off = 0
        self._settled = asyncio.Event()
        self._opened = False
        self._closed = False
        self._deferred: list[PartRecord] = []
        self._deferred_digest: Any = None
        # sha256 of the parts sent so far (None when this instance lacks the earlier state)
        self._hasher = digests.resume(record)
        self.received = 0
        #: the engine's task that ends this session (set by the engine; makes ending idempotent)
        self.ending: asyncio.Future | None = None
        lease.on_lost(lambda: self.fail(LeaseLost("the upload's lease was lost")))

    # -- state ----------------------------------------------------------------------

    @property
    def record(self) -> UploadRecord:
        """The upload as last committed by this session."""
        return self._record

    @property
    def position(self) -> int:
        """Offset in the upload just past the last byte accepted."""
        return self._record.parts_bytes + self._in_flight_bytes + self._fill

    @property
    def _in_flight_bytes(self) -> int:
        return (self._next_number - 1 - self._record.parts_count) * self._part_size

    @property
    def last_bytes(self) -> memoryview:
        """The bytes accepted after the last part sent (the whole rest of the file once `drain`
        said the upload is whole)."""
        if self._buffer is None:
            return memoryview(b"")
        return memoryview(self._buffer)[: self._fill]

    @property
    def digest(self) -> Any:
        """The sha256 of every byte of the file accepted so far, or None when unknown here."""
        return self._hasher

    @property
    def failure(self) -> BaseException | None:
        """Why the session stopped taking bytes, if it did."""
        return self._failure

    def fail(self, exc: BaseException) -> None:
        """Stop: later writes raise `exc` (the first failure wins); `drain` commits nothing more."""
        if self._failure is None:
            self._failure = exc

    # -- opening ----------------------------------------------------------------------

    async def open(self) -> None:
        """Start writing (no memory is taken until body bytes arrive)."""
        self._opened = True
        self._events.writers(1)

    async def _ensure_buffer(self, *, taking: bool = True) -> mmap.mmap:
        """The part buffer, taken now if there is none (with the stored tail read into it).

        Raises MemoryBusy when no buffer can be had in time, StorageFailure when the tail
        cannot be read (the buffer is given back then), and, when `taking` bytes, the
        session's failure or UploadError once it takes no more.
        """
        if self._buffer is not None:
            return self._buffer
        if taking:
            self._check_taking()
        buffer = await self._buffers.acquire(self._part_size, self._owner)
        if self._closed:  # ended while waiting for memory: the buffer goes straight back
            await self._buffers.release(buffer)
            raise UploadError("the session is closed")
        self._buffer = buffer
        if self._tail_pending:
            record = self._record
            try:
                tail = await self._store.get_object(record.tail_key or "")
            except StoreError as exc:
                await self._release_buffer()
                raise StorageFailure(f"could not read the upload's stored tail: {exc}") from exc
            if len(tail) != record.tail_size:
                await self._release_buffer()
                raise StorageFailure("the upload's stored tail has the wrong size")
            buffer[: len(tail)] = tail
            self._tail_pending = False
            if self._hasher is not None:  # up to a part: off the event loop
                await asyncio.get_running_loop().run_in_executor(None, self._hasher.update, tail)
        return buffer

    # -- the body -----------------------------------------------------------------------

    async def write(self, chunk: bytes | memoryview) -> None:
        """Accept the next bytes of the body; waits while the window or memory budget is full.

        Raises SizeExceeded (nothing of `chunk` accepted) when the chunk would pass the
        upload's limit, MemoryBusy when no part buffer could be had in time, and the
        session's failure if it failed.
        """
        self._check_taking()
        if self.position + len(chunk) > self._limits.limit:
            raise SizeExceeded("the body is longer than the upload's remaining length")
        view = memoryview(chunk)
        while view:
            buffer = await self._ensure_buffer()
            n = min(len(view), self._part_size - self._fill)
            buffer[self._fill : self._fill + n] = view[:n]
            view = view[n:]
            await self.take_received(n)

    async def receive_buffer(self, limit: int) -> memoryview | None:
        """Where up to `limit` next body bytes may be received in place, or None.

        The view is the free end of the part buffer (taken now if needed: see `write` for
        what that may raise), no longer than the upload still accepts. None when the
        session failed or the upload has no room left: then `write` must be used, which
        refuses what does not fit. Call `take_received` next.
        """
        if self._failure is not None or self._stopping:
            return None
        room = min(limit, self._part_size - self._fill, self._limits.limit - self.position)
        if room <= 0:
            return None
        buffer = await self._ensure_buffer()
        return memoryview(buffer)[self._fill : self._fill + room]

    async def take_received(self, count: int) -> None:
        """Count `count` bytes just placed at the free end of the part buffer (by `write`, or
        received into the view of `receive_buffer`); send the part once it is full.

        The bytes go into the file's running sha256 here, while they are still in the CPU's
        cache: cheaper than hashing whole parts later in another thread.
        """
        if self._hasher is not None and count:
            self._hasher.update(memoryview(self._buffer)[self._fill : self._fill + count])
        self._fill += count
        self.received += count
        if self._fill == self._part_size:
            await self._send_part()

    # -- parts ------------------------------------------------------------------------

    async def _start_multipart(self) -> None:
        """Choose the object's key from the file's first bytes and open its multipart upload."""
        assert self._buffer is not None
        record = self._record
        placement = place_upload(self._placement, record, bytes(self._buffer[: self._placement.sniff_bytes]))
        try:
            multipart_id = await self._store.create_multipart(placement.key, placement.mime)
        except StoreError as exc:
            raise StorageFailure(f"could not start the multipart upload: {exc}") from exc
        try:
            self._record = await self._commits.save(record.evolve(
                key=placement.key, content_type=placement.mime, category=placement.category,
                multipart_id=multipart_id))
        except LeaseLost:
            with contextlib.suppress(StoreError):
                await self._store.abort_multipart(placement.key, multipart_id)
            raise

    def _check_taking(self) -> None:
        """Raise unless the session still takes bytes (not failed, not draining or closed)."""
        if self._failure is not None:
            raise self._failure
        if self._stopping:
            raise UploadError("the session no longer takes bytes")

    async def _send_part(self) -> None:
        """Hand the full part buffer to a task that stores and commits it (the next part's
        buffer is taken when its first bytes arrive).

        Stops (raising, with the full buffer kept) when the session fails or starts draining
        while it waits for the multipart upload or for room in the window.
        """
        self._handing_off += 1
        self._settled.clear()
        try:
            self._check_taking()
            if self._record.multipart_id is None:
                await self._start_multipart()
            window = self._limits.window
            while self._storing >= window or len(self._tasks) >= 2 * window:
                self._progress.clear()
                await self._progress.wait()
                self._check_taking()
            self._check_taking()
            buffer, size = self._buffer, self._fill
            assert buffer is not None
            self._buffer, self._fill, self._durable_in_buffer = None, 0, 0
            number = self._next_number
            self._next_number += 1
            previous = self._tasks[-1] if self._tasks else None
            # the sha256 of parts 1..number, kept once this part is committed
            snapshot = self._hasher.copy() if self._hasher is not None else None
            self._storing += 1
            task = asyncio.ensure_future(self._store_and_commit(number, buffer, size, snapshot, previous))
            task.add_done_callback(self._part_done)
            self._tasks.append(task)
        finally:
            self._handing_off -= 1
            if not self._handing_off:
                self._settled.set()

    def _part_done(self, task: asyncio.Future) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            self.fail(task.exception())  # type: ignore[arg-type]
        self._progress.set()

    async def _store_and_commit(self, number: int, buffer: mmap.mmap, size: int, snapshot: Any,
                                previous: asyncio.Future | None) -> None:
        """Store part `number`, give its buffer back, and commit the part once the part before
        it is committed; `snapshot` is the sha256 of parts 1..number."""
        record = self._record
        self._events.parts_storing(1)
        try:
            try:
                etag = await store_part(self._store, record.key or "", record.multipart_id or "", number,
                                        memoryview(buffer)[:size], (number - 1) * self._part_size)
            except StoreError as exc:
                raise StorageFailure(f"storing part {number} failed: {exc}") from exc
            finally:
                self._events.parts_storing(-1)
        finally:
            await self._buffers.release(buffer)
            self._storing -= 1
            self._progress.set()
        if previous is not None:
            await previous  # raises the earlier part's failure: nothing after it is committed
        if self._lease.lost.is_set():
            raise LeaseLost("the upload's lease was lost")
        part = PartRecord(number, etag, size)
        if self._limits.eager:
            await self._commit_part(part)
            self._digests.keep(self._record, snapshot)
        else:
            self._deferred.append(part)
            self._deferred_digest = snapshot

    async def _commit_part(self, part: PartRecord) -> None:
        before = self._record
        self._record = await self._commits.commit_part(before, part, self._new_expiry())
        # the part may hold bytes already counted as the stored tail: count only the growth
        self._events.committed(self._record, self._record.offset - before.offset)
        old_tail = before.tail_key
        if old_tail:
            await self._discard(old_tail)

    # -- ending -----------------------------------------------------------------------

    async def drain(self, *, end_of_file: bool = False) -> bool:
        """Wait for the parts in flight and commit them; then, unless the upload is whole,
        store and commit the tail. True when the upload is whole: its last bytes are in
        `last_bytes`, uncommitted, for the engine to complete with.

        From here on the session takes no more bytes: a write still waiting (for the
        window, or for the multipart upload) stops without handing its part over. With
        `end_of_file` the bytes written so far are the whole file: a deferred length is
        set to them. Raises the session's failure after committing whatever was durable
        before it (only with `eager`).
        """
        self._stopping = True
        self._progress.set()  # a write waiting for the window wakes and stops
        while self._handing_off:
            await self._settled.wait()
        while self._tasks:
            await asyncio.wait(list(self._tasks))
        if self._failure is not None:
            raise self._failure
        for part in self._deferred:
            await self._commit_part(part)
        if self._deferred:
            self._digests.keep(self._record, self._deferred_digest)
        self._deferred.clear()
        record = self._record
        end = record.parts_bytes + self._fill
        if end_of_file and record.length is None:
            record = self._record = await self._commits.save(record.evolve(length=end))
        if record.length is not None and end == record.length:
            if self._tail_pending:  # the stored tail is all that is left: its bytes complete the file
                await self._ensure_buffer(taking=False)
            return True
        if self._fill > self._durable_in_buffer:
            await self._store_tail()
        return False

    async def _store_tail(self) -> None:
        assert self._buffer is not None
        record = self._record
        key = tail_key(record.id)
        try:
            await self._store.put_object(key, memoryview(self._buffer)[: self._fill])
        except StoreError as exc:
            raise StorageFailure(f"storing the upload's tail failed: {exc}") from exc
        if self._lease.lost.is_set():
            await self._discard(key)
            raise LeaseLost("the upload's lease was lost")
        try:
            self._record = await self._commits.commit_tail(record, key, self._fill, self._new_expiry())
        except LeaseLost:
            await self._discard(key)
            raise
        self._events.committed(self._record, self._record.offset - record.offset)
        self._durable_in_buffer = self._fill
        if record.tail_key and record.tail_key != key:
            await self._discard(record.tail_key)

    async def close(self) -> None:
        """Give the buffers and the lease back (idempotent); waits for parts still in flight."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        self._progress.set()
        if self._tasks:
            self.fail(UploadError("closed"))
            await asyncio.wait(list(self._tasks))
        await self._release_buffer()
        await self._lease.release()
        if self._opened:
            self._opened = False
            self._events.writers(-1)

    # -- helpers ----------------------------------------------------------------------

    def _new_expiry(self) -> float:
        return time.time() + self._limits.expiration

    async def _discard(self, key: str) -> None:
        """Delete an object nothing refers to any more; a failure leaves it for the expiry sweep."""
        try:
            await self._store.delete_object(key)
        except StoreError:
            log.warning("could not delete an unreferenced object", extra={"key": key}, exc_info=True)

    async def _release_buffer(self) -> None:
        buffer, self._buffer = self._buffer, None
        if buffer is not None:
            await self._buffers.release(buffer)
