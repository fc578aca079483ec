"""The body pace: minimum rate over a window and idle limit, not counting time the gateway holds the body."""

from gateway.body_pace import BodyPace


def test_a_trickle_is_slow_although_each_byte_resets_idleness():
    pace = BodyPace(min_rate=16 * 1024, window=30, idle_timeout=60, now=0)
    for second in range(0, 30, 5):  # one byte every 5 s: never idle
        pace.received(1, second)
        assert pace.verdict(second) is None
    assert pace.verdict(30) == "slow"


def test_a_steady_mobile_body_is_kept():
    pace = BodyPace(min_rate=16 * 1024, window=30, idle_timeout=60, now=0)
    for second in range(1, 121):  # 20 KiB/s for two minutes
        pace.received(20 * 1024, second)
        assert pace.verdict(second) is None


def test_time_the_gateway_holds_the_body_does_not_count():
    pace = BodyPace(min_rate=16 * 1024, window=30, idle_timeout=60, now=0)
    pace.received(100 * 1024, 1)
    pace.hold(2)  # waiting for the store for 100 s
    assert pace.verdict(90) is None
    pace.release(102)
    pace.received(400 * 1024, 110)
    assert pace.verdict(125) is None, "500 KiB in 23 s of client time keeps 16 KiB/s"


def test_silence_is_idle():
    pace = BodyPace(min_rate=0, window=30, idle_timeout=60, now=0)
    pace.received(1000, 1)
    assert pace.verdict(60) is None
    assert pace.verdict(61.5) == "idle"
    assert 0.1 <= pace.next_check(30) <= 31


def test_the_allocator_is_tuned_on_glibc():
    import platform

    from gateway import allocator

    if platform.libc_ver()[0] == "glibc":
        assert allocator.tune() is True
