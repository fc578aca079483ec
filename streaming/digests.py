"""Running sha256 digests of files being uploaded, kept between requests on this instance.

A PATCH that continues an upload whose earlier parts this instance hashed picks
the digest up where it stopped, without re-reading anything. The states kept are
bounded (least recently used dropped); an upload whose state is not here simply
gets no digest from its upload (processing hashes the stored file instead).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

from metadata.uploads import UploadRecord

STATES_KEPT = 4096


class FileDigests:
    """sha256 states per upload, by how many committed parts they cover."""

    def __init__(self, enabled: bool = True, kept: int = STATES_KEPT) -> None:
        self.enabled = enabled
        self._kept = kept
        self._states: OrderedDict[str, tuple[int, Any]] = OrderedDict()

    def resume(self, record: UploadRecord) -> Any:
        """A sha256 object covering parts 1..parts_count of `record`, or None when unknown here
        (always None when digests are off). The caller owns the returned object."""
        if not self.enabled:
            return None
        if record.parts_count == 0:
            return hashlib.sha256()
        kept = self._states.get(record.id)
        if kept is None or kept[0] != record.parts_count:
            return None
        return kept[1].copy()

    def keep(self, record: UploadRecord, hasher: Any) -> None:
        """Remember `hasher` as the digest of `record`'s committed parts (None forgets it)."""
        if hasher is None:
            self._states.pop(record.id, None)
            return
        self._states[record.id] = (record.parts_count, hasher)
        self._states.move_to_end(record.id)
        while len(self._states) > self._kept:
            self._states.popitem(last=False)

    def forget(self, upload_id: str) -> None:
        """Drop what is kept of `upload_id`."""
        self._states.pop(upload_id, None)
