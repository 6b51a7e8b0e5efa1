"""``fusion_node``: synchronise thermal + RGB, register, fuse, publish the fused stream.

Topics (relative names; remap or namespace them):

- in: ``thermal/image_raw``, ``rgb/image_raw`` (``sensor_msgs/Image``; with ``input.compressed``
  ``<topic>/compressed`` as ``sensor_msgs/CompressedImage``), ``thermal/camera_info``,
  ``rgb/camera_info`` (optional, reported in diagnostics);
- out: ``fused/image`` (``rgb8``/``mono8``; stamp of the pair = the RGB stamp, frame_id of the RGB
  camera), ``restored/thermal`` + ``restored/rgb`` (``output.publish_restored``, when the fuser
  restores), ``fusion/status`` (``mex_fusion_msgs/FusionStatus`` per frame), ``/diagnostics``.

Threads: subscription callbacks only decode and hand frames to the synchroniser; the newest pair
goes into a one-slot mailbox (``LatestPairMailbox``) that a worker thread drains, so callbacks
never block on inference and a pair that is overtaken before the worker gets to it is dropped
(and counted), never queued. Every queue is bounded: QoS depth, the synchroniser's
``queue_size`` and the one-slot mailbox.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from mex_fusion_msgs.msg import DegradationScore, ExpertRouting, FusionStatus
from mex_fusion_ros.codec.agc import ThermalAGC
from mex_fusion_ros.codec.image_codec import to_rgb
from mex_fusion_ros.config import FUSION_NODE_PARAMETERS, ParamValue
from mex_fusion_ros.fusion.registry import CLASSICAL_METHODS, MODEL_CONFIGS, create_fuser
from mex_fusion_ros.nodes import graph
from mex_fusion_ros.nodes.diagnostics import ERROR, OK, WARN, make_status, percentile_values
from mex_fusion_ros.nodes.entry import run_node
from mex_fusion_ros.nodes.image_msgs import array_to_image_msg, compressed_msg_to_array, image_msg_to_array
from mex_fusion_ros.nodes.params import declare_from_specs, parameter_guard
from mex_fusion_ros.nodes.pipeline import FusionPipeline, ProcessedFrame, parse_homography
from mex_fusion_ros.nodes.stats import CameraWatchdog, Counters, DurationWindow, RateMeter
from mex_fusion_ros.sync.synchronizer import FramePair, LatestPairMailbox, PairSynchronizer, StampedFrame

CAMERAS = ("thermal", "rgb")
STATUS_MODES = {"fused": FusionStatus.MODE_FUSED, "thermal_only": FusionStatus.MODE_THERMAL_ONLY,
                "rgb_only": FusionStatus.MODE_RGB_ONLY}
#: How often the camera watchdog looks for a silent camera (the "within a second" promise).
WATCHDOG_PERIOD_S = 0.2
#: Sliding window of the rate meters, seconds.
RATE_WINDOW_S = 5.0
#: Minimum seconds between two log lines of the same bad-input site.
LOG_THROTTLE_S = 5.0
#: Output QoS: reliable publishers serve both reliable and best-effort subscribers (REP-2003).
OUTPUT_QOS = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)


class FusionNodeError(RuntimeError):
    """The node cannot start (e.g. missing weights); the message names the parameter to fix."""


@dataclass(frozen=True)
class DecodedFrame:
    """What a camera callback hands to the synchroniser: the pixels and the message header."""

    image: Any  # np.ndarray as decoded from the message (dtype/shape of its encoding)
    header: Header
    encoding: str
    #: time.monotonic() when the callback received it (for the hand-over delay).
    received: float


@dataclass(frozen=True)
class FrameSource:
    """Where a published frame came from: its output header and the input headers."""

    header: Header
    thermal: Header | None
    rgb: Header | None
    skew_ms: float
    #: time.monotonic() when the last of its input frames reached the node's callback.
    arrived: float


@dataclass(frozen=True)
class SingleCameraJob:
    """Work item for the fallback: one camera's frame while its partner is silent."""

    camera: str
    frame: StampedFrame


