#!/usr/bin/env python3
"""Node overhead of fusion_node: end-to-end latency minus the fuser's own time, over real rclpy/DDS.

A camera publisher (a thread of this process by default, like composed nodes; a separate process
with --camera-process, like a separately launched driver) sends thermal (mono16) + RGB (rgb8)
frames stamped at capture, at a rate well below the inference rate (nothing waits in the mailbox).
A real ``FusionNode`` fuses them; every ``fusion/status`` gives ``latency_ms`` (node clock at
publication minus the stamp: transport + decoding + pairing + AGC/registration + fusion + encoding
+ publication) and ``inference_ms`` (the ``ImageFuser.fuse`` call: the model forward for the
network, the whole algorithm for a classical baseline). Reported:

- ``overhead_ms`` = latency - inference, per frame (end to end minus the model);
- ``node_overhead`` (node diagnostics) = callback of the pair's last frame -> publication, minus the
  model: what the node itself adds, without the DDS transport to it.

    .venv/bin/python scripts/bench_node_latency.py --method laplacian --width 640 --height 512
    .venv/bin/python scripts/bench_node_latency.py --method nano --frames 200 --json out.json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from tqdm import tqdm  # noqa: E402

from mex_fusion_msgs.msg import FusionStatus  # noqa: E402
from mex_fusion_ros.config import FUSION_NODE_PARAMETERS  # noqa: E402
from mex_fusion_ros.nodes.fusion_node import FusionNode  # noqa: E402
from mex_fusion_ros.nodes.image_msgs import array_to_image_msg  # noqa: E402
from mex_fusion_ros.nodes.params import overrides_to_parameters  # noqa: E402
from mex_fusion_ros.nodes.spinning import IsolatedExecutors  # noqa: E402

RELIABLE = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)


def test_frames(width: int, height: int, count: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
    """Smooth random scenes (not white noise, which no camera produces): 16-bit thermal, rgb8."""
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(count):
        coarse = rng.random((height // 16 + 1, width // 16 + 1, 4)).astype(np.float32)
        scene = np.kron(coarse, np.ones((16, 16, 1), dtype=np.float32))[:height, :width]
        thermal = (7000 + scene[:, :, 0] * 3000).astype(np.uint16)
        rgb = (scene[:, :, 1:] * 255).astype(np.uint8)
        frames.append((thermal, rgb))
    return frames


def play_cameras(width: int, height: int, total: int, rate: float) -> None:
    """Camera-driver process: publish ``total`` thermal + RGB pairs at ``rate`` Hz, stamped at capture."""
    context = Context()
    rclpy.init(context=context)
    try:
        node = Node("bench_cameras", context=context)
        thermal_pub = node.create_publisher(Image, "thermal/image_raw", RELIABLE)
        rgb_pub = node.create_publisher(Image, "rgb/image_raw", RELIABLE)
        deadline = time.monotonic() + 20.0
        while node.count_subscribers("rgb/image_raw") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        frames = test_frames(width, height)
        start = time.monotonic()
        for index in range(total):
            thermal, rgb = frames[index % len(frames)]
            thermal_msg = array_to_image_msg(thermal, "mono16", Header(frame_id="thermal"))
            rgb_msg = array_to_image_msg(rgb, "rgb8", Header(frame_id="rgb_optical"))
            # Stamped at "capture", after the driver-side encoding, as a camera driver would.
            stamp = node.get_clock().now().to_msg()
            thermal_msg.header.stamp = stamp
            rgb_msg.header.stamp = stamp
            thermal_pub.publish(thermal_msg)
            rgb_pub.publish(rgb_msg)
            time.sleep(max(0.0, start + (index + 1) / rate - time.monotonic()))
        time.sleep(1.0)  # let reliable delivery of the last frames finish before the process exits
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def summary(values: list[float]) -> dict[str, float]:
    array = np.asarray(values)
    return {"median": float(np.median(array)), "p90": float(np.percentile(array, 90)),
            "p99": float(np.percentile(array, 99)), "mean": float(array.mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="laplacian", help="fusion method (classical or network)")
    parser.add_argument("--weights", default="", help="network weights (.pt) for a network method")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--frames", type=int, default=100, help="frames measured (after --warmup)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rate", type=float, default=5.0, help="input rate, Hz (keep below inference rate)")
    parser.add_argument("--reliable", action="store_true",
                        help="reliable input QoS (input.reliable), not the default best-effort sensor QoS")
    parser.add_argument("--camera-process", action="store_true",
                        help="publish the camera frames from a separate process (adds inter-process DDS "
                             "transport to the latency), not a thread of this one")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    context = Context()
    rclpy.init(context=context)
    statuses: list[FusionStatus] = []
    try:
        overrides = {"method": args.method, "weights": args.weights, "device": args.device,
                     "input.reliable": args.reliable, "sync.mode": "latest"}
        node = FusionNode("fusion_node", context=context,
                          parameter_overrides=overrides_to_parameters(overrides, FUSION_NODE_PARAMETERS))
        probe = Node("bench_probe", context=context)
        probe.create_subscription(FusionStatus, "fusion/status", statuses.append, RELIABLE)
        executors = IsolatedExecutors([node, probe], context=context, poll_s=0.05).start()
        total = args.warmup + args.frames
        camera_args = (args.width, args.height, total, args.rate)
        if not args.camera_process:
            # Like composed (intra-process) nodes: no inter-process transport, but a shared GIL.
            camera = threading.Thread(target=play_cameras, args=camera_args, daemon=True)
        else:
            # The cameras are another process, as separately launched drivers are.
            camera = multiprocessing.get_context("spawn").Process(target=play_cameras, args=camera_args,
                                                                  daemon=True)
        camera.start()
        with tqdm(total=total, desc=f"{args.method} {args.width}x{args.height}", unit="frame") as progress:
            deadline = time.monotonic() + 30.0 + total / args.rate
            while len(statuses) < total and time.monotonic() < deadline and camera.is_alive():
                progress.update(len(statuses) - progress.n)
                time.sleep(0.1)
            camera.join(timeout=10.0)
        deadline = time.monotonic() + 10.0
        while len(statuses) < total and time.monotonic() < deadline:
            time.sleep(0.05)
        _, node_values, _ = node.diagnostics_values()
        executors.stop()
        node.destroy_node()
        probe.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)

    measured = statuses[args.warmup:]
    if not measured:
        print("no fused frames were measured", file=sys.stderr)
        return 1
    latency = [status.latency_ms for status in measured]
    inference = [status.inference_ms for status in measured]
    overhead = [status.latency_ms - status.inference_ms for status in measured]
    result = {
        "method": args.method, "device": measured[0].device, "size": [args.width, args.height],
        "frames": len(measured), "sent": total, "dropped": sum(status.dropped_pairs for status in measured),
        "latency_ms": summary(latency), "inference_ms": summary(inference), "overhead_ms": summary(overhead),
        "stages_ms": {name: statistics.median(getattr(status, f"{name}_ms") for status in measured)
                      for name in ("preprocess", "postprocess")},
        # Where the overhead goes, medians from the node's own diagnostics (ms).
        "breakdown_ms": {key: node_values[f"{key}_p50_ms"] for key in
                         ("thermal_delay", "rgb_delay", "handover", "overhead", "node_overhead")},
        "camera_publisher": "process" if args.camera_process else "thread",
        "input_qos": "reliable" if args.reliable else "best effort",
        "cpu": os.cpu_count(), "load_average": os.getloadavg(),
    }
    print(f"{result['frames']} of {total} frames, {args.method} on {result['device']} at "
          f"{args.width}x{args.height}, camera publisher in a {result['camera_publisher']}, "
          f"{result['input_qos']} input")
    for key in ("latency_ms", "inference_ms", "overhead_ms"):
        stats = result[key]
        print(f"  {key:<13} median {stats['median']:7.2f}  p90 {stats['p90']:7.2f}  p99 {stats['p99']:7.2f}")
    print(f"  stages (median ms): {result['stages_ms']}")
    print(f"  node diagnostics (median ms): {result['breakdown_ms']}; load average {result['load_average']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
