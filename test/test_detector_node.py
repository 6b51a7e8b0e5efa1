"""detector_node over real rclpy: detections for every image (header copied), annotated images,
bad input counted, run-time thresholds, the missing-model error and the optional vision_msgs output.

The model is ``yolov8n.yaml``: an untrained YOLOv8n built from the architecture file inside
ultralytics (no download; YOLO_OFFLINE=1 in conftest). With ``conf: 0.0`` it still returns boxes,
which exercises the whole box conversion; ``conf: 1.0`` leaves none.
"""
from __future__ import annotations

import importlib.util
import time

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from node_harness import (
    RELIABLE,
    BackgroundExecutor,
    Collector,
    ns_to_time,
    ros_context,
    time_to_ns,
    wait_for,
)
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from mex_fusion_msgs.msg import DetectionArray
from mex_fusion_ros.config import DETECTOR_NODE_PARAMETERS
from mex_fusion_ros.data.paired import find_pairs, read_vi
from mex_fusion_ros.nodes.detector_node import DetectorNode
from mex_fusion_ros.nodes.diagnostics import parse_values
from mex_fusion_ros.nodes.image_msgs import array_to_image_msg
from mex_fusion_ros.nodes.params import overrides_to_parameters

SIZE = (160, 128)


def make_detector(context, **parameters: object) -> DetectorNode:
    flat = {"model": "yolov8n.yaml", "device": "cpu", "image_size": 160, "conf": 0.0,
            "input.reliable": True, "diagnostics_period": 0.5, **parameters}
    return DetectorNode("detector_node", context=context,
                        parameter_overrides=overrides_to_parameters(flat, DETECTOR_NODE_PARAMETERS))


def roadscene_images(root, count: int) -> list[np.ndarray]:
    listing = find_pairs(root / "val")
    images = []
    for index in range(count):
        vi = cv2.resize(read_vi(listing[index].vi_path), SIZE, interpolation=cv2.INTER_AREA)
        images.append((np.clip(vi, 0, 1) * 255 + 0.5).astype(np.uint8))
    return images


@pytest.mark.ros
@pytest.mark.data
def test_every_image_gets_its_detections_with_the_same_header(roadscene):
    images = roadscene_images(roadscene, 6)
    with ros_context() as context:
        node = make_detector(context)
        probe = Node("detector_probe", context=context)
        detections = Collector(probe, DetectionArray, "detections")
        annotated = Collector(probe, Image, "detections/image",
                              keep=lambda m: (time_to_ns(m.header.stamp), m.encoding, m.width, m.height))
        publisher = probe.create_publisher(Image, "fused/image", RELIABLE)
        sent = []
        with BackgroundExecutor(context, [node, probe]):
            assert wait_for(lambda: probe.count_subscribers("fused/image") >= 1, 10.0)
            for index, image in enumerate(images):
                stamp = 1_700_000_000_000_000_000 + index * 100_000_000
                publisher.publish(array_to_image_msg(image, "rgb8", Header(stamp=ns_to_time(stamp),
                                                                           frame_id="rgb_optical")))
                sent.append(stamp)
                time.sleep(0.2)
            assert wait_for(lambda: len(detections) == len(sent) and len(annotated) == len(sent), 10.0)

    arrays = detections.snapshot()
    assert [time_to_ns(array.header.stamp) for array in arrays] == sent
    assert all(array.header.frame_id == "rgb_optical" for array in arrays)
    boxes = [detection for array in arrays for detection in array.detections]
    assert boxes, "conf 0.0 on an untrained model should still give boxes"
    for array in arrays:
        scores = [detection.score for detection in array.detections]
        assert scores == sorted(scores, reverse=True)
    for detection in boxes:
        assert 0.0 <= detection.score <= 1.0 and detection.width >= 0 and detection.height >= 0
        assert -1.0 <= detection.center_x <= SIZE[0] + 1 and -1.0 <= detection.center_y <= SIZE[1] + 1
        assert detection.class_name == node.detector.names[detection.class_id]
    formats = {(encoding, width, height) for _, encoding, width, height in annotated.snapshot()}
    assert formats == {("rgb8", *SIZE)}


