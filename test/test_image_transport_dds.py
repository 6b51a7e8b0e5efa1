"""Images survive a real Fast DDS round trip: two rclpy contexts (two DDS participants), reliable QoS.

The publisher sends sensor_msgs/Image in every codec encoding (padded rows, a big-endian mono16) and
CompressedImage PNGs; the subscriber decodes what arrives with ``nodes.image_msgs`` and must get the
original arrays back bit for bit. ROS environment (loopback discovery, a per-session domain) comes
from ``conftest.py``, which pytest imports before this module imports rclpy.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from mex_fusion_ros.codec.image_codec import ENCODINGS, to_rgb  # noqa: E402
from mex_fusion_ros.nodes.image_msgs import (  # noqa: E402
    array_to_compressed_msg,
    array_to_image_msg,
    compressed_msg_to_array,
    image_msg_to_array,
)

pytestmark = [pytest.mark.ros, pytest.mark.timeout(60)]

DISCOVERY_TIMEOUT_S = 10.0
DELIVERY_TIMEOUT_S = 10.0
# Reliable + keep-all: every message must arrive, none may be dropped by a shallow queue.
QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)


@dataclass
class Case:
    name: str
    pixels: np.ndarray
    encoding: str
    step: int | None = None
    is_bigendian: bool = False


def make_cases() -> list[Case]:
    rng = np.random.default_rng(2024)
    cases = []
    for index, (encoding, info) in enumerate(ENCODINGS.items()):
        height, width = 5 + index, 7 + 2 * index
        shape = (height, width) if info.channels == 1 else (height, width, info.channels)
        pixels = rng.integers(0, np.iinfo(info.dtype).max, size=shape, endpoint=True, dtype=info.dtype)
        padding = (3 + index) * info.bytes_per_channel
        cases.append(Case(f"{encoding}-padded", pixels, encoding, width * info.pixel_bytes + padding))
    thermal = rng.integers(0, 65535, size=(6, 9), endpoint=True, dtype=np.uint16)
    cases.append(Case("mono16-bigendian", thermal, "mono16", 9 * 2 + 4, is_bigendian=True))
    larger = rng.integers(0, 255, size=(48, 64, 3), endpoint=True, dtype=np.uint8)
    cases.append(Case("rgb8-unpadded", larger, "rgb8"))
    return cases


class Participant:
    """One rclpy context with one node, spun by its own executor thread (its own DDS participant)."""

    def __init__(self, name: str) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, name=f"{name}-spin", daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - shutdown from the test thread can interrupt spin()
            if self.context.ok():
                raise

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.context.try_shutdown()
        self.thread.join(timeout=5.0)


@pytest.fixture
def participants() -> Iterator[tuple[Participant, Participant]]:
    opened: list[Participant] = []
    try:
        opened.append(Participant("codec_test_publisher"))
        opened.append(Participant("codec_test_subscriber"))
        yield opened[0], opened[1]
    finally:
        for participant in reversed(opened):
            participant.close()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.02)


def test_every_encoding_round_trips_over_dds(participants):
    publisher_side, subscriber_side = participants
    topic = "codec_test/image"
    compressed_topic = "codec_test/image/compressed"
    received: dict[str, Image] = {}
    received_compressed: dict[str, CompressedImage] = {}
    lock = threading.Lock()

    def on_image(msg: Image) -> None:
        with lock:
            received[msg.header.frame_id] = msg

    def on_compressed(msg: CompressedImage) -> None:
        with lock:
            received_compressed[msg.header.frame_id] = msg

    subscriber_side.node.create_subscription(Image, topic, on_image, QOS)
    subscriber_side.node.create_subscription(CompressedImage, compressed_topic, on_compressed, QOS)
    image_pub = publisher_side.node.create_publisher(Image, topic, QOS)
    compressed_pub = publisher_side.node.create_publisher(CompressedImage, compressed_topic, QOS)
    wait_for(lambda: image_pub.get_subscription_count() > 0 and compressed_pub.get_subscription_count() > 0,
             DISCOVERY_TIMEOUT_S, "the subscriber to match the publishers")

    cases = make_cases()
    for case in cases:
        msg = array_to_image_msg(case.pixels, case.encoding, step=case.step, is_bigendian=case.is_bigendian)
        msg.header.frame_id = case.name
        image_pub.publish(msg)
    by_name = {case.name: case for case in cases}
    compressed_cases = {"png-rgb8": (by_name["rgb8-padded"].pixels, "rgb8"),
                        "png-bgra8": (by_name["bgra8-padded"].pixels, "bgra8"),
                        "png-mono16": (by_name["mono16-bigendian"].pixels, "mono16")}
    for name, (pixels, encoding) in compressed_cases.items():
        msg = array_to_compressed_msg(pixels, "png", encoding=encoding)
        msg.header.frame_id = name
        compressed_pub.publish(msg)

    def all_arrived() -> bool:
        with lock:
            return len(received) == len(cases) and len(received_compressed) == len(compressed_cases)

    wait_for(all_arrived, DELIVERY_TIMEOUT_S,
             f"{len(cases)} images and {len(compressed_cases)} compressed images to arrive")

    for case in cases:
        msg = received[case.name]
        assert msg.encoding == case.encoding
        assert bool(msg.is_bigendian) == case.is_bigendian
        tight = case.pixels.shape[1] * ENCODINGS[case.encoding].pixel_bytes
        assert msg.step == (case.step if case.step is not None else tight)
        decoded = image_msg_to_array(msg)
        assert decoded.dtype == case.pixels.dtype and decoded.shape == case.pixels.shape, case.name
        np.testing.assert_array_equal(decoded, case.pixels, err_msg=case.name)
    for name, (pixels, encoding) in compressed_cases.items():
        decoded = compressed_msg_to_array(received_compressed[name])
        expected = pixels if ENCODINGS[encoding].channels == 1 else to_rgb(pixels, encoding)
        np.testing.assert_array_equal(decoded, expected, err_msg=name)
