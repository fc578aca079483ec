"""What can go wrong with an upload, independent of any protocol.

The HTTP layer maps these to statuses in its one error table; nothing here knows
HTTP. Failures of the metadata store reach the engine as `MetadataFailure` and
failures of the object store as `StorageFailure`, never as a driver's own types.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from metadata.errors import MetadataError, MetadataUnavailable


class UploadError(Exception):
    """Base class; `str(exc)` is a message fit for a client."""


class UploadNotFound(UploadError):
    """No such upload (or not visible to the caller)."""


class UploadGone(UploadError):
    """The upload expired and its data was discarded."""


class OffsetMismatch(UploadError):
    """The client's offset differs from the stored one; `expected` is the stored one."""

    def __init__(self, expected: int, given: int) -> None:
        super().__init__(f"Upload-Offset is {given}, but the upload is at {expected}")
        self.expected = expected
        self.given = given


class SizeExceeded(UploadError):
    """More bytes than the upload's length or the server's maximum."""


class InvalidLength(UploadError):
    """A length that cannot be set (already set, below the offset, negative)."""


class UploadNotWritable(UploadError):
    """The upload takes no more bytes (a final concatenation)."""


class ConcatenationError(UploadError):
    """A final upload names parts that cannot be concatenated."""


class StorageFailure(UploadError):
    """The object store failed; what was committed before stays committed."""


class MetadataFailure(UploadError):
    """The metadata store failed; what was committed before stays committed."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class LeaseLost(UploadError):
    """This writer lost its lease on the upload; it stopped before committing more."""


class UploadLocked(UploadError):
    """Another holder kept the upload's lease for longer than we could wait."""


class TooManyUploads(UploadError):
    """The owner has as many unfinished uploads as one user may have."""


class MemoryBusy(UploadError):
    """No part buffer could be had in time (the memory budget, or the user's share of it, is in use);
    what was durable before stays committed, and the client may retry shortly."""


class TypeNotAllowed(UploadError):
    """The file's type (from its bytes) is not accepted; the upload is discarded."""


@contextlib.contextmanager
def metadata_failures() -> Iterator[None]:
    """Turn the metadata store's errors raised inside the block into MetadataFailure."""
    try:
        yield
    except MetadataError as exc:
        raise MetadataFailure("the metadata store is unavailable; retry later",
                              unreachable=isinstance(exc, MetadataUnavailable)) from exc
