"""Thermal/RGB pair synchroniser and the latest-pair mailbox (ROS-free)."""
from __future__ import annotations

import random
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mex_fusion_ros.sync import (
    CAMERAS,
    RGB,
    THERMAL,
    DropReason,
    FramePair,
    LatestPairMailbox,
    PairSynchronizer,
    StampedFrame,
)

MS = 1_000_000
SECOND = 1_000_000_000


def camera_stream(rate_hz: float, seconds: float, *, start_ns: int = SECOND, jitter_ns: int = 0,
                  seed: int = 0) -> list[tuple[int, int]]:
    """(stamp_ns, capture index) of a camera running at ``rate_hz`` with uniform stamp jitter."""
    rng = random.Random(seed)
    count = int(rate_hz * seconds)
    return [(start_ns + round(i * SECOND / rate_hz) + rng.randint(-jitter_ns, jitter_ns), i)
            for i in range(count)]


def play(sync: PairSynchronizer, thermal: list[tuple[int, int]], rgb: list[tuple[int, int]],
         *, thermal_latency_ns: int = 0, flush: bool = True) -> list[FramePair]:
    """Feed both streams in arrival order (stamp + latency) and collect the emitted pairs."""
    events = [(stamp + thermal_latency_ns, 0, THERMAL, stamp, index) for stamp, index in thermal]
    events += [(stamp, 1, RGB, stamp, index) for stamp, index in rgb]
    pairs: list[FramePair] = []
    for _, _, camera, stamp, index in sorted(events):
        pairs += sync.add(camera, StampedFrame(stamp, index))
    if flush:
        pairs += sync.flush()
    return pairs


def assert_counts_add_up(sync: PairSynchronizer) -> None:
    stats = sync.stats
    for camera in CAMERAS:
        counts = stats.camera(camera)
        assert counts.received == counts.matched + counts.dropped_total + counts.queued, (camera, counts)
        assert counts.queued <= sync.queue_size
        assert counts.matched == stats.pairs


# --- random streams -----------------------------------------------------------------------------
@st.composite
def frame_streams(draw: st.DrawFn) -> dict:
    """Two cameras with random rates, jitter, clock offset, arrival delays (reordering) and duplicates."""
    thermal_period = draw(st.integers(10, 120)) * MS
    rgb_period = draw(st.integers(10, 120)) * MS
    jitter = draw(st.integers(0, 15)) * MS
    true_offset = draw(st.integers(-60, 60)) * MS
    events = []
    for camera, period, count in ((THERMAL, thermal_period, draw(st.integers(0, 30))),
                                  (RGB, rgb_period, draw(st.integers(0, 30)))):
        for i in range(count):
            stamp = SECOND + i * period + draw(st.integers(-jitter, jitter))
            if camera == THERMAL:
                stamp -= true_offset
            delay = draw(st.integers(0, 3 * period))  # arrival delay > period => out of order
            events.append((stamp + delay, camera, stamp))
            if draw(st.integers(0, 9)) == 0:  # the driver publishes the same stamp twice
                events.append((stamp + delay + 1, camera, stamp))
    events.sort()
    return {
        "events": [(camera, stamp) for _, camera, stamp in events],
        "mode": draw(st.sampled_from(["approximate", "latest"])),
        "slop": draw(st.integers(0, 60)) / 1000,
        "queue_size": draw(st.integers(1, 12)),
        "thermal_offset": draw(st.sampled_from([0, true_offset])) / SECOND,
        "max_backward_jump": draw(st.sampled_from([None, 0.0, 0.05, 0.2, 1.0])),
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame_streams())
def test_random_streams_keep_every_invariant(case: dict) -> None:
    sync = PairSynchronizer(case["mode"], slop=case["slop"], queue_size=case["queue_size"],
                            thermal_offset=case["thermal_offset"],
                            max_backward_jump=case["max_backward_jump"])
    slop_ns = round(case["slop"] * SECOND)
    offset_ns = round(case["thermal_offset"] * SECOND)
    added: dict[int, str] = {}
    used: set[int] = set()
    last_pair: FramePair | None = None
    clock_jumps = 0

    def check(pairs: list[FramePair]) -> None:
        nonlocal last_pair, clock_jumps
        if sync.stats.clock_jumps != clock_jumps:  # time went back on purpose: order starts anew
            clock_jumps = sync.stats.clock_jumps
            last_pair = None
        for pair in pairs:
            assert abs(pair.skew_ns) <= slop_ns
            assert pair.skew_ns == pair.thermal.stamp_ns + offset_ns - pair.rgb.stamp_ns
            assert pair.stamp_ns == pair.rgb.stamp_ns
            assert added[id(pair.thermal)] == THERMAL and added[id(pair.rgb)] == RGB
            assert id(pair.thermal) not in used and id(pair.rgb) not in used, "a frame was used twice"
            used.update((id(pair.thermal), id(pair.rgb)))
            if last_pair is not None:  # never a pair older than one already emitted
                assert pair.stamp_ns > last_pair.stamp_ns
                assert pair.thermal.stamp_ns > last_pair.thermal.stamp_ns
            last_pair = pair

    frames = []  # keep every frame alive so id() stays unique
    for camera, stamp in case["events"]:
        frame = StampedFrame(stamp, None)
        frames.append(frame)
        added[id(frame)] = camera
        check(sync.add(camera, frame))
        assert_counts_add_up(sync)
    check(sync.flush())
    assert_counts_add_up(sync)
    stats = sync.stats
    assert stats.thermal.queued == stats.rgb.queued == 0
    if case["max_backward_jump"] is None:
        assert stats.clock_jumps == 0 and DropReason.RESET not in stats.thermal.dropped
    assert stats.thermal.received == sum(camera == THERMAL for camera, _ in case["events"])
    assert stats.pairs == len(used) // 2


