"""fusion_node against the faults found by trying to break it (issue 14), over real rclpy/Fast DDS:
invalid stamps, stamps that jump, cameras that send only garbage, input loss, decompression bombs,
simulated time without /clock, and a bag played in a loop.

Each test fails on the node before its fix (noted per test).
"""
from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray
from node_harness import RELIABLE, BackgroundExecutor, Collector, ros_context, wait_for
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from test_fusion_node import RGB_SIZE, THERMAL_SIZE, fusion_statuses, make_fusion_node

from mex_fusion_msgs.msg import FusionStatus
from mex_fusion_ros.nodes.diagnostics import ERROR, OK, WARN
from mex_fusion_ros.nodes.image_msgs import array_to_compressed_msg, array_to_image_msg

pytestmark = pytest.mark.ros

SECOND = 1_000_000_000
DAY = 86_400 * SECOND
RNG = np.random.default_rng(14)
THERMAL = (7000 + RNG.integers(0, 3000, (THERMAL_SIZE[1], THERMAL_SIZE[0]))).astype(np.uint16)
RGB = RNG.integers(0, 255, (RGB_SIZE[1], RGB_SIZE[0], 3), dtype=np.uint8)


def stamp_msg(stamp_ns: int) -> TimeMsg:
    return TimeMsg(sec=stamp_ns // SECOND, nanosec=stamp_ns % SECOND)


class Cameras:
    """Publishers of both cameras on a probe node, publishing hand-stamped frames."""

    def __init__(self, probe: Node) -> None:
        self.thermal = probe.create_publisher(Image, "thermal/image_raw", RELIABLE)
        self.rgb = probe.create_publisher(Image, "rgb/image_raw", RELIABLE)
        self.thermal_msg = array_to_image_msg(THERMAL, "mono16")
        self.rgb_msg = array_to_image_msg(RGB, "rgb8")

    def pair(self, stamp: TimeMsg) -> None:
        self.thermal_msg.header = Header(stamp=stamp, frame_id="thermal")
        self.rgb_msg.header = Header(stamp=stamp, frame_id="rgb_optical")
        self.thermal.publish(self.thermal_msg)
        self.rgb.publish(self.rgb_msg)

    def pairs(self, stamps_ns: list[int], period_s: float = 0.01) -> None:
        # Paced: a reliable reader of depth 5 still keeps only the last 5 of a burst.
        for stamp in stamps_ns:
            self.pair(stamp_msg(stamp))
            time.sleep(period_s)


def latest_diagnostics(collector: Collector, since: float) -> tuple[dict, dict]:
    reports = [(inputs, fusion) for arrived, inputs, fusion in fusion_statuses(collector) if arrived > since]
    assert reports, "no diagnostics since then"
    return reports[-1]


def test_negative_and_post_2038_stamps_are_dropped_counted_and_fusion_goes_on():
    # Before: StampedFrame raised ValueError in the subscription callback and the node died.
    now_ns = time.time_ns()
    with ros_context() as context:
        node = make_fusion_node(context)
        probe = Node("stamp_probe", context=context)
        cameras = Cameras(probe)
        statuses = Collector(probe, FusionStatus, "fusion/status", keep=lambda m: m.header.stamp.sec)
        diagnostics = Collector(probe, DiagnosticArray, "/diagnostics", qos=10)
        with BackgroundExecutor(context, [node, probe]):
            assert wait_for(lambda: probe.count_subscribers("rgb/image_raw") >= 1, 10.0)
            cameras.pair(TimeMsg(sec=-5, nanosec=0))
            # 2040-01-01 in a 32-bit sec wraps negative.
            cameras.pair(TimeMsg(sec=2_208_988_800 - 2**32, nanosec=0))
            cameras.pair(TimeMsg(sec=now_ns // SECOND, nanosec=1_500_000_000))  # nanosec out of range
            assert wait_for(lambda: node.counters.get("invalid_stamps_thermal") == 3
                            and node.counters.get("invalid_stamps_rgb") == 3, 5.0), node.counters.snapshot()
            sent_at = time.monotonic()
            cameras.pairs([now_ns + i * 50_000_000 for i in range(10)], period_s=0.05)
            assert wait_for(lambda: len(statuses) >= 3, 5.0), "fusion stopped after the invalid stamps"
            assert wait_for(lambda: any(
                inputs["_level"] == WARN and "invalid stamps" in inputs["_message"]
                and inputs["rgb_invalid_stamps"] == "3" for arrived, inputs, _ in fusion_statuses(diagnostics)
                if arrived > sent_at), 3.0)
    assert all(sec > 0 for sec in statuses.snapshot())


def test_a_pair_a_day_ahead_then_a_clock_jump_back_cost_a_restart_each_and_are_reported():
    # Before: after the day-ahead pair 0 of 50 pairs matched; after the jump back 0 of 30; the
    # diagnostics said OK throughout.
    base = time.time_ns()
    with ros_context() as context:
        node = make_fusion_node(context)
        probe = Node("jump_probe", context=context)
        cameras = Cameras(probe)
        diagnostics = Collector(probe, DiagnosticArray, "/diagnostics", qos=10)
        with BackgroundExecutor(context, [node, probe]):
            assert wait_for(lambda: probe.count_subscribers("rgb/image_raw") >= 1, 10.0)
            cameras.pairs([base + DAY])
            assert wait_for(lambda: node.counters.get("pairs_matched") == 1, 5.0)
            cameras.pairs([base + i * 33_000_000 for i in range(50)])
            assert wait_for(lambda: node.counters.get("pairs_matched") >= 1 + 45, 5.0), node.counters.snapshot()
            jumped = time.monotonic()
            assert wait_for(lambda: any(
                fusion["sync_clock_jumps"] == "1" and "went back 86400.0" in fusion.get("_message", "")
                for arrived, _, fusion in fusion_statuses_with_level(diagnostics) if arrived > jumped), 3.0)

            # A simulator restart: the clock goes back 100 s.
            matched = node.counters.get("pairs_matched")
            cameras.pairs([base - 100 * SECOND + i * 33_000_000 for i in range(30)])
            assert wait_for(lambda: node.counters.get("pairs_matched") >= matched + 27, 5.0), \
                node.counters.snapshot()
            assert node.synchronizer.clock_jumps == 2
            restarted = time.monotonic()
            assert wait_for(lambda: any(
                fusion["_level"] == WARN and fusion["sync_clock_jumps"] == "2"
                for arrived, _, fusion in fusion_statuses_with_level(diagnostics) if arrived > restarted), 3.0)


def test_one_camera_clock_a_day_ahead_is_reported_as_no_pairs_not_ok():
    # A thermal driver restarted with a clock a day ahead: both cameras stream, nothing pairs.
    # Before: "both cameras streaming" and "0.0 Hz fused" at level OK.
    with ros_context() as context:
        node = make_fusion_node(context)
        probe = Node("offset_probe", context=context)
        cameras = Cameras(probe)
        diagnostics = Collector(probe, DiagnosticArray, "/diagnostics", qos=10)
        with BackgroundExecutor(context, [node, probe]):
            assert wait_for(lambda: probe.count_subscribers("rgb/image_raw") >= 1, 10.0)
            start, base = time.monotonic(), time.time_ns()
            for index in range(int(2.5 * 20)):
                time.sleep(max(0.0, start + index / 20 - time.monotonic()))
                stamp = base + index * 50_000_000
                cameras.thermal_msg.header = Header(stamp=stamp_msg(stamp + DAY))
                cameras.thermal.publish(cameras.thermal_msg)
                cameras.rgb_msg.header = Header(stamp=stamp_msg(stamp))
                cameras.rgb.publish(cameras.rgb_msg)
            _, _, fusion = fusion_statuses_with_level(diagnostics)[-1]
    assert node.counters.get("pairs_matched") == 0
    assert fusion["_level"] == WARN and "no pair within sync.slop" in fusion["_message"], fusion["_message"]


def fusion_statuses_with_level(collector: Collector) -> list[tuple[float, dict, dict]]:
    """Like ``fusion_statuses``, with level and message of the fusion status too."""
    out = []
    for arrived, array in zip(collector.arrived[:len(collector)], collector.snapshot()):
        by_name = {status.name: status for status in array.status}
        inputs, fusion = by_name.get("fusion_node: inputs"), by_name.get("fusion_node: fusion")
        if inputs is None or fusion is None:
            continue
        values = {pair.key: pair.value for pair in fusion.values}
        values["_level"], values["_message"] = fusion.level[0], fusion.message
        out.append((arrived, {pair.key: pair.value for pair in inputs.values}, values))
    return out


def test_a_camera_sending_only_undecodable_frames_is_not_reported_as_streaming():
    # Before: "both cameras streaming", OK, while nothing could be fused (messages were counted,
    # not decoded frames).
    with ros_context() as context:
        node = make_fusion_node(context, camera_timeout=0.5)
        probe = Node("garbage_probe", context=context)
        cameras = Cameras(probe)
        diagnostics = Collector(probe, DiagnosticArray, "/diagnostics", qos=10)
        broken = Image(height=RGB_SIZE[1], width=RGB_SIZE[0], encoding="rgb8", step=RGB_SIZE[0] * 3,
                       data=bytes(100))  # data length does not match
        with BackgroundExecutor(context, [node, probe]):
            assert wait_for(lambda: probe.count_subscribers("rgb/image_raw") >= 1, 10.0)
            start = time.monotonic()
            while time.monotonic() - start < 2.0:
                stamp = probe.get_clock().now().to_msg()
                cameras.thermal_msg.header = Header(stamp=stamp)
                cameras.thermal.publish(cameras.thermal_msg)
                broken.header = Header(stamp=stamp)
                cameras.rgb.publish(broken)
                time.sleep(0.05)
            inputs, _ = latest_diagnostics(diagnostics, start + 1.0)
    assert inputs["_level"] == ERROR, inputs
    assert "rgb camera sends only unusable frames" in inputs["_message"]
    assert inputs["rgb_frames"] == "0" and int(inputs["rgb_messages"]) >= 20
    assert int(inputs["rgb_decode_errors"]) == int(inputs["rgb_messages"])
    assert int(inputs["thermal_frames"]) >= 20 and inputs["thermal_stale"] == "false"


def test_input_loss_visible_from_the_stamps_is_reported_and_warned():
    # Before: the rates looked steady and the status said OK although 60 % of the frames were lost.
    rng = np.random.default_rng(7)
    with ros_context() as context:
        node = make_fusion_node(context)
        probe = Node("loss_probe", context=context)
        cameras = Cameras(probe)
        diagnostics = Collector(probe, DiagnosticArray, "/diagnostics", qos=10)
        with BackgroundExecutor(context, [node, probe]):
            assert wait_for(lambda: probe.count_subscribers("rgb/image_raw") >= 1, 10.0)
            start, base = time.monotonic(), time.time_ns()
            for index in range(int(3.5 * 30)):  # a 30 Hz camera pair; 60 % of the RGB frames lost on the way
                time.sleep(max(0.0, start + index / 30 - time.monotonic()))
                stamp = stamp_msg(base + round(index * SECOND / 30))
                cameras.thermal_msg.header = Header(stamp=stamp)
                cameras.thermal.publish(cameras.thermal_msg)
                if rng.random() >= 0.6:
                    cameras.rgb_msg.header = Header(stamp=stamp)
                    cameras.rgb.publish(cameras.rgb_msg)
            inputs, _ = latest_diagnostics(diagnostics, start + 2.5)
    assert inputs["_level"] == WARN and "rgb:" in inputs["_message"] and "lost before the node" in inputs["_message"]
    assert 0.45 <= float(inputs["rgb_loss"]) <= 0.75, inputs
    assert float(inputs["thermal_loss"]) < 0.05
    assert float(inputs["rgb_camera_rate_hz"]) == pytest.approx(30.0, rel=0.15)


def png_bomb(side: int = 4096) -> bytes:
    """A few KB of PNG that decodes to side x side grey (the issue's 16 KB -> 500 MB case)."""
    ok, data = cv2.imencode(".png", np.zeros((side, side), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return data.tobytes()


def test_decompression_bombs_and_oversized_raw_frames_are_refused_before_decoding():
    # Before: the 16 KB PNG was decoded (4096x4096, ~500 MB, seconds) and nothing was counted.
    bomb = png_bomb()
    assert len(bomb) < 20_000
    with ros_context() as context:
        node = make_fusion_node(context, **{"input.compressed": True})
        probe = Node("bomb_probe", context=context)
        thermal_pub = probe.create_publisher(CompressedImage, "thermal/image_raw/compressed", RELIABLE)
        rgb_pub = probe.create_publisher(CompressedImage, "rgb/image_raw/compressed", RELIABLE)
        statuses = Collector(probe, FusionStatus, "fusion/status", keep=lambda m: m.header.stamp.sec)
        diagnostics = Collector(probe, DiagnosticArray, "/diagnostics", qos=10)
        with BackgroundExecutor(context, [node, probe]):
            assert wait_for(lambda: probe.count_subscribers("rgb/image_raw/compressed") >= 1, 10.0)
            stamp = probe.get_clock().now().to_msg()
            for _ in range(3):
                rgb_pub.publish(CompressedImage(header=Header(stamp=stamp), format="png", data=bomb))
            assert wait_for(lambda: node.counters.get("oversize_rgb") == 3, 5.0), node.counters.snapshot()
            assert node.counters.get("decode_errors_rgb") == 0
            # Then normal frames fuse.
            for _ in range(3):
                header = Header(stamp=probe.get_clock().now().to_msg())
                thermal_pub.publish(array_to_compressed_msg(THERMAL, "png", header))
                rgb_pub.publish(array_to_compressed_msg(RGB, "jpeg", header))
                time.sleep(0.1)
            assert wait_for(lambda: len(statuses) >= 1, 5.0)
            refused = time.monotonic()
            assert wait_for(lambda: any(
                inputs["rgb_oversize"] == "3" and inputs["_level"] == WARN and "input.max_pixels" in inputs["_message"]
                for arrived, inputs, _ in fusion_statuses(diagnostics) if arrived > refused), 3.0)

    # The same limit applies to raw images, from their width and height; it changes at run time.
    with ros_context() as context:
        node = make_fusion_node(context, **{"input.max_pixels": RGB_SIZE[0] * RGB_SIZE[1] - 1})
        probe = Node("raw_size_probe", context=context)
        cameras = Cameras(probe)
        with BackgroundExecutor(context, [node, probe]):
            assert wait_for(lambda: probe.count_subscribers("rgb/image_raw") >= 1, 10.0)
            cameras.pair(probe.get_clock().now().to_msg())
            assert wait_for(lambda: node.counters.get("oversize_rgb") == 1, 5.0)
            assert node.counters.get("oversize_thermal") == 0  # 128x96 is under the limit
            node.set_parameters([Parameter("input.max_pixels", value=RGB_SIZE[0] * RGB_SIZE[1])])
            cameras.pair(probe.get_clock().now().to_msg())
            assert wait_for(lambda: node.counters.get("pairs_matched") == 1, 5.0)


def test_latency_is_unknown_not_minus_a_trillion_ms_with_sim_time_and_no_clock():
    # Before: use_sim_time without /clock put -1.8e12 ms in fusion/status, and the diagnostics
    # (a timer on the node clock) were never published at all.
    with ros_context() as context:
        node = make_fusion_node(context, use_sim_time=True)
        probe = Node("sim_time_probe", context=context)
        cameras = Cameras(probe)
        statuses = Collector(probe, FusionStatus, "fusion/status", keep=lambda m: m.latency_ms)
        diagnostics = Collector(probe, DiagnosticArray, "/diagnostics", qos=10)
        with BackgroundExecutor(context, [node, probe]):
            assert wait_for(lambda: probe.count_subscribers("rgb/image_raw") >= 1, 10.0)
            assert node.get_clock().now().nanoseconds == 0  # no /clock yet
            cameras.pairs([time.time_ns() + i * 50_000_000 for i in range(5)], period_s=0.05)
            assert wait_for(lambda: len(statuses) >= 2, 5.0)
            published = time.monotonic()
            assert wait_for(lambda: any(arrived > published for arrived, _, _ in fusion_statuses(diagnostics)), 3.0)
            _, fusion = latest_diagnostics(diagnostics, published)
    assert all(math.isnan(latency) for latency in statuses.snapshot())
    assert fusion["latency_p50_ms"] == "nan" and fusion["thermal_delay_p50_ms"] == "nan"


def test_bag_play_loop_fuses_every_pass(tmp_path):
    # Before: `mex-fusion bag play --loop` fused the first pass only (every later frame was stale).
    from mex_fusion_ros.bag import RGB_TOPIC, THERMAL_TOPIC
    from mex_fusion_ros.bag.live import BagPlayer
    from mex_fusion_ros.bag.make import BagTiming, SceneSource, make_bag
    from mex_fusion_ros.bag.scene import SceneConfig

    bag = tmp_path / "loop_bag"
    summary = make_bag(SceneSource(SceneConfig(width=64, height=48, num_frames=60, seed=3)), ["clean"], bag,
                       timing=BagTiming(fps_thermal=10.0, fps_rgb=30.0, jitter_ms=1.0), with_clean=False,
                       progress=False)
    with ros_context() as context:
        node = make_fusion_node(context, **{"registration.homography": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]})
        player_node = Node("loop_player", context=context)
        player = BagPlayer(player_node, bag, topics=[THERMAL_TOPIC, RGB_TOPIC], rate=2.0, loop=True)
        with BackgroundExecutor(context, [node, player_node]):
            assert player.wait_for_subscribers(10.0) == []
            player.start()
            passes = 3
            assert wait_for(lambda: player.stats.loops >= passes, 15.0)
            player.stop()
            assert player.join(5.0)
    per_pass = summary.thermal_frames  # one pair per thermal frame (10 Hz against 30 Hz)
    assert node.counters.get("pairs_matched") >= passes * per_pass - passes * 3, node.counters.snapshot()
    assert node.synchronizer.clock_jumps >= passes - 1
    assert node.counters.get("decode_errors_thermal") == node.counters.get("decode_errors_rgb") == 0


def test_a_healthy_stream_stays_ok():
    # The new checks must not cry wolf: steady cameras without loss give OK on both statuses.
    with ros_context() as context:
        node = make_fusion_node(context)
        probe = Node("healthy_probe", context=context)
        cameras = Cameras(probe)
        diagnostics = Collector(probe, DiagnosticArray, "/diagnostics", qos=10)
        with BackgroundExecutor(context, [node, probe]):
            assert wait_for(lambda: probe.count_subscribers("rgb/image_raw") >= 1, 10.0)
            start, base = time.monotonic(), time.time_ns()
            for index in range(int(3.0 * 20)):
                time.sleep(max(0.0, start + index / 20 - time.monotonic()))
                cameras.pair(stamp_msg(base + index * 50_000_000))
            ended = time.monotonic()
    reports = [(inputs, fusion) for arrived, inputs, fusion in fusion_statuses_with_level(diagnostics)
               if start + 1.5 < arrived < ended]
    assert reports
    for inputs, fusion in reports:
        assert fusion["_level"] == OK, fusion["_message"]
        assert float(inputs["rgb_loss"]) == 0.0 and int(inputs["rgb_frames"]) > 0
    levels = {values["_level"] for arrived, values, _ in fusion_statuses(diagnostics) if start + 1.5 < arrived < ended}
    assert levels == {OK}
