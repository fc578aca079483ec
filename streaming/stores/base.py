"""The object store interface: bytes in, bytes out, no HTTP.

A store keeps objects under string keys and supports S3-style multipart
uploads. Every method is a coroutine; implementations never block the event
loop. Parts are numbered from 1; every part but the last must be at least
`MIN_PART_SIZE` bytes (the S3 rule, enforced by S3 and kept by callers).
Every failure leaves a store as `StoreError` (or `ObjectNotFound`), never as
an error of the library or operating system underneath.

What only some stores can do is declared by small protocols, checked with
`isinstance`: `CopiesParts`, `WritesPartsInPlace`, `SignsUrls`. What the gateway
offers (tus extensions, media URLs) follows from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Protocol, Sequence, runtime_checkable

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

    async def upload_part(self, key: str, upload_id: str, number: int, data: memoryview) -> str:
        """Store `data` as part `number` (replacing an earlier one); return its part token.

        The token (ETag and whatever else the store needs) is opaque: callers keep it
        and pass it back to `complete_multipart`. Returns only once the part is durable.
        """

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

    async def check(self) -> None:
        """Raise StoreError unless the store is reachable and writable."""

    async def close(self) -> None:
        """Release threads and connections."""


@runtime_checkable
class CopiesParts(Protocol):
    """A store that makes a part from bytes of a stored object without sending them through us."""

    async def copy_part(self, key: str, upload_id: str, number: int, source_key: str, first: int, last: int) -> str:
        """Store bytes first..last (inclusive) of `source_key` as part `number`; return its token."""


@runtime_checkable
class WritesPartsInPlace(Protocol):
    """A store that can lay a part's bytes at their final place in the object as they arrive."""

    async def upload_part_at(self, key: str, upload_id: str, number: int, data: memoryview, offset: int) -> str:
        """`upload_part`, told that the part's first byte sits at `offset` of the finished object."""


@runtime_checkable
class SignsUrls(Protocol):
    """A store that hands out URLs reading an object without credentials."""

    async def signed_url(self, key: str, expires_in: int, filename: str | None = None) -> str:
        """A URL that reads `key` for `expires_in` seconds (served inline as `filename`)."""

    def url_origin(self) -> str:
        """The origin (scheme://host[:port]) every URL of `signed_url` starts with."""


async def store_part(store: ObjectStore, key: str, upload_id: str, number: int, data: memoryview, offset: int) -> str:
    """Store part `number` whose first byte sits at `offset`: in place where the store can."""
    if isinstance(store, WritesPartsInPlace):
        return await store.upload_part_at(key, upload_id, number, data, offset)
    return await store.upload_part(key, upload_id, number, data)
