"""Planning a final upload from partial uploads (tus concatenation).

Whole partials of at least MIN_PART_SIZE become server-side part copies
(UploadPartCopy on S3: no bytes through the gateway). Partials smaller than
that cannot be parts of their own unless they come last, so their bytes are
read and joined with their neighbours' into parts of at least MIN_PART_SIZE;
the gateway then holds at most about one part in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from streaming.stores.base import MIN_PART_SIZE

MAX_COPY_PART = 5 * 1024**3


@dataclass(frozen=True)
class Piece:
    """Bytes first..last (inclusive) of one source object."""

    key: str
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class PlannedPart:
    """One part of the final object: a server-side copy of one piece, or the joined bytes of several."""

    number: int
    pieces: tuple[Piece, ...]
    copy: bool

    @property
    def size(self) -> int:
        return sum(piece.size for piece in self.pieces)


def _split(key: str, first: int, last: int, max_size: int) -> list[Piece]:
    """Pieces of at most `max_size` covering first..last, none smaller than MIN_PART_SIZE unless alone."""
    pieces = []
    while last - first + 1 > max_size:
        take = max_size
        if last - first + 1 - take < MIN_PART_SIZE:
            take = (last - first + 1) - MIN_PART_SIZE
        pieces.append(Piece(key, first, first + take - 1))
        first += take
    pieces.append(Piece(key, first, last))
    return pieces


def plan(sources: Sequence[tuple[str, int]], max_copy: int = MAX_COPY_PART, min_part: int = MIN_PART_SIZE) -> list[PlannedPart]:
    """The parts that concatenate `sources` ((key, size) in order) into one object.

    Every part but the last has at least `min_part` bytes; joined parts hold less
    than 2 x `min_part` bytes.
    """
    parts: list[PlannedPart] = []
    carry: list[Piece] = []
    carried = 0

    def emit(pieces: Sequence[Piece], copy: bool) -> None:
        parts.append(PlannedPart(len(parts) + 1, tuple(pieces), copy))

    for key, size in sources:
        if size == 0:
            continue
        first, last = 0, size - 1
        if carry:
            take = min(size, min_part - carried)
            carry.append(Piece(key, first, first + take - 1))
            carried += take
            first += take
            if carried >= min_part:
                emit(carry, False)
                carry, carried = [], 0
        remaining = last - first + 1
        if remaining <= 0:
            continue
        if remaining >= min_part:
            for piece in _split(key, first, last, max_copy):
                emit([piece], True)
        else:
            carry.append(Piece(key, first, last))
            carried += remaining
    if carry:
        emit(carry, False)
    return parts
