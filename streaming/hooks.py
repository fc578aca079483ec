"""What the engine asks of integrators' hooks: a gate at creation, and durable announcements.

`CreationGate` decides, before anything is stored, whether an upload may be created
(and may replace its metadata). `Announcer` writes an event about a change durably
together with the change: `announcing(event, record)` is entered just before the commit
and left just after it, so the event is neither lost when the process dies after the
commit nor sent for a commit that never happened. The defaults let everything through
and announce nothing.
"""

from __future__ import annotations

import contextlib
from typing import AsyncContextManager, Protocol

from metadata.uploads import UploadRecord


class CreationGate(Protocol):
    """Admits or refuses new uploads."""

    async def admit(self, proposed: UploadRecord) -> dict[str, str | None] | None:
        """Let `proposed` (not stored yet) be created: None keeps its metadata, a dict replaces it.

        Refuses by raising; the error reaches the caller of the engine unchanged and nothing
        is stored.
        """


class Announcer(Protocol):
    """Durable events about committed changes of uploads."""

    def announcing(self, event: str, record: UploadRecord) -> AsyncContextManager[None]:
        """Wrap the commit that makes `record` true: the event `event` about it is delivered
        (at least once) if and only if the commit in the block happened."""


class OpenGate:
    """Admits every upload as it is."""

    async def admit(self, proposed: UploadRecord) -> dict[str, str | None] | None:
        return None


class NoAnnouncements:
    """Announces nothing."""

    def announcing(self, event: str, record: UploadRecord) -> AsyncContextManager[None]:
        return contextlib.nullcontext()  # type: ignore[return-value]