# --- deterministic examples ---------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["approximate", "latest"])
@pytest.mark.parametrize(("thermal_hz", "rgb_hz"), [(9, 30), (30, 60), (9, 60), (30, 30)])
def test_pair_rate_follows_the_slower_camera(mode: str, thermal_hz: int, rgb_hz: int) -> None:
    seconds = 10
    sync = PairSynchronizer(mode, slop=0.5 / rgb_hz + 0.005, queue_size=10)
    thermal = camera_stream(thermal_hz, seconds, jitter_ns=2 * MS, seed=1)
    rgb = camera_stream(rgb_hz, seconds, start_ns=SECOND + 5 * MS, jitter_ns=2 * MS, seed=2)
    pairs = play(sync, thermal, rgb, thermal_latency_ns=15 * MS)
    assert abs(len(pairs) / seconds - min(thermal_hz, rgb_hz)) <= 0.2
    stats = sync.stats
    assert stats.rgb.dropped_total == len(rgb) - len(pairs)
    assert stats.thermal.dropped_total == len(thermal) - len(pairs)
    if mode == "approximate":
        # Each thermal frame gets the RGB frame nearest to it: skew within half an RGB period + jitter.
        assert max(abs(pair.skew_ns) for pair in pairs) <= SECOND // (2 * rgb_hz) + 5 * MS


@pytest.mark.parametrize("mode", ["approximate", "latest"])
def test_known_clock_offset_is_needed_to_pair_offset_streams(mode: str) -> None:
    # The thermal camera stamps 50 ms early; 10 Hz each, slop 20 ms.
    rgb = camera_stream(10, 5, jitter_ns=3 * MS, seed=3)
    thermal = [(stamp - 50 * MS, index) for stamp, index in camera_stream(10, 5, jitter_ns=3 * MS, seed=4)]
    without = PairSynchronizer(mode, slop=0.02, queue_size=10)
    assert play(without, thermal, rgb) == []
    assert without.stats.thermal.dropped[DropReason.NO_PARTNER] == len(thermal)

    with_offset = PairSynchronizer(mode, slop=0.02, queue_size=10, thermal_offset=0.05)
    pairs = play(with_offset, thermal, rgb)
    assert len(pairs) == len(rgb)
    assert all(pair.thermal.data == pair.rgb.data for pair in pairs)  # same capture instant
    assert all(pair.thermal_offset_ns == 50 * MS for pair in pairs)


def test_offset_larger_than_a_frame_period_pairs_the_right_frames() -> None:
    # 30 Hz, thermal stamps 200 ms (6 frames) early: a slop of 12 ms would happily pair the wrong
    # frames without the offset.
    rgb = camera_stream(30, 3, jitter_ns=2 * MS, seed=5)
    thermal = [(stamp - 200 * MS, i) for stamp, i in camera_stream(30, 3, jitter_ns=2 * MS, seed=6)]
    wrong = play(PairSynchronizer("approximate", slop=0.012, queue_size=20), thermal, rgb)
    assert wrong and all(pair.thermal.data == pair.rgb.data + 6 for pair in wrong)
    sync = PairSynchronizer("approximate", slop=0.012, queue_size=20, thermal_offset=0.2)
    right = play(sync, thermal, rgb)
    assert len(right) == len(rgb) and all(pair.thermal.data == pair.rgb.data for pair in right)


