"""Small, honest in-memory fakes for unit tests of the upload machinery.

Each fake implements the pure logic of one collaborator, with no I/O: the rules
the real thing keeps are kept here too (S3's multipart rules, compare-and-swap on
an upload's version, one live holder per lease), so that the real `UploadSession`,
`UploadEngine`, `CommitRepository`, `UploadLocker`, `BufferPool` and `FileDigests`
can run on top of them. Every coroutine yields to the event loop once, as a real
round trip would, so interleavings are those of a real (very fast) backend.

Besides their interface the fakes offer what tests need to steer and observe them:
injected failures, parts held mid-flight, records of calls, another writer.
They are not meant to be fast or complete stores, only correct small ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Sequence

from metadata.uploads import ACTIVE, COMPLETE, EXPIRED, PartRecord, UploadRecord, VersionConflict
from streaming.events import UploadEvents
from streaming.stores.base import MIN_PART_SIZE, ObjectNotFound, PartRef, StoreError


async def _round_trip() -> None:
    """What every call to a real backend does at least once: let the event loop run."""
    await asyncio.sleep(0)


# -- object store -----------------------------------------------------------------------


class Hold:
    """A part upload held mid-flight: `entered` is set once the store has the part's bytes
    to store; the upload returns (or fails) only after `release`."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.entered = asyncio.Event()
        self._gate = asyncio.Event()
        self._error: BaseException | None = None

    def release(self, error: BaseException | None = None) -> None:
        """Let the held upload finish; with `error` it raises that instead of storing the part."""
        self._error = error
        self._gate.set()

    async def _wait(self) -> None:
        self.entered.set()
        await self._gate.wait()
        if self._error is not None:
            raise self._error


@dataclass
class _Multipart:
    key: str
    content_type: str
    parts: dict[int, tuple[str, bytes]] = field(default_factory=dict)  # number -> (token, bytes)


