"""The outbox of integration events in MongoDB: one row per event and sink, delivered at least once.

A row is written `prepared` just before the change it announces is committed and turned
`pending` just after; only `pending` rows, or `prepared` rows whose grace has passed, can
be claimed. A claim is a `find_one_and_update` that moves the row's `due` time past a lease
and stamps it with a fresh claim token, so of two instances that see the same row due at
the same moment exactly one gets it; the holder ends the claim with a whole-row
compare-and-swap on that token (delivered, retry later, or dead). A holder that dies stops
mattering when its lease (the new `due`) passes.

A `prepared` row whose writer died before confirming is settled by `committed`: the state
it announces is read from the uploads or media collections. Row ids are deterministic
(event id and sink), so preparing the same event again is a no-op. Every row carries
`expires_at` (a TTL index removes it): delivered and dead rows are kept for a while, so a
late re-preparation of a delivered event is still recognised and not sent again.
"""

from __future__ import annotations

import datetime
import time
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from metadata.errors import driver_errors_translated
from metadata.media import FAILED, PROCESSING, READY
from metadata.uploads import ACTIVE, COMPLETE

PREPARED = "prepared"
PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"
WAITING = (PREPARED, PENDING)


def _utc(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)


@dataclass(frozen=True)
class OutboxRow:
    """One event for one sink. `body` is the JSON text sent, the same bytes on every attempt."""

    id: str  # f"{event_id}:{sink}"
    event_id: str
    type: str
    sink: str
    subject: str  # the upload (or media item) the event is about
    body: str
    state: str = PREPARED
    due: float = 0.0
    claim: str = ""
    attempts: int = 0
    created_at: float = 0.0
    last_error: str = ""
    owner: str = ""  # the user whose upload or media the event is about ("" for none)

    def to_document(self, expires_at: float) -> dict[str, Any]:
        return {"_id": self.id, "event_id": self.event_id, "type": self.type, "sink": self.sink,
                "subject": self.subject, "body": self.body, "state": self.state, "due": self.due,
                "claim": self.claim, "attempts": self.attempts, "created_at": self.created_at,
                "last_error": self.last_error, "owner": self.owner, "expires_at": _utc(expires_at)}

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> "OutboxRow":
        return cls(id=doc["_id"], event_id=doc["event_id"], type=doc["type"], sink=doc["sink"],
                   subject=doc["subject"], body=doc["body"], state=doc["state"], due=float(doc["due"]),
                   claim=doc.get("claim") or "", attempts=int(doc.get("attempts") or 0),
                   created_at=float(doc.get("created_at") or 0), last_error=doc.get("last_error") or "",
                   owner=doc.get("owner") or "")


