"""What happens to uploads, told to whoever listens (metrics, media registration, live progress).

`UploadEvents` is the one interface the engine and its sessions report through:
a listener subclasses it and overrides what it cares about. `EventFanout` passes
every event to its listeners in order; a listener's failure is logged and never
undoes or stops the upload step that caused it.
"""

from __future__ import annotations

import logging
from typing import Sequence

from metadata.uploads import UploadRecord

log = logging.getLogger(__name__)


class UploadEvents:
    """Every event of the upload engine; the defaults ignore them."""

    def created(self, record: UploadRecord) -> None:
        """A new upload was registered."""

    def committed(self, record: UploadRecord, count: int) -> None:
        """`count` more bytes of `record` are durable and counted in its offset."""

    async def finished(self, record: UploadRecord) -> None:
        """The upload is complete: its object is whole in the store."""

    async def terminated(self, record: UploadRecord) -> None:
        """The upload and its data were deleted at the client's request."""

    def expired(self, record: UploadRecord) -> None:
        """An unfinished upload expired and its data was discarded."""

    def writers(self, delta: int) -> None:
        """A request body started (+1) or stopped (-1) writing into an upload."""

    def parts_storing(self, delta: int) -> None:
        """A part was handed to the store (+1) or the store answered (-1)."""


class EventFanout(UploadEvents):
    """Passes each event to `listeners` in order."""

    def __init__(self, listeners: Sequence[UploadEvents] = ()) -> None:
        self.listeners = list(listeners)

    def add(self, listener: UploadEvents) -> None:
        """Listen from now on (after the listeners added before)."""
        self.listeners.append(listener)

    def _each(self, name: str, *args: object) -> None:
        for listener in self.listeners:
            try:
                getattr(listener, name)(*args)
            except Exception:  # noqa: BLE001 - a listener never breaks an upload
                log.exception("upload event listener failed", extra={"event": name})

    async def _each_awaited(self, name: str, record: UploadRecord) -> None:
        for listener in self.listeners:
            try:
                await getattr(listener, name)(record)
            except Exception:  # noqa: BLE001 - a listener never undoes a stored upload
                log.exception("upload event listener failed", extra={"event": name, "upload_id": record.id})

    def created(self, record: UploadRecord) -> None:
        self._each("created", record)

    def committed(self, record: UploadRecord, count: int) -> None:
        self._each("committed", record, count)

    async def finished(self, record: UploadRecord) -> None:
        await self._each_awaited("finished", record)

    async def terminated(self, record: UploadRecord) -> None:
        await self._each_awaited("terminated", record)

    def expired(self, record: UploadRecord) -> None:
        self._each("expired", record)

    def writers(self, delta: int) -> None:
        self._each("writers", delta)

    def parts_storing(self, delta: int) -> None:
        self._each("parts_storing", delta)
