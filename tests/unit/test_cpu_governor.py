"""The CPU ceiling kept by pacing bodies (pure logic: fake clocks, a fake cgroup tree)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.config import Settings
from gateway.cpu_governor import QUOTA_SHARE, CpuGovernor, UserShares, cgroup_cpu_quota, ingest_cpu_ceiling


class Clocks:
    """A process whose CPU and wall clocks the test moves; sleeping moves the wall clock."""

    def __init__(self) -> None:
        self.cpu = 0.0
        self.wall = 0.0
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.wall += seconds


def governor(clocks: Clocks, cores: float, burst: float = 0.01) -> CpuGovernor:
    return CpuGovernor(cores, burst=burst, cpu_clock=lambda: clocks.cpu, wall_clock=lambda: clocks.wall,
                       sleep=clocks.sleep)


def test_within_the_ceiling_nothing_waits():
    clocks = Clocks()
    pacer = governor(clocks, 0.25)
    for _ in range(100):  # 1 ms of CPU every 10 ms of wall: 0.1 cores
        clocks.cpu += 0.001
        clocks.wall += 0.010
        assert asyncio.run(pacer.pace()) == 0.0
    assert clocks.slept == []


def test_a_process_running_flat_out_is_held_to_the_ceiling_on_average():
    clocks = Clocks()
    pacer = governor(clocks, 0.225)
    for _ in range(2000):  # reading and hashing without pause: CPU and wall advance together
        clocks.cpu += 0.002
        clocks.wall += 0.002
        asyncio.run(pacer.pace())
    assert clocks.cpu / clocks.wall == pytest.approx(0.225, rel=0.02)
    assert pacer.waited == pytest.approx(sum(clocks.slept))


def test_no_period_of_the_quota_is_overrun_by_more_than_the_burst():
    """Under the ceiling in every 100 ms window (the kernel's quota period), give or take the burst."""
    clocks = Clocks()
    cores, burst = 0.225, 0.01
    pacer = governor(clocks, cores, burst)
    marks = [(0.0, 0.0)]
    for _ in range(3000):
        clocks.cpu += 0.0015
        clocks.wall += 0.0015
        asyncio.run(pacer.pace())
        marks.append((clocks.wall, clocks.cpu))
    for start_wall, start_cpu in marks[::50]:
        inside = [cpu for wall, cpu in marks if start_wall <= wall <= start_wall + 0.1]
        # one read's CPU (charged before its pause) on top of the ceiling and the burst
        assert inside[-1] - start_cpu <= cores * 0.1 + cores * burst + 0.0015 + 1e-9


def test_idle_time_does_not_bank_more_than_the_burst():
    clocks = Clocks()
    pacer = governor(clocks, 0.2, burst=0.01)
    clocks.wall += 60  # a minute idle
    clocks.cpu += 0.05  # then 50 ms of CPU at once
    clocks.wall += 0.001
    waited = asyncio.run(pacer.pace())
    assert waited == pytest.approx((0.05 - 0.2 * 0.01) / 0.2, rel=1e-6)  # only the burst was banked


def test_a_ceiling_must_be_positive():
    with pytest.raises(ValueError):
        CpuGovernor(0)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_is_the_tightest_of_the_group_and_its_ancestors(tmp_path):
    proc = tmp_path / "cgroup"
    write(proc, "0::/ecs/task/container\n")
    root = tmp_path / "fs"
    write(root / "ecs" / "task" / "container" / "cpu.max", "max 100000\n")
    write(root / "ecs" / "task" / "cpu.max", "25000 100000\n")
    write(root / "ecs" / "cpu.max", "200000 100000\n")
    assert cgroup_cpu_quota(proc, root) == pytest.approx(0.25)


def test_cgroup_v1_quota(tmp_path):
    proc = tmp_path / "cgroup"
    write(proc, "12:memory:/bench\n4:cpu,cpuacct:/bench\n1:name=systemd:/\n")
    group = tmp_path / "fs" / "cpu,cpuacct" / "bench"
    write(group / "cpu.cfs_quota_us", "50000\n")
    write(group / "cpu.cfs_period_us", "100000\n")
    write(tmp_path / "fs" / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")
    assert cgroup_cpu_quota(proc, tmp_path / "fs") == pytest.approx(0.5)


def test_no_quota_or_no_cgroup_means_none(tmp_path):
    proc = tmp_path / "cgroup"
    write(proc, "0::/\n")
    write(tmp_path / "fs" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_quota(proc, tmp_path / "fs") is None
    assert cgroup_cpu_quota(tmp_path / "missing", tmp_path / "fs") is None


def test_the_setting_names_the_ceiling():
    assert ingest_cpu_ceiling("off", 0.25) is None
    assert ingest_cpu_ceiling("auto", None) is None
    assert ingest_cpu_ceiling("auto", 0.25) == pytest.approx(0.25 * QUOTA_SHARE)
    assert ingest_cpu_ceiling("0.2", 0.25) == pytest.approx(0.2)


@pytest.mark.parametrize("text", ["0", "-1", "fast", ""])
def test_a_bad_setting_is_refused(text, monkeypatch):
    monkeypatch.setenv("INGEST_CPU_LIMIT", text)
    with pytest.raises(ValueError):
        Settings.from_env()


# -- fair shares among users ------------------------------------------------------------


def test_weights_give_each_user_alike_whatever_their_bodies():
    shares = UserShares(forget_after=2.0)
    assert shares.weight("nobody") == 1.0
    for body in range(3):
        shares.seen("alone", body, 0.0)
    assert shares.weight("alone") == 1.0  # one user: paced as without shares
    for body in range(10, 19):
        shares.seen("many", body, 0.5)
    shares.seen("one", 99, 0.5)
    # 13 bodies of 3 users: a body waits (its user's bodies x users / bodies) the plain pause
    assert shares.weight("many") == pytest.approx(9 * 3 / 13)
    assert shares.weight("one") == pytest.approx(1 * 3 / 13)
    # bodies that stop asking are dropped at the next sweep, and users with them
    shares.seen("one", 99, 3.0)
    assert shares.weight("one") == 1.0 and shares.weight("many") == 1.0 and shares._count == 1


def simulate(users: dict[str, int], *, cores: float = 0.225, seconds: float = 30.0,
             chunk: int = 64 * 1024, cpu_per_chunk: float = 0.0005, fair: bool = True) -> dict[str, int]:
    """Bytes each user gets through one process held to `cores`, `users[name]` bodies each, every
    body reading chunks as fast as the governor lets it, as the handlers do: ask, sleep the pause
    if any, read one chunk (one CPU; reading costs CPU and wall time; bodies run in time order)."""
    clocks = Clocks()
    pacer = governor(clocks, cores)
    bodies = [{"user": name, "key": key, "at": 0.0, "slept": False}
              for key, name in enumerate(name for name, count in users.items() for _ in range(count))]
    got = dict.fromkeys(users, 0)
    while clocks.wall < seconds:
        body = min(bodies, key=lambda b: b["at"])
        clocks.wall = max(clocks.wall, body["at"])
        if not body["slept"]:
            pause = pacer.pause_for(body["user"] if fair else None, body["key"])
            if pause > 0:
                body["at"], body["slept"] = clocks.wall + pause, True
                continue
        body["slept"] = False
        clocks.cpu += cpu_per_chunk
        clocks.wall += cpu_per_chunk
        got[body["user"]] += chunk
        body["at"] = clocks.wall
    assert clocks.cpu / clocks.wall == pytest.approx(cores, rel=0.05)  # the ceiling holds either way
    return got


def test_a_user_with_many_bodies_does_not_crowd_out_a_user_with_one():
    unfair = simulate({"many": 10, "one": 1}, fair=False)
    assert unfair["one"] / unfair["many"] < 0.15  # per connection: the one body gets about 1/11
    fair = simulate({"many": 10, "one": 1})
    assert fair["one"] / fair["many"] > 0.8  # per user: close to even
    assert sum(fair.values()) == pytest.approx(sum(unfair.values()), rel=0.05)  # and no less in all


def test_three_users_with_20_2_and_1_bodies_get_about_a_third_each():
    got = simulate({"a": 20, "b": 2, "c": 1})
    assert min(got.values()) / max(got.values()) > 0.8


def test_one_user_alone_is_paced_as_before():
    assert simulate({"solo": 3}) == simulate({"solo": 3}, fair=False)
