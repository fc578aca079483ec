"""The processing memory budget: admission in arrival order, refusal of what can never fit, costs."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import pytest

from processing.budget import (
    MiB, PROBE_COST, MemoryBudget, OverBudget, image_job_cost, video_frame_cost,
)
from processing.video import NO_FRAME, VideoRejected, run_limited


def run(coroutine):
    return asyncio.run(coroutine)


def test_jobs_that_fit_are_admitted_at_once_and_give_their_memory_back():
    async def scenario():
        budget = MemoryBudget(100)
        await budget.acquire(60)
        await budget.acquire(40)
        assert (budget.in_use, budget.waiting) == (100, 0)
        budget.release(60)
        budget.release(40)
        assert budget.in_use == 0

    run(scenario())


def test_a_job_larger_than_the_whole_budget_is_refused_at_once_and_holds_nothing():
    async def scenario():
        budget = MemoryBudget(100)
        await budget.acquire(90)
        with pytest.raises(OverBudget) as refused:
            await budget.acquire(101)
        assert (refused.value.cost, refused.value.total) == (101, 100)
        assert (budget.in_use, budget.waiting) == (90, 0)

    run(scenario())


def test_jobs_wait_while_the_budget_is_taken_and_run_in_arrival_order():
    async def scenario():
        budget = MemoryBudget(100)
        admitted: list[str] = []

        async def job(name: str, cost: int) -> None:
            await budget.acquire(cost)
            admitted.append(name)

        await budget.acquire(80)
        large = asyncio.ensure_future(job("large", 50))
        await asyncio.sleep(0)
        small = asyncio.ensure_future(job("small", 10))  # would fit now, but may not overtake "large"
        await asyncio.sleep(0)
        assert admitted == [] and budget.waiting == 2
        budget.release(80)
        await asyncio.gather(large, small)
        assert admitted == ["large", "small"] and budget.in_use == 60

    run(scenario())


def test_a_waiter_admitted_only_when_enough_is_released():
    async def scenario():
        budget = MemoryBudget(100)
        await budget.acquire(50)
        await budget.acquire(50)
        waiter = asyncio.ensure_future(budget.acquire(70))
        await asyncio.sleep(0)
        budget.release(50)
        await asyncio.sleep(0)
        assert not waiter.done(), "50 free is not enough for 70"
        budget.release(50)
        await waiter
        assert budget.in_use == 70

    run(scenario())


def test_a_cancelled_waiter_holds_nothing_and_lets_the_next_one_in():
    async def scenario():
        budget = MemoryBudget(100)
        await budget.acquire(60)
        blocked = asyncio.ensure_future(budget.acquire(90))
        await asyncio.sleep(0)
        behind = asyncio.ensure_future(budget.acquire(30))
        await asyncio.sleep(0)
        assert not behind.done(), "arrival order: waits behind the large job"
        blocked.cancel()
        await asyncio.gather(blocked, return_exceptions=True)
        await asyncio.wait_for(behind, 1)
        assert (budget.in_use, budget.waiting) == (90, 0)

    run(scenario())


def test_a_waiter_cancelled_in_the_same_turn_as_a_release_holds_nothing():
    async def scenario():
        budget = MemoryBudget(100)
        await budget.acquire(100)
        cancelled = asyncio.ensure_future(budget.acquire(50))
        behind = asyncio.ensure_future(budget.acquire(40))
        await asyncio.sleep(0)
        cancelled.cancel()  # its wait is cancelled now; its task cleans up only at its next turn
        budget.release(100)  # so this must pass it over
        await asyncio.wait_for(behind, 1)
        await asyncio.gather(cancelled, return_exceptions=True)
        assert cancelled.cancelled()  # ended by its cancellation, nothing else
        assert (budget.in_use, budget.waiting) == (40, 0)

    run(scenario())


def test_reserve_gives_the_memory_back_when_the_job_fails():
    async def scenario():
        budget = MemoryBudget(100)
        with pytest.raises(RuntimeError):
            async with budget.reserve(70):
                assert budget.in_use == 70
                raise RuntimeError("decoder failed")
        assert budget.in_use == 0
        async with budget.reserve(100):
            pass

    run(scenario())


def test_a_budget_must_be_positive():
    with pytest.raises(ValueError):
        MemoryBudget(0)


def test_image_cost_grows_with_the_file_and_the_decoded_pixels():
    jpeg_24mp = image_job_cost(750 * 500 * 4, 8 * MiB)  # a 24 MP JPEG decoded at 1/8 (draft mode)
    png_24mp = image_job_cost(6000 * 4000 * 4, 8 * MiB)  # a 24 MP PNG, decoded whole
    assert jpeg_24mp < 40 * MiB < png_24mp
    assert image_job_cost(100, 2 * MiB) > image_job_cost(100, MiB) > image_job_cost(0, MiB)


def test_video_cost_covers_what_ffmpeg_was_measured_to_need():
    # one-thread ffmpeg 5.1 taking a frame of H.264 needed RLIMIT_DATA of 64 MiB (1080p) and 128 MiB (4K)
    assert video_frame_cost(1920, 1080, fallback=1) >= 64 * MiB
    assert video_frame_cost(3840, 2160, fallback=1) >= 128 * MiB
    assert video_frame_cost(None, 1080, fallback=77) == 77
    assert video_frame_cost(0, 0, fallback=77) == 77
    assert PROBE_COST >= 48 * MiB


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_an_ffmpeg_run_is_held_to_its_reservation_and_says_so(tmp_path):
    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=duration=2:size=1920x1080:rate=25",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)], check=True, timeout=120)
    frame = ["ffmpeg", "-v", "error", "-nostdin", "-threads", "1", "-ss", "1", "-i", str(clip), "-frames:v", "1",
             "-vf", "scale=320:-2", "-filter_threads", "1", "-threads", "1", "-f", "image2", "-c:v", "mjpeg", "pipe:1"]

    async def take(data_bytes: int) -> bytes:
        return await run_limited(frame, 60, 1 << 32, failure=NO_FRAME, data_bytes=data_bytes)

    assert run(take(video_frame_cost(1920, 1080, fallback=1)))[:2] == b"\xff\xd8", "the estimate is enough"
    with pytest.raises(VideoRejected) as refused:
        run(take(24 * MiB))
    assert refused.value.reason == "the video needs more memory than processing allows (limit 24 MiB)"
    assert "ffmpeg failed" in refused.value.detail
