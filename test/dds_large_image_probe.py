"""Subprocess half of test_dds_profile.py: ``pub W H N`` publishes N rgb8 images at 10 Hz
(best effort) once a subscriber is matched; ``sub N`` receives them and prints how many arrived."""
from __future__ import annotations

import sys
import time

import rclpy
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

TOPIC = "large_image_probe"


def publish(width: int, height: int, count: int) -> None:
    node = Node("large_image_pub")
    publisher = node.create_publisher(Image, TOPIC, qos_profile_sensor_data)
    deadline = time.monotonic() + 20.0
    while node.count_subscribers(TOPIC) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    message = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=bytes(width * height * 3))
    for index in range(count):
        message.header.frame_id = str(index)
        publisher.publish(message)
        time.sleep(0.1)
    time.sleep(0.5)


def subscribe(count: int) -> None:
    node = Node("large_image_sub")
    received: set[str] = set()
    node.create_subscription(Image, TOPIC, lambda msg: received.add(msg.header.frame_id), qos_profile_sensor_data)
    deadline = time.monotonic() + 30.0
    while len(received) < count and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(f"received {len(received)}", flush=True)


if __name__ == "__main__":
    rclpy.init()
    try:
        if sys.argv[1] == "pub":
            publish(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        else:
            subscribe(int(sys.argv[2]))
    finally:
        rclpy.try_shutdown()