def test_approximate_waits_for_the_nearest_partner() -> None:
    sync = PairSynchronizer("approximate", slop=0.05, queue_size=5)
    assert sync.add_rgb(StampedFrame(100 * MS, "r100")) == []
    # A thermal frame at 130 ms could pair with r100, but a nearer RGB frame may still come.
    assert sync.add_thermal(StampedFrame(130 * MS, "t130")) == []
    # r133 is nearer to t130, so r100 has no partner left; t130/r133 is final only once the next
    # thermal frame shows no thermal frame is nearer to r133.
    assert sync.add_rgb(StampedFrame(133 * MS, "r133")) == []
    pairs = sync.add_thermal(StampedFrame(240 * MS, "t240"))
    assert [(p.thermal.data, p.rgb.data) for p in pairs] == [("t130", "r133")]
    assert sync.stats.rgb.dropped == {DropReason.NO_PARTNER: 1}


def test_latest_mode_emits_at_once_and_drops_superseded_and_stale_frames() -> None:
    sync = PairSynchronizer("latest", slop=0.02, queue_size=10)
    for stamp in (0, 33, 66, 100):
        assert sync.add_rgb(StampedFrame(1000 * MS + stamp * MS, stamp)) == []
    # The thermal frame at 1.095 s is within slop of the RGB frames at 1.100 s only: emitted at
    # once, and the older RGB frames can never be used any more.
    pairs = sync.add_thermal(StampedFrame(1095 * MS, "t"))
    assert [(p.thermal.data, p.rgb.data) for p in pairs] == [("t", 100)]
    stats = sync.stats
    assert stats.rgb.dropped == {DropReason.SUPERSEDED: 3} and stats.rgb.queued == 0
    # A late thermal frame older than the emitted pair is stale, whatever RGB frames come later.
    assert sync.add_thermal(StampedFrame(1050 * MS, "late")) == []
    assert sync.stats.thermal.dropped == {DropReason.STALE: 1}
    assert sync.add_rgb(StampedFrame(1050 * MS, "old rgb")) == []
    assert sync.stats.rgb.dropped[DropReason.STALE] == 1
    assert_counts_add_up(sync)


def test_latest_mode_prefers_the_newest_pair() -> None:
    # t1012 is nearer to r1000 (12 ms) than to r1030 (18 ms); both are within slop. Approximate mode
    # pairs the nearest frames, latest mode the newest RGB frame with its nearest thermal frame.
    def run(mode: str) -> list[tuple[str, str]]:
        sync = PairSynchronizer(mode, slop=0.05, queue_size=10)
        sync.add_rgb(StampedFrame(1000 * MS, "r1000"))
        sync.add_rgb(StampedFrame(1030 * MS, "r1030"))
        pairs = sync.add_thermal(StampedFrame(1012 * MS, "t1012")) + sync.flush()
        return [(p.thermal.data, p.rgb.data) for p in pairs]

    assert run("latest") == [("t1012", "r1030")]
    assert run("approximate") == [("t1012", "r1000")]


def test_latest_mode_never_goes_back_to_an_older_rgb_frame() -> None:
    sync = PairSynchronizer("latest", slop=0.05, queue_size=10)
    sync.add_rgb(StampedFrame(1000 * MS, "r1000"))
    sync.add_rgb(StampedFrame(1040 * MS, "r1040"))
    assert [p.rgb.data for p in sync.add_thermal(StampedFrame(1030 * MS, "t1030"))] == ["r1040"]
    # r1000 and t1045 are within slop, but that pair would be older than the one emitted.
    assert sync.add_thermal(StampedFrame(1045 * MS, "t1045")) == []
    assert sync.stats.rgb.dropped == {DropReason.SUPERSEDED: 1}


@pytest.mark.parametrize("mode", ["approximate", "latest"])
def test_silent_camera_overflows_a_bounded_queue(mode: str) -> None:
    sync = PairSynchronizer(mode, slop=0.02, queue_size=5)
    for i in range(20):
        assert sync.add_rgb(StampedFrame(SECOND + i * 33 * MS, i)) == []
    stats = sync.stats
    assert stats.rgb.queued == 5 and stats.rgb.dropped == {DropReason.QUEUE_OVERFLOW: 15}
    # The camera comes back: the newest RGB frames are still there to pair with.
    pairs = sync.add_thermal(StampedFrame(SECOND + 19 * 33 * MS + MS, "t"))
    pairs += sync.flush()
    assert [p.rgb.data for p in pairs] == [19]


