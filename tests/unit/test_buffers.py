"""The process-wide part-buffer budget."""

import asyncio

import pytest

from streaming.buffers import BufferPool


async def test_acquire_waits_while_budget_is_spent():
    pool = BufferPool(budget=100)
    first = await pool.acquire(60)
    waiter = asyncio.ensure_future(pool.acquire(60))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await pool.release(first)
    second = await asyncio.wait_for(waiter, 1)
    assert len(second) == 60
    assert pool.in_use == 60


async def test_buffers_are_reused():
    pool = BufferPool(budget=100)
    buffer = await pool.acquire(40)
    await pool.release(buffer)
    assert await pool.acquire(40) is buffer


async def test_kept_buffers_of_other_sizes_make_room():
    pool = BufferPool(budget=100)
    await pool.release(await pool.acquire(80))
    big = await asyncio.wait_for(pool.acquire(90), 1)
    assert len(big) == 90


async def test_one_oversized_buffer_is_still_granted_when_idle():
    pool = BufferPool(budget=10)
    assert len(await asyncio.wait_for(pool.acquire(50), 1)) == 50


async def test_one_owner_holds_at_most_its_cap():
    pool = BufferPool(budget=100, per_owner=30)
    first = await pool.acquire(10, "a")
    await pool.acquire(10, "a")
    await pool.acquire(10, "a")
    over = asyncio.ensure_future(pool.acquire(10, "a"))
    await asyncio.sleep(0.01)
    assert not over.done(), "a fourth buffer would pass the owner's cap"
    assert len(await asyncio.wait_for(pool.acquire(10, "b"), 1)) == 10, "another owner is served meanwhile"
    await pool.release(first)
    assert len(await asyncio.wait_for(over, 1)) == 10
    assert pool.held_by("a") == 30 and pool.held_by("b") == 10


async def test_the_share_shrinks_as_more_owners_wait():
    pool = BufferPool(budget=100)
    held = [await pool.acquire(10, "a") for _ in range(6)]
    assert pool.share() == 100, "alone, an owner may use the whole budget"
    waiting_b = asyncio.ensure_future(pool.acquire(10, "b"))
    await asyncio.sleep(0.01)
    assert waiting_b.done(), "an owner holding nothing gets a buffer while there is room"
    assert pool.share() == 50
    more_a = asyncio.ensure_future(pool.acquire(10, "a"))
    await asyncio.sleep(0.01)
    assert not more_a.done(), "past its share, an owner waits even though the budget has room"
    for buffer in held[:2]:
        await pool.release(buffer)
    assert len(await asyncio.wait_for(more_a, 1)) == 10


async def test_a_wait_has_a_deadline():
    from streaming.errors import MemoryBusy

    pool = BufferPool(budget=20, wait=0.05)
    await pool.acquire(20, "a")
    with pytest.raises(MemoryBusy):
        await pool.acquire(20, "b")
    assert pool.in_use == 20 and pool.share() == 20, "a waiter that gave up no longer counts"
