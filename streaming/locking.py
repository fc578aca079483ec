"""Exclusive access to one upload across all gateway instances.

`UploadLocker.hold(upload_id)` is an async context manager: it takes the
upload's lease (waiting up to `wait` seconds for another holder), renews it
in the background while held, and releases it on exit. When a renewal fails
the lease is lost: `Lease.lost` is set and `on_lost` callbacks run, so the
holder stops writing before anyone else can start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import AsyncIterator, Awaitable, Callable

from metadata.leases import LeaseRepository
from streaming.errors import UploadLocked, metadata_failures

log = logging.getLogger(__name__)

#: seconds `UploadLocker.release` waits for the cancelled renewing task to end
KEEPER_STOP_WAIT = 1.0


class Lease:
    """A held lease; `lost` is set if it could not be renewed. `release` gives it back."""

    def __init__(self, name: str, holder: str, release: Callable[["Lease"], Awaitable[None]]) -> None:
        self.name = name
        self.holder = holder
        self.lost = asyncio.Event()
        self._on_lost: list[Callable[[], None]] = []
        self._keeper: asyncio.Future | None = None
        self._release = release
        #: set by the locker's `release`: the renewing task ends at its next step
        self.released = False

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call `callback` once if the lease is lost while held."""
        self._on_lost.append(callback)

    async def release(self) -> None:
        """Stop renewing and give the lease back (best effort: it expires anyway)."""
        await self._release(self)

    def _mark_lost(self) -> None:
        if not self.lost.is_set():
            self.lost.set()
            for callback in self._on_lost:
                callback()


class UploadLocker:
    """Leases on uploads, kept in MongoDB so every instance sees them."""

    def __init__(self, leases: LeaseRepository, ttl: float, wait: float, poll: float = 0.2) -> None:
        self._leases = leases
        self.ttl = ttl
        self.wait = wait
        self.poll = poll
        self.instance = uuid.uuid4().hex

    async def acquire(self, upload_id: str, wait: float | None = None) -> Lease:
        """Take the lease of `upload_id` and keep renewing it until `release`.

        Raises UploadLocked after `wait` seconds (default: the locker's) of trying,
        MetadataFailure when the metadata store fails.
        """
        holder = f"{self.instance}:{uuid.uuid4().hex}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.wait if wait is None else wait)
        while True:
            with metadata_failures():
                taken = await self._leases.try_acquire(f"upload:{upload_id}", holder, self.ttl)
            if taken:
                lease = Lease(f"upload:{upload_id}", holder, self.release)
                lease._keeper = asyncio.ensure_future(self._keep_alive(lease))
                return lease
            if loop.time() >= deadline:
                raise UploadLocked(upload_id)
            await asyncio.sleep(self.poll)

    async def _keep_alive(self, lease: Lease) -> None:
        """Renew `lease` every third of its TTL until it is released or a renewal fails.

        Released is checked after every await as well as signalled by cancellation: a
        cancellation that arrives while a renewal is in the database driver may be absorbed
        there, and the loop must end anyway.
        """
        interval = self.ttl / 3
        while not lease.released:
            await asyncio.sleep(interval)
            if lease.released:
                return
            try:
                renewed = await self._leases.renew(lease.name, lease.holder, self.ttl)
            except Exception:  # noqa: BLE001 - a failed renewal is handled like a lost lease below
                log.warning("lease renewal failed", extra={"lease": lease.name}, exc_info=True)
                renewed = False
            if not renewed and not lease.released:
                lease._mark_lost()
                return

    async def release(self, lease: Lease) -> None:
        """Stop renewing and give the lease back (best effort: it expires anyway).

        Waits at most `KEEPER_STOP_WAIT` seconds for the renewing task to end: a request must
        never hang on it (a renewal that still ran later would find the lease given back and
        stop). A cancellation of the caller is not swallowed.
        """
        lease.released = True
        keeper, lease._keeper = lease._keeper, None
        if keeper is not None:
            keeper.cancel()
            done, _ = await asyncio.wait({keeper}, timeout=KEEPER_STOP_WAIT)
            if not done:
                log.warning("a lease's renewing task did not stop when cancelled", extra={
                    "lease": lease.name, "keeper": repr(keeper), "stack": repr(keeper.get_stack(limit=4))})
        with contextlib.suppress(Exception):
            await self._leases.release(lease.name, lease.holder)

    @contextlib.asynccontextmanager
    async def hold(self, upload_id: str, wait: float | None = None) -> AsyncIterator[Lease]:
        """Hold the lease of `upload_id` for the body of the `async with`."""
        lease = await self.acquire(upload_id, wait)
        try:
            yield lease
        finally:
            await self.release(lease)
