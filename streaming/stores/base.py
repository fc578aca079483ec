"""The object store interface: bytes in, bytes out, no HTTP.

A store keeps objects under string keys and supports S3-style multipart
uploads. Every method is a coroutine; implementations never block the event
loop. Parts are numbered from 1; every part but the last must be at least
`MIN_PART_SIZE` bytes (the S3 rule, enforced by S3 and kept by callers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Protocol, Sequence

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000


class StoreError(Exception):
    """The store failed or refused an operation."""


class ObjectNotFound(StoreError):
    """No object (or multipart upload) under that key."""


@dataclass(frozen=True)
class PartRef:
    """An uploaded part of a multipart upload (`etag` is the store's opaque part token)."""

    number: int
    etag: str
    size: int


class ObjectStore(Protocol):
    """What the upload machinery needs from a store (S3 or local disk)."""

    name: str

    async def create_multipart(self, key: str, content_type: str) -> str:
        """Start a multipart upload of `key`; return its upload id."""

    async def upload_part(self, key: str, upload_id: str, number: int, data: memoryview,
                          offset: int | None = None) -> str:
        """Store `data` as part `number` (replacing an earlier one); return its part token.

        The token (ETag and whatever else the store needs) is opaque: callers keep it
        and pass it back to `complete_multipart`. Returns only once the part is durable.
        `offset`, when the caller knows it, is where the part's first byte will sit in the
        finished object: a hint a store may use to lay the bytes out in place.
        """

    async def copy_part(self, key: str, upload_id: str, number: int, source_key: str, first: int, last: int) -> str:
        """Store bytes first..last (inclusive) of `source_key` as part `number`, server side."""

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[PartRef]) -> None:
        """Assemble `parts` (ascending numbers) into the object `key`.

        Raises ObjectNotFound when the upload id is unknown (e.g. already completed).
        """

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Discard a multipart upload and its parts; no error when it is already gone."""

    async def put_object(self, key: str, data: bytes | memoryview, content_type: str = "application/octet-stream") -> None:
        """Store a whole (small) object durably."""

    async def get_object(self, key: str) -> bytes:
        """Return a whole (small) object. Raises ObjectNotFound."""

    def read_range(self, key: str, start: int, end: int, chunk_size: int) -> AsyncIterator[bytes]:
        """Yield bytes start..end-1 of `key` in chunks of at most `chunk_size`."""

    async def object_size(self, key: str) -> int | None:
        """Size of `key` in bytes, or None when it does not exist."""

    async def delete_object(self, key: str) -> None:
        """Remove `key`; no error when it is missing."""

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with `prefix`; return how many."""

    async def signed_url(self, key: str, expires_in: int, filename: str | None = None) -> str | None:
        """A URL that reads `key` without credentials, or None when the store has none."""

    async def check(self) -> None:
        """Raise StoreError unless the store is reachable and writable."""

    async def close(self) -> None:
        """Release threads and connections."""
