"""fusion_node over real rclpy/Fast DDS: end to end with the detector, back-pressure, bad input,
parameters; plus the ROS-free pieces it is built from (registration pipeline, statistics).

The fuser is a classical baseline built through the same ``create_fuser`` path the network uses
(``method: laplacian`` / ``cascade``); the network weights are not needed here.
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import psutil
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from hypothesis import given, settings
from hypothesis import strategies as st
from node_harness import (
    RELIABLE,
    BackgroundExecutor,
    CameraPlayer,
    Collector,
    ns_to_time,
    roadscene_frames,
    ros_context,
    time_to_ns,
    wait_for,
    write_config,
)
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import DescribeParameters, SetParameters
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from mex_fusion_msgs.msg import DetectionArray, FusionStatus
from mex_fusion_ros.codec.agc import ThermalAGC
from mex_fusion_ros.config import FUSION_NODE_PARAMETERS, NODE_PARAMETERS
from mex_fusion_ros.data.degradations import DEGRADATION_TYPES
from mex_fusion_ros.fusion.registry import create_fuser
from mex_fusion_ros.nodes.diagnostics import WARN, level_of, parse_values
from mex_fusion_ros.nodes.fusion_node import FusionNode, FusionNodeError
from mex_fusion_ros.nodes.graph import resolve_graph
from mex_fusion_ros.nodes.image_msgs import array_to_compressed_msg, array_to_image_msg
from mex_fusion_ros.nodes.params import overrides_to_parameters
from mex_fusion_ros.nodes.pipeline import FusionPipeline, parse_homography, to_uint8
from mex_fusion_ros.nodes.run_command import build_nodes
from mex_fusion_ros.nodes.stats import CameraWatchdog, DurationWindow, RateMeter

RGB_SIZE = (160, 128)  # (width, height)
THERMAL_SIZE = (128, 96)  # the thermal camera has its own, lower resolution
# Thermal pixels -> RGB pixels: the two fields of view coincide, so a pure scale.
THERMAL_TO_RGB = [RGB_SIZE[0] / THERMAL_SIZE[0], 0.0, 0.0,
                  0.0, RGB_SIZE[1] / THERMAL_SIZE[1], 0.0,
                  0.0, 0.0, 1.0]


def fusion_parameters(**extra: object) -> dict:
    parameters = {"method": "laplacian", "device": "cpu", "diagnostics_period": 0.5,
                  "registration": {"homography": THERMAL_TO_RGB}, "input": {"reliable": True}}
    parameters.update(extra)
    return parameters


def make_fusion_node(context, **parameters: object) -> FusionNode:
    """A fusion node with flat ``parameters`` over the test defaults (validated as the launcher does)."""
    flat = {"method": "laplacian", "device": "cpu", "diagnostics_period": 0.5, "input.reliable": True,
            "registration.homography": THERMAL_TO_RGB, **parameters}
    return FusionNode("fusion_node", context=context,
                      parameter_overrides=overrides_to_parameters(flat, FUSION_NODE_PARAMETERS))


def fusion_statuses(collector: Collector, node_name: str = "fusion_node") -> list[tuple[float, dict, dict]]:
    """(arrival time, inputs values with level/message, fusion values) of every fusion_node diagnostics."""
    out = []
    for arrived, array in zip(collector.arrived[:len(collector)], collector.snapshot()):
        by_name = {status.name: status for status in array.status}
        inputs, fusion = by_name.get(f"{node_name}: inputs"), by_name.get(f"{node_name}: fusion")
        if inputs is None or fusion is None:
            continue
        values = parse_values(inputs)
        values["_level"], values["_message"] = level_of(inputs), inputs.message
        out.append((arrived, values, parse_values(fusion)))
    return out


# ------------------------------------------------------------------------------------------------
# ROS-free building blocks
# ------------------------------------------------------------------------------------------------
def test_registration_places_thermal_on_the_rgb_grid():
    # A bright square in the thermal image must land where the homography says, at the output size.
    thermal = np.zeros((96, 128), dtype=np.uint8)
    thermal[40:56, 60:76] = 255
    rgb = np.zeros((128, 160, 3), dtype=np.uint8)
    shift = [1.25, 0.0, 10.0, 0.0, 4 / 3, -5.0, 0.0, 0.0, 1.0]
    pipeline = FusionPipeline(create_fuser("max"), homography=shift, output_size=(320, 256))
    ir, vi = pipeline.prepare(thermal, rgb)
    assert ir.shape == (256, 320) and vi.shape == (256, 320, 3)
    ys, xs = np.nonzero(ir > 0.5)
    # thermal x in [60, 76) -> rgb 1.25 x + 10 in [85, 105) -> output x2 in [170, 210); y likewise.
    assert abs(xs.min() - 170) <= 2 and abs(xs.max() - 209) <= 2
    assert abs(ys.min() - (40 * 4 / 3 - 5) * 2) <= 2 and abs(ys.max() - ((56 * 4 / 3 - 5) * 2 - 1)) <= 2


def test_sixteen_bit_thermal_goes_through_the_agc_and_output_is_uint8():
    rng = np.random.default_rng(0)
    raw = (7000 + rng.integers(0, 3000, size=(96, 128))).astype(np.uint16)
    rgb = rng.integers(0, 256, size=(128, 160, 3), dtype=np.uint8)
    pipeline = FusionPipeline(create_fuser("laplacian"), homography=THERMAL_TO_RGB,
                              agc=ThermalAGC(1.0, 99.0, 0.0))
    ir, _ = pipeline.prepare(raw, rgb)
    assert ir.dtype == np.float32 and ir.min() >= 0.0 and ir.max() <= 1.0 and ir.max() > 0.9
    frame = pipeline.process(raw, rgb)
    assert frame.fused.dtype == np.uint8 and frame.fused.shape == (128, 160, 3)
    assert frame.mode == "fused" and frame.inference_ms > 0
    mono = FusionPipeline(create_fuser("laplacian"), homography=THERMAL_TO_RGB, color=False).process(raw, rgb)
    assert mono.fused.shape == (128, 160)


def test_single_camera_passes_the_live_image_through_a_classical_fuser():
    rgb = np.full((128, 160, 3), 200, dtype=np.uint8)
    frame = FusionPipeline(create_fuser("laplacian")).process_single("rgb", rgb)
    # No restoration in a classical fuser: the RGB image itself, not a fusion with a blank image.
    assert frame.mode == "rgb_only" and np.abs(frame.fused.astype(int) - 200).max() <= 1


def test_output_conversion_clamps_and_rounds():
    values = np.array([[-0.5, 0.0, 0.2, 1.0, 1.5]], dtype=np.float32)
    assert to_uint8(values, color=False).tolist() == [[0, 0, 51, 255, 255]]
    colour = to_uint8(np.dstack([values, values, values]), color=True)
    assert colour.shape == (1, 5, 3) and colour[0, :, 1].tolist() == [0, 0, 51, 255, 255]
    assert to_uint8(values, color=True).shape == (1, 5, 3)


def test_identity_registration_keeps_the_thermal_pixels():
    thermal = np.arange(128 * 160, dtype=np.uint16).reshape(128, 160) % 251
    pipeline = FusionPipeline(create_fuser("average"), agc=ThermalAGC(0.0, 100.0, 0.0))
    ir, _ = pipeline.prepare(thermal, np.zeros((128, 160, 3), dtype=np.uint8))
    np.testing.assert_allclose(ir, thermal / 250.0, atol=1e-6)


@pytest.mark.parametrize("values", [[1.0] * 8, [0.0] * 9, [float("nan")] + [0.0] * 8])
def test_bad_homography_is_refused_naming_the_parameter(values):
    with pytest.raises(ValueError, match="registration.homography"):
        parse_homography(values)


@given(rate=st.floats(min_value=1.0, max_value=200.0), count=st.integers(min_value=3, max_value=300))
@settings(max_examples=50, deadline=None)
def test_rate_meter_recovers_a_regular_rate(rate, count):
    meter = RateMeter(window=count / rate + 1.0)
    for index in range(count):
        meter.tick(100.0 + index / rate)
    assert meter.rate(100.0 + (count - 1) / rate) == pytest.approx(rate, rel=1e-6)


def test_rate_meter_forgets_old_events_and_watchdog_names_the_silent_camera():
    meter = RateMeter(window=1.0)
    for index in range(10):
        meter.tick(index * 0.1)
    assert meter.rate(5.0) == 0.0  # everything is older than the window
    watchdog = CameraWatchdog(("thermal", "rgb"), timeout=1.0, start=0.0)
    watchdog.seen("thermal", 0.5)
    watchdog.seen("rgb", 1.8)
    assert watchdog.stale(2.0) == ("thermal",)
    window = DurationWindow(size=4)
    for value in (100.0, 1.0, 2.0, 3.0, 4.0):  # the first falls out of the window
        window.add(value)
    assert window.summary().max == 4.0 and window.summary().p50 == 2.5


# ------------------------------------------------------------------------------------------------
# Real rclpy
# ------------------------------------------------------------------------------------------------
@pytest.mark.ros
@pytest.mark.data
def test_end_to_end_fused_stamps_detections_and_diagnostic_rates(roadscene, tmp_path):
    frames = roadscene_frames(roadscene, 6, RGB_SIZE, THERMAL_SIZE)
    config = write_config(tmp_path, fusion_parameters(), {"model": "yolov8n.yaml", "device": "cpu",
                                                          "image_size": 160, "input": {"reliable": True}})
    rates = {"thermal": 9.0, "rgb": 30.0}
    with ros_context() as context:
        nodes = build_nodes(resolve_graph({"config": str(config)}), context=context)
        probe = Node("e2e_probe", context=context)
        fused = Collector(probe, Image, "fused/image",
                          keep=lambda m: (time_to_ns(m.header.stamp), m.header.frame_id, m.encoding, m.width,
                                          m.height))
        statuses = Collector(probe, FusionStatus, "fusion/status")
        detections = Collector(probe, DetectionArray, "detections",
                               keep=lambda m: (time_to_ns(m.header.stamp), m.header.frame_id))
        diagnostics = Collector(probe, DiagnosticArray, "/diagnostics", qos=10)
        player = CameraPlayer(probe, frames, rates)
        with BackgroundExecutor(context, [*nodes, probe]):
            assert wait_for(lambda: probe.count_subscribers("thermal/image_raw") >= 1
                            and probe.count_subscribers("rgb/image_raw") >= 1, 10.0)
            player.start()
            time.sleep(7.0)
            played_until = time.monotonic()
            player.stop()
            time.sleep(1.0)  # the last pair leaves the synchroniser; no fused frame comes after this
            # Every fused frame must get its status and detections; topics arrive in no set order, and
            # the detector needs time to finish the last frame.
            assert wait_for(lambda: {s for s, *_ in fused.snapshot()}
                            <= {s for s, _ in detections.snapshot()}
                            & {time_to_ns(m.header.stamp) for m in statuses.snapshot()}, 10.0)

    fused_frames = fused.snapshot()
    assert len(fused_frames) >= 30, f"only {len(fused_frames)} fused frames in 7 s of 9 Hz pairs"
    rgb_stamps, thermal_stamps = set(player.log.stamps["rgb"]), set(player.log.stamps["thermal"])
    for stamp, frame_id, encoding, width, height in fused_frames:
        assert stamp in rgb_stamps, "a fused image's stamp must be the stamp of the RGB frame of its pair"
        assert (frame_id, encoding, width, height) == ("rgb_optical", "rgb8", *RGB_SIZE)
    by_stamp = {time_to_ns(status.header.stamp): status for status in statuses.snapshot()}
    for stamp, *_ in fused_frames:
        status = by_stamp[stamp]
        assert time_to_ns(status.rgb_stamp) == stamp and time_to_ns(status.thermal_stamp) in thermal_stamps
        assert abs(time_to_ns(status.thermal_stamp) - stamp) <= 0.05e9
        assert status.mode == FusionStatus.MODE_FUSED and status.method == "laplacian"
    detection_headers = dict(detections.snapshot())
    for stamp, frame_id, *_ in fused_frames:
        assert detection_headers[stamp] == frame_id

    # /diagnostics: the input rates the node measured match what was sent over the same window.
    reports = [report for report in fusion_statuses(diagnostics) if report[0] <= played_until]
    arrived, inputs, fusion = reports[-1]
    for camera, rate in rates.items():
        sent = player.log.rate(camera, arrived - 5.0, arrived)
        assert sent == pytest.approx(rate, rel=0.1)
        assert float(inputs[f"{camera}_rate_hz"]) == pytest.approx(sent, rel=0.1), (camera, inputs)
    assert float(fusion["pair_rate_hz"]) == pytest.approx(rates["thermal"], rel=0.2)
    assert float(fusion["latency_p50_ms"]) > 0 and fusion["device"] == "cpu"


@pytest.mark.ros
@pytest.mark.data
def test_back_pressure_drops_pairs_and_keeps_memory_and_latency_flat(roadscene):
    # cascade (restore, then fuse) at a 960x768 output takes ~130-400 ms a frame on this CPU (idle or
    # loaded): 40 Hz input is 5-15x the inference rate (checked below from the node's own diagnostics).
    frames = roadscene_frames(roadscene, 4, RGB_SIZE, THERMAL_SIZE)
    process = psutil.Process()
    with ros_context() as context:
        node = make_fusion_node(context, **{"method": "cascade", "output.width": 960, "output.height": 768,
                                            "sync.slop": 0.02})
        probe = Node("pressure_probe", context=context)
        statuses = Collector(probe, FusionStatus, "fusion/status",
                             keep=lambda m: (time.monotonic(), m.latency_ms, m.dropped_pairs))
        diagnostics = Collector(probe, DiagnosticArray, "/diagnostics", qos=10)
        player = CameraPlayer(probe, frames, {"thermal": 40.0, "rgb": 40.0})
        with BackgroundExecutor(context, [node, probe]):
            assert wait_for(lambda: probe.count_subscribers("rgb/image_raw") >= 1, 10.0)
            player.start()
            time.sleep(5.0)  # warm-up: allocator pools, DDS buffers, first pyramids
            rss_start = process.memory_info().rss
            time.sleep(25.0)
            rss_end = process.memory_info().rss
            player.stop()
            time.sleep(1.0)

    growth_mb = (rss_end - rss_start) / 2**20
    assert growth_mb < 50, f"RSS grew {growth_mb:.1f} MB in 25 s of back-pressure"
    records = statuses.snapshot()
    assert len(records) >= 30
    third = len(records) // 3
    first = statistics.median(latency for _, latency, _ in records[:third])
    last = statistics.median(latency for _, latency, _ in records[-third:])
    _, inputs, fusion = fusion_statuses(diagnostics)[-1]
    print(f"back-pressure: RSS +{growth_mb:.1f} MB, latency median {first:.0f} -> {last:.0f} ms, "
          f"input {inputs['rgb_rate_hz']} Hz vs fused {fusion['published_rate_hz']} Hz, "
          f"{fusion['pairs_dropped']} pairs dropped")
    assert last < 1.5 * first + 50.0, f"latency grew from {first:.0f} ms to {last:.0f} ms"
    assert sum(dropped for *_, dropped in records) > 0
    assert int(fusion["pairs_dropped"]) > 0
    # Most pairs are dropped, and every matched pair is either published or counted as dropped.
    assert float(inputs["rgb_rate_hz"]) >= 2 * float(fusion["published_rate_hz"]) > 0, (inputs, fusion)
    assert float(fusion["drop_rate_hz"]) == pytest.approx(
        float(fusion["pair_rate_hz"]) - float(fusion["published_rate_hz"]), rel=0.2, abs=1.0), fusion


def bad_images() -> list[tuple[str, Image]]:
    """Structurally invalid images, each of which the codec must refuse."""
    header = Header(stamp=ns_to_time(1), frame_id="bad")
    wrong_encoding = Image(header=header, height=4, width=4, encoding="bayer_nonsense", step=4,
                           data=bytes(16))
    short_data = Image(header=header, height=64, width=64, encoding="rgb8", step=192, data=bytes(100))
    step_too_small = Image(header=header, height=8, width=8, encoding="mono16", step=8, data=bytes(64))
    zero_size = Image(header=header, height=0, width=0, encoding="rgb8", step=0, data=b"")
    return [("wrong encoding", wrong_encoding), ("data length mismatch", short_data),
            ("wrong size (step < width * bytes per pixel)", step_too_small), ("zero-size image", zero_size)]


@pytest.mark.ros
@pytest.mark.data
def test_bad_input_is_counted_and_the_node_keeps_running(roadscene):
    frames = roadscene_frames(roadscene, 4, RGB_SIZE, THERMAL_SIZE)
    with ros_context() as context:
        node = make_fusion_node(context, **{"single_modality_fallback": True, "camera_timeout": 0.5})
        probe = Node("bad_input_probe", context=context)
        statuses = Collector(probe, FusionStatus, "fusion/status",
                             keep=lambda m: (time.monotonic(), m.mode))
        diagnostics = Collector(probe, DiagnosticArray, "/diagnostics", qos=10)
        thermal_pub = probe.create_publisher(Image, "thermal/image_raw", RELIABLE)
        rgb_pub = probe.create_publisher(Image, "rgb/image_raw", RELIABLE)
        player = CameraPlayer(probe, frames, {"thermal": 10.0, "rgb": 10.0})
        with BackgroundExecutor(context, [node, probe]):
            assert wait_for(lambda: probe.count_subscribers("rgb/image_raw") >= 1, 10.0)
            bad = bad_images()
            for _, message in bad:
                thermal_pub.publish(message)
                rgb_pub.publish(message)
            # NaN-free garbage: a well-formed frame of random bytes must be fused, not crash anything.
            rng = np.random.default_rng(1)
            garbage_t = array_to_image_msg(rng.integers(0, 65535, (96, 128), dtype=np.uint16), "mono16",
                                           Header(stamp=ns_to_time(2), frame_id="thermal"))
            garbage_v = array_to_image_msg(rng.integers(0, 255, (128, 160, 3), dtype=np.uint8), "rgb8",
                                           Header(stamp=ns_to_time(2), frame_id="rgb_optical"))
            thermal_pub.publish(garbage_t)
            rgb_pub.publish(garbage_v)
            assert wait_for(lambda: node.counters.get("decode_errors_thermal") == len(bad)
                            and node.counters.get("decode_errors_rgb") == len(bad), 5.0), \
                node.counters.snapshot()
            assert wait_for(lambda: len(statuses) >= 1, 5.0), "the garbage pair was not fused"

            # Both cameras streaming: fused pairs.
            player.start()
            started = time.monotonic()
            assert wait_for(lambda: any(mode == FusionStatus.MODE_FUSED and at > started
                                        for at, mode in statuses.snapshot()), 5.0)
            # One camera missing: the thermal camera stops. Within a second of its timeout (0.5 s) a
            # WARN names it, and the RGB image is published alone (single_modality_fallback).
            player.paused.add("thermal")
            stopped = time.monotonic()
            assert wait_for(lambda: any(
                values["_level"] == WARN and "thermal" in values["_message"] and arrived > stopped
                for arrived, values, _ in fusion_statuses(diagnostics)), 0.5 + 1.0)
            assert wait_for(lambda: any(mode == FusionStatus.MODE_RGB_ONLY and at > stopped
                                        for at, mode in statuses.snapshot()), 3.0)
            # The thermal camera is back: fused pairs resume.
            player.paused.clear()
            resumed = time.monotonic()
            assert wait_for(lambda: any(mode == FusionStatus.MODE_FUSED and at > resumed + 0.5
                                        for at, mode in statuses.snapshot()), 5.0)
            player.stop()
            assert wait_for(lambda: any(int(values["thermal_decode_errors"]) == len(bad)
                                        and int(values["rgb_decode_errors"]) == len(bad)
                                        for _, values, _ in fusion_statuses(diagnostics)), 2.0)
        assert node.counters.get("processing_errors") == 0


def call(client, request, timeout: float = 5.0):
    assert client.wait_for_service(timeout_sec=timeout), f"service {client.srv_name} not available"
    future = client.call_async(request)
    assert wait_for(future.done, timeout), f"no reply from {client.srv_name}"
    return future.result()


def set_request(name: str, value: object) -> SetParameters.Request:
    if isinstance(value, float):
        parameter_value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    else:
        parameter_value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(value))
    return SetParameters.Request(parameters=[ParameterMsg(name=name, value=parameter_value)])


@pytest.mark.ros
def test_parameters_have_descriptors_refuse_bad_values_and_apply_slop_at_run_time():
    with ros_context() as context:
        node = make_fusion_node(context)
        probe = Node("parameter_probe", context=context)
        describe = probe.create_client(DescribeParameters, "/fusion_node/describe_parameters")
        set_parameters = probe.create_client(SetParameters, "/fusion_node/set_parameters")
        with BackgroundExecutor(context, [node, probe]):
            specs = {spec.name: spec for spec in NODE_PARAMETERS["fusion_node"]}
            reply = call(describe, DescribeParameters.Request(names=list(specs)))
            for descriptor in reply.descriptors:
                spec = specs[descriptor.name]
                assert descriptor.description == spec.description
                assert descriptor.read_only == (not spec.dynamic)
                if spec.type_name == "float" and spec.minimum is not None:
                    assert descriptor.floating_point_range[0].from_value == spec.minimum
                    assert descriptor.floating_point_range[0].to_value == spec.maximum
                if spec.type_name == "int" and spec.minimum is not None:
                    assert descriptor.integer_range[0].from_value == spec.minimum

            out_of_range = call(set_parameters, set_request("sync.slop", 9.0)).results[0]
            assert not out_of_range.successful and "sync.slop" in out_of_range.reason
            read_only = call(set_parameters, set_request("sync.mode", "approximate")).results[0]
            assert not read_only.successful
            assert node.synchronizer.slop == pytest.approx(0.05)

            accepted = call(set_parameters, set_request("sync.slop", 0.02)).results[0]
            assert accepted.successful, accepted.reason
            assert node.synchronizer.slop == pytest.approx(0.02)
            assert node.get_parameter("sync.slop").value == pytest.approx(0.02)
            agc = call(set_parameters, set_request("agc.smoothing", 0.5)).results[0]
            assert agc.successful and node.pipeline.agc.smoothing == pytest.approx(0.5)
            # Each value is in range, but together low >= high: the second is refused, naming it.
            call(set_parameters, set_request("agc.low_percentile", 50.0))
            crossed = call(set_parameters, set_request("agc.high_percentile", 50.0)).results[0]
            assert not crossed.successful and "agc.high_percentile" in crossed.reason
            assert node.pipeline.agc.high_percentile == pytest.approx(99.0)


@pytest.mark.ros
def test_missing_weights_is_a_clear_error_naming_the_parameter(tmp_path):
    with ros_context() as context, pytest.raises(FusionNodeError, match="`weights`"):
        make_fusion_node(context, method="nano", weights=str(tmp_path / "absent.pt"))



@pytest.mark.ros
def test_compressed_inputs_and_camera_info():
    rng = np.random.default_rng(3)
    thermal = (7000 + rng.integers(0, 3000, (THERMAL_SIZE[1], THERMAL_SIZE[0]))).astype(np.uint16)
    rgb = rng.integers(0, 255, (RGB_SIZE[1], RGB_SIZE[0], 3), dtype=np.uint8)
    with ros_context() as context:
        node = make_fusion_node(context, **{"input.compressed": True})
        probe = Node("compressed_probe", context=context)
        fused = Collector(probe, Image, "fused/image", keep=lambda m: (time_to_ns(m.header.stamp), m.width))
        thermal_pub = probe.create_publisher(CompressedImage, "thermal/image_raw/compressed", RELIABLE)
        rgb_pub = probe.create_publisher(CompressedImage, "rgb/image_raw/compressed", RELIABLE)
        info_pub = probe.create_publisher(CameraInfo, "rgb/camera_info", RELIABLE)
        with BackgroundExecutor(context, [node, probe]):
            assert wait_for(lambda: probe.count_subscribers("rgb/image_raw/compressed") >= 1, 10.0)
            assert probe.count_subscribers("rgb/image_raw") == 0  # compressed replaces raw
            info_pub.publish(CameraInfo(width=RGB_SIZE[0], height=RGB_SIZE[1]))
            for index in range(3):
                stamp = ns_to_time(1_000_000_000 * (index + 1))
                thermal_pub.publish(array_to_compressed_msg(thermal, "png", Header(stamp=stamp)))
                rgb_pub.publish(array_to_compressed_msg(rgb, "jpeg", Header(stamp=stamp)))
                time.sleep(0.2)
            assert wait_for(lambda: len(fused) >= 1, 5.0)
            assert wait_for(lambda: node.diagnostics_values()[0]["rgb_camera_info"], 2.0)
        assert {width for _, width in fused.snapshot()} == {RGB_SIZE[0]}
        assert node.counters.get("decode_errors_thermal") == node.counters.get("decode_errors_rgb") == 0


@pytest.mark.ros
def test_network_fuser_reports_degradations_routing_and_restored_images(tmp_path):
    # An untrained nano network saved with the model's own writer: the real network path (weights
    # file -> create_fuser -> Fuser), without the trained weights this test cannot assume.
    from mex_fusion_ros.model import create_model
    from mex_fusion_ros.model.weights import save_weights

    weights = save_weights(tmp_path / "nano_untrained.pt", create_model("nano"),
                           {"presence_thresholds": {"vi_haze": 0.25}})
    rng = np.random.default_rng(4)
    thermal = (7000 + rng.integers(0, 3000, (THERMAL_SIZE[1], THERMAL_SIZE[0]))).astype(np.uint16)
    rgb = rng.integers(0, 255, (RGB_SIZE[1], RGB_SIZE[0], 3), dtype=np.uint8)
    with ros_context() as context:
        node = make_fusion_node(context, **{"method": "nano", "weights": str(weights),
                                            "output.publish_restored": True})
        probe = Node("network_probe", context=context)
        statuses = Collector(probe, FusionStatus, "fusion/status")
        restored = {name: Collector(probe, Image, f"restored/{name}", keep=lambda m: (m.encoding, m.width))
                    for name in ("thermal", "rgb")}
        thermal_pub = probe.create_publisher(Image, "thermal/image_raw", RELIABLE)
        rgb_pub = probe.create_publisher(Image, "rgb/image_raw", RELIABLE)
        with BackgroundExecutor(context, [node, probe]):
            assert wait_for(lambda: probe.count_subscribers("rgb/image_raw") >= 1, 10.0)
            for index in range(3):
                stamp = ns_to_time(1_000_000_000 * (index + 1))
                thermal_pub.publish(array_to_image_msg(thermal, "mono16", Header(stamp=stamp)))
                rgb_pub.publish(array_to_image_msg(rgb, "rgb8", Header(stamp=stamp, frame_id="rgb_optical")))
                time.sleep(0.3)
            assert wait_for(lambda: len(statuses) >= 1 and all(len(c) >= 1 for c in restored.values()), 10.0)
    status = statuses.snapshot()[0]
    assert status.method == "nano" and status.device == "cpu" and not status.half_precision
    assert {score.type for score in status.degradations} == set(DEGRADATION_TYPES)
    for score in status.degradations:
        assert 0.0 <= score.probability <= 1.0 and 0.0 <= score.severity <= 1.0
        # The weights file's calibrated threshold reaches subscribers; other types keep 0.5.
        assert score.threshold == (0.25 if score.type == "vi_haze" else 0.5)
    assert status.routing and all(len(gate.experts) == len(gate.weights) > 0 for gate in status.routing)
    assert restored["thermal"].snapshot()[0] == ("mono8", RGB_SIZE[0])
    assert restored["rgb"].snapshot()[0] == ("rgb8", RGB_SIZE[0])
