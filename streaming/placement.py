"""Where a file goes in the store, decided from its first bytes.

The engine is given a `PlacementPolicy` (the media rules live in `processing/`);
`place_upload` applies it to an upload, adding the engine's own rules: partial
uploads are staging data under `partials/`, everything else must be accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from metadata.uploads import UploadRecord
from streaming.errors import TypeNotAllowed


class Placed(Protocol):
    """A policy's answer for one file."""

    key: str  # the object key of the finished file
    mime: str  # its MIME type, from its bytes
    category: str  # its media category (images, videos, files)
    accepted: bool  # whether files of this type are taken at all


class PlacementPolicy(Protocol):
    """Decides a file's key, MIME type and category from its first bytes."""

    sniff_bytes: int  # how many first bytes `place` wants (fewer only when the file is shorter)

    def place(self, upload_id: str, head: bytes, filename: str | None) -> Placed:
        """Where the file of upload `upload_id`, starting with `head`, is kept."""


@dataclass(frozen=True)
class Placement:
    """Where one upload's object goes."""

    key: str
    mime: str
    category: str


def place_upload(policy: PlacementPolicy, record: UploadRecord, head: bytes) -> Placement:
    """The placement of `record`'s object; raises TypeNotAllowed for a refused type."""
    placed = policy.place(record.id, head, record.filename)
    if record.concat == "partial":
        return Placement(f"partials/{record.id}", placed.mime, placed.category)
    if not placed.accepted:
        raise TypeNotAllowed(f"files of type {placed.mime} are not accepted")
    return Placement(placed.key, placed.mime, placed.category)
