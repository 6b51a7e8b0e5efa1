"""``detector_node``: YOLO on the fused stream.

- in: ``fused/image`` (``sensor_msgs/Image``; sensor-data QoS, reliable by ``input.reliable``);
- out: ``detections`` (``mex_fusion_msgs/DetectionArray``, header copied from the image, published
  for every image processed, empty when nothing is found), ``detections_2d``
  (``vision_msgs/Detection2DArray``, only where ``vision_msgs`` is installed: trackers consume it),
  ``detections/image`` (annotated ``rgb8``, when ``publish_annotated``), ``/diagnostics``.

Inference runs in the subscription callback, as yolo_ros does: the QoS depth bounds what waits,
and every image the node takes gets its detections (so consumers can join them by stamp).

Without a usable model — typically an offline robot with the default ``yolov8n.pt`` never
downloaded — the node does not exit (``ros2 launch`` would go on with half a graph and nothing
on /diagnostics): it stays up, logs why, publishes ERROR "no detector model: ..." on /diagnostics
every ``diagnostics_period``, publishes no detections (an empty array would claim "nothing
there") and loads the model as soon as ``model`` is set (``ros2 param set /detector_node model
/path/yolov8n.pt``; the reply says whether it loaded).
"""
from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from mex_fusion_msgs.msg import Detection, DetectionArray
from mex_fusion_ros.codec.image_codec import to_rgb
from mex_fusion_ros.config import DETECTOR_NODE_PARAMETERS, ParamValue
from mex_fusion_ros.nodes import graph
from mex_fusion_ros.nodes.diagnostics import ERROR, OK, WARN, make_status, percentile_values
from mex_fusion_ros.nodes.entry import run_node
from mex_fusion_ros.nodes.image_msgs import array_to_image_msg, image_msg_to_array
from mex_fusion_ros.nodes.params import NODE_OPTIONS, ParameterSpecError, declare_from_specs, parameter_guard
from mex_fusion_ros.nodes.stats import Counters, DurationWindow, RateMeter
from mex_fusion_ros.nodes.yolo import Box, DetectorError, YoloDetector, class_filter

try:  # vision_msgs is the ROS standard for detections, but not installed everywhere (not on PyPI).
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose
except ImportError:
    Detection2DArray = None

__all__ = ["DetectorError", "DetectorNode", "main"]

RATE_WINDOW_S = 5.0
LOG_THROTTLE_S = 5.0
OUTPUT_QOS = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)


def detection_message(box: Box) -> Detection:
    """A ``Box`` (corners) -> ``mex_fusion_msgs/Detection`` (centre and size, vision_msgs convention)."""
    return Detection(class_id=box.class_id, class_name=box.class_name, score=box.score,
                     center_x=(box.x1 + box.x2) / 2.0, center_y=(box.y1 + box.y2) / 2.0,
                     width=box.x2 - box.x1, height=box.y2 - box.y1)


def vision_detections(array: DetectionArray) -> Any:
    """``DetectionArray`` -> ``vision_msgs/Detection2DArray`` (requires vision_msgs)."""
    out = Detection2DArray(header=array.header)
    for detection in array.detections:
        item = Detection2D(header=array.header)
        item.bbox.center.position.x = float(detection.center_x)
        item.bbox.center.position.y = float(detection.center_y)
        item.bbox.size_x = float(detection.width)
        item.bbox.size_y = float(detection.height)
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = detection.class_name or str(detection.class_id)
        hypothesis.hypothesis.score = float(detection.score)
        item.results.append(hypothesis)
        out.detections.append(item)
    return out