class MemoryStore:
    """An `ObjectStore` in memory, with the S3 rules of multipart uploads.

    Parts are kept by number (a later upload of a number replaces the earlier one)
    under an opaque token, fresh for every upload (as with SSE or the local store:
    a stale token is refused). `complete_multipart` checks that every named part is
    there with that token, in ascending order, and that every part but the last is
    at least MIN_PART_SIZE bytes; an unknown upload id is ObjectNotFound.

    A part's bytes are read from the caller's buffer only when its upload returns,
    so a caller that reuses the buffer of a part still being stored is caught.

    Steering: `fail_part(number, times)`, `fail(method, times)`, `hold_part(number)`, `drop_holds()`.
    Observing: `calls` (method name and arguments), `parts_in_flight` and
    `max_parts_in_flight` (part uploads under way at once), `objects`, `uploads`.
    Implements none of the optional abilities (CopiesParts, WritesPartsInPlace, SignsUrls).
    """

    name = "memory"

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}  # key -> (bytes, content type)
        self.uploads: dict[str, _Multipart] = {}  # upload id -> multipart upload
        self.calls: list[tuple[Any, ...]] = []
        self.parts_in_flight = 0
        self.max_parts_in_flight = 0
        self.closed = False
        self._part_failures: Counter[int] = Counter()
        self._failures: Counter[str] = Counter()
        self._holds: dict[int, Hold] = {}

    # -- steering ----------------------------------------------------------------------

    def fail_part(self, number: int, times: int = 1) -> None:
        """The next `times` uploads of part `number` raise StoreError (nothing stored)."""
        self._part_failures[number] += times

    def fail(self, method: str, times: int = 1) -> None:
        """The next `times` calls of `method` (e.g. "put_object") raise StoreError."""
        self._failures[method] += times

    def hold_part(self, number: int) -> Hold:
        """Hold the next upload of part `number` until the returned hold is released."""
        hold = self._holds[number] = Hold(number)
        return hold

    def drop_holds(self) -> None:
        """Forget the holds no part upload reached (later uploads of those parts are not held)."""
        self._holds.clear()

    def _maybe_fail(self, method: str) -> None:
        if self._failures[method] > 0:
            self._failures[method] -= 1
            raise StoreError(f"injected failure of {method}")

    # -- observing ----------------------------------------------------------------------

    def keys(self, prefix: str = "") -> list[str]:
        """The keys of the objects stored under `prefix`, sorted."""
        return sorted(key for key in self.objects if key.startswith(prefix))

    def part_numbers(self, upload_id: str) -> list[int]:
        """The numbers of the parts stored in multipart upload `upload_id`."""
        return sorted(self.uploads[upload_id].parts)

    def called(self, method: str) -> list[tuple[Any, ...]]:
        """The recorded calls of `method`."""
        return [call for call in self.calls if call[0] == method]

    # -- multipart uploads ----------------------------------------------------------------

    async def create_multipart(self, key: str, content_type: str) -> str:
        self.calls.append(("create_multipart", key, content_type))
        await _round_trip()
        self._maybe_fail("create_multipart")
        upload_id = uuid.uuid4().hex
        self.uploads[upload_id] = _Multipart(key, content_type)
        return upload_id

    async def upload_part(self, key: str, upload_id: str, number: int, data: memoryview) -> str:
        self.calls.append(("upload_part", key, upload_id, number, len(data)))
        self.parts_in_flight += 1
        self.max_parts_in_flight = max(self.max_parts_in_flight, self.parts_in_flight)
        try:
            await _round_trip()
            hold = self._holds.pop(number, None)
            if hold is not None:
                await hold._wait()
            if self._part_failures[number] > 0:
                self._part_failures[number] -= 1
                raise StoreError(f"injected failure of part {number}")
            self._maybe_fail("upload_part")
            upload = self.uploads.get(upload_id)
            if upload is None or upload.key != key:
                raise ObjectNotFound(f"no multipart upload {upload_id} of {key}")
            if number < 1 or number > 10_000:
                raise StoreError(f"invalid part number {number}")
            token = uuid.uuid4().hex
            upload.parts[number] = (token, bytes(data))  # read the buffer only now
            return token
        finally:
            self.parts_in_flight -= 1

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[PartRef]) -> None:
        self.calls.append(("complete_multipart", key, upload_id, tuple(parts)))
        await _round_trip()
        self._maybe_fail("complete_multipart")
        upload = self.uploads.get(upload_id)
        if upload is None or upload.key != key:
            raise ObjectNotFound(f"no multipart upload {upload_id} of {key}")
        if not parts:
            raise StoreError("a multipart upload needs at least one part")
        numbers = [part.number for part in parts]
        if numbers != sorted(set(numbers)):
            raise StoreError("parts must be named in ascending order, each once")
        pieces = []
        for index, part in enumerate(parts):
            stored = upload.parts.get(part.number)
            if stored is None or stored[0] != part.etag:
                raise StoreError(f"part {part.number} with token {part.etag} is missing (InvalidPart)")
            if index < len(parts) - 1 and len(stored[1]) < MIN_PART_SIZE:
                raise StoreError(f"part {part.number} is smaller than MIN_PART_SIZE (EntityTooSmall)")
            pieces.append(stored[1])
        self.objects[key] = (b"".join(pieces), upload.content_type)
        del self.uploads[upload_id]

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        self.calls.append(("abort_multipart", key, upload_id))
        await _round_trip()
        self._maybe_fail("abort_multipart")
        self.uploads.pop(upload_id, None)

    # -- objects ----------------------------------------------------------------------------

    async def put_object(self, key: str, data: bytes | memoryview, content_type: str = "application/octet-stream") -> None:
        self.calls.append(("put_object", key, len(data)))
        await _round_trip()
        self._maybe_fail("put_object")
        self.objects[key] = (bytes(data), content_type)

    async def get_object(self, key: str) -> bytes:
        self.calls.append(("get_object", key))
        await _round_trip()
        self._maybe_fail("get_object")
        if key not in self.objects:
            raise ObjectNotFound(key)
        return self.objects[key][0]

    async def read_range(self, key: str, start: int, end: int, chunk_size: int) -> AsyncIterator[bytes]:
        self.calls.append(("read_range", key, start, end))
        await _round_trip()
        self._maybe_fail("read_range")
        if key not in self.objects:
            raise ObjectNotFound(key)
        data = self.objects[key][0]
        end = min(end, len(data))
        for position in range(start, end, chunk_size):
            yield data[position : min(position + chunk_size, end)]

    async def object_size(self, key: str) -> int | None:
        self.calls.append(("object_size", key))
        await _round_trip()
        self._maybe_fail("object_size")
        stored = self.objects.get(key)
        return None if stored is None else len(stored[0])

    async def delete_object(self, key: str) -> None:
        self.calls.append(("delete_object", key))
        await _round_trip()
        self._maybe_fail("delete_object")
        self.objects.pop(key, None)

    async def delete_prefix(self, prefix: str) -> int:
        self.calls.append(("delete_prefix", prefix))
        await _round_trip()
        self._maybe_fail("delete_prefix")
        doomed = self.keys(prefix)
        for key in doomed:
            del self.objects[key]
        return len(doomed)

    async def check(self) -> None:
        self.calls.append(("check",))
        await _round_trip()
        self._maybe_fail("check")
        if self.closed:
            raise StoreError("the store is closed")

    async def close(self) -> None:
        self.closed = True


