"""``fusion_node``: synchronise thermal + RGB, register, fuse, publish the fused stream.

Topics (relative names; remap or namespace them):

- in: ``thermal/image_raw``, ``rgb/image_raw`` (``sensor_msgs/Image``; with ``input.compressed``
  ``<topic>/compressed`` as ``sensor_msgs/CompressedImage``), ``thermal/camera_info``,
  ``rgb/camera_info`` (optional, reported in diagnostics);
- out: ``fused/image`` (``rgb8``/``mono8``; stamp of the pair = the RGB stamp, frame_id of the RGB
  camera), ``restored/thermal`` + ``restored/rgb`` (``output.publish_restored``, when the fuser
  restores), ``fusion/status`` (``mex_fusion_msgs/FusionStatus`` per frame), ``/diagnostics``.

Input QoS: unless ``input.reliable`` forces reliable, each image subscription matches its
publishers: reliable while every publisher of the topic is reliable (Fast DDS drops best-effort
samples over 0.5 MB between processes unless the *publisher's* process loads
``config/fastdds_large_images.xml``), best effort otherwise (it matches any publisher).
Re-checked every ``QOS_CHECK_PERIOD_S``.

Robustness: a frame with an invalid stamp (negative ``sec``: before 1970, or a 32-bit ``sec``
wrapped after 2038), one that does not decode, and one larger than ``input.max_pixels`` (checked
before decoding) is dropped, counted and logged (throttled). Stamps that jump back restart the
synchroniser (``sync.PairSynchronizer``), which is logged and shown on ``/diagnostics`` for
``JUMP_WARN_S``. Diagnostics count decoded frames, not messages, and estimate input loss from the
stamps (``nodes.stats.StampLossMeter``).

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
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.subscription import Subscription
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from mex_fusion_msgs.msg import DegradationScore, ExpertRouting, FusionStatus
from mex_fusion_ros.codec.agc import ThermalAGC
from mex_fusion_ros.codec.image_codec import ImageTooLargeError
from mex_fusion_ros.config import FUSION_NODE_PARAMETERS, ParamValue
from mex_fusion_ros.fusion.registry import CLASSICAL_METHODS, MODEL_CONFIGS, create_fuser
from mex_fusion_ros.nodes import graph
from mex_fusion_ros.nodes.diagnostics import ERROR, OK, WARN, make_status, percentile_values
from mex_fusion_ros.nodes.entry import run_node
from mex_fusion_ros.nodes.image_msgs import array_to_image_msg, camera_msg_to_frame
from mex_fusion_ros.nodes.params import NODE_OPTIONS, declare_from_specs, parameter_guard
from mex_fusion_ros.nodes.pipeline import FusionPipeline, ProcessedFrame, parse_homography
from mex_fusion_ros.nodes.stats import (
    CameraWatchdog,
    Counters,
    DurationWindow,
    RateMeter,
    RecentEvents,
    StampLossMeter,
)
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
#: Seconds /diagnostics stays at WARN after a clock jump, an invalid stamp or an oversized frame.
JUMP_WARN_S = 10.0
#: Input loss (fraction of the camera's frames, from its stamps) above which /diagnostics warns.
INPUT_LOSS_WARN = 0.1
#: How often the input subscriptions' reliability is matched to their publishers, seconds.
QOS_CHECK_PERIOD_S = 0.5
#: A latency (node clock - header stamp) beyond this, either way, means the two are not the same
#: clock (use_sim_time without /clock gives -1.8e12 ms): reported as unknown, not as a number.
PLAUSIBLE_LATENCY_S = 60.0
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


def stamp_problem(stamp: TimeMsg) -> str | None:
    """Why a header stamp cannot be a frame's time (None when it can)."""
    if stamp.sec < 0:
        return (f"negative stamp (sec={stamp.sec}): before 1970, or a 32-bit time that wrapped after "
                "2038")
    if stamp.nanosec >= 1_000_000_000:
        return f"stamp nanosec={stamp.nanosec} is not below 10^9"
    return None


def plausible_latency_ms(now_ns: int, stamp_ns: int) -> float | None:
    """``now - stamp`` in ms, or None when the clock is unset (sim time before /clock), the stamp
    is zero, or the difference is too large for the two to be the same clock."""
    if now_ns <= 0 or stamp_ns <= 0 or abs(now_ns - stamp_ns) > PLAUSIBLE_LATENCY_S * 1e9:
        return None
    return (now_ns - stamp_ns) / 1e6