def test_duplicate_stamps_are_counted_not_paired_twice() -> None:
    sync = PairSynchronizer("approximate", slop=0.01, queue_size=5)
    sync.add_thermal(StampedFrame(SECOND, "a"))
    sync.add_thermal(StampedFrame(SECOND, "again"))
    pairs = sync.add_rgb(StampedFrame(SECOND, "rgb")) + sync.flush()
    assert [(p.thermal.data, p.rgb.data) for p in pairs] == [("a", "rgb")]
    assert sync.stats.thermal.dropped == {DropReason.DUPLICATE: 1}


def test_slop_and_offset_change_at_run_time_and_are_validated() -> None:
    sync = PairSynchronizer("latest", slop=0.01, queue_size=5)
    sync.add_rgb(StampedFrame(SECOND, "r"))
    assert sync.add_thermal(StampedFrame(SECOND - 30 * MS, "t")) == []
    sync.slop = 0.05
    assert sync.slop == pytest.approx(0.05)
    assert len(sync.add_thermal(StampedFrame(SECOND - 20 * MS, "t2"))) == 1
    sync.thermal_offset = 0.1
    assert sync.thermal_offset == pytest.approx(0.1)
    sync.add_rgb(StampedFrame(2 * SECOND, "r2"))
    assert [p.skew_ns for p in sync.add_thermal(StampedFrame(2 * SECOND - 100 * MS, "t3"))] == [0]
    for bad in (-0.01, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="slop"):
            sync.slop = bad
    for bad_type in ("0.1", True, None):
        with pytest.raises(TypeError, match="slop"):
            sync.slop = bad_type
    with pytest.raises(ValueError, match="thermal_offset"):
        sync.thermal_offset = float("nan")
    assert sync.slop == pytest.approx(0.05) and sync.thermal_offset == pytest.approx(0.1)


def test_reset_forgets_history_and_optionally_keeps_counting() -> None:
    sync = PairSynchronizer("latest", slop=0.01, queue_size=5, max_backward_jump=None)
    sync.add_rgb(StampedFrame(5 * SECOND, "r"))
    sync.add_thermal(StampedFrame(5 * SECOND, "t"))
    sync.add_rgb(StampedFrame(6 * SECOND, "queued"))
    # The clock jumped back (a bag started again): without a reset everything is stale.
    assert sync.add_thermal(StampedFrame(SECOND, "t")) == []
    sync.reset(keep_stats=True)
    stats = sync.stats
    assert stats.pairs == 1 and stats.rgb.dropped == {DropReason.RESET: 1}
    assert_counts_add_up(sync)
    sync.add_rgb(StampedFrame(SECOND, "r"))
    assert len(sync.add_thermal(StampedFrame(SECOND, "t"))) == 1
    sync.reset()
    stats = sync.stats
    assert stats.pairs == 0 and stats.rgb.received == 0 and stats.last_pair_stamp_ns is None


@pytest.mark.parametrize("mode", ["approximate", "latest"])
def test_bag_loop_recovers_by_default_and_sticks_without_max_backward_jump(mode: str) -> None:
    thermal = camera_stream(10, 2, jitter_ns=2 * MS, seed=7)
    rgb = camera_stream(30, 2, start_ns=SECOND + 3 * MS, jitter_ns=2 * MS, seed=8)
    stuck = PairSynchronizer(mode, slop=0.02, queue_size=10, max_backward_jump=None)
    first = play(stuck, thermal, rgb)
    assert len(first) >= 19 and play(stuck, thermal, rgb) == []  # second loop: everything is stale
    assert stuck.stats.thermal.dropped[DropReason.STALE] > 0

    looping = PairSynchronizer(mode, slop=0.02, queue_size=10)  # the default: max_backward_jump=1.0
    first = play(looping, thermal, rgb)
    second = play(looping, thermal, rgb)
    assert len(second) == len(first) >= 19
    stats = looping.stats
    assert stats.clock_jumps == 1 and DropReason.STALE not in stats.thermal.dropped
    assert_counts_add_up(looping)


def test_a_bogus_future_stamp_costs_one_reset_not_the_stream() -> None:
    sync = PairSynchronizer("latest", slop=0.02, queue_size=10, max_backward_jump=1.0)
    pairs = []
    for i in range(60):
        stamp = SECOND + i * 33 * MS
        pairs += sync.add_rgb(StampedFrame(stamp, i))
        if i == 20:  # a driver glitch: a thermal stamp 1000 s in the future
            pairs += sync.add_thermal(StampedFrame(stamp + 1000 * SECOND, "bogus"))
        pairs += sync.add_thermal(StampedFrame(stamp + MS, i))
    assert sync.stats.clock_jumps == 1
    assert len(pairs) >= 58 and all(pair.thermal.data != "bogus" for pair in pairs)
    assert_counts_add_up(sync)