@pytest.mark.ros
def test_bad_images_are_counted_thresholds_change_at_run_time():
    with ros_context() as context:
        node = make_detector(context)
        probe = Node("detector_bad_probe", context=context)
        detections = Collector(probe, DetectionArray, "detections")
        diagnostics = Collector(probe, DiagnosticArray, "/diagnostics", qos=10)
        publisher = probe.create_publisher(Image, "fused/image", RELIABLE)
        header = Header(stamp=ns_to_time(5), frame_id="rgb_optical")
        rng = np.random.default_rng(0)
        good = array_to_image_msg(rng.integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8), "rgb8", header)
        with BackgroundExecutor(context, [node, probe]):
            assert wait_for(lambda: probe.count_subscribers("fused/image") >= 1, 10.0)
            short_data = Image(header=header, height=8, width=8, encoding="rgb8", step=24, data=bytes(10))
            publisher.publish(short_data)
            publisher.publish(Image(header=header, height=0, width=0, encoding="rgb8", step=0, data=b""))
            publisher.publish(good)
            assert wait_for(lambda: len(detections) == 1, 10.0)
            assert detections.snapshot()[0].detections, "conf 0.0 should keep boxes"
            assert wait_for(lambda: node.counters.get("decode_errors") == 2, 2.0)
            assert wait_for(lambda: any(
                parse_values(status).get("decode_errors") == "2"
                for array in diagnostics.snapshot() for status in array.status
                if status.name == "detector_node: detector"), 2.0)

            # conf is dynamic: at 1.0 nothing passes, and the array is still published (empty).
            assert node.set_parameters([Parameter("conf", value=1.0)])[0].successful
            assert not node.set_parameters([Parameter("conf", value=1.5)])[0].successful
            publisher.publish(good)
            assert wait_for(lambda: len(detections) == 2, 10.0)
            assert list(detections.snapshot()[1].detections) == []


@pytest.mark.ros
def test_offline_without_a_model_the_node_stays_up_reports_error_and_loads_one_when_set(tmp_path, monkeypatch):
    # An offline robot with the default yolov8n.pt never downloaded (YOLO_OFFLINE: no download).
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    with ros_context() as context:
        node = make_detector(context, model="yolov8n.pt")
        probe = Node("detector_model_probe", context=context)
        detections = Collector(probe, DetectionArray, "detections")
        diagnostics = Collector(probe, DiagnosticArray, "/diagnostics", qos=10)
        publisher = probe.create_publisher(Image, "fused/image", RELIABLE)
        set_parameters = probe.create_client(SetParameters, "/detector_node/set_parameters")
        rng = np.random.default_rng(0)
        image = array_to_image_msg(rng.integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8), "rgb8",
                                   Header(stamp=ns_to_time(5), frame_id="rgb_optical"))

        def detector_statuses() -> list:
            return [status for array in diagnostics.snapshot() for status in array.status
                    if status.name == "detector_node: detector"]

        def set_model(model: str):
            assert set_parameters.wait_for_service(timeout_sec=10.0)
            request = SetParameters.Request(parameters=[Parameter("model", value=model).to_parameter_msg()])
            future = set_parameters.call_async(request)
            assert wait_for(future.done, 60.0), "no reply to set model"
            return future.result().results[0]

        with BackgroundExecutor(context, [node, probe]):
            assert node.detector is None
            # Periodic ERROR on /diagnostics, naming the model and what to do.
            assert wait_for(lambda: sum(s.level == DiagnosticStatus.ERROR for s in detector_statuses()) >= 2, 5.0)
            message = detector_statuses()[-1].message
            assert "no detector model" in message and "'yolov8n.pt'" in message and "`model`" in message, message
            assert parse_values(detector_statuses()[-1])["model_loaded"] == "false"

            # Images are counted, and no (falsely empty) detections are published.
            assert wait_for(lambda: probe.count_subscribers("fused/image") >= 1, 10.0)
            publisher.publish(image)
            assert wait_for(lambda: node.counters.get("images_without_model") == 1, 5.0)
            assert len(detections) == 0

            refused = set_model("no_such_detector_model.pt")
            assert not refused.successful and "no_such_detector_model.pt" in refused.reason, refused.reason
            assert node.detector is None and node.get_parameter("model").value == "yolov8n.pt"

            loaded = set_model("yolov8n.yaml")  # loads at run time; the reply waits for it
            assert loaded.successful, loaded.reason
            assert node.detector is not None
            diagnostics.messages.clear()
            assert wait_for(lambda: any(s.level == DiagnosticStatus.OK for s in detector_statuses()), 5.0)
            publisher.publish(image)
            assert wait_for(lambda: len(detections) == 1, 10.0)


@pytest.mark.ros
def test_detection2d_array_only_where_vision_msgs_is_installed():
    with ros_context() as context:
        node = make_detector(context)
        try:
            topics = {name for name, _ in node.get_publisher_names_and_types_by_node("detector_node", "/")}
            if importlib.util.find_spec("vision_msgs") is None:
                assert node.vision_pub is None and "/detections_2d" not in topics
            else:
                assert node.vision_pub is not None and "/detections_2d" in topics
        finally:
            node.destroy_node()