class FusionNode(Node):
    """The fusion node; keyword arguments go to ``rclpy.node.Node`` (namespace, overrides, cli_args)."""

    def __init__(self, node_name: str = "fusion_node", **node_kwargs: Any) -> None:
        super().__init__(node_name, **{**NODE_OPTIONS, **node_kwargs})
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
                                  "pairs_matched", "frames_published", "fallback_frames",
                                  *(f"{kind}_{camera}" for kind in ("messages", "invalid_stamps", "oversize")
                                    for camera in CAMERAS)))
        #: Decoded frames per camera (what the rate, the frame count and the watchdog report).
        self.input_rates = {camera: RateMeter(RATE_WINDOW_S) for camera in CAMERAS}
        self.stamp_loss = {camera: StampLossMeter(RATE_WINDOW_S) for camera in CAMERAS}
        #: Messages of any kind, to tell a silent camera from one sending only unusable frames.
        self.message_watchdog = CameraWatchdog(CAMERAS, float(self.params["camera_timeout"]), time.monotonic())
        self.refused_inputs = RecentEvents()  # invalid stamps and oversized frames
        self.clock_jumps = RecentEvents()
        self._clock_jumps_seen = 0
        self._last_pair_at = time.monotonic()
        #: Since when both cameras deliver frames (pairs are expected from then on).
        self._both_live_since: float | None = None
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

        # Recovers from stamps that jump back (its default max_backward_jump); see _note_clock_jump.
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
            f"{'reliable' if self.params['input.reliable'] else 'publisher-matched'} input QoS)")

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

    @staticmethod
    def _input_qos(reliable: bool) -> QoSProfile:
        if reliable:
            return QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST,
                              reliability=ReliabilityPolicy.RELIABLE)
        # REP-2003: subscribers of sensor data use the sensor-data profile (best effort, shallow),
        # which matches reliable and best-effort publishers alike.
        return qos_profile_sensor_data

    def _subscribe_image(self, camera: str, reliable: bool) -> None:
        message_type = CompressedImage if self.params["input.compressed"] else Image
        topic = {"thermal": graph.THERMAL_IMAGE, "rgb": graph.RGB_IMAGE}[camera]
        if self.params["input.compressed"]:
            topic += graph.COMPRESSED_SUFFIX
        self.image_subscriptions[camera] = self.create_subscription(
            message_type, topic, lambda msg, c=camera: self._on_image(c, msg), self._input_qos(reliable))
        self.input_reliable[camera] = reliable

    def _match_publishers(self) -> None:
        """Subscribe reliably while every publisher of a camera topic is reliable, else best effort.

        What ``ReliabilityPolicy.BEST_AVAILABLE`` does (Iron and later), but re-checked as
        publishers come and go (BEST_AVAILABLE decides once, and picks reliable when no publisher
        exists yet, which a best-effort camera started later would never match), and on Humble too.
        """
        if self.params["input.reliable"]:
            return
        for camera in CAMERAS:
            subscription: Subscription = self.image_subscriptions[camera]
            topic = subscription.topic_name
            publishers = self.get_publishers_info_by_topic(topic)
            self.publisher_count[camera] = len(publishers)
            reliable = bool(publishers) and all(
                info.qos_profile.reliability == ReliabilityPolicy.RELIABLE for info in publishers)
            if reliable != self.input_reliable[camera]:
                self.destroy_subscription(subscription)
                self._subscribe_image(camera, reliable)
                if reliable:
                    change = f"{len(publishers)} reliable publisher(s): subscribing reliably"
                elif publishers:
                    change = "a best-effort publisher: subscribing best effort"
                else:
                    change = "no publisher left: subscribing best effort (matches any publisher)"
                self.get_logger().info(f"{topic}: {change}")

    def _create_interfaces(self) -> None:
        self.image_subscriptions: dict[str, Subscription] = {}
        self.input_reliable: dict[str, bool] = {}
        self.publisher_count: dict[str, int] = dict.fromkeys(CAMERAS, 0)
        for camera in CAMERAS:
            self._subscribe_image(camera, bool(self.params["input.reliable"]))
        qos = self._input_qos(bool(self.params["input.reliable"]))
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
        # Supervision runs on the steady clock: with use_sim_time a node clock that waits for /clock
        # would silence the diagnostics and the camera watchdog exactly when something is wrong.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(float(self.params["diagnostics_period"]), self.publish_diagnostics, clock=steady)
        self.create_timer(WATCHDOG_PERIOD_S, self._check_cameras, clock=steady)
        self.create_timer(QOS_CHECK_PERIOD_S, self._match_publishers, clock=steady)

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
                self.message_watchdog.timeout = float(changes["camera_timeout"])
            if "fp16" in changes:
                self._reload_fuser = True  # rebuilt by the worker between two frames

    # ---------------------------------------------------------------------------------------
    # Callbacks (executor threads): decode, pair, hand over. Never block.
    # ---------------------------------------------------------------------------------------
    def _on_camera_info(self, camera: str, msg: CameraInfo) -> None:
        self._camera_info[camera] = msg

    def _on_image(self, camera: str, msg: Image | CompressedImage) -> None:
        now = time.monotonic()
        self.counters.add(f"messages_{camera}")
        self.message_watchdog.seen(camera, now)
        problem = stamp_problem(msg.header.stamp)
        if problem is not None:
            self.counters.add(f"invalid_stamps_{camera}")
            self.refused_inputs.add(now)
            self.get_logger().warning(f"dropping {camera} frame: {problem}", throttle_duration_sec=LOG_THROTTLE_S)
            return
        stamp_ns = stamp_to_ns(msg.header.stamp)
        self.stamp_loss[camera].add(stamp_ns, now)
        encoding = msg.format if isinstance(msg, CompressedImage) else msg.encoding
        try:
            image = camera_msg_to_frame(msg, max_pixels=int(self.params["input.max_pixels"]))
        except ImageTooLargeError as error:
            self.counters.add(f"oversize_{camera}")
            self.refused_inputs.add(now)
            self.get_logger().warning(f"dropping {camera} frame: {error} (parameter input.max_pixels)",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return
        except Exception as error:  # noqa: BLE001 - any bad message must be counted, never crash the node
            self.counters.add(f"decode_errors_{camera}")
            what = encoding if isinstance(msg, CompressedImage) else f"{encoding} {msg.width}x{msg.height}"
            self.get_logger().warning(f"dropping {camera} frame ({what}): {error}",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return
        # Stamp -> callback: the driver's and DDS's share of the latency, not this node's.
        delay_ms = plausible_latency_ms(self.get_clock().now().nanoseconds, stamp_ns)
        if delay_ms is not None:
            self.input_delay_ms[camera].add(delay_ms)
        self.input_rates[camera].tick(now)
        self.watchdog.seen(camera, now)
        frame = StampedFrame(stamp_ns, DecodedFrame(image, msg.header, encoding, now))
        if camera == "rgb":
            self._last_rgb_frame = frame.data
        with self._settings_lock:
            add = self.synchronizer.add_thermal if camera == "thermal" else self.synchronizer.add_rgb
            pairs = add(frame)
            fallback = bool(self.params["single_modality_fallback"])
        if self.synchronizer.clock_jumps != self._clock_jumps_seen:
            self._note_clock_jump(now)
        for pair in pairs:
            self._last_pair_at = now
            self.pair_rate.tick(now)
            self.counters.add("pairs_matched")
            self._hand_over(pair)
        if not pairs and fallback:
            partner = "rgb" if camera == "thermal" else "thermal"
            if partner in self.watchdog.stale(now):
                self._hand_over(SingleCameraJob(camera, frame))

    def _note_clock_jump(self, now: float) -> None:
        self._clock_jumps_seen = self.synchronizer.clock_jumps
        self.clock_jumps.add(now)
        jump = self.synchronizer.last_clock_jump
        if jump is None:
            return
        self.get_logger().warning(
            f"{jump.camera} stamps went back {-jump.seconds:.3f} s (from {jump.newest_ns / 1e9:.3f} to "
            f"{jump.stamp_ns / 1e9:.3f}): a clock or simulator restart, a bag loop, or an earlier stamp "
            f"in the future; pairing restarted, {jump.dropped} queued frame(s) dropped",
            throttle_duration_sec=LOG_THROTTLE_S)

    def _hand_over(self, item: FramePair | SingleCameraJob) -> None:
        dropped_before = self.mailbox.dropped
        self.mailbox.put(item)  # the mailbox carries fallback jobs too; it never looks inside
        if self.mailbox.dropped > dropped_before:
            # It held an older item the worker never took: that pair is dropped, not queued.
            self.drop_rate.tick(time.monotonic())

    def _pairs_missing_for(self, stale: tuple[str, ...], now: float) -> float:
        """Seconds without a pair while both cameras deliver frames (0 while one does not)."""
        if stale or not all(self.watchdog.ever_seen(camera) for camera in CAMERAS):
            self._both_live_since = None
            return 0.0
        if self._both_live_since is None:
            self._both_live_since = now
        return now - max(self._last_pair_at, self._both_live_since)

    def _check_cameras(self) -> None:
        now = time.monotonic()
        stale = self.watchdog.stale(now)
        self._pairs_missing_for(stale, now)
        if stale != self._reported_stale:
            for camera in set(stale) - set(self._reported_stale):
                self.get_logger().warning(f"{camera} camera: no usable frame for {self.watchdog.timeout:.1f} s")
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
            if item is None or not self.context.ok():  # a shut-down context cannot publish
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
        latency_ms = plausible_latency_ms(self.get_clock().now().nanoseconds, stamp_to_ns(header.stamp))
        self.status_pub.publish(self._status_message(frame, source, latency_ms))

        self.publish_rate.tick(time.monotonic())
        self.counters.add("frames_published")
        self.inference_ms.add(frame.inference_ms)
        if latency_ms is not None:
            self.latency_ms.add(latency_ms)
            # Node overhead: end-to-end latency minus the model forward (transport, decoding,
            # pairing, hand-over, registration, encoding and publication).
            self.overhead_ms.add(latency_ms - frame.forward_ms)
        # The same without the transport to the node: callback of the pair's last frame -> published.
        self.node_overhead_ms.add((time.monotonic() - source.arrived) * 1e3 - frame.forward_ms)

    def _status_message(self, frame: ProcessedFrame, source: FrameSource,
                        latency_ms: float | None) -> FusionStatus:
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
                                 severity=float(result.degradation.severities.get(name, 0.0)),
                                 threshold=float(result.degradation.threshold(name)))
                for name, probability in result.degradation.probabilities.items()]
        if result is not None:
            status.routing = [ExpertRouting(gate=routing.gate, experts=[int(e) for e in routing.experts],
                                            weights=[float(w) for w in routing.weights])
                              for routing in result.routing]
        status.preprocess_ms = float(frame.preprocess_ms)
        status.inference_ms = float(frame.inference_ms)
        status.postprocess_ms = float(frame.postprocess_ms)
        # NaN: unknown (the clock and the stamp are not comparable, see plausible_latency_ms).
        status.latency_ms = float("nan") if latency_ms is None else float(latency_ms)
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
            loss = self.stamp_loss[camera].estimate(now)
            inputs[f"{camera}_rate_hz"] = self.input_rates[camera].rate(now)
            inputs[f"{camera}_frames"] = self.input_rates[camera].total
            inputs[f"{camera}_messages"] = counts[f"messages_{camera}"]
            inputs[f"{camera}_loss"] = loss.loss
            inputs[f"{camera}_camera_rate_hz"] = loss.camera_rate_hz
            inputs[f"{camera}_silence_s"] = self.watchdog.silence(camera, now)
            inputs[f"{camera}_stale"] = camera in stale
            inputs[f"{camera}_decode_errors"] = counts[f"decode_errors_{camera}"]
            inputs[f"{camera}_invalid_stamps"] = counts[f"invalid_stamps_{camera}"]
            inputs[f"{camera}_oversize"] = counts[f"oversize_{camera}"]
            inputs[f"{camera}_camera_info"] = self._camera_info[camera] is not None
            inputs[f"{camera}_publishers"] = self.publisher_count[camera]
            inputs[f"{camera}_qos"] = "reliable" if self.input_reliable[camera] else "best_effort"
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
            "sync_clock_jumps": sync_stats.clock_jumps,
            "sync_last_jump_s": (sync_stats.last_clock_jump.seconds if sync_stats.last_clock_jump is not None
                                 else float("nan")),
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

    def input_status(self, inputs: dict[str, Any], stale: tuple[str, ...], now: float) -> tuple[int, str]:
        """Level and message of the inputs status: worst problem first, all of them named."""
        problems: list[tuple[int, str]] = []
        fallback = bool(self.params["single_modality_fallback"])
        timeout = self.watchdog.timeout
        unusable = {camera for camera in stale if camera not in self.message_watchdog.stale(now)}

        def silent(camera: str) -> str:
            if camera in unusable:
                return (f"{camera} camera sends only unusable frames (no decodable frame for {timeout:.1f} s: "
                        f"{inputs[f'{camera}_decode_errors']} decode errors, {inputs[f'{camera}_oversize']} "
                        f"over input.max_pixels, {inputs[f'{camera}_invalid_stamps']} invalid stamps)")
            if self.publisher_count[camera] and not self.input_reliable[camera]:
                return (f"{camera} camera stopped (no frame for {timeout:.1f} s although "
                        f"{self.publisher_count[camera]} publisher(s) exist: best-effort frames over 0.5 MB "
                        "between processes need the Fast DDS profile in the camera's process, "
                        "docs/deployment.md)")
            return f"{camera} camera stopped (no frame for {timeout:.1f} s)"

        if len(stale) == len(CAMERAS):
            problems.append((ERROR, "; ".join(silent(camera) for camera in stale)))
        elif stale:
            live = next(camera for camera in CAMERAS if camera not in stale)
            problems.append((WARN if fallback else ERROR,
                             f"{silent(stale[0])}; " + (f"publishing {live} alone" if fallback else "no fused output")))
        for camera in CAMERAS:
            loss = inputs[f"{camera}_loss"]
            if camera not in stale and loss == loss and loss > INPUT_LOSS_WARN:  # loss == loss: not NaN
                problems.append((WARN, f"{camera}: {loss:.0%} of the frames lost before the node (the camera "
                                       f"stamps {inputs[f'{camera}_camera_rate_hz']:.1f} Hz, "
                                       f"{inputs[f'{camera}_rate_hz']:.1f} Hz arrive)"))
        if self.refused_inputs.within(now, JUMP_WARN_S):
            refused = ", ".join(f"{camera} {inputs[f'{camera}_invalid_stamps']} invalid stamps / "
                                f"{inputs[f'{camera}_oversize']} over input.max_pixels" for camera in CAMERAS)
            problems.append((WARN, f"frames refused in the last {JUMP_WARN_S:.0f} s ({refused})"))
        if not problems:
            return OK, "both cameras streaming"
        problems.sort(key=lambda problem: -problem[0])
        return problems[0][0], "; ".join(message for _, message in problems)

    def fusion_status(self, fusion: dict[str, Any], stale: tuple[str, ...], now: float) -> tuple[int, str]:
        """Level and message of the fusion status."""
        problems: list[tuple[int, str]] = []
        if fusion["processing_errors"] and self._last_error:
            problems.append((WARN, f"last error: {self._last_error}"))
        jump = self.synchronizer.last_clock_jump
        if jump is not None and self.clock_jumps.within(now, JUMP_WARN_S):
            problems.append((WARN, f"{jump.camera} stamps went back {-jump.seconds:.3f} s: pairing restarted "
                                   f"({fusion['sync_clock_jumps']} restarts since start)"))
        missing = self._pairs_missing_for(stale, now)
        if missing > self.watchdog.timeout:
            problems.append((WARN, f"both cameras stream but no pair within sync.slop "
                                   f"{float(self.params['sync.slop']):.3f} s for {missing:.1f} s "
                                   "(camera clocks apart? see sync.thermal_offset)"))
        if not problems:
            return OK, f"{fusion['published_rate_hz']:.1f} Hz fused"
        return WARN, "; ".join(message for _, message in problems)

    def publish_diagnostics(self) -> None:
        inputs, fusion, stale = self.diagnostics_values()
        now = time.monotonic()
        hardware_id = self.get_fully_qualified_name()
        input_level, input_message = self.input_status(inputs, stale, now)
        fusion_level, fusion_message = self.fusion_status(fusion, stale, now)
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
