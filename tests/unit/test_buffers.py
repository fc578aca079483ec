"""The process-wide part-buffer budget."""

import asyncio

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