class DetectorNode(Node):
    """The detector node; keyword arguments go to ``rclpy.node.Node``."""

    def __init__(self, node_name: str = "detector_node", **node_kwargs: Any) -> None:
        super().__init__(node_name, **{**NODE_OPTIONS, **node_kwargs})
        self.params: dict[str, ParamValue] = declare_from_specs(self, DETECTOR_NODE_PARAMETERS)
        try:
            class_filter(self.params["classes"])
        except ValueError as error:
            raise ParameterSpecError(f"{node_name}.classes", str(error)) from None
        self.counters = Counters(("images", "decode_errors", "detection_errors", "detections",
                                  "images_without_model"))
        self.input_rate = RateMeter(RATE_WINDOW_S)
        self.inference_ms = DurationWindow()
        self.latency_ms = DurationWindow()
        self._last_error = ""

        self.detector: YoloDetector | None = None
        #: Why there is no detector (shown on /diagnostics as ERROR); "" once a model is loaded.
        self.model_problem = ""
        try:
            self.detector = self.load_model(self.params)
        except DetectorError as error:
            self.model_problem = f"no detector model: {error}"

        if self.params["input.reliable"]:
            qos = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        else:
            qos = qos_profile_sensor_data  # REP-2003: image subscribers use the sensor-data profile
        self.create_subscription(Image, graph.FUSED_IMAGE, self._on_image, qos)
        self.detections_pub = self.create_publisher(DetectionArray, graph.DETECTIONS, OUTPUT_QOS)
        self.vision_pub = (self.create_publisher(Detection2DArray, graph.DETECTIONS_2D, OUTPUT_QOS)
                           if Detection2DArray is not None else None)
        self.annotated_pub = (self.create_publisher(Image, graph.DETECTIONS_IMAGE, OUTPUT_QOS)
                              if self.params["publish_annotated"] else None)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, graph.DIAGNOSTICS, 10)
        self.create_timer(float(self.params["diagnostics_period"]), self.publish_diagnostics)
        self.add_on_set_parameters_callback(parameter_guard(DETECTOR_NODE_PARAMETERS, self._apply_parameters))
        vision = "" if self.vision_pub else "; vision_msgs not installed, detections_2d not published"
        if self.detector is not None:
            self.get_logger().info(f"detecting with {self.params['model']!r} on {self.detector.device}{vision}")
        else:
            self.get_logger().error(f"{self.model_problem}; running without detections until `model` is set: "
                                    f"ros2 param set {self.get_fully_qualified_name()} model /path/to/model.pt"
                                    f"{vision}")
            self.publish_diagnostics()  # the ERROR now, not only after the first period

    @staticmethod
    def load_model(params: dict[str, ParamValue]) -> YoloDetector:
        """The heavy step: load the YOLO model of ``params`` and run one warm-up forward.

        Raises ``DetectorError`` (naming `model` or the device) when it cannot be used.
        """
        detector = YoloDetector(
            str(params["model"]), device=str(params["device"]), half=bool(params["half"]),
            conf=float(params["conf"]), iou=float(params["iou"]),
            classes=list(params["classes"]), image_size=int(params["image_size"]))
        detector.warm_up(int(params["image_size"]), int(params["image_size"]))
        return detector

    def _apply_parameters(self, changes: dict[str, ParamValue]) -> None:
        """Runs in this node's executor, between two images; ``ValueError`` refuses the request."""
        params = {**self.params, **changes}
        class_filter(params["classes"])  # ValueError: a negative id other than a lone -1
        if "model" in changes:
            try:
                detector = self.load_model(params)  # seconds: the caller's `ros2 param set` waits for it
            except DetectorError as error:
                raise ValueError(f"model: {error}") from None
            self.detector, self.model_problem = detector, ""
            self.get_logger().info(f"detecting with {params['model']!r} on {detector.device}")
        self.params = params
        if self.detector is not None:
            self.detector.conf = float(params["conf"])
            self.detector.iou = float(params["iou"])
            self.detector.classes = list(params["classes"])

    def _on_image(self, msg: Image) -> None:
        self.input_rate.tick(time.monotonic())
        self.counters.add("images")
        if self.detector is None:
            self.counters.add("images_without_model")  # /diagnostics says ERROR and why
            return
        try:
            image = image_msg_to_array(msg, copy=False)
            if image.ndim == 3:
                image = to_rgb(image, msg.encoding)  # the detector wants RGB order
            if image.dtype != np.uint8:
                raise ValueError(f"expected an 8-bit image, got {msg.encoding}")
            if image.size == 0:
                raise ValueError(f"zero-size image ({image.shape})")
        except Exception as error:  # noqa: BLE001 - a bad message is counted, never ends the node
            self.counters.add("decode_errors")
            self._last_error = f"{type(error).__name__}: {error}"
            self.get_logger().warning(f"dropping image ({msg.encoding} {msg.width}x{msg.height}): {error}",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return
        try:
            result = self.detector.detect(image, annotate=self.annotated_pub is not None)
        except Exception as error:  # noqa: BLE001 - e.g. an image ultralytics cannot letterbox
            self.counters.add("detection_errors")
            self._last_error = f"{type(error).__name__}: {error}"
            self.get_logger().warning(f"detection failed: {self._last_error}",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return
        if not self.context.ok():
            return  # shut down during the forward: publishing now would only raise
        array = DetectionArray(header=msg.header,
                               detections=[detection_message(box) for box in
                                           sorted(result.boxes, key=lambda box: -box.score)])
        self.detections_pub.publish(array)
        if self.vision_pub is not None:
            self.vision_pub.publish(vision_detections(array))
        if self.annotated_pub is not None and result.annotated is not None:
            self.annotated_pub.publish(array_to_image_msg(result.annotated, "rgb8", msg.header))
        self.counters.add("detections", len(array.detections))
        self.inference_ms.add(result.inference_ms)
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self.latency_ms.add((self.get_clock().now().nanoseconds - stamp_ns) / 1e6)

    def publish_diagnostics(self) -> None:
        counts = self.counters.snapshot()
        values: dict[str, Any] = {"input_rate_hz": self.input_rate.rate(time.monotonic()), **counts}
        values.update(percentile_values("inference", self.inference_ms.summary()))
        values.update(percentile_values("latency", self.latency_ms.summary()))
        values.update({"model": str(self.params["model"]), "model_loaded": self.detector is not None,
                       "device": self.detector.device if self.detector else "",
                       "vision_msgs": self.vision_pub is not None})
        errors = counts["decode_errors"] + counts["detection_errors"]
        if self.detector is None:
            level, message = ERROR, f"{self.model_problem}; set `model` to load one"
        elif errors:
            level, message = WARN, f"{errors} images not processed; last: {self._last_error}"
        else:
            level, message = OK, f"{values['input_rate_hz']:.1f} Hz"
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [make_status(f"{self.get_name()}: detector", self.get_fully_qualified_name(), level,
                                    message, values)]
        self.diagnostics_pub.publish(array)


def main(args: list[str] | None = None) -> int:
    """``ros2 run mex_fusion_ros detector_node [--ros-args ...]``."""
    return run_node("detector_node", "Run YOLO on fused/image and publish detections.", DetectorNode,
                    (DetectorError,), args)


if __name__ == "__main__":
    sys.exit(main())
