"""The bytes of one PATCH going into one upload.

A `PartWriter` fills a part buffer from the request body. Each full part is
sent to the store while the next one fills, with at most `window` parts in
flight (a part is in flight, holding its buffer, until it is stored);
each part is committed to MongoDB as soon as it and every part before it are
durable, so the stored offset never counts a byte the store does not hold and a
crash loses at most the parts not yet durable. At most `window` more stored
parts may wait for their commit. When the body ends
(or the client goes away) the bytes too few for a part are stored as the
upload's tail object and counted in the offset; the next writer starts from
that tail. When the last byte arrives the upload is completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

from metadata.uploads import PartRecord, UploadRecord, VersionConflict
from streaming.errors import LeaseLost, SizeExceeded, StorageFailure, UploadError
from streaming.locking import Lease
from streaming.stores.base import StoreError

if TYPE_CHECKING:
    from streaming.uploads import UploadService

log = logging.getLogger(__name__)


def tail_key(upload_id: str) -> str:
    """A fresh key for an upload's tail object (never overwritten, so a stale writer cannot clobber it)."""
    return f"tus/{upload_id}/tail-{uuid.uuid4().hex}"


class PartWriter:
    """Writes one request body into an upload. Create with `UploadService.open_writer`."""

    def __init__(self, service: "UploadService", record: UploadRecord, lease: Lease, limit: int,
                 eager: bool = True) -> None:
        self._service = service
        self._record = record
        self._lease = lease
        self._limit = limit
        self._part_size = record.part_size
        self._buffer: mmap.mmap | None = None
        self._fill = 0
        self._durable_in_buffer = record.tail_size
        self._next_number = record.parts_count + 1
        # the task of each part sent and not yet committed; how many of them still hold their
        # buffer (not yet stored); set whenever one gives its buffer back or a task ends
        self._tasks: deque[asyncio.Future] = deque()
        self._storing = 0
        self._progress = asyncio.Event()
        self._failure: BaseException | None = None
        self._finished: asyncio.Future | None = None
        self._opened = False
        self.received = 0
        # eager: commit each part once durable; otherwise only in finish() (for bodies that
        # may still be rejected as a whole: checksums, bodies of unknown length)
        self._eager = eager
        self._deferred: list[PartRecord] = []
        # sha256 of the parts sent so far (None when this instance lacks the earlier state)
        self._hasher = service.hash_state(record)
        lease.on_lost(lambda: self._fail(LeaseLost("the upload's lease was lost")))

    @property
    def record(self) -> UploadRecord:
        """The upload as last committed by this writer."""
        return self._record

    @property
    def position(self) -> int:
        """Offset in the upload just past the last byte accepted by `write`."""
        return self._record.parts_bytes + self._in_flight_bytes + self._fill

    @property
    def _in_flight_bytes(self) -> int:
        return (self._next_number - 1 - self._record.parts_count) * self._part_size

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc

    async def open(self) -> None:
        """Take a part buffer and load the upload's tail into it."""
        self._buffer = await self._service.buffers.acquire(self._part_size)
        record = self._record
        if record.tail_size:
            try:
                tail = await self._service.store.get_object(record.tail_key or "")
            except StoreError as exc:
                await self._release_buffer()
                raise StorageFailure(f"could not read the upload's stored tail: {exc}") from exc
            if len(tail) != record.tail_size:
                await self._release_buffer()
                raise StorageFailure("the upload's stored tail has the wrong size")
            self._buffer[: len(tail)] = tail
            self._fill = len(tail)
            if self._hasher is not None:  # up to a part: off the event loop
                await asyncio.get_running_loop().run_in_executor(None, self._hasher.update, tail)
        self._opened = True
        self._service.count(self._service.writer_observers, 1)

    async def write(self, chunk: bytes) -> None:
        """Accept the next bytes of the body; waits while the window or memory budget is full.

        Raises SizeExceeded (nothing of `chunk` accepted) when the chunk would pass the
        upload's length or the server's maximum, and the writer's failure if it failed.
        """
        if self._failure is not None:
            raise self._failure
        if self.position + len(chunk) > self._limit:
            raise SizeExceeded("the body is longer than the upload's remaining length")
        view = memoryview(chunk)
        while view:
            assert self._buffer is not None
            n = min(len(view), self._part_size - self._fill)
            self._buffer[self._fill : self._fill + n] = view[:n]
            view = view[n:]
            await self.take_received(n)

    def receive_buffer(self, limit: int) -> memoryview | None:
        """Where up to `limit` next body bytes may be received in place, or None.

        The view is the free end of the part buffer, no longer than the upload still
        accepts. None when the writer failed or the upload has no room left: then
        `write` must be used, which refuses what does not fit. Call `take_received` next.
        """
        if self._failure is not None or self._buffer is None:
            return None
        room = min(limit, self._part_size - self._fill, self._limit - self.position)
        if room <= 0:
            return None
        return memoryview(self._buffer)[self._fill : self._fill + room]

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

    async def _send_part(self) -> None:
        if self._record.multipart_id is None:
            self._record = await self._service.start_multipart(self._record, bytes(self._buffer[:4096]))
        window = self._service.window
        while self._storing >= window or len(self._tasks) >= 2 * window:
            self._progress.clear()
            await self._progress.wait()
            if self._failure is not None:
                raise self._failure
        buffer, size = self._buffer, self._fill
        self._buffer, self._fill, self._durable_in_buffer = None, 0, 0
        number = self._next_number
        self._next_number += 1
        previous = self._tasks[-1] if self._tasks else None
        # the sha256 of parts 1..number, kept once this part is committed
        snapshot = self._hasher.copy() if self._hasher is not None else None
        self._storing += 1
        task = asyncio.ensure_future(self._upload_and_commit(number, buffer, size, snapshot, previous))
        task.add_done_callback(self._part_done)
        self._tasks.append(task)
        self._buffer = await self._service.buffers.acquire(self._part_size)

    def _part_done(self, task: asyncio.Future) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            self._fail(task.exception())
        self._progress.set()

    async def _upload_and_commit(self, number: int, buffer: mmap.mmap, size: int, snapshot: Any,
                                 previous: asyncio.Future | None) -> None:
        """Store part `number`, give its buffer back, and commit the part once the part before
        it is committed; `snapshot` is the sha256 of parts 1..number."""
        record = self._record
        self._service.count(self._service.part_observers, 1)
        try:
            try:
                etag = await self._service.store.upload_part(record.key or "", record.multipart_id or "", number,
                                                             memoryview(buffer)[:size], offset=(number - 1) * self._part_size)
            except StoreError as exc:
                raise StorageFailure(f"storing part {number} failed: {exc}") from exc
            finally:
                self._service.count(self._service.part_observers, -1)
        finally:
            await self._service.buffers.release(buffer)
            self._storing -= 1
            self._progress.set()
        if previous is not None:
            await previous  # raises the earlier part's failure: nothing after it is committed
        if self._lease.lost.is_set():
            raise LeaseLost("the upload's lease was lost")
        part = PartRecord(number, etag, size)
        if self._eager:
            await self._commit_part(part)
            self._service.keep_hash_state(self._record, snapshot)
        else:
            self._deferred.append(part)
            self._deferred_hash = snapshot

    async def _commit_part(self, part: PartRecord) -> None:
        record = self._record
        old_tail = record.tail_key
        await self._service.repo.save_part(record.id, part)
        try:
            self._record = await self._service.repo.save(
                record.evolve(
                    parts_count=part.number,
                    parts_bytes=record.parts_bytes + part.size,
                    tail_key=None,
                    tail_size=0,
                    expires_at=self._service.new_expiry(),
                )
            )
        except VersionConflict:
            raise LeaseLost("the upload was changed by another writer") from None
        self._service.bytes_committed(part.size, self._record)
        if old_tail:
            await self._service.discard_object(old_tail)

    async def finish(self, *, end_of_file: bool = False) -> UploadRecord:
        """Wait for the parts in flight, store the tail, complete the upload if it is whole.

        With `end_of_file` the bytes written so far are the whole file: a deferred
        length is set to them and the upload completes.

        Safe to call more than once (later calls wait for the first). Always gives
        the lease and the buffers back. Returns the committed record; raises the
        writer's failure after committing whatever was durable before it.
        """
        if self._finished is None:
            self._finished = asyncio.ensure_future(self._finish(end_of_file))
        return await asyncio.shield(self._finished)

    async def _finish(self, end_of_file: bool) -> UploadRecord:
        try:
            if self._tasks:
                await asyncio.wait(list(self._tasks))
            if self._failure is not None:
                raise self._failure
            for part in self._deferred:
                await self._commit_part(part)
            if self._deferred:
                self._service.keep_hash_state(self._record, getattr(self, "_deferred_hash", None))
            self._deferred.clear()
            record = self._record
            end = record.parts_bytes + self._fill
            if end_of_file and record.length is None:
                try:
                    record = self._record = await self._service.repo.save(record.evolve(length=end))
                except VersionConflict:
                    raise LeaseLost("the upload was changed by another writer") from None
            if record.length is not None and end == record.length:
                assert self._buffer is not None
                self._record = await self._service.complete(
                    record, memoryview(self._buffer)[: self._fill], self._hasher)
            elif self._fill > self._durable_in_buffer:
                await self._store_tail()
            return self._record
        finally:
            await self._release_buffer()
            await self._service.locker.release(self._lease)
            if self._opened:
                self._opened = False
                self._service.count(self._service.writer_observers, -1)

    async def abort(self) -> None:
        """Stop without committing anything more (parts committed eagerly before stay)."""
        self._fail(UploadError("aborted"))
        with contextlib.suppress(BaseException):
            await self.finish()

    async def _store_tail(self) -> None:
        assert self._buffer is not None
        record = self._record
        key = tail_key(record.id)
        try:
            await self._service.store.put_object(key, memoryview(self._buffer)[: self._fill])
        except StoreError as exc:
            raise StorageFailure(f"storing the upload's tail failed: {exc}") from exc
        if self._lease.lost.is_set():
            await self._service.discard_object(key)
            raise LeaseLost("the upload's lease was lost")
        try:
            self._record = await self._service.repo.save(
                record.evolve(tail_key=key, tail_size=self._fill, expires_at=self._service.new_expiry())
            )
        except VersionConflict:
            await self._service.discard_object(key)
            raise LeaseLost("the upload was changed by another writer") from None
        self._service.bytes_committed(self._fill - self._durable_in_buffer, self._record)
        self._durable_in_buffer = self._fill
        if record.tail_key and record.tail_key != key:
            await self._service.discard_object(record.tail_key)

    async def _release_buffer(self) -> None:
        buffer, self._buffer = self._buffer, None
        if buffer is not None:
            await self._service.buffers.release(buffer)