class InPlaceMemoryStore(MemoryStore):
    """A `MemoryStore` that also `WritesPartsInPlace`: it records each part's declared offset
    (`offsets`: number -> offset) and refuses an offset that is not where earlier parts end."""

    def __init__(self) -> None:
        super().__init__()
        self.offsets: dict[int, int] = {}

    async def upload_part_at(self, key: str, upload_id: str, number: int, data: memoryview, offset: int) -> str:
        self.offsets[number] = offset
        return await self.upload_part(key, upload_id, number, data)


# -- metadata: uploads -------------------------------------------------------------------


class MemoryUploadRepository:
    """`metadata.uploads.UploadRepository` in memory.

    Records are kept as documents (as MongoDB would keep them) and every `save` is a
    compare-and-swap on `version` raising VersionConflict. `bump(upload_id)` commits a
    change as another writer would; `saves` counts the successful saves per upload.
    """

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.part_documents: dict[tuple[str, int], PartRecord] = {}
        self.saves: Counter[str] = Counter()

    # -- steering ----------------------------------------------------------------------

    def bump(self, upload_id: str) -> None:
        """Another writer commits the upload (its version moves on, nothing else changes)."""
        self.documents[upload_id]["version"] += 1

    def stored(self, upload_id: str) -> UploadRecord:
        """The upload as stored right now (no round trip)."""
        return UploadRecord.from_document(self.documents[upload_id])

    # -- the repository ------------------------------------------------------------------

    async def create_indexes(self) -> None:
        await _round_trip()

    async def insert(self, record: UploadRecord) -> UploadRecord:
        await _round_trip()
        if record.id in self.documents:
            raise ValueError(f"duplicate upload id {record.id}")
        self.documents[record.id] = record.to_document()
        return record

    async def get(self, upload_id: str) -> UploadRecord | None:
        await _round_trip()
        doc = self.documents.get(upload_id)
        return UploadRecord.from_document(doc) if doc else None

    async def save(self, record: UploadRecord) -> UploadRecord:
        await _round_trip()
        current = self.documents.get(record.id)
        if current is None or current["version"] != record.version:
            raise VersionConflict(record.id)
        updated = record.evolve(version=record.version + 1)
        self.documents[record.id] = updated.to_document()
        self.saves[record.id] += 1
        return updated

    async def delete(self, upload_id: str) -> None:
        await _round_trip()
        self.documents.pop(upload_id, None)
        await self.forget_parts(upload_id)

    async def save_part(self, upload_id: str, part: PartRecord) -> None:
        await _round_trip()
        self.part_documents[(upload_id, part.number)] = part

    async def committed_parts(self, record: UploadRecord) -> list[PartRecord]:
        await _round_trip()
        parts = [self.part_documents[key] for key in sorted(self.part_documents)
                 if key[0] == record.id and key[1] <= record.parts_count]
        if [p.number for p in parts] != list(range(1, record.parts_count + 1)):
            raise LookupError(f"upload {record.id}: part records are incomplete")
        return parts

    async def forget_parts(self, upload_id: str) -> None:
        await _round_trip()
        for key in [key for key in self.part_documents if key[0] == upload_id]:
            del self.part_documents[key]

    async def count_unfinished(self, owner: str | None, limit: int) -> int:
        await _round_trip()
        return min(limit, sum(1 for d in self.documents.values() if d["owner"] == owner and d["status"] == ACTIVE))

    async def expired(self, now: float | None = None, limit: int = 100) -> list[UploadRecord]:
        await _round_trip()
        now = time.time() if now is None else now
        return [UploadRecord.from_document(d) for d in self.documents.values()
                if d["status"] == ACTIVE and d["expires_at"] < now][:limit]

    async def expired_partials(self, now: float | None = None, limit: int = 100) -> list[UploadRecord]:
        await _round_trip()
        now = time.time() if now is None else now
        return [UploadRecord.from_document(d) for d in self.documents.values()
                if d["status"] == COMPLETE and d["concat"] == "partial" and d["expires_at"] < now][:limit]

    async def purge_tombstones(self, now: float | None = None) -> int:
        await _round_trip()
        now = time.time() if now is None else now
        doomed = [k for k, d in self.documents.items() if d["status"] == EXPIRED and d["expires_at"] < now]
        for key in doomed:
            del self.documents[key]
        return len(doomed)


