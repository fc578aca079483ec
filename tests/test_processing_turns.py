"""Processing jobs of many users on one instance (MongoDB over TCP): one user's backlog holds at
most PROCESSING_QUEUE_PER_USER places in the queue, and users take turns for the slots, so a
user with one image does not wait behind another user's hundred."""

from __future__ import annotations

import asyncio
import time
import uuid

from pymongo import AsyncMongoClient

from metadata.leases import LeaseRepository
from metadata.media import PROCESSING, READY, MediaItem, MediaRepository
from processing.jobs import Attempt, MediaProcessor, ProcessingLimits

LIMITS = ProcessingLimits(concurrency=1, job_timeout=30, max_image_pixels=10**6, max_image_bytes=10**6,
                          max_video_duration=60, subprocess_memory=2**30, thumbnail_width=64, thumbnail_height=64,
                          executor_kind="thread", queue=64, queue_per_user=3)


class RecordingProcessor(MediaProcessor):
    """The real scheduling (queue caps, turns, sweep, leases, saves in MongoDB); each job's own
    work is replaced by noting its turn."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.order: list[str] = []

    async def attempt(self, item: MediaItem) -> Attempt:
        self.order.append(item.filename or "")
        await asyncio.sleep(0.01)
        return Attempt({}, None, "", False, 0.01)


async def test_a_users_backlog_does_not_hold_back_another_users_job(mongo_uri):
    client = AsyncMongoClient(mongo_uri)
    db = client[f"turns_{uuid.uuid4().hex[:8]}"]
    media = MediaRepository(db)
    processor = RecordingProcessor(None, media, LeaseRepository(db), LIMITS, source_url=None)  # type: ignore[arg-type]
    try:
        items = [await media.insert(MediaItem(id=uuid.uuid4().hex, owner=owner, category="images", key=f"k/{name}",
                                               size=1, content_type="image/jpeg", filename=name,
                                               created_at=time.time(), status=PROCESSING))
                 for owner, name in [("many", f"m{n}") for n in range(1, 7)] + [("one", "o1")]]
        accepted = [processor.submit(item.id, item.owner) for item in items]
        # the user with many gets PROCESSING_QUEUE_PER_USER places; the rest stays pending in MongoDB
        assert accepted == [True, True, True, False, False, False, True]
        for _ in range(200):  # the sweep takes the rest as places free up
            await processor.wait_idle()
            if len(processor.order) == len(items):
                break
            await asyncio.sleep(0.05)
        assert sorted(processor.order) == sorted(item.filename for item in items)
        # "one" took its turn after the job running and the one queued before it: third, before
        # m3 that was queued earlier (arrival order would serve it fourth; no cap, seventh)
        assert processor.order.index("o1") == 2 < processor.order.index("m3")
        assert [(await media.get(item.id)).status for item in items] == [READY] * len(items)
    finally:
        await processor.close()
        await client.drop_database(db.name)
        await client.close()