@driver_errors_translated
class OutboxRepository:
    """Prepare, confirm, claim and settle outbox rows; `retention` seconds bound every row's life."""

    def __init__(self, db: AsyncDatabase, retention: float, collection: str = "hook_outbox") -> None:
        self._rows = db[collection]
        self._uploads = db["uploads"]
        self._media = db["media"]
        self.retention = retention

    async def create_indexes(self) -> None:
        await self._rows.create_index([("state", ASCENDING), ("due", ASCENDING)])
        await self._rows.create_index([("subject", ASCENDING), ("type", ASCENDING)])
        await self._rows.create_index([("owner", ASCENDING), ("state", ASCENDING)])
        await self._rows.create_index("expires_at", expireAfterSeconds=0)

    async def prepare(self, rows: Sequence[OutboxRow]) -> None:
        """Store `rows` (state and due as given). A row whose id is stored already keeps its state;
        while it is `prepared` and unclaimed, its body becomes the new one."""
        for row in rows:
            try:
                await self._rows.insert_one(row.to_document(row.created_at + self.retention))
            except DuplicateKeyError:
                await self._rows.update_one({"_id": row.id, "state": PREPARED, "claim": ""},
                                            {"$set": {"body": row.body}})

    async def confirm(self, row_ids: Sequence[str], now: float | None = None) -> None:
        """The change the rows announce is committed: make them due now (rows no one claimed yet)."""
        now = time.time() if now is None else now
        for row_id in row_ids:
            await self._rows.update_one({"_id": row_id, "state": PREPARED, "claim": ""},
                                        {"$set": {"state": PENDING, "due": now}})

    async def claim(self, sinks: Sequence[str], lease: float, now: float | None = None) -> OutboxRow | None:
        """The most overdue waiting row of one of `sinks`, now claimed for `lease` seconds (None: none due)."""
        now = time.time() if now is None else now
        doc = await self._rows.find_one_and_update(
            {"state": {"$in": list(WAITING)}, "sink": {"$in": list(sinks)}, "due": {"$lte": now}},
            {"$set": {"claim": uuid.uuid4().hex, "due": now + lease}},
            sort=[("due", ASCENDING)], return_document=ReturnDocument.AFTER)
        return OutboxRow.from_document(doc) if doc else None

    async def settle(self, row: OutboxRow, *, state: str, due: float = 0.0, attempts: int | None = None,
                     error: str = "", keep: float | None = None) -> bool:
        """End `row`'s claim: store it with `state`, `due`, `attempts` and `error`, kept `keep` seconds
        (default: its remaining retention). False when the claim was lost (another holder has it)."""
        now = time.time()
        settled = OutboxRow(
            id=row.id, event_id=row.event_id, type=row.type, sink=row.sink, subject=row.subject, body=row.body,
            state=state, due=due, claim="", attempts=row.attempts if attempts is None else attempts,
            created_at=row.created_at, last_error=error[:300], owner=row.owner)
        expires = now + keep if keep is not None else row.created_at + self.retention
        result = await self._rows.replace_one({"_id": row.id, "claim": row.claim}, settled.to_document(expires))
        return result.matched_count == 1

    async def drop(self, row: OutboxRow) -> bool:
        """Delete a claimed row whose change was never committed."""
        result = await self._rows.delete_one({"_id": row.id, "claim": row.claim})
        return result.deleted_count == 1

    async def count(self, states: Sequence[str], limit: int) -> int:
        """How many rows are in one of `states`, counting up to `limit`."""
        return await self._rows.count_documents({"state": {"$in": list(states)}}, limit=limit)

    async def count_waiting_of(self, owner: str, limit: int) -> int:
        """How many undelivered rows (prepared or pending) are about `owner`'s uploads, up to `limit`."""
        return await self._rows.count_documents({"owner": owner, "state": {"$in": list(WAITING)}}, limit=limit)

    async def rows_of(self, subject: str) -> list[OutboxRow]:
        """Every stored row about `subject` (an upload or media id)."""
        return [OutboxRow.from_document(d) async for d in self._rows.find({"subject": subject}).limit(100)]

    async def committed(self, row: OutboxRow) -> bool | None:
        """Whether the change a `prepared` row announces is committed: True, False (it is not,
        and will not be by this writer), or None (not yet; it may still be)."""
        if row.type in ("media-ready", "media-failed"):
            media = await self._media.find_one({"_id": row.subject}, {"status": 1})
            status = media.get("status") if media else None
            if status == PROCESSING:
                return None
            return status == (READY if row.type == "media-ready" else FAILED)
        upload = await self._uploads.find_one({"_id": row.subject}, {"status": 1})
        if row.type == "post-create":
            if upload is not None:
                return True
            return await self._rows.count_documents({"subject": row.subject, "type": "post-terminate"}, limit=1) > 0
        if row.type == "post-finish":
            if upload is None:
                return await self._media.count_documents({"_id": row.subject}, limit=1) > 0
            status = upload.get("status")
            return True if status == COMPLETE else None if status == ACTIVE else False
        if row.type == "post-terminate":
            return upload is None
        return upload is not None  # post-receive: written after its commit, never prepared
