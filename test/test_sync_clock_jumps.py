"""The synchroniser after stamps jump (ROS-free, hypothesis): a clock that goes back (driver or
simulator restart, a bag played in a loop), one bogus stamp far in the future, a clock that
steps forward. Each must cost a few frames, never the rest of the stream.

The live node and the offline bag replay share ``PairSynchronizer``, so this is the behaviour of both.
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mex_fusion_ros.sync import (
    CAMERAS,
    DEFAULT_MAX_BACKWARD_JUMP_S,
    RGB,
    STALE_RUN_RESET,
    THERMAL,
    FramePair,
    PairSynchronizer,
    StampedFrame,
)

MS = 1_000_000
SECOND = 1_000_000_000
DAY = 86_400 * SECOND
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def segment(start_ns: int, seconds: float, thermal_hz: float, rgb_hz: float, jitter_ns: int,
            draw: st.DrawFn) -> list[tuple[str, int]]:
    """(camera, stamp) of both cameras over ``seconds`` from ``start_ns``, in arrival (stamp) order."""
    events = []
    for camera, rate in ((THERMAL, thermal_hz), (RGB, rgb_hz)):
        for index in range(int(seconds * rate)):
            jitter = draw(st.integers(-jitter_ns, jitter_ns)) if jitter_ns else 0
            events.append((start_ns + round(index * SECOND / rate) + jitter, camera))
    return [(camera, stamp) for stamp, camera in sorted(events)]


@st.composite
def two_segments(draw: st.DrawFn) -> dict:
    """A stream, then the same cameras again from another origin: ``jump_s`` < 0 is a jump back."""
    thermal_hz = draw(st.sampled_from([9.0, 15.0, 30.0]))
    rgb_hz = draw(st.sampled_from([15.0, 30.0, 60.0]))
    jitter_ns = draw(st.integers(0, 3)) * MS
    first_s = draw(st.floats(0.3, 3.0))
    # Back by a day .. by a few frames, or forward; the second segment starts at end + jump.
    jump_s = draw(st.one_of(st.floats(-86_400.0, -0.05), st.floats(0.05, 86_400.0)))
    start = 2 * DAY  # a day back stays >= 0 (stamps are unsigned)
    first = segment(start, first_s, thermal_hz, rgb_hz, jitter_ns, draw)
    second_start = start + round(first_s * SECOND) + round(jump_s * SECOND)
    second = segment(second_start, 3.0, thermal_hz, rgb_hz, jitter_ns, draw)
    mode = draw(st.sampled_from(["latest", "approximate"]))
    return {"first": first, "second": second, "jump_s": jump_s, "mode": mode,
            "slop": (0.5 / max(thermal_hz, rgb_hz)) + 0.005, "frame_s": 1.0 / min(thermal_hz, rgb_hz)}


def feed(sync: PairSynchronizer, events: list[tuple[str, int]], tag: str) -> list[FramePair]:
    pairs: list[FramePair] = []
    for camera, stamp in events:
        pairs += sync.add(camera, StampedFrame(stamp, tag))
    return pairs


def assert_consistent(sync: PairSynchronizer) -> None:
    stats = sync.stats
    for camera in CAMERAS:
        counts = stats.camera(camera)
        assert counts.received == counts.matched + counts.dropped_total + counts.queued, (camera, counts)


@SETTINGS
@given(two_segments())
def test_pairs_resume_after_any_jump_of_both_clocks(case: dict) -> None:
    sync = PairSynchronizer(case["mode"], slop=case["slop"], queue_size=10)
    feed(sync, case["first"], "first")
    after = feed(sync, case["second"], "second") + sync.flush()
    fresh = PairSynchronizer(case["mode"], slop=case["slop"], queue_size=10)
    alone = feed(fresh, case["second"], "second") + fresh.flush()

    resumed = [pair for pair in after if pair.rgb.data == pair.thermal.data == "second"]
    # A jump back costs the frames before it is recognised: at once beyond max_backward_jump,
    # after STALE_RUN_RESET stale frames of one camera below it (until then an old-clock frame may
    # pair with a new-clock one whose stamp lies within slop: stamps cannot tell them apart);
    # a jump forward costs nothing.
    assert len(resumed) >= len(alone) - (STALE_RUN_RESET + 2), (len(resumed), len(alone), case["jump_s"])
    # Each camera's first frame on the new clock is older than its last on the old one by:
    went_back = min(max(stamp for camera, stamp in case["first"] if camera == name)
                    - min(stamp for camera, stamp in case["second"] if camera == name) for name in CAMERAS)
    if went_back > round(DEFAULT_MAX_BACKWARD_JUMP_S * SECOND):
        # Recognised at the first frame that went back: nothing of the old clock pairs with the new.
        assert all(pair.rgb.data == pair.thermal.data for pair in after), "a pair mixed the two clocks"
    for pair in after:
        assert abs(pair.skew_ns) <= round(case["slop"] * SECOND)
    if case["jump_s"] < -(DEFAULT_MAX_BACKWARD_JUMP_S + case["frame_s"]):
        # Recognised from the first frame that went back, and recorded with its size.
        jump = sync.stats.last_clock_jump
        assert sync.stats.clock_jumps >= 1 and jump is not None
        assert jump.seconds <= -DEFAULT_MAX_BACKWARD_JUMP_S
    if case["jump_s"] > 0:
        assert sync.stats.clock_jumps == 0, "a jump forward needs no restart"
    assert_consistent(sync)


@st.composite
def stream_with_one_bogus_stamp(draw: st.DrawFn) -> dict:
    normal = segment(1_000 * SECOND, 3.0, 30.0, 30.0, 2 * MS, draw)
    position = draw(st.integers(0, len(normal) - 1))
    ahead_s = draw(st.sampled_from([2.0, 60.0, 86_400.0, 30 * 86_400.0]))
    cameras = draw(st.sampled_from([(THERMAL,), (RGB,), (THERMAL, RGB)]))
    stamp = normal[position][1] + round(ahead_s * SECOND)
    bogus = [(camera, stamp) for camera in cameras]  # a pair when both cameras glitch together
    events = normal[:position] + bogus + normal[position:]
    return {"events": events, "bogus": len(bogus), "bogus_stamp": stamp,
            "mode": draw(st.sampled_from(["latest", "approximate"]))}


@SETTINGS
@given(stream_with_one_bogus_stamp())
def test_one_bogus_future_stamp_costs_a_restart_not_the_stream(case: dict) -> None:
    sync = PairSynchronizer(case["mode"], slop=0.02, queue_size=10)
    pairs = []
    for camera, stamp in case["events"]:
        pairs += sync.add(camera, StampedFrame(stamp, "frame"))
    pairs += sync.flush()
    fresh = PairSynchronizer(case["mode"], slop=0.02, queue_size=10)
    bogus = case["bogus_stamp"]  # 2 s to 30 days ahead of its neighbours
    normal = [event for event in case["events"] if event[1] != bogus]
    expected = sum(len(fresh.add(camera, StampedFrame(stamp, "frame"))) for camera, stamp in normal)
    expected += len(fresh.flush())
    normal_pairs = [pair for pair in pairs if bogus not in (pair.rgb.stamp_ns, pair.thermal.stamp_ns)]
    # Before the glitch nothing changes; after it, the next normal frame of that camera restarts
    # the synchroniser, which costs the frames it held (a few), not the ~90 pairs after it.
    assert len(normal_pairs) >= expected - 4, (len(normal_pairs), expected)
    assert sync.stats.clock_jumps >= 1 or not normal_pairs or max(p.stamp_ns for p in normal_pairs) < bogus
    assert_consistent(sync)


def test_a_day_ahead_pair_does_not_freeze_the_next_50_pairs() -> None:
    # The field report: one pair a day ahead, then 0 of 50 normal pairs fused.
    sync = PairSynchronizer("latest", slop=0.02, queue_size=10)
    base = 1_000 * SECOND
    fused = []
    fused += sync.add_thermal(StampedFrame(base + DAY, "ahead"))
    fused += sync.add_rgb(StampedFrame(base + DAY, "ahead"))
    assert [pair.rgb.data for pair in fused] == ["ahead"]
    for index in range(50):
        stamp = base + index * 33 * MS
        fused += sync.add_thermal(StampedFrame(stamp, index))
        fused += sync.add_rgb(StampedFrame(stamp + MS, index))
    assert len(fused) - 1 >= 49
    jump = sync.stats.last_clock_jump
    assert sync.stats.clock_jumps == 1 and jump is not None and jump.camera == THERMAL
    assert round(jump.seconds) == -86_400


def test_a_clock_that_goes_back_a_little_recovers_after_a_few_stale_frames() -> None:
    # 0.3 s back, less than max_backward_jump: STALE_RUN_RESET stale frames, then a restart.
    sync = PairSynchronizer("latest", slop=0.02, queue_size=10)
    fused = []
    for index in range(30):
        stamp = 1_000 * SECOND + index * 33 * MS
        fused += sync.add_thermal(StampedFrame(stamp, "before"))
        fused += sync.add_rgb(StampedFrame(stamp, "before"))
    back = 1_000 * SECOND + 30 * 33 * MS - 300 * MS
    for index in range(30):
        stamp = back + index * 33 * MS
        fused += sync.add_thermal(StampedFrame(stamp, "after"))
        fused += sync.add_rgb(StampedFrame(stamp, "after"))
    after = [pair for pair in fused if pair.rgb.data == "after"]
    assert len(after) >= 30 - STALE_RUN_RESET - 1
    assert sync.stats.clock_jumps == 1


def test_without_max_backward_jump_a_jump_back_still_freezes() -> None:
    # The switch the node used to leave off: the old behaviour, kept for message_filters parity.
    sync = PairSynchronizer("latest", slop=0.02, queue_size=10, max_backward_jump=None)
    fused = []
    for index in range(30):
        stamp = (1_000 if index < 10 else 500) * SECOND + index * 33 * MS
        fused += sync.add_thermal(StampedFrame(stamp, index))
        fused += sync.add_rgb(StampedFrame(stamp, index))
    assert len(fused) == 10 and sync.stats.clock_jumps == 0
