#!/usr/bin/env python3
"""A stand-in camera driver in a process of its own: publishes synthetic frames at a fixed rate.

    .venv/bin/python scripts/camera_publisher.py --camera rgb --width 640 --height 512 --rate 30 \
        --frames 150 --qos reliable
    .venv/bin/python scripts/camera_publisher.py --camera thermal --qos best_effort --frames 150

``thermal`` publishes mono16 (radiometric-like counts), ``rgb`` rgb8, on ``thermal/image_raw`` /
``rgb/image_raw`` (``--topic`` to change). Stamps are the node clock at publication, on a
drift-free schedule (frame k at start + k / rate). ``--qos reliable`` is rclpy's default profile
(what most drivers publish, REP-2003), ``best_effort`` the sensor-data profile. The first frame
goes out once a subscriber is matched (or after ``--wait-subscriber`` seconds). At the end it
prints one line, ``sent N``.

DDS discovery stays on this computer (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` unless the
caller set it; ``ROS_LOCALHOST_ONLY`` is left as the caller set it). Used by
``scripts/measure_camera_transport.py`` and ``test/test_fusion_node_inputs.py``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # before rclpy loads

import numpy as np  # noqa: E402


def frames(camera: str, width: int, height: int, count: int = 8) -> list[np.ndarray]:
    """A few distinct frames (a moving gradient plus noise), so consecutive frames differ."""
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    out = []
    for index in range(count):
        base = (x * 0.7 + y * 0.3 + index / count) % 1.0
        if camera == "thermal":
            out.append((7000 + base * 3000 + rng.normal(0, 20, base.shape)).astype(np.uint16))
        else:
            grey = (base * 255).astype(np.uint8)
            out.append(np.dstack([grey, np.roll(grey, 17, axis=1), 255 - grey]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--camera", choices=["thermal", "rgb"], required=True)
    parser.add_argument("--topic", default=None, help="default: <camera>/image_raw")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second")
    parser.add_argument("--frames", type=int, default=150, help="frames to publish")
    parser.add_argument("--qos", choices=["reliable", "best_effort"], default="reliable")
    parser.add_argument("--wait-subscriber", type=float, default=20.0, metavar="S")
    args = parser.parse_args(argv)

    import rclpy
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from std_msgs.msg import Header

    from mex_fusion_ros.nodes.image_msgs import array_to_image_msg

    topic = args.topic or f"{args.camera}/image_raw"
    encoding, frame_id = ("mono16", "thermal") if args.camera == "thermal" else ("rgb8", "rgb_optical")
    images = frames(args.camera, args.width, args.height)
    messages = [array_to_image_msg(image, encoding) for image in images]
    rclpy.init()
    sent = 0
    try:
        node = rclpy.create_node(f"{args.camera}_camera")
        # QoSProfile(depth=10): rclcpp's default, reliable (what most drivers publish).
        qos = QoSProfile(depth=10) if args.qos == "reliable" else qos_profile_sensor_data
        publisher = node.create_publisher(type(messages[0]), topic, qos)
        deadline = time.monotonic() + args.wait_subscriber
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # let the other side finish matching (it may match later than we do)
        start = time.monotonic()
        for index in range(args.frames):
            delay = start + index / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            message = messages[index % len(messages)]
            message.header = Header(stamp=node.get_clock().now().to_msg(), frame_id=frame_id)
            publisher.publish(message)
            sent += 1
        time.sleep(0.5)  # reliable: let the last samples be acknowledged before the writer goes
    except KeyboardInterrupt:
        pass
    finally:
        rclpy.try_shutdown()
    print(f"sent {sent}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
