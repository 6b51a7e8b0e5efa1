"""fusion_node's input QoS with its defaults: camera-sized frames from camera processes arrive.

Fast DDS loses best-effort samples over 0.5 MB between processes (a 640x512 rgb8 frame is 983 KB,
mono16 655 KB), and a best-effort subscription gets even a reliable publisher's samples best
effort. So the node subscribes reliably while every publisher of a camera topic is reliable
(what most drivers publish), and best effort otherwise (docs/deployment.md, section 5).
The full measurement (both discovery settings, both camera QoS) is
``scripts/measure_camera_transport.py``; this is its fast regression test.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from node_harness import BackgroundExecutor, ros_context, wait_for
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from test_fusion_node import make_fusion_node

from mex_fusion_ros.config import FUSION_NODE_PARAMETERS
from mex_fusion_ros.nodes.fusion_node import FusionNode
from mex_fusion_ros.nodes.params import overrides_to_parameters

pytestmark = pytest.mark.ros

CAMERA = Path(__file__).resolve().parent.parent / "scripts" / "camera_publisher.py"
FRAMES = 40


def test_input_qos_follows_the_publishers_and_input_reliable_forces_it():
    reliable = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
    with ros_context() as context:
        node = make_fusion_node(context, **{"input.reliable": False})
        forced = FusionNode("forced_fusion_node", context=context, parameter_overrides=overrides_to_parameters(
            {"method": "laplacian", "device": "cpu", "input.reliable": True}, FUSION_NODE_PARAMETERS))
        probe = Node("qos_probe", context=context)
        with BackgroundExecutor(context, [node, forced, probe]):
            assert node.input_reliable == {"thermal": False, "rgb": False}  # no publisher: matches any
            reliable_pub = probe.create_publisher(Image, "rgb/image_raw", reliable)
            assert wait_for(lambda: node.input_reliable["rgb"], 5.0)
            assert not node.input_reliable["thermal"]
            best_effort_pub = probe.create_publisher(Image, "rgb/image_raw", qos_profile_sensor_data)
            assert wait_for(lambda: not node.input_reliable["rgb"], 5.0)  # one best-effort publisher
            probe.destroy_publisher(best_effort_pub)
            assert wait_for(lambda: node.input_reliable["rgb"], 5.0)
            probe.destroy_publisher(reliable_pub)
            assert wait_for(lambda: not node.input_reliable["rgb"], 5.0)
            assert forced.input_reliable == {"thermal": True, "rgb": True}
            values = node.diagnostics_values()[0]
            assert values["rgb_qos"] == "best_effort" and values["rgb_publishers"] == 0


def test_640x512_frames_from_reliable_camera_processes_arrive_with_the_default_input_qos():
    # Before: the best-effort subscription got 0-1 of 40 frames from each camera process.
    with ros_context() as context:
        node = make_fusion_node(context, **{"input.reliable": False})  # the shipped default
        with BackgroundExecutor(context, [node]):
            cameras = [subprocess.Popen([sys.executable, str(CAMERA), "--camera", camera, "--width", "640",
                                         "--height", "512", "--rate", "20", "--frames", str(FRAMES), "--qos",
                                         "reliable"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                       for camera in ("thermal", "rgb")]
            try:
                outputs = [camera.communicate(timeout=60)[0] for camera in cameras]
            finally:
                for camera in cameras:
                    if camera.poll() is None:
                        camera.kill()
            assert all(f"sent {FRAMES}" in output for output in outputs), outputs
            time.sleep(0.5)
            inputs = node.diagnostics_values()[0]
    for camera in ("thermal", "rgb"):
        # The first frames may go while the node is still switching to reliable (<= 0.5 s).
        assert inputs[f"{camera}_frames"] >= FRAMES - 8, inputs
        assert inputs[f"{camera}_decode_errors"] == 0
