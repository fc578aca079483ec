"""The upload session, and the engine's finish/complete path on top of it, against in-memory fakes.

As tusd tests its handler against a fake store: the real `UploadSession`,
`UploadEngine`, `CommitRepository`, `UploadLocker`, `BufferPool` and `FileDigests`
run on the fakes of `tests/unit/fakes.py` (no sockets, no MongoDB, no threads
beyond the event loop's). Assertions are on bytes, offsets and committed state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from typing import Callable, Sequence

import pytest

from metadata.uploads import ACTIVE, COMPLETE, UploadRecord
from streaming.buffers import BufferPool
from streaming.commits import CommitRepository
from streaming.digests import FileDigests
from streaming.engine import UploadEngine, UploadLimits
from streaming.errors import LeaseLost, SizeExceeded, StorageFailure, UploadError
from streaming.locking import UploadLocker
from streaming.session import UploadSession
from streaming.stores.base import MIN_PART_SIZE, StoreError
from tests.unit.fakes import (
    FakePlacement,
    InPlaceMemoryStore,
    MemoryLeaseRepository,
    MemoryStore,
    MemoryUploadRepository,
    RecordingEvents,
    sha256_hex,
)

PS = MIN_PART_SIZE  # the engine's part size for every upload here
DATA = random.Random(20240229).randbytes(4 * PS + 4099)  # a file of four parts and a bit
ODD_CHUNKS = (65_537, 3, 1_048_573, PS + 11, 7_919, 2 * PS + 1)


class Harness:
    """An engine wired to fakes, and what the tests look at."""

    def __init__(self, *, window: int = 2, store: MemoryStore | None = None, ttl: float = 60.0) -> None:
        self.store = store if store is not None else MemoryStore()
        self.uploads = MemoryUploadRepository()
        self.leases = MemoryLeaseRepository()
        self.commits = CommitRepository(self.uploads)
        self.locker = UploadLocker(self.leases, ttl=ttl, wait=0, poll=0.001)
        self.buffers = BufferPool(64 * 1024 * 1024)
        self.events = RecordingEvents()
        self.digests = FileDigests()
        self.placement = FakePlacement()
        self.engine = UploadEngine(
            store=self.store, commits=self.commits, locker=self.locker, buffers=self.buffers,
            placement=self.placement, events=self.events, digests=self.digests,
            limits=UploadLimits(max_size=1024**3, part_size=PS, window=window, expiration=3600))

    async def create(self, length: int | None = len(DATA)) -> UploadRecord:
        record = await self.engine.create(None, length, {"filename": "file.bin"})
        assert record.part_size == PS
        return record

    async def open(self, record: UploadRecord, offset: int, **options) -> UploadSession:
        return await self.engine.open_session(record.id, offset, **options)

    def committed(self, record: UploadRecord) -> UploadRecord:
        """The upload as committed in the metadata store right now."""
        return self.uploads.stored(record.id)

    def object_bytes(self, record: UploadRecord) -> bytes:
        return self.store.objects[record.key or ""][0]

    def staged(self, record: UploadRecord) -> list[str]:
        """The upload's staging objects (tails) in the store."""
        return self.store.keys(f"tus/{record.id}/")

    def part_records(self, record: UploadRecord) -> list[int]:
        return sorted(number for upload_id, number in self.uploads.part_documents if upload_id == record.id)

    async def upload_rest(self, record: UploadRecord, data: bytes = DATA) -> UploadRecord:
        """Continue `record` from its committed offset to the end of `data` in one session."""
        offset = self.committed(record).offset
        session = await self.open(record, offset)
        await write_chunks(session, memoryview(data)[offset:])
        return await self.engine.finish(session)

    async def assert_idle(self) -> None:
        """No buffer handed out, no lease held, no task but the test's own left."""
        assert self.buffers.in_use == 0
        assert self.leases.leases == {}
        assert await other_tasks() == []


async def other_tasks() -> list[asyncio.Task]:
    """The tasks still pending apart from the current one, after letting the loop run."""
    for _ in range(20):
        await asyncio.sleep(0)
    return [task for task in asyncio.all_tasks() if task is not asyncio.current_task() and not task.done()]


async def settle(rounds: int = 200) -> None:
    """Let the event loop run `rounds` turns (enough for any step of the fakes to finish)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def until(predicate: Callable[[], bool], rounds: int = 2000) -> None:
    """Let the event loop run until `predicate` holds (by loop turns, not by time)."""
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("the awaited condition never held")


async def eventually(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait on the clock (for the lease keeper's timer) until `predicate` holds."""
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.002)
    await asyncio.wait_for(poll(), timeout)


