"""Media items: made from finished uploads, listed, described with signed URLs, deleted."""

from __future__ import annotations

import logging
import time
from typing import Any

from gateway.ranges import safe_filename
from gateway.signed_urls import UrlSigner
from metadata.media import DELETED, PROCESSING, READY, MediaItem, MediaRepository
from metadata.uploads import UploadRecord, UploadRepository
from streaming.events import UploadEvents
from streaming.stores.base import ObjectStore, SignsUrls, StoreError

log = logging.getLogger("mediaserver.media")


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class MediaService(UploadEvents):
    """Media items of finished uploads: registered when an upload finishes, gone when it is terminated."""

    def __init__(self, store: ObjectStore, media: MediaRepository, uploads: UploadRepository,
                 signer: UrlSigner, url_ttl: int, *, file_sha256: bool = True) -> None:
        self.store = store
        self.file_sha256 = file_sha256  # when on, an item without its sha256 is processed to get it
        self.media = media
        self.uploads = uploads
        self.signer = signer
        self.url_ttl = url_ttl

    async def finished(self, record: UploadRecord) -> None:
        await self.register(record)

    async def terminated(self, record: UploadRecord) -> None:
        await self.forget(record)

    async def register(self, record: UploadRecord) -> MediaItem | None:
        """Register the media item a finished upload became (idempotent)."""
        if record.concat == "partial" or not record.key:
            return None
        category = record.category or "files"
        name = record.filename
        item = MediaItem(
            id=record.id,
            owner=record.owner,
            category=category,
            key=record.key,
            size=record.length or 0,
            content_type=record.content_type or "application/octet-stream",
            filename=safe_filename(name) if name else None,
            created_at=record.completed_at or time.time(),
            source=record.metadata.get("source") or "tus",
            sha256=record.sha256,
            status=PROCESSING if category in ("images", "videos") or (record.sha256 is None and self.file_sha256)
            else READY,
        )
        item = await self.media.insert(item)
        log.info("media registered", extra={"media_id": item.id, "category": item.category, "size": item.size})
        return item

    async def visible(self, media_id: str, user_id: str | None, is_admin: bool) -> MediaItem | None:
        """The item if `user_id` may see it (tombstones included), else None."""
        item = await self.media.get(media_id)
        if item is None:
            return None
        if not is_admin and item.owner != user_id:
            return None
        return item

    async def delete(self, item: MediaItem) -> None:
        """Remove the objects, the upload record and mark the item deleted (idempotent)."""
        if item.status == DELETED:
            return
        try:
            await self.store.delete_object(item.key)
            if item.thumbnail_key:
                await self.store.delete_object(item.thumbnail_key)
        except StoreError:
            log.warning("could not delete media objects", extra={"media_id": item.id}, exc_info=True)
            raise
        await self.uploads.delete(item.id)
        current = await self.media.get(item.id) or item
        await self.media.save(current.evolve(status=DELETED))

    async def forget(self, record: UploadRecord) -> None:
        """A finished upload was terminated through tus: its media item goes too."""
        item = await self.media.get(record.id)
        if item is not None and item.status != DELETED:
            if item.thumbnail_key:
                await self.store.delete_object(item.thumbnail_key)
            await self.media.save(item.evolve(status=DELETED))

    async def url_for(self, item: MediaItem, kind: str, base_url: str) -> str | None:
        """A URL that reads the original or thumbnail without credentials."""
        key = item.key if kind == "original" else item.thumbnail_key
        if not key:
            return None
        if kind == "thumbnail":
            # small, shown in pages: served by the gateway, same origin as the page (CSP img-src 'self')
            return self.signer.sign(base_url, item.id, kind, self.url_ttl)
        if isinstance(self.store, SignsUrls):
            return await self.store.signed_url(key, self.url_ttl, item.filename)
        return self.signer.sign(base_url, item.id, kind, self.url_ttl)

    async def internal_url(self, item: MediaItem, base_url: str) -> str:
        """A gateway-signed URL of the original for processes on this host (ffmpeg).

        Always through the gateway, whatever the store: it reads the store in growing
        ranged windows and queues little for the reader, so probing a large video reads
        only a small part of it.
        """
        return self.signer.sign(base_url, item.id, "original", self.url_ttl)

    async def describe(self, item: MediaItem, base_url: str, with_urls: bool = True) -> dict[str, Any]:
        """The JSON clients see for an item."""
        described: dict[str, Any] = {
            "id": item.id,
            "type": item.category,
            "filename": item.filename,
            "contentType": item.content_type,
            "size": item.size,
            "status": item.status,
            "reason": item.reason,
            "createdAt": _iso(item.created_at),
            "width": item.width,
            "height": item.height,
            "duration": item.duration,
            "codec": item.codec,
            "frameRate": item.frame_rate,
            "sha256": item.sha256,
            "uploadUrl": f"{base_url}/files/{item.id}",
        }
        if with_urls:
            described["url"] = await self.url_for(item, "original", base_url)
            described["thumbnailUrl"] = await self.url_for(item, "thumbnail", base_url)
            described["urlExpiresIn"] = self.url_ttl
        return described
