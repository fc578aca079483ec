"""Releasing a lease never hangs on its renewing task, and never swallows the caller's cancellation
(pure logic: a lease repository in memory)."""

from __future__ import annotations

import asyncio

from streaming import locking
from streaming.locking import UploadLocker


class MemoryLeases:
    """Leases by name in a dict: who holds each one."""

    def __init__(self) -> None:
        self.holders: dict[str, str] = {}

    async def try_acquire(self, name: str, holder: str, ttl: float) -> bool:
        if name in self.holders:
            return False
        self.holders[name] = holder
        return True

    async def renew(self, name: str, holder: str, ttl: float) -> bool:
        return self.holders.get(name) == holder

    async def release(self, name: str, holder: str) -> None:
        if self.holders.get(name) == holder:
            del self.holders[name]


async def stubborn_keeper(stop: asyncio.Event) -> None:
    """A renewing task that does not stop when cancelled (what a stuck one looks like), until `stop`."""
    while not stop.is_set():
        try:
            await stop.wait()
        except asyncio.CancelledError:
            continue


def test_release_gives_the_lease_back_even_when_its_keeper_will_not_stop(monkeypatch):
    monkeypatch.setattr(locking, "KEEPER_STOP_WAIT", 0.05)

    async def scenario() -> None:
        leases = MemoryLeases()
        locker = UploadLocker(leases, ttl=30, wait=0)
        lease = await locker.acquire("u1")
        lease._keeper.cancel()
        stop = asyncio.Event()
        lease._keeper = asyncio.ensure_future(stubborn_keeper(stop))
        await asyncio.wait_for(locker.release(lease), 2)
        assert leases.holders == {}
        again = await locker.acquire("u1")  # another writer may take it at once
        stop.set()
        await locker.release(again)

    asyncio.run(scenario())


def test_release_stops_the_keeper_and_lets_the_next_writer_in():
    async def scenario() -> None:
        leases = MemoryLeases()
        locker = UploadLocker(leases, ttl=30, wait=0)
        lease = await locker.acquire("u2")
        keeper = lease._keeper
        await locker.release(lease)
        assert keeper.cancelled()
        assert "upload:u2" not in leases.holders

    asyncio.run(scenario())


def test_a_cancelled_release_stays_cancelled():
    async def scenario() -> None:
        leases = MemoryLeases()
        locker = UploadLocker(leases, ttl=30, wait=0)
        lease = await locker.acquire("u3")
        lease._keeper.cancel()
        stop = asyncio.Event()
        lease._keeper = asyncio.ensure_future(stubborn_keeper(stop))
        releasing = asyncio.ensure_future(locker.release(lease))
        await asyncio.sleep(0.01)
        releasing.cancel()
        done, _ = await asyncio.wait({releasing}, timeout=2)
        stop.set()
        assert done and releasing.cancelled()

    asyncio.run(scenario())


class SlowRenewals(MemoryLeases):
    """Renewals that take a while and absorb a cancellation arriving meanwhile, as a database
    driver finishing its round trip may."""

    def __init__(self) -> None:
        super().__init__()
        self.renewals = 0

    async def renew(self, name: str, holder: str, ttl: float) -> bool:
        self.renewals += 1
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            pass  # absorbed
        return await super().renew(name, holder, ttl)


def test_a_keeper_whose_cancellation_is_absorbed_still_stops():
    async def scenario() -> None:
        leases = SlowRenewals()
        locker = UploadLocker(leases, ttl=0.03, wait=0)  # renew every 10 ms
        lease = await locker.acquire("u4")
        keeper = lease._keeper
        while not leases.renewals:
            await asyncio.sleep(0.005)
        await asyncio.wait_for(locker.release(lease), 2)  # lands while a renewal is in flight
        await asyncio.wait({keeper}, timeout=1)
        assert keeper.done() and not lease.lost.is_set()
        renewals = leases.renewals
        await asyncio.sleep(0.1)
        assert leases.renewals == renewals and "upload:u4" not in leases.holders

    asyncio.run(scenario())