async def write_chunks(session: UploadSession, data: bytes | memoryview, sizes: Sequence[int] = ODD_CHUNKS) -> None:
    """Feed `data` to `session.write` in chunks of the sizes in turn."""
    data = memoryview(data)  # slices without copies
    position, turn = 0, 0
    while position < len(data):
        size = sizes[turn % len(sizes)]
        await session.write(data[position : position + size])
        position += size
        turn += 1


async def receive_chunks(session: UploadSession, data: bytes | memoryview, sizes: Sequence[int] = ODD_CHUNKS) -> None:
    """Feed `data` through `receive_buffer` + `take_received`, as the in-place body reader does."""
    data = memoryview(data)
    position, turn = 0, 0
    while position < len(data):
        view = await session.receive_buffer(sizes[turn % len(sizes)])
        assert view is not None and len(view) > 0
        count = min(len(view), len(data) - position)
        view[:count] = data[position : position + count]
        await session.take_received(count)
        position += count
        turn += 1


@functools.lru_cache(maxsize=None)
def _prefix_digest(length: int) -> str:
    return sha256_hex(DATA[:length])


def digest_of(data: bytes) -> str:
    """sha256 of `data` (remembered for the prefixes of DATA the tests use over and over)."""
    return _prefix_digest(len(data)) if DATA.startswith(data) else sha256_hex(data)


def assert_complete(h: Harness, record: UploadRecord, data: bytes) -> None:
    """The upload is complete, its object is `data`, its sha256 is data's, nothing is staged."""
    committed = h.committed(record)
    assert committed.status == COMPLETE
    assert committed.offset == committed.parts_bytes == committed.length == len(data)
    assert committed.tail_key is None and committed.tail_size == 0
    assert h.object_bytes(committed) == data
    assert committed.sha256 == digest_of(data)
    assert h.staged(committed) == []


def assert_durable_prefix(h: Harness, record: UploadRecord, data: bytes = DATA) -> None:
    """The committed offset counts only bytes the store holds at their place: the committed parts
    (by their recorded tokens) and the tail object hold exactly data[:offset]."""
    committed = h.committed(record)
    if committed.parts_count:
        upload = h.store.uploads[committed.multipart_id or ""]
        held = b""
        for number in range(1, committed.parts_count + 1):
            part = h.uploads.part_documents[(record.id, number)]
            token, stored = upload.parts[number]
            assert token == part.etag and len(stored) == part.size == PS, f"part {number} is not what was recorded"
            held += stored
        assert held == data[: committed.parts_bytes], "the committed parts do not hold the file's first bytes"
    assert committed.parts_bytes == committed.parts_count * PS
    if committed.tail_size:
        tail = h.store.objects[committed.tail_key or ""][0]
        assert tail == data[committed.parts_bytes : committed.offset], (
            f"the tail counted at offsets {committed.parts_bytes}..{committed.offset} holds other bytes of the file")
        assert h.staged(record) == [committed.tail_key]
    else:
        assert committed.tail_key is None
        assert h.staged(record) == []


# -- 1. part boundaries ---------------------------------------------------------------------


@pytest.mark.parametrize("length", [PS, PS + 1, 2 * PS - 1, 3 * PS, len(DATA)],
                         ids=["one-part", "part+1", "2parts-1", "3parts", "4parts+4099"])
