"""Shared pieces of the node tests: an rclpy context per test, a background executor, a camera
player that publishes real RoadScene pairs at given rates, and bounded waits.

Everything runs over real rclpy/Fast DDS on loopback (test/conftest.py sets the environment).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import rclpy
import yaml
from builtin_interfaces.msg import Time as TimeMsg
from rclpy.context import Context
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from mex_fusion_ros.data.degradations import apply_preset
from mex_fusion_ros.data.paired import find_pairs, read_pair
from mex_fusion_ros.nodes.image_msgs import array_to_image_msg
from mex_fusion_ros.nodes.spinning import IsolatedExecutors

RELIABLE = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)


@contextmanager
def ros_context() -> Iterator[Context]:
    """A fresh rclpy context for one test, always shut down."""
    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


class BackgroundExecutor(IsolatedExecutors):
    """The nodes spun as ``mex-fusion run`` spins them (one executor thread each), destroyed on exit."""

    def __init__(self, context: Context, nodes: list[Node]) -> None:
        super().__init__(nodes, context=context, poll_s=0.05)

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        for node in self.nodes:
            node.destroy_node()
        if self.error is not None and exc[0] is None:
            raise AssertionError(f"a node callback raised: {self.error!r}") from self.error


def wait_for(condition: Callable[[], bool], timeout: float, poll: float = 0.05) -> bool:
    """Poll ``condition`` until true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return condition()


def ns_to_time(stamp_ns: int) -> TimeMsg:
    return TimeMsg(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def time_to_ns(stamp: TimeMsg) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def write_config(tmp_path: Path, fusion: dict, detector: dict | None = None) -> Path:
    """A parameters file with these (nested) values for fusion_node and detector_node."""
    document = {"fusion_node": {"ros__parameters": fusion}}
    if detector is not None:
        document["detector_node"] = {"ros__parameters": detector}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@dataclass
class CameraFrames:
    """Pre-encoded frames of both cameras (real RoadScene pairs, degraded)."""

    thermal: list[np.ndarray]  # uint16 (h_t, w_t), raw-count-like
    rgb: list[np.ndarray]  # uint8 (h, w, 3) RGB


def roadscene_frames(root: Path, count: int, rgb_size: tuple[int, int], thermal_size: tuple[int, int],
                     preset: str = "noise25_haze") -> CameraFrames:
    """``count`` val pairs, degraded with ``preset``; RGB as rgb8, thermal as 16-bit counts.

    Sizes are (width, height); the thermal camera has its own resolution, as on a real drone.
    """
    listing = find_pairs(root / "val")
    thermal, rgb = [], []
    for index in range(count):
        ir, vi = read_pair(listing[index % len(listing)], resize=True)
        degraded = apply_preset(preset, ir, vi, seed=index)
        ir_small = cv2.resize(degraded.ir, thermal_size, interpolation=cv2.INTER_AREA)
        vi_small = cv2.resize(degraded.vi, rgb_size, interpolation=cv2.INTER_AREA)
        # A 14-bit radiometric camera spans a few thousand counts around its offset.
        thermal.append((7000 + ir_small * 3000).astype(np.uint16))
        rgb.append((np.clip(vi_small, 0, 1) * 255 + 0.5).astype(np.uint8))
    return CameraFrames(thermal, rgb)


@dataclass
class PlayLog:
    """What the player sent: stamps and wall-clock publish times per camera."""

    stamps: dict[str, list[int]] = field(default_factory=lambda: {"thermal": [], "rgb": []})
    sent_at: dict[str, list[float]] = field(default_factory=lambda: {"thermal": [], "rgb": []})

    def rate(self, camera: str, since: float, until: float) -> float:
        times = [t for t in self.sent_at[camera] if since <= t <= until]
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


class CameraPlayer:
    """Publishes thermal (mono16) and RGB (rgb8) frames at fixed rates with jittered stamps.

    Each camera runs in its own thread on a drift-free schedule (next = start + k * period), so the
    mean rate is exact even when the CPU is busy; the stamp is the node clock plus a jitter of up to
    ``jitter_s``, as camera drivers' stamps are.
    """

    def __init__(self, node: Node, frames: CameraFrames, rates: dict[str, float], jitter_s: float = 0.003,
                 thermal_topic: str = "thermal/image_raw", rgb_topic: str = "rgb/image_raw",
                 qos: QoSProfile = RELIABLE, seed: int = 0) -> None:
        self.node = node
        self.frames = frames
        self.rates = rates
        self.jitter_s = jitter_s
        self.publishers = {"thermal": node.create_publisher(Image, thermal_topic, qos),
                           "rgb": node.create_publisher(Image, rgb_topic, qos)}
        self.log = PlayLog()
        self._rng = np.random.default_rng(seed)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.paused: set[str] = set()

    def _message(self, camera: str, index: int):
        images = self.frames.thermal if camera == "thermal" else self.frames.rgb
        encoding, frame_id = ("mono16", "thermal") if camera == "thermal" else ("rgb8", "rgb_optical")
        image = images[index % len(images)]
        with self._lock:
            jitter = int(self._rng.uniform(-self.jitter_s, self.jitter_s) * 1e9)
        stamp_ns = self.node.get_clock().now().nanoseconds + jitter
        header = Header(stamp=ns_to_time(stamp_ns), frame_id=frame_id)
        return array_to_image_msg(image, encoding, header), stamp_ns

    def _run(self, camera: str) -> None:
        period = 1.0 / self.rates[camera]
        start = time.monotonic()
        index = 0
        while not self._stop.is_set():
            next_at = start + index * period
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
                if self._stop.is_set():
                    break
            if camera not in self.paused:
                message, stamp_ns = self._message(camera, index)
                self.publishers[camera].publish(message)
                with self._lock:
                    self.log.stamps[camera].append(stamp_ns)
                    self.log.sent_at[camera].append(time.monotonic())
            index += 1

    def start(self) -> CameraPlayer:
        for camera in self.rates:
            thread = threading.Thread(target=self._run, args=(camera,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5.0)


class Collector:
    """Keeps every message of one topic (bounded by ``limit``) with its arrival time.

    ``keep`` maps a message to what is stored (e.g. only the header of an image, so a long test
    does not measure its own memory).
    """

    def __init__(self, node: Node, message_type: type, topic: str, qos: QoSProfile | int = RELIABLE,
                 limit: int = 10_000, keep: Callable[[object], object] = lambda msg: msg) -> None:
        self.keep = keep
        self.messages: list = []
        self.arrived: list[float] = []
        self.limit = limit
        self._lock = threading.Lock()
        node.create_subscription(message_type, topic, self._on_message, qos)

    def _on_message(self, msg: object) -> None:
        with self._lock:
            if len(self.messages) < self.limit:
                self.messages.append(self.keep(msg))
                self.arrived.append(time.monotonic())

    def snapshot(self) -> list:
        with self._lock:
            return list(self.messages)

    def __len__(self) -> int:
        with self._lock:
            return len(self.messages)