# -- metadata: leases --------------------------------------------------------------------


class MemoryLeaseRepository:
    """`metadata.leases.LeaseRepository` in memory: at most one live holder per name.

    `fail_renewals()` makes every later renewal answer False (the lease is gone), so the
    holder's `UploadLocker` marks it lost at its next renewal.
    """

    def __init__(self) -> None:
        self.leases: dict[str, tuple[str, float]] = {}  # name -> (holder, expires_at)
        self.renewals_fail = False
        self.renewals = 0

    def fail_renewals(self) -> None:
        """Every renewal from now on fails."""
        self.renewals_fail = True

    async def try_acquire(self, name: str, holder: str, ttl: float) -> bool:
        await _round_trip()
        now = time.time()
        current = self.leases.get(name)
        if current is not None and current[0] != holder and current[1] > now:
            return False
        self.leases[name] = (holder, now + ttl)
        return True

    async def renew(self, name: str, holder: str, ttl: float) -> bool:
        await _round_trip()
        self.renewals += 1
        current = self.leases.get(name)
        if self.renewals_fail or current is None or current[0] != holder:
            return False
        self.leases[name] = (holder, time.time() + ttl)
        return True

    async def release(self, name: str, holder: str) -> None:
        await _round_trip()
        current = self.leases.get(name)
        if current is not None and current[0] == holder:
            del self.leases[name]

    async def holder(self, name: str) -> str | None:
        await _round_trip()
        current = self.leases.get(name)
        if current is None or current[1] <= time.time():
            return None
        return current[0]


# -- placement and events -------------------------------------------------------------------


@dataclass(frozen=True)
class Placed:
    key: str
    mime: str
    category: str
    accepted: bool


class FakePlacement:
    """A `PlacementPolicy`: every file goes to `media/<upload id>`; files whose first bytes
    start with `refused_prefix` are of a type not accepted. `heads` records what it was shown."""

    sniff_bytes = 16

    def __init__(self, refused_prefix: bytes | None = None) -> None:
        self.refused_prefix = refused_prefix
        self.heads: list[bytes] = []

    def place(self, upload_id: str, head: bytes, filename: str | None) -> Placed:
        self.heads.append(head)
        refused = self.refused_prefix is not None and head.startswith(self.refused_prefix)
        mime = "application/x-refused" if refused else "application/octet-stream"
        return Placed(key=f"media/{upload_id}", mime=mime, category="files", accepted=not refused)


class RecordingEvents(UploadEvents):
    """Records every event as (name, record id or delta, count) in `log`."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []

    def created(self, record: UploadRecord) -> None:
        self.log.append(("created", record.id))

    def committed(self, record: UploadRecord, count: int) -> None:
        self.log.append(("committed", record.id, count, record.offset))

    async def finished(self, record: UploadRecord) -> None:
        self.log.append(("finished", record.id))

    async def terminated(self, record: UploadRecord) -> None:
        self.log.append(("terminated", record.id))

    def expired(self, record: UploadRecord) -> None:
        self.log.append(("expired", record.id))

    def writers(self, delta: int) -> None:
        self.log.append(("writers", delta))

    def parts_storing(self, delta: int) -> None:
        self.log.append(("parts_storing", delta))

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [event for event in self.log if event[0] == name]

    def total(self, name: str) -> int:
        """The sum of the deltas (writers, parts_storing) or counts (committed) of `name`."""
        index = 2 if name == "committed" else 1
        return sum(event[index] for event in self.named(name))

    def peak(self, name: str) -> int:
        """The highest running sum of the deltas of `name` (writers, parts_storing)."""
        running = peak = 0
        for event in self.named(name):
            running += event[1]
            peak = max(peak, running)
        return peak


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
