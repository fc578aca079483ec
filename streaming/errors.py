"""What can go wrong with an upload, independent of any protocol.

The tus and REST layers map these to HTTP statuses; nothing here knows HTTP.
"""

from __future__ import annotations


class UploadError(Exception):
    """Base class; `str(exc)` is a message fit for a client."""


class UploadNotFound(UploadError):
    """No such upload (or not visible to the caller)."""


class UploadGone(UploadError):
    """The upload expired and its data was discarded."""


class OffsetMismatch(UploadError):
    """The client's offset differs from the stored one."""

    def __init__(self, expected: int, given: int) -> None:
        super().__init__(f"Upload-Offset is {given}, but the upload is at {expected}")
        self.expected = expected
        self.given = given


class SizeExceeded(UploadError):
    """More bytes than the upload's length or the server's maximum."""


class InvalidLength(UploadError):
    """A length that cannot be set (already set, below the offset, negative)."""


class UploadNotWritable(UploadError):
    """The upload takes no more bytes (finished, or a final concatenation)."""


class ConcatenationError(UploadError):
    """A final upload names parts that cannot be concatenated."""


class StorageFailure(UploadError):
    """The object store failed; what was committed before stays committed."""


class LeaseLost(UploadError):
    """This writer lost its lease on the upload; it stopped before committing more."""


class TypeNotAllowed(UploadError):
    """The file's type (from its bytes) is not accepted; the upload is discarded."""
