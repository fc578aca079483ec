"""The media placement policy: type from the file's magic bytes, key media/<category>/<id>.<ext>."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection

from processing.detect import SNIFF_BYTES, detect, object_key


@dataclass(frozen=True)
class MediaPlacement:
    """Where a file goes and whether it is taken."""

    key: str
    mime: str
    category: str
    accepted: bool


class MediaPlacementPolicy:
    """Places files by their detected type; accepts those whose category or MIME type is in `allowed_types`."""

    sniff_bytes = SNIFF_BYTES

    def __init__(self, allowed_types: Collection[str]) -> None:
        self._allowed = frozenset(allowed_types)

    def place(self, upload_id: str, head: bytes, filename: str | None) -> MediaPlacement:
        detected = detect(head, filename)
        return MediaPlacement(
            key=object_key(upload_id, detected),
            mime=detected.mime,
            category=detected.category,
            accepted=detected.category in self._allowed or detected.mime in self._allowed,
        )
