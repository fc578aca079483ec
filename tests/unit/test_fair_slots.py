"""Processing slots taken in turns by user (pure logic on an event loop)."""

from __future__ import annotations

import asyncio

import pytest

from processing.fair_slots import FairSlots


async def admitted_order(slots: FairSlots, jobs: list[str]) -> list[str]:
    """Start every job (owner names) at once, each holding its slot one loop turn; the owners in
    the order they got a slot."""
    order: list[str] = []

    async def job(owner: str) -> None:
        async with slots.slot(owner):
            order.append(owner)
            await asyncio.sleep(0)

    await asyncio.gather(*(job(owner) for owner in jobs))
    return order


async def test_users_take_turns_instead_of_arrival_order():
    order = await admitted_order(FairSlots(1), ["a"] * 6 + ["b", "c"])
    # a's first job took the free slot; then turns go a, b, c in the order they started waiting
    assert order[:6] == ["a", "a", "b", "c", "a", "a"]
    assert sorted(order) == sorted(["a"] * 6 + ["b", "c"])


async def test_free_slots_are_taken_at_once_and_given_back():
    slots = FairSlots(2)
    await slots.acquire("a")
    await slots.acquire("a")
    assert slots.free == 0
    third = asyncio.ensure_future(slots.acquire("b"))
    await asyncio.sleep(0)
    assert not third.done() and slots.waiting == 1
    slots.release()
    await third
    slots.release()
    slots.release()
    assert slots.free == 2 and slots.waiting == 0


async def test_a_cancelled_wait_holds_nothing():
    slots = FairSlots(1)
    await slots.acquire("a")
    waiting = asyncio.ensure_future(slots.acquire("b"))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert slots.waiting == 0
    slots.release()
    assert slots.free == 1


async def test_a_waiter_cancelled_in_the_same_turn_as_a_release_is_passed_over():
    slots = FairSlots(1)
    await slots.acquire("a")
    cancelled = asyncio.ensure_future(slots.acquire("b"))
    after = asyncio.ensure_future(slots.acquire("c"))
    await asyncio.sleep(0)
    cancelled.cancel()  # b's wait is cancelled now; its task runs its clean-up only at its next turn
    slots.release()  # so this must not hand the slot to b's cancelled wait
    await asyncio.wait_for(after, 1)
    with pytest.raises(asyncio.CancelledError):  # ended by its cancellation, nothing else
        await cancelled
    assert slots.free == 0 and slots.waiting == 0
    slots.release()
    assert slots.free == 1


def test_slots_cannot_be_negative():
    with pytest.raises(ValueError):
        FairSlots(-1)