def stamp_to_ns(stamp: TimeMsg) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class FusionNode(Node):
    """The fusion node; keyword arguments go to ``rclpy.node.Node`` (namespace, overrides, cli_args)."""

    def __init__(self, node_name: str = "fusion_node", **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        # First, so destroy_node works even when the start-up below fails.
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.mailbox = LatestPairMailbox()
        self._settings_lock = threading.Lock()
        self.params: dict[str, ParamValue] = declare_from_specs(self, FUSION_NODE_PARAMETERS)
        try:  # fail at start, naming the parameter, rather than on the first frame
            parse_homography(self.params["registration.homography"])
            self._make_agc()
        except ValueError as error:
            raise FusionNodeError(str(error)) from error

        self.counters = Counters(("decode_errors_thermal", "decode_errors_rgb", "processing_errors",
                                  "pairs_matched", "frames_published", "fallback_frames"))
        self.input_rates = {camera: RateMeter(RATE_WINDOW_S) for camera in CAMERAS}
        self.pair_rate = RateMeter(RATE_WINDOW_S)
        self.publish_rate = RateMeter(RATE_WINDOW_S)
        self.drop_rate = RateMeter(RATE_WINDOW_S)
        self.latency_ms = DurationWindow()
        self.inference_ms = DurationWindow()
        self.overhead_ms = DurationWindow()
        self.input_delay_ms = {camera: DurationWindow() for camera in CAMERAS}
        self.handover_ms = DurationWindow()
        self.node_overhead_ms = DurationWindow()
        self.watchdog = CameraWatchdog(CAMERAS, float(self.params["camera_timeout"]), time.monotonic())
        self._camera_info: dict[str, CameraInfo | None] = dict.fromkeys(CAMERAS)
        self._last_rgb_frame: DecodedFrame | None = None
        self._reported_stale: tuple[str, ...] = ()
        self._reload_fuser = False
        self._last_error = ""
        self._dropped_at_last_status = 0

        self.synchronizer = PairSynchronizer(
            mode=str(self.params["sync.mode"]), slop=float(self.params["sync.slop"]),
            queue_size=int(self.params["sync.queue_size"]),
            thermal_offset=float(self.params["sync.thermal_offset"]))

        self.pipeline: FusionPipeline | None = None
        self.load_fuser()
        self._create_interfaces()
        self.add_on_set_parameters_callback(parameter_guard(FUSION_NODE_PARAMETERS, self._apply_parameters))

        self._worker = threading.Thread(target=self._work, name=f"{node_name}_inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"fusing with {self.pipeline.fuser.name!r} on {self.device} "
            f"(sync {self.params['sync.mode']}, slop {self.params['sync.slop']} s, "
            f"{'compressed' if self.params['input.compressed'] else 'raw'} input, "
            f"{'reliable' if self.params['input.reliable'] else 'sensor-data'} QoS)")

    # ---------------------------------------------------------------------------------------
    # Start-up
    # ---------------------------------------------------------------------------------------
    def load_fuser(self) -> None:
        """The heavy step: build the fuser (loads network weights, allocates the device).

        Called once after the parameters are read, and again from the worker when ``fp16`` changes.
        """
        method = str(self.params["method"])
        weights = str(self.params["weights"])
        spec = method
        if weights and method in MODEL_CONFIGS:
            spec = f"{method}:{weights}"
        elif weights and method in CLASSICAL_METHODS:
            self.get_logger().warning(f"`weights` is ignored: method {method!r} is a classical baseline")
        try:
            fuser = create_fuser(spec, device=str(self.params["device"]), half=bool(self.params["fp16"]),
                                 backend=str(self.params["backend"]), torch_compile=bool(self.params["compile"]),
                                 cuda_graphs=bool(self.params["cuda_graphs"]))
        except Exception as error:
            if not _is_fuser_setup_error(error):
                raise
            raise FusionNodeError(
                f"cannot build the fuser from parameters `method`={method!r}, `weights`={weights!r}: "
                f"{error}. "
                f"Set `weights` to a trained .pt file, or choose a classical `method` "
                f"({', '.join(CLASSICAL_METHODS)})") from error
        agc = self._make_agc()
        if self.pipeline is None:
            width, height = int(self.params["output.width"]), int(self.params["output.height"])
            self.pipeline = FusionPipeline(fuser, homography=self.params["registration.homography"],
                                           output_size=(width, height),
                                           color=bool(self.params["output.color"]), agc=agc)
        else:
            self.pipeline.fuser = fuser
        self.device = str(getattr(fuser, "device", "cpu"))
        self.half_precision = bool(getattr(fuser, "half", False))

    def _make_agc(self, params: dict[str, ParamValue] | None = None) -> ThermalAGC:
        params = self.params if params is None else params
        return ThermalAGC(float(params["agc.low_percentile"]), float(params["agc.high_percentile"]),
                          float(params["agc.smoothing"]))

    def _input_qos(self) -> QoSProfile:
        if self.params["input.reliable"]:
            # Bag replay: rosbag2 can publish reliably and every recorded frame should count.
            return QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST,
                              reliability=ReliabilityPolicy.RELIABLE)
        # REP-2003: subscribers of sensor data use the sensor-data profile (best effort, shallow).
        return qos_profile_sensor_data

    def _create_interfaces(self) -> None:
        qos = self._input_qos()
        compressed = bool(self.params["input.compressed"])
        for camera, topic in (("thermal", graph.THERMAL_IMAGE), ("rgb", graph.RGB_IMAGE)):
            if compressed:
                self.create_subscription(CompressedImage, topic + graph.COMPRESSED_SUFFIX,
                                         lambda msg, c=camera: self._on_image(c, msg, True), qos)
            else:
                self.create_subscription(Image, topic,
                                         lambda msg, c=camera: self._on_image(c, msg, False), qos)
        for camera, topic in (("thermal", graph.THERMAL_INFO), ("rgb", graph.RGB_INFO)):
            self.create_subscription(CameraInfo, topic,
                                     lambda msg, c=camera: self._on_camera_info(c, msg), qos)

        self.fused_pub = self.create_publisher(Image, graph.FUSED_IMAGE, OUTPUT_QOS)
        self.restored_pubs = {}
        if self.params["output.publish_restored"]:
            self.restored_pubs = {"thermal": self.create_publisher(Image, graph.RESTORED_THERMAL, OUTPUT_QOS),
                                  "rgb": self.create_publisher(Image, graph.RESTORED_RGB, OUTPUT_QOS)}
        self.status_pub = self.create_publisher(FusionStatus, graph.FUSION_STATUS, OUTPUT_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, graph.DIAGNOSTICS, 10)
        self.create_timer(float(self.params["diagnostics_period"]), self.publish_diagnostics)
        self.create_timer(WATCHDOG_PERIOD_S, self._check_cameras)

    # ---------------------------------------------------------------------------------------
    # Parameters changed at run time
    # ---------------------------------------------------------------------------------------
    def _apply_parameters(self, changes: dict[str, ParamValue]) -> None:
        """Apply validated dynamic parameters (called from the parameter service, before they are set)."""
        with self._settings_lock:
            if any(name.startswith("agc.") for name in changes):
                agc = self._make_agc({**self.params, **changes})  # ValueError refuses the change
                if self.pipeline is not None:
                    self.pipeline.update(agc=agc)
            self.params.update(changes)
            if "sync.slop" in changes:
                self.synchronizer.slop = float(changes["sync.slop"])
            if "sync.thermal_offset" in changes:
                self.synchronizer.thermal_offset = float(changes["sync.thermal_offset"])
            if "camera_timeout" in changes:
                self.watchdog.timeout = float(changes["camera_timeout"])
            if "fp16" in changes:
                self._reload_fuser = True  # rebuilt by the worker between two frames

    # ---------------------------------------------------------------------------------------
    # Callbacks (executor threads): decode, pair, hand over. Never block.
    # ---------------------------------------------------------------------------------------
    def _on_camera_info(self, camera: str, msg: CameraInfo) -> None:
        self._camera_info[camera] = msg

    def _on_image(self, camera: str, msg: Image | CompressedImage, compressed: bool) -> None:
        now = time.monotonic()
        # Stamp -> callback: the driver's and DDS's share of the latency, not this node's.
        stamp_ns = stamp_to_ns(msg.header.stamp)
        self.input_delay_ms[camera].add((self.get_clock().now().nanoseconds - stamp_ns) / 1e6)
        self.input_rates[camera].tick(now)
        self.watchdog.seen(camera, now)
        try:
            if compressed:
                image = compressed_msg_to_array(msg)  # RGB order already
            else:
                # A view of msg.data (no copy): the pipeline never writes into its input.
                image = image_msg_to_array(msg, copy=False)
                if image.ndim == 3:
                    image = to_rgb(image, msg.encoding)  # bgr8, rgba8, ... -> RGB order
            if image.size == 0:
                raise ValueError(f"zero-size image ({image.shape})")
        except Exception as error:  # noqa: BLE001 - any bad message must be counted, never crash the node
            self.counters.add(f"decode_errors_{camera}")
            encoding = msg.format if compressed else f"{msg.encoding} {msg.width}x{msg.height}"
            self.get_logger().warning(f"dropping {camera} frame ({encoding}): {error}",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return
        frame = StampedFrame(stamp_ns,
                             DecodedFrame(image, msg.header, msg.format if compressed else msg.encoding, now))
        if camera == "rgb":
            self._last_rgb_frame = frame.data
        with self._settings_lock:
            add = self.synchronizer.add_thermal if camera == "thermal" else self.synchronizer.add_rgb
            pairs = add(frame)
            fallback = bool(self.params["single_modality_fallback"])
        for pair in pairs:
            self.pair_rate.tick(now)
            self.counters.add("pairs_matched")
            self._hand_over(pair)
        if not pairs and fallback:
            partner = "rgb" if camera == "thermal" else "thermal"
            if partner in self.watchdog.stale(now):
                self._hand_over(SingleCameraJob(camera, frame))

    def _hand_over(self, item: FramePair | SingleCameraJob) -> None:
        dropped_before = self.mailbox.dropped
        self.mailbox.put(item)  # the mailbox carries fallback jobs too; it never looks inside
        if self.mailbox.dropped > dropped_before:
            # It held an older item the worker never took: that pair is dropped, not queued.
            self.drop_rate.tick(time.monotonic())

    def _check_cameras(self) -> None:
        stale = self.watchdog.stale(time.monotonic())
        if stale != self._reported_stale:
            for camera in set(stale) - set(self._reported_stale):
                self.get_logger().warning(f"{camera} camera: no frame for {self.watchdog.timeout:.1f} s")
            for camera in set(self._reported_stale) - set(stale):
                self.get_logger().info(f"{camera} camera: frames again")
            self._reported_stale = stale
            self.publish_diagnostics()  # say so now, not at the next diagnostics period

    # ---------------------------------------------------------------------------------------
    # Worker thread: fuse the newest pair, publish.
    # ---------------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            item = self.mailbox.take(timeout=0.1)
            if item is None:
                continue
            frames = [item.frame] if isinstance(item, SingleCameraJob) else [item.thermal, item.rgb]
            self.handover_ms.add((time.monotonic() - max(frame.data.received for frame in frames)) * 1e3)
            if self._reload_fuser:
                self._reload_fuser = False
                try:
                    self.load_fuser()
                except FusionNodeError as error:
                    self.get_logger().error(f"fp16 change not applied: {error}")
            try:
                self._process(item)
            except Exception as error:  # noqa: BLE001 - a bad frame must not end the worker
                self.counters.add("processing_errors")
                self._last_error = f"{type(error).__name__}: {error}"
                self.get_logger().warning(f"frame not fused: {self._last_error}",
                                          throttle_duration_sec=LOG_THROTTLE_S)

    def _process(self, item: FramePair | SingleCameraJob) -> None:
        assert self.pipeline is not None
        if isinstance(item, SingleCameraJob):
            decoded: DecodedFrame = item.frame.data
            last_rgb = self._last_rgb_frame
            rgb_shape = last_rgb.image.shape if last_rgb is not None else None
            frame = self.pipeline.process_single(item.camera, decoded.image, rgb_shape)
            # Registered into the RGB camera's frame when one was ever seen.
            frame_id = last_rgb.header.frame_id if last_rgb is not None else decoded.header.frame_id
            source = FrameSource(header=Header(stamp=decoded.header.stamp, frame_id=frame_id),
                                 thermal=decoded.header if item.camera == "thermal" else None,
                                 rgb=decoded.header if item.camera == "rgb" else None, skew_ms=0.0,
                                 arrived=decoded.received)
            self.counters.add("fallback_frames")
        else:
            thermal: DecodedFrame = item.thermal.data
            rgb: DecodedFrame = item.rgb.data
            frame = self.pipeline.process(thermal.image, rgb.image)
            source = FrameSource(header=Header(stamp=rgb.header.stamp, frame_id=rgb.header.frame_id),
                                 thermal=thermal.header, rgb=rgb.header, skew_ms=item.skew_ns / 1e6,
                                 arrived=max(thermal.received, rgb.received))
        self._publish(frame, source)

    def _publish(self, frame: ProcessedFrame, source: FrameSource) -> None:
        header = source.header
        self.fused_pub.publish(array_to_image_msg(frame.fused, "rgb8" if frame.fused.ndim == 3 else "mono8",
                                                  header))
        if self.restored_pubs:
            if frame.restored_thermal is not None:
                self.restored_pubs["thermal"].publish(
                    array_to_image_msg(frame.restored_thermal, "mono8", header))
            if frame.restored_rgb is not None:
                self.restored_pubs["rgb"].publish(array_to_image_msg(frame.restored_rgb, "rgb8", header))
        latency_ms = (self.get_clock().now().nanoseconds - stamp_to_ns(header.stamp)) / 1e6
        self.status_pub.publish(self._status_message(frame, source, latency_ms))

        self.publish_rate.tick(time.monotonic())
        self.counters.add("frames_published")
        self.latency_ms.add(latency_ms)
        self.inference_ms.add(frame.inference_ms)
        # Node overhead: end-to-end latency minus the model forward (transport, decoding, pairing,
        # hand-over, registration, encoding and publication).
        self.overhead_ms.add(latency_ms - frame.forward_ms)
        # The same without the transport to the node: callback of the pair's last frame -> published.
        self.node_overhead_ms.add((time.monotonic() - source.arrived) * 1e3 - frame.forward_ms)

    def _status_message(self, frame: ProcessedFrame, source: FrameSource, latency_ms: float) -> FusionStatus:
        status = FusionStatus(header=source.header, skew_ms=float(source.skew_ms),
                              mode=STATUS_MODES[frame.mode], device=self.device,
                              half_precision=self.half_precision)
        if source.thermal is not None:
            status.thermal_stamp = source.thermal.stamp
        if source.rgb is not None:
            status.rgb_stamp = source.rgb.stamp
        status.method = self.pipeline.fuser.name if self.pipeline is not None else ""
        result = frame.result
        if result is not None and result.degradation is not None:
            status.degradations = [
                DegradationScore(type=name, probability=float(probability),
                                 severity=float(result.degradation.severities.get(name, 0.0)))
                for name, probability in result.degradation.probabilities.items()]
        if result is not None:
            status.routing = [ExpertRouting(gate=routing.gate, experts=[int(e) for e in routing.experts],
                                            weights=[float(w) for w in routing.weights])
                              for routing in result.routing]
        status.preprocess_ms = float(frame.preprocess_ms)
        status.inference_ms = float(frame.inference_ms)
        status.postprocess_ms = float(frame.postprocess_ms)
        status.latency_ms = float(latency_ms)
        # Pairs the worker never took (overtaken in the mailbox). Frames the synchroniser could not
        # pair are no pairs; they are in /diagnostics (sync_*_dropped).
        dropped = self.mailbox.dropped
        status.dropped_pairs = max(0, dropped - self._dropped_at_last_status)
        self._dropped_at_last_status = dropped
        return status

    # ---------------------------------------------------------------------------------------
    # Diagnostics
    # ---------------------------------------------------------------------------------------
    def diagnostics_values(self) -> tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]:
        """(input values, fusion values, stale cameras) as published on /diagnostics."""
        now = time.monotonic()
        counts = self.counters.snapshot()
        stale = self.watchdog.stale(now)
        inputs: dict[str, Any] = {}
        for camera in CAMERAS:
            inputs[f"{camera}_rate_hz"] = self.input_rates[camera].rate(now)
            inputs[f"{camera}_frames"] = self.input_rates[camera].total
            inputs[f"{camera}_silence_s"] = self.watchdog.silence(camera, now)
            inputs[f"{camera}_stale"] = camera in stale
            inputs[f"{camera}_decode_errors"] = counts[f"decode_errors_{camera}"]
            inputs[f"{camera}_camera_info"] = self._camera_info[camera] is not None
        sync_stats = self.synchronizer.stats
        fusion: dict[str, Any] = {
            "pair_rate_hz": self.pair_rate.rate(now),
            "published_rate_hz": self.publish_rate.rate(now),
            "drop_rate_hz": self.drop_rate.rate(now),
            "pairs_matched": counts["pairs_matched"],
            "pairs_dropped": self.mailbox.dropped,
            "frames_published": counts["frames_published"],
            "fallback_frames": counts["fallback_frames"],
            "processing_errors": counts["processing_errors"],
        }
        for camera in CAMERAS:
            camera_counts = sync_stats.camera(camera)
            fusion[f"sync_{camera}_queued"] = camera_counts.queued
            fusion[f"sync_{camera}_dropped"] = camera_counts.dropped_total
            for reason, count in sorted(camera_counts.dropped.items()):
                fusion[f"sync_{camera}_dropped_{reason.value}"] = count
        fusion.update(percentile_values("latency", self.latency_ms.summary()))
        fusion.update(percentile_values("inference", self.inference_ms.summary()))
        fusion.update(percentile_values("overhead", self.overhead_ms.summary()))
        fusion.update(percentile_values("node_overhead", self.node_overhead_ms.summary()))
        fusion.update(percentile_values("handover", self.handover_ms.summary()))
        for camera in CAMERAS:
            fusion.update(percentile_values(f"{camera}_delay", self.input_delay_ms[camera].summary()))
        fusion.update({"method": self.pipeline.fuser.name if self.pipeline else "", "device": self.device,
                       "fp16": bool(self.params["fp16"]), "sync_mode": str(self.params["sync.mode"]),
                       "sync_slop_s": float(self.params["sync.slop"])})
        return inputs, fusion, stale

    def publish_diagnostics(self) -> None:
        inputs, fusion, stale = self.diagnostics_values()
        hardware_id = self.get_fully_qualified_name()
        fallback = bool(self.params["single_modality_fallback"])
        if not stale:
            input_level, input_message = OK, "both cameras streaming"
        elif len(stale) == len(CAMERAS):
            input_level, input_message = ERROR, "no frames from thermal and rgb cameras"
        else:
            live = next(camera for camera in CAMERAS if camera not in stale)
            input_level = WARN if fallback else ERROR
            input_message = (f"{stale[0]} camera stopped (no frame for {self.watchdog.timeout:.1f} s); "
                             + (f"publishing {live} alone" if fallback else "no fused output"))
        if fusion["processing_errors"] and self._last_error:
            fusion_level, fusion_message = WARN, f"last error: {self._last_error}"
        else:
            fusion_level, fusion_message = OK, f"{fusion['published_rate_hz']:.1f} Hz fused"
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [
            make_status(f"{self.get_name()}: inputs", hardware_id, input_level, input_message, inputs),
            make_status(f"{self.get_name()}: fusion", hardware_id, fusion_level, fusion_message, fusion)]
        self.diagnostics_pub.publish(array)

    # ---------------------------------------------------------------------------------------
    def destroy_node(self) -> None:
        """Stop the worker before the publishers go away (also after a failed start)."""
        self._stop.set()
        self.mailbox.close()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
        super().destroy_node()


def _is_fuser_setup_error(error: Exception) -> bool:
    """Errors that mean "fix `method`/`weights`": an unknown spec or missing weights file (ValueError
    from the registry), missing shipped weights (WeightsError; its module, which imports torch, is
    loaded only for network methods, so it is looked up rather than imported), a missing module,
    or an OS error while locating or reading the weights file."""
    weights_module = sys.modules.get("mex_fusion_ros.model.weights")
    weights_error = getattr(weights_module, "WeightsError", None)
    if weights_error is not None and isinstance(error, weights_error):
        return True
    return isinstance(error, (ValueError, OSError, ImportError))


def main(args: list[str] | None = None) -> int:
    """``ros2 run mex_fusion_ros fusion_node [--ros-args ...]``."""
    return run_node("fusion_node", "Synchronise thermal and RGB cameras, fuse them, publish fused/image.",
                    FusionNode, (FusionNodeError,), args)


if __name__ == "__main__":
    sys.exit(main())