@pytest.mark.parametrize("feed", [write_chunks, receive_chunks], ids=["write", "receive"])
async def test_body_of_any_length_completes_byte_for_byte(length, feed):
    """Whatever the body's length against the part size and whatever the chunking (write or
    receive_buffer/take_received), finish completes the upload: every part but the last is
    exactly one part size, the object is the bytes sent, its sha256 is theirs."""
    h = Harness()
    data = DATA[:length]
    record = await h.create(length)
    session = await h.open(record, 0)
    await feed(session, data)
    assert session.position == length == session.received
    done = await h.engine.finish(session)

    assert_complete(h, record, data)
    assert done == h.committed(record)
    assert done.parts_count == -(-length // PS)
    [complete] = h.store.called("complete_multipart")
    sizes = [part.size for part in complete[3]]
    assert sizes == [PS] * (length // PS) + ([length % PS] if length % PS else [])
    await h.assert_idle()


@pytest.mark.parametrize("feed", [write_chunks, receive_chunks], ids=["write", "receive"])
async def test_body_ending_inside_an_upload_commits_whole_parts_and_a_tail(feed):
    """A body ending mid-upload leaves the committed record at exactly the bytes sent:
    whole parts counted as parts, the rest as the tail object."""
    h = Harness()
    record = await h.create()
    session = await h.open(record, 0)
    await feed(session, DATA[: 2 * PS + 777])
    done = await h.engine.finish(session)

    assert done.status == ACTIVE
    assert (done.parts_count, done.parts_bytes, done.tail_size) == (2, 2 * PS, 777)
    assert done.offset == 2 * PS + 777
    assert_durable_prefix(h, record)
    await h.assert_idle()


async def test_body_ending_on_a_part_boundary_leaves_no_tail():
    """A body that ends exactly on a part boundary is all in parts: no tail object is written."""
    h = Harness()
    record = await h.create()
    session = await h.open(record, 0)
    await write_chunks(session, DATA[: 2 * PS])
    done = await h.engine.finish(session)

    assert (done.parts_count, done.parts_bytes, done.tail_key, done.tail_size) == (2, 2 * PS, None, 0)
    assert h.store.called("put_object") == []
    assert_durable_prefix(h, record)
    await h.assert_idle()


async def test_store_writing_parts_in_place_is_told_each_parts_offset():
    """With a store that WritesPartsInPlace every part (the last one, stored by the engine, too)
    is declared at the offset of its first byte in the file."""
    h = Harness(store=InPlaceMemoryStore())
    record = await h.create()
    session = await h.open(record, 0)
    await write_chunks(session, DATA)
    await h.engine.finish(session)

    assert h.store.offsets == {n: (n - 1) * PS for n in range(1, 6)}
    assert_complete(h, record, DATA)
    await h.assert_idle()


async def test_empty_upload_is_complete_at_creation():
    """An upload of length 0 is complete as soon as it is created: an empty object, the sha256
    of no bytes."""
    h = Harness()
    record = await h.create(0)
    assert record.status == COMPLETE
    assert_complete(h, record, b"")
    await h.assert_idle()


@pytest.mark.parametrize("length", [1000, 2 * PS, 2 * PS + 3])
async def test_stream_of_unknown_length_completes_at_end_of_file(length):
    """A body that is the whole file (open_stream, finish with end_of_file) sets the upload's
    length to the bytes written and completes it."""
    h = Harness()
    session = await h.engine.open_stream(None, {}, max_size=10 * PS)
    record = session.record
    assert record.length is None
    await write_chunks(session, DATA[:length])
    done = await h.engine.finish(session, end_of_file=True)
    assert done.length == length
    assert_complete(h, record, DATA[:length])
    await h.assert_idle()


async def test_failed_completion_keeps_the_parts_and_a_retry_completes():
    """When assembling the object fails, finish raises StorageFailure, the upload stays active at
    the offset of its committed parts (the last bytes were never counted), and a retry of the
    last bytes completes the file."""
    h = Harness()
    record = await h.create()
    h.store.fail("complete_multipart")
    session = await h.open(record, 0)
    await write_chunks(session, DATA)
    with pytest.raises(StorageFailure):
        await h.engine.finish(session)
    committed = h.committed(record)
    assert (committed.status, committed.offset, committed.parts_count) == (ACTIVE, 4 * PS, 4)
    assert_durable_prefix(h, record)
    await h.assert_idle()

    await h.upload_rest(record)
    assert_complete(h, record, DATA)
    await h.assert_idle()


async def test_unreadable_tail_fails_the_first_bytes_and_gives_everything_back():
    """The stored tail is read when the first body bytes arrive (no memory is taken before): when it
    cannot be read, that write raises StorageFailure; finish gives the lease and the buffer back and
    the upload is unchanged and can be continued."""
    h = Harness()
    record = await h.create()
    first = await h.open(record, 0)
    await first.write(DATA[:1000])
    before = await h.engine.finish(first)

    h.store.fail("get_object")
    session = await h.open(record, 1000)
    assert h.buffers.in_use == 0, "opening takes no buffer"
    with pytest.raises(StorageFailure):
        await session.write(DATA[1000:2000])
    await h.engine.abort(session)
    assert h.committed(record) == before
    await h.assert_idle()
    await h.upload_rest(record)
    assert_complete(h, record, DATA)


# -- 2. tails ---------------------------------------------------------------------------


async def test_short_body_is_stored_as_a_tail_and_continued_by_the_next_session():
    """Bytes too few for a part are stored as a tail object counted in the offset; the next
    session starts from that tail, each superseded tail object is deleted, and the final
    object (and its sha256) is the whole file."""
    h = Harness()
    record = await h.create()

    first = await h.open(record, 0)
    await first.write(DATA[:1000])
    after_first = await h.engine.finish(first)
    assert (after_first.offset, after_first.tail_size, after_first.parts_count) == (1000, 1000, 0)
    assert after_first.multipart_id is None and h.store.uploads == {}
    assert_durable_prefix(h, record)
    first_tail = after_first.tail_key

    second = await h.open(record, 1000)
    assert second.position == 1000
    await second.write(DATA[1000:3000])
    after_second = await h.engine.finish(second)
    assert (after_second.offset, after_second.tail_size, after_second.parts_count) == (3000, 3000, 0)
    assert after_second.tail_key != first_tail
    assert first_tail not in h.store.objects  # superseded, deleted
    assert_durable_prefix(h, record)

    third = await h.open(record, 3000)
    await write_chunks(third, DATA[3000:])
    await h.engine.finish(third)
    assert_complete(h, record, DATA)
    await h.assert_idle()


async def test_tail_superseded_by_a_part_is_deleted():
    """A part that takes in the stored tail's bytes supersedes it: once the part is committed the
    old tail object is gone and the new body's rest is the new tail."""
    h = Harness()
    record = await h.create()
    first = await h.open(record, 0)
    await first.write(DATA[:1000])
    old_tail = (await h.engine.finish(first)).tail_key

    second = await h.open(record, 1000)
    await write_chunks(second, DATA[1000 : PS + 500])
    done = await h.engine.finish(second)
    assert (done.parts_count, done.parts_bytes, done.tail_size, done.offset) == (1, PS, 500, PS + 500)
    assert old_tail not in h.store.objects
    assert_durable_prefix(h, record)

    await h.upload_rest(record)
    assert_complete(h, record, DATA)
    await h.assert_idle()


async def test_tail_alone_completes_an_upload_whose_length_is_set_later():
    """An upload of deferred length whose bytes are all in the tail completes when its length is
    set to the offset with an empty body: the object is the tail's bytes."""
    h = Harness()
    record = await h.create(None)
    first = await h.open(record, 0)
    await first.write(DATA[:1234])
    await h.engine.finish(first)

    second = await h.open(record, 1234, length=1234)
    await h.engine.finish(second)
    assert_complete(h, record, DATA[:1234])
    await h.assert_idle()


# -- 3. a failing part --------------------------------------------------------------------


async def test_failing_part_commits_only_the_parts_before_it():
    """StoreError on part 2 makes finish raise StorageFailure; the committed offset counts part 1
    only (not part 3, though the store holds it), the lease and every buffer are given back, and
    a session resumed at the committed offset completes the file correctly."""
    h = Harness(window=2)
    record = await h.create()
    session = await h.open(record, 0)
    held = h.store.hold_part(2)
    await session.write(DATA[: 3 * PS + 10])  # parts 1..3 sent, part 2 held
    multipart_id = h.committed(record).multipart_id or ""
    await until(lambda: 3 in h.store.uploads[multipart_id].parts and h.committed(record).parts_count == 1)
    held.release(StoreError("the disk is on fire"))

    with pytest.raises(StorageFailure):
        await h.engine.finish(session)
    committed = h.committed(record)
    assert (committed.parts_count, committed.parts_bytes, committed.offset) == (1, PS, PS)
    assert h.part_records(record) == [1]
    assert 3 in h.store.part_numbers(multipart_id)  # stored, yet not counted
    assert_durable_prefix(h, record)
    assert h.buffers.in_use == 0
    with pytest.raises(StorageFailure):
        await session.write(b"more")
    await h.assert_idle()

    await h.upload_rest(record)  # the lease is free at the committed offset
    assert_complete(h, record, DATA)
    await h.assert_idle()


async def test_part_failing_before_later_parts_are_stored_stops_the_body():
    """Once a part failed, later writes raise the failure; what finish commits is still only
    the parts before the failed one."""
    h = Harness(window=1)
    record = await h.create()
    h.store.fail_part(2)
    session = await h.open(record, 0)
    with pytest.raises(StorageFailure):
        await write_chunks(session, DATA)
    with pytest.raises(StorageFailure):
        await h.engine.finish(session)
    assert h.committed(record).offset == PS
    assert_durable_prefix(h, record)
    await h.assert_idle()
    await h.upload_rest(record)
    assert_complete(h, record, DATA)


async def test_failing_tail_store_commits_the_parts_only():
    """When the tail object cannot be stored, finish raises StorageFailure and the offset counts
    the parts committed before it, no tail."""
    h = Harness()
    record = await h.create()
    h.store.fail("put_object")
    session = await h.open(record, 0)
    await write_chunks(session, DATA[: PS + 100])
    with pytest.raises(StorageFailure):
        await h.engine.finish(session)
    committed = h.committed(record)
    assert (committed.offset, committed.tail_key) == (PS, None)
    assert_durable_prefix(h, record)
    await h.assert_idle()


# -- 4. a lost lease ------------------------------------------------------------------------


async def test_lease_lost_while_a_part_is_in_flight_stops_the_session():
    """When the lease cannot be renewed while part 2 is being stored, the session stops with
    LeaseLost: part 2 (though stored) and the rest are not committed, nothing is saved after the
    loss, no tail is written, and the buffers are given back."""
    h = Harness(window=2, ttl=0.03)
    record = await h.create()
    session = await h.open(record, 0)
    held = h.store.hold_part(2)
    await session.write(DATA[: 2 * PS + 100])
    await held.entered.wait()
    await until(lambda: h.committed(record).parts_count == 1)

    h.leases.fail_renewals()
    await eventually(lambda: session.failure is not None)
    assert isinstance(session.failure, LeaseLost)
    saves_at_loss = h.uploads.saves[record.id]
    held.release()

    with pytest.raises(LeaseLost):
        await h.engine.finish(session)
    with pytest.raises(LeaseLost):
        await session.write(b"x")
    assert h.uploads.saves[record.id] == saves_at_loss
    committed = h.committed(record)
    assert (committed.parts_count, committed.offset, committed.tail_key) == (1, PS, None)
    assert h.part_records(record) == [1]
    assert h.store.called("put_object") == []
    assert_durable_prefix(h, record)
    await h.assert_idle()


async def test_another_writer_committing_stops_the_session():
    """When another writer commits the upload while part 2 is in flight, committing part 2 fails
    its compare-and-swap: the session stops with LeaseLost and commits nothing more."""
    h = Harness(window=2)
    record = await h.create()
    session = await h.open(record, 0)
    held = h.store.hold_part(2)
    await session.write(DATA[: 2 * PS + 100])
    await held.entered.wait()
    await until(lambda: h.committed(record).parts_count == 1)

    h.uploads.bump(record.id)
    saves_at_conflict = h.uploads.saves[record.id]
    held.release()
    with pytest.raises(LeaseLost):
        await h.engine.finish(session)

    assert h.uploads.saves[record.id] == saves_at_conflict
    committed = h.committed(record)
    assert (committed.parts_count, committed.offset, committed.tail_key) == (1, PS, None)
    assert h.store.called("put_object") == []
    assert_durable_prefix(h, record)
    await h.assert_idle()


async def test_lease_lost_wakes_a_write_waiting_for_the_window():
    """A write waiting for room in the window raises LeaseLost once the lease is lost (when the
    part in flight returns), and sends nothing more."""
    h = Harness(window=1, ttl=0.03)
    record = await h.create()
    session = await h.open(record, 0)
    held = h.store.hold_part(1)
    await session.write(DATA[:PS])
    await held.entered.wait()
    waiting = asyncio.ensure_future(session.write(DATA[PS : 2 * PS]))
    await until(lambda: session.received == 2 * PS)
    h.leases.fail_renewals()
    await eventually(lambda: session.failure is not None)
    held.release()
    with pytest.raises(LeaseLost):
        await waiting
    with pytest.raises(LeaseLost):
        await h.engine.finish(session)
    assert [call[3] for call in h.store.called("upload_part")] == [1]
    assert h.committed(record).offset == 0
    assert_durable_prefix(h, record)
    await h.assert_idle()


# -- 5. the client goes away mid-part -------------------------------------------------------------


async def test_abort_while_a_part_is_held_waits_for_it_and_counts_nothing_unstored():
    """abort while part 2 is held in the store waits for the store's answer; the part failing
    then, the offset counts part 1 only, no tail is written, the lease and buffers are given
    back and no task is left behind."""
    h = Harness(window=2)
    record = await h.create()
    session = await h.open(record, 0)
    held = h.store.hold_part(2)
    await session.write(DATA[: 2 * PS + 100])
    await held.entered.wait()

    aborting = asyncio.ensure_future(h.engine.abort(session))
    await until(lambda: h.committed(record).parts_count == 1)
    for _ in range(10):
        await asyncio.sleep(0)
    assert not aborting.done()
    held.release(StoreError("connection reset"))
    await aborting

    committed = h.committed(record)
    assert (committed.parts_count, committed.offset, committed.tail_key) == (1, PS, None)
    assert h.store.called("put_object") == []
    assert_durable_prefix(h, record)
    await h.assert_idle()
    await h.upload_rest(record)
    assert_complete(h, record, DATA)


async def test_client_gone_while_a_part_is_held_keeps_what_arrived():
    """finish for a client gone while part 2 is held: once the store answers, the parts and the
    bytes after them (as the tail) are committed, exactly the bytes received."""
    h = Harness(window=2)
    record = await h.create()
    session = await h.open(record, 0)
    held = h.store.hold_part(2)
    await session.write(DATA[: 2 * PS + 100])
    await held.entered.wait()

    finishing = asyncio.ensure_future(h.engine.finish(session))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not finishing.done()
    held.release()
    done = await finishing
    assert (done.parts_count, done.tail_size, done.offset) == (2, 100, 2 * PS + 100)
    assert_durable_prefix(h, record)
    await h.assert_idle()


async def test_abort_wakes_a_write_waiting_for_the_window():
    """abort while a write waits for the window (part 1 held): the write raises once part 1
    returns and sends no further part; the part that was in flight is all that may be counted."""
    h = Harness(window=1)
    record = await h.create()
    session = await h.open(record, 0)
    first = h.store.hold_part(1)
    await session.write(DATA[:PS])
    await first.entered.wait()
    waiting = asyncio.ensure_future(session.write(DATA[PS : 2 * PS + 10]))
    await until(lambda: session.received == 2 * PS)

    aborting = asyncio.ensure_future(h.engine.abort(session))
    for _ in range(10):
        await asyncio.sleep(0)
    first.release()
    with pytest.raises(UploadError):
        await waiting
    await aborting
    assert [call[3] for call in h.store.called("upload_part")] == [1]
    assert h.committed(record).tail_key is None
    assert_durable_prefix(h, record)
    await h.assert_idle()


async def test_client_gone_while_a_write_waits_for_the_window_counts_no_byte_out_of_place():
    """The client goes away (finish, as on_connection_close does for a plain body) while its last
    write waits for the window behind held part 1. Whatever that write still does, the committed
    offset may only count bytes the store holds at their place: a tail committed right after
    part 1 must hold the bytes that follow part 1, not bytes from after a part still in flight."""
    h = Harness(window=1)
    record = await h.create()
    session = await h.open(record, 0)
    first = h.store.hold_part(1)
    second = h.store.hold_part(2)
    await session.write(DATA[:PS])
    await first.entered.wait()
    waiting = asyncio.ensure_future(session.write(DATA[PS : 2 * PS + 10]))
    await until(lambda: session.received == 2 * PS)

    finishing = asyncio.ensure_future(h.engine.finish(session))  # the client went away
    for _ in range(10):
        await asyncio.sleep(0)
    first.release()
    await settle()  # whatever the write and finish do now, with part 2 (if sent) still in the store
    second.release(StoreError("connection reset"))
    h.store.drop_holds()  # part 2 may never have been sent
    await asyncio.gather(waiting, finishing, return_exceptions=True)

    assert_durable_prefix(h, record)
    await h.assert_idle()
    await h.upload_rest(record)
    assert_complete(h, record, DATA)


async def test_client_gone_while_a_write_waits_for_memory_leaves_no_buffer_behind():
    """The client goes away (finish) while its next write waits for a part buffer from the shared
    pool (another upload took the memory first). Once finish returned, the session holds nothing:
    when memory frees up later, the write must not take a buffer into the closed session (it
    would never be given back) nor accept bytes without the lease."""
    h = Harness(window=1)
    h.buffers.budget = 2 * PS
    mine, other = await h.create(), await h.create()
    session = await h.open(mine, 0)
    other_session = await h.open(other, 0)
    await session.write(DATA[:PS])  # part 1 stored and committed; no buffer held after it
    await until(lambda: h.committed(mine).parts_count == 1 and h.buffers.in_use == 0)
    other_part = h.store.hold_part(1)
    other_write = asyncio.ensure_future(other_session.write(DATA[: PS + 1]))  # holds both buffers
    await other_part.entered.wait()
    await until(lambda: h.buffers.in_use == 2 * PS)

    waiting = asyncio.ensure_future(session.write(DATA[PS : 2 * PS]))  # waits for memory
    await settle()
    assert not waiting.done()
    done = await h.engine.finish(session)  # the client went away
    assert (done.offset, done.tail_key) == (PS, None)

    other_part.release()  # memory frees up
    await other_write
    await h.engine.finish(other_session)
    await asyncio.gather(waiting, return_exceptions=True)
    assert h.buffers.in_use == 0, f"{h.buffers.in_use // PS} part buffer(s) never given back"
    with pytest.raises(UploadError):
        await session.write(b"after the end")
    assert h.committed(mine).offset == PS
    assert_durable_prefix(h, mine)
    await h.assert_idle()


# -- 6. sessions that commit only at the end ------------------------------------------------------


async def test_non_eager_session_commits_nothing_before_finish():
    """A session with eager=False (a body with a checksum) stores its parts but commits none of
    them (no part record, no offset, no committed event) before finish; finish commits them all
    and the tail."""
    h = Harness(window=2)
    record = await h.create()
    session = await h.open(record, 0, eager=False)
    await write_chunks(session, DATA[: 2 * PS + 100])
    await until(lambda: len(h.store.called("upload_part")) == 2 and h.store.parts_in_flight == 0)
    for _ in range(10):
        await asyncio.sleep(0)

    before = h.committed(record)
    assert (before.offset, before.parts_count, before.tail_key) == (0, 0, None)
    assert h.part_records(record) == []
    assert h.events.named("committed") == []

    done = await h.engine.finish(session)
    assert (done.parts_count, done.tail_size, done.offset) == (2, 100, 2 * PS + 100)
    assert_durable_prefix(h, record)
    await h.assert_idle()
    await h.upload_rest(record)
    assert_complete(h, record, DATA)  # the digest of the deferred parts was kept too


async def test_abort_of_non_eager_session_commits_nothing():
    """abort of an eager=False session commits nothing at all: offset, parts, part records and
    tail stay as they were, though the store holds its parts; a new session starts over."""
    h = Harness(window=2)
    record = await h.create()
    session = await h.open(record, 0, eager=False)
    await write_chunks(session, DATA[: 2 * PS + 100])
    await until(lambda: len(h.store.called("upload_part")) == 2)
    await h.engine.abort(session)

    committed = h.committed(record)
    assert (committed.offset, committed.parts_count, committed.parts_bytes) == (0, 0, 0)
    assert committed.tail_key is None and h.staged(record) == []
    assert h.part_records(record) == []
    assert h.events.named("committed") == []
    await h.assert_idle()
    await h.upload_rest(record)
    assert_complete(h, record, DATA)


async def test_abort_of_non_eager_session_keeps_the_earlier_tail():
    """abort of an eager=False session that started from a stored tail leaves that tail in place
    and counted (its bytes were committed by an earlier session)."""
    h = Harness()
    record = await h.create()
    first = await h.open(record, 0)
    await first.write(DATA[:1000])
    tail = (await h.engine.finish(first)).tail_key

    second = await h.open(record, 1000, eager=False)
    await write_chunks(second, DATA[1000 : PS + 50])
    await h.engine.abort(second)
    committed = h.committed(record)
    assert (committed.offset, committed.tail_key, committed.parts_count) == (1000, tail, 0)
    assert_durable_prefix(h, record)
    await h.assert_idle()


# -- 7. window and backpressure -------------------------------------------------------------------


async def test_write_waits_while_the_window_is_full():
    """With window=1 and part 1 held in the store, writing the next full part waits until part 1
    is stored; the store never has more than one part upload under way."""
    h = Harness(window=1)
    record = await h.create()
    session = await h.open(record, 0)
    held = h.store.hold_part(1)
    await session.write(DATA[:PS])
    await held.entered.wait()

    waiting = asyncio.ensure_future(session.write(DATA[PS : 2 * PS]))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiting.done()
    assert h.store.parts_in_flight == 1
    assert [call[3] for call in h.store.called("upload_part")] == [1]
    assert h.buffers.in_use == 2 * PS  # the part in flight and the full one waiting

    held.release()
    await asyncio.wait_for(waiting, 2)
    await write_chunks(session, DATA[2 * PS :])
    await h.engine.finish(session)
    assert h.store.max_parts_in_flight == 1
    assert_complete(h, record, DATA)
    await h.assert_idle()


@pytest.mark.parametrize("window", [1, 2, 3])
async def test_parts_in_flight_never_exceed_the_window(window):
    """However the body is chunked, at most `window` parts are being stored at once (in the store
    and as reported by parts_storing), and the buffers held stay within window + 1 parts."""
    h = Harness(window=window)
    record = await h.create()
    session = await h.open(record, 0)
    peak = 0
    for start in range(0, len(DATA), 1_000_003):
        await session.write(DATA[start : start + 1_000_003])
        peak = max(peak, h.buffers.in_use)
    await h.engine.finish(session)
    assert h.store.max_parts_in_flight <= window
    assert h.events.peak("parts_storing") <= window
    assert peak <= (window + 1) * PS
    assert_complete(h, record, DATA)
    await h.assert_idle()


# -- 8. the upload's length ---------------------------------------------------------------------


async def test_write_past_the_length_accepts_nothing_of_that_chunk():
    """A chunk that would pass the upload's length raises SizeExceeded and nothing of it is taken
    (position, received bytes and the store unchanged); what fits is still accepted after."""
    h = Harness()
    length = PS + 100
    record = await h.create(length)
    session = await h.open(record, 0)
    with pytest.raises(SizeExceeded):
        await session.write(DATA[: PS + 200])  # crosses a part boundary: no part may be sent
    assert (session.position, session.received) == (0, 0)
    assert h.store.calls == []

    await session.write(DATA[: PS + 90])
    with pytest.raises(SizeExceeded):
        await session.write(DATA[PS + 90 : PS + 110])
    assert (session.position, session.received) == (PS + 90, PS + 90)
    view = await session.receive_buffer(1000)
    assert view is not None and len(view) == 10  # the in-place path offers only what fits
    await session.write(DATA[PS + 90 : length])
    assert await session.receive_buffer(1000) is None
    with pytest.raises(SizeExceeded):
        await session.write(b"x")
    await h.engine.finish(session)
    assert_complete(h, record, DATA[:length])
    await h.assert_idle()


async def test_write_past_the_length_after_a_tail():
    """The limit counts the bytes of the tail the session started from."""
    h = Harness()
    record = await h.create(3000)
    first = await h.open(record, 0)
    await first.write(DATA[:1000])
    await h.engine.finish(first)
    second = await h.open(record, 1000)
    with pytest.raises(SizeExceeded):
        await second.write(DATA[1000:3001])
    await second.write(DATA[1000:3000])
    await h.engine.finish(second)
    assert_complete(h, record, DATA[:3000])
    await h.assert_idle()


# -- 9. events ------------------------------------------------------------------------------------


def assert_events_balanced(h: Harness, record: UploadRecord) -> None:
    """writers and parts_storing sum to 0; every committed event counts exactly the growth of
    the committed offset, so they sum to it."""
    assert h.events.total("writers") == 0
    assert h.events.total("parts_storing") == 0
    offset = 0
    for _, upload_id, count, new_offset in h.events.named("committed"):
        assert upload_id == record.id
        assert count == new_offset - offset, f"committed {count} bytes, but the offset went {offset} -> {new_offset}"
        offset = new_offset
    assert h.events.total("committed") == h.committed(record).offset


async def test_events_of_one_session_upload_are_in_balance():
    """One body uploading the whole file: one created and one finished event, writers +1/-1,
    every parts_storing +1 matched by a -1, committed bytes summing to the file size."""
    h = Harness()
    record = await h.create()
    session = await h.open(record, 0)
    await write_chunks(session, DATA)
    await h.engine.finish(session)

    assert h.events.named("created") == [("created", record.id)]
    assert h.events.named("finished") == [("finished", record.id)]
    assert h.events.named("writers") == [("writers", 1), ("writers", -1)]
    assert h.events.named("parts_storing").count(("parts_storing", 1)) == 4
    assert_events_balanced(h, record)
    assert h.events.total("committed") == len(DATA)
    await h.assert_idle()


async def test_events_across_sessions_with_tails_are_in_balance():
    """Over several sessions, where a tail is later taken into a part, committed events still
    count each byte once: they sum to the file size."""
    h = Harness()
    record = await h.create()
    for end in (1000, PS + 500, 3 * PS + 7):
        session = await h.open(record, h.committed(record).offset)
        await write_chunks(session, DATA[session.position : end])
        await h.engine.finish(session)
        assert_events_balanced(h, record)
    await h.upload_rest(record)
    assert_complete(h, record, DATA)
    assert_events_balanced(h, record)
    assert h.events.total("committed") == len(DATA)
    await h.assert_idle()


async def test_events_balanced_after_failures():
    """After a failed part and a lost compare-and-swap, writers and parts_storing still sum to 0
    and committed bytes sum to the committed offset."""
    h = Harness()
    record = await h.create()
    h.store.fail_part(3)
    session = await h.open(record, 0)
    with contextlib.suppress(StorageFailure):  # raised by a write only if it noticed the failure
        await write_chunks(session, DATA)
    with pytest.raises(StorageFailure):
        await h.engine.finish(session)
    assert h.committed(record).offset == 2 * PS
    assert_events_balanced(h, record)

    session = await h.open(record, h.committed(record).offset)
    held = h.store.hold_part(3)
    await write_chunks(session, DATA[2 * PS : 3 * PS + 5])
    await held.entered.wait()
    h.uploads.bump(record.id)
    held.release()
    with pytest.raises(LeaseLost):
        await h.engine.finish(session)
    assert_events_balanced(h, record)
    assert h.committed(record).offset == 2 * PS
    await h.assert_idle()
