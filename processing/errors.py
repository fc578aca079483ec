"""Why a media file's processing failed, in two voices."""

from __future__ import annotations


class MediaRejected(Exception):
    """A file that cannot or must not be processed.

    `reason` is for the file's owner (plain words, shown on the page and in the API); `detail`
    is for the log (what the decoder or tool said). str() is the reason.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return self.reason