def test_bad_arguments_raise_one_clear_error() -> None:
    with pytest.raises(ValueError, match="mode"):
        PairSynchronizer("exact", slop=0.01, queue_size=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="queue_size"):
        PairSynchronizer("latest", slop=0.01, queue_size=0)
    with pytest.raises(ValueError, match="slop"):
        PairSynchronizer("latest", slop=-1, queue_size=5)
    with pytest.raises(ValueError, match="max_backward_jump"):
        PairSynchronizer("latest", slop=0.01, queue_size=5, max_backward_jump=-1)
    with pytest.raises(TypeError, match="stamp_ns"):
        StampedFrame(1.5, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stamp_ns"):
        StampedFrame(-1, None)
    sync = PairSynchronizer("latest", slop=0.01, queue_size=5)
    with pytest.raises(TypeError, match="StampedFrame"):
        sync.add_rgb((SECOND, None))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="camera"):
        sync.add("ir", StampedFrame(SECOND, None))
    assert sync.stats.rgb.received == 0


@pytest.mark.parametrize("mode", ["approximate", "latest"])
def test_callbacks_on_two_threads_keep_the_counts_consistent(mode: str) -> None:
    sync = PairSynchronizer(mode, slop=0.01, queue_size=4)
    pairs: list[FramePair] = []
    pairs_lock = threading.Lock()

    def feed(camera: str, offset_ns: int) -> None:
        for i in range(400):
            emitted = sync.add(camera, StampedFrame(SECOND + i * 33 * MS + offset_ns, i))
            with pairs_lock:
                pairs.extend(emitted)

    threads = [threading.Thread(target=feed, args=(THERMAL, 2 * MS)),
               threading.Thread(target=feed, args=(RGB, 0))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    pairs += sync.flush()
    assert_counts_add_up(sync)
    assert sync.stats.pairs == len(pairs) > 0
    assert all(pair.skew_ns == 2 * MS for pair in pairs)
    assert len({id(pair.thermal) for pair in pairs}) == len(pairs)


# --- mailbox ------------------------------------------------------------------------------------
def make_pair(stamp_ns: int) -> FramePair:
    return FramePair(StampedFrame(stamp_ns, None), StampedFrame(stamp_ns, None))


def test_mailbox_keeps_only_the_newest_pair() -> None:
    box = LatestPairMailbox()
    assert box.take(timeout=0.0) is None
    assert box.put(make_pair(1)) and box.put(make_pair(2))
    assert box.pending and box.dropped == 1
    taken = box.take(timeout=0.0)
    assert taken is not None and taken.stamp_ns == 2
    assert box.take(timeout=0.01) is None
    assert (box.put_count, box.taken, box.dropped) == (2, 1, 1)
    with pytest.raises(ValueError, match="timeout"):
        box.take(timeout=-1)


def test_mailbox_close_wakes_a_waiting_worker() -> None:
    box = LatestPairMailbox()
    results: list[FramePair | None] = []
    worker = threading.Thread(target=lambda: results.append(box.take()))
    worker.start()
    time.sleep(0.05)
    box.close()
    worker.join(timeout=2)
    assert not worker.is_alive() and results == [None]
    assert box.put(make_pair(1)) is False and box.put_count == 0


def test_mailbox_slow_consumer_sees_increasing_stamps_and_counts_drops() -> None:
    box = LatestPairMailbox()
    seen: list[int] = []

    def consume() -> None:
        while (pair := box.take(timeout=1.0)) is not None:
            seen.append(pair.stamp_ns)
            time.sleep(0.002)  # inference slower than the cameras

    worker = threading.Thread(target=consume)
    worker.start()
    for stamp in range(1, 2001):
        box.put(make_pair(stamp))
        if stamp % 100 == 0:
            time.sleep(0.001)
    deadline = time.monotonic() + 2
    while box.pending and time.monotonic() < deadline:
        time.sleep(0.005)
    box.close()
    worker.join(timeout=3)
    assert not worker.is_alive()
    assert seen == sorted(set(seen)) and seen[-1] == 2000
    assert box.dropped > 0 and box.put_count == 2000 == box.taken + box.dropped
