#!/usr/bin/env python3
"""How many camera-sized frames reach fusion_node from camera processes (measurement, not a test).

    .venv/bin/python scripts/measure_camera_transport.py                     # the full matrix
    .venv/bin/python scripts/measure_camera_transport.py --method laplacian --seconds 10
    .venv/bin/python scripts/measure_camera_transport.py --camera-qos best_effort --camera-profile

Each case starts, as separate processes:

- ``fusion_node`` the way ``launch/fusion.launch.py`` starts it with its default arguments: the
  executable's ``main`` with the parameters ``nodes.graph.resolve_graph`` derives from the
  installed ``config/fusion.yaml`` (``--method``/``--device`` override them, as the launch
  arguments do) and the environment the launch file adds (``nodes.dds_env``: the Fast DDS
  large-images profile, unless one is already set);
- two cameras (``scripts/camera_publisher.py``): thermal mono16 and RGB rgb8, ``--width`` x
  ``--height`` at ``--rate`` Hz, with ``--camera-qos`` (reliable: rclcpp's default, what most
  drivers publish; best_effort: sensor-data QoS) and, with ``--camera-profile``, the profile in
  their environment too.

It reads what the node decoded from its ``/diagnostics`` (``<camera>_frames``) and reports the
delivered fraction = decoded / sent, with the input QoS the node chose and its loss estimate.
Cases: ``ROS_LOCALHOST_ONLY=1`` (with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, so nothing
multicasts on the network where ROS_LOCALHOST_ONLY is no longer read) and
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` alone; each in its own ROS domain.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CAMERA = REPO / "scripts" / "camera_publisher.py"
# Never let DDS multicast on the network (this process and every child inherit it).
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

ENV_SETTINGS = {
    "ROS_LOCALHOST_ONLY=1": {"ROS_LOCALHOST_ONLY": "1", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"},
    "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST": {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"},
}
CLEARED = ("ROS_LOCALHOST_ONLY", "FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE",
           "FASTDDS_BUILTIN_TRANSPORTS")


def case_environment(setting: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in CLEARED}
    env.update(ENV_SETTINGS[setting])
    # A domain of its own: the test sessions use 1..100; 215..232 are valid too on Linux.
    env["ROS_DOMAIN_ID"] = str(random.randint(215, 232))
    return env


def fusion_parameters_file(method: str | None, device: str | None, directory: Path) -> Path:
    """The fusion node's parameters as the launch file hands them over (``launch_parameters``)."""
    import yaml

    from mex_fusion_ros.nodes.graph import launch_parameters, resolve_graph

    arguments = {name: value for name, value in (("method", method), ("device", device)) if value}
    node = next(node for node in resolve_graph(arguments) if node.name == "fusion_node")
    path = directory / "fusion_node.yaml"
    path.write_text(yaml.safe_dump({"fusion_node": {"ros__parameters": launch_parameters(node)}}))
    return path


def run_case(args: argparse.Namespace) -> dict:
    """One case, in this process's environment (the parent sets it): start, stream, read back."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray

    from mex_fusion_ros.config import default_config_path
    from mex_fusion_ros.nodes.dds_env import LARGE_IMAGES_PROFILE, large_image_environment

    profile = default_config_path().parent / LARGE_IMAGES_PROFILE
    fusion_env = {**os.environ, **large_image_environment(profile)}
    camera_env = {**os.environ, **(large_image_environment(profile) if args.camera_profile else {})}
    frames = int(args.rate * args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        params = fusion_parameters_file(args.method, args.device, Path(tmp))
        fusion = subprocess.Popen([sys.executable, "-m", "mex_fusion_ros.nodes.fusion_node", "--ros-args",
                                   "--params-file", str(params)], env=fusion_env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        rclpy.init()
        node = rclpy.create_node("transport_monitor")
        latest: dict[str, dict[str, str]] = {}

        def on_diagnostics(array: DiagnosticArray) -> None:
            for status in array.status:
                if status.name.startswith("fusion_node:"):
                    latest[status.name.split(": ")[1]] = {kv.key: kv.value for kv in status.values}
                    latest[status.name.split(": ")[1]]["_message"] = status.message

        node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
        cameras = []
        try:
            deadline = time.monotonic() + 120.0  # the network methods load torch and weights first
            while "inputs" not in latest and time.monotonic() < deadline and fusion.poll() is None:
                rclpy.spin_once(node, timeout_sec=0.1)
            if "inputs" not in latest:
                output = fusion.communicate(timeout=10)[0] if fusion.poll() is not None else ""
                raise RuntimeError(f"fusion_node did not start:\n{output[-2000:]}")
            for camera in ("thermal", "rgb"):
                cameras.append(subprocess.Popen(
                    [sys.executable, str(CAMERA), "--camera", camera, "--width", str(args.width), "--height",
                     str(args.height), "--rate", str(args.rate), "--frames", str(frames), "--qos", args.camera_qos[0]],
                    env=camera_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            sent = {}
            started, streaming = time.monotonic(), {}
            while any(camera.poll() is None for camera in cameras):
                rclpy.spin_once(node, timeout_sec=0.1)
                if time.monotonic() - started < 0.9 * args.seconds:  # what the node said mid-stream
                    streaming = dict(latest.get("inputs", {}))
            for name, camera in zip(("thermal", "rgb"), cameras):
                output = camera.communicate()[0]
                sent[name] = int(output.strip().splitlines()[-1].split()[-1]) if "sent" in output else 0
            until = time.monotonic() + 2.5  # the last diagnostics after the last frame
            while time.monotonic() < until:
                rclpy.spin_once(node, timeout_sec=0.1)
        finally:
            for camera in cameras:
                if camera.poll() is None:
                    camera.kill()
            fusion.send_signal(signal.SIGINT)
            try:
                fusion.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                fusion.kill()
            node.destroy_node()
            rclpy.try_shutdown()
    inputs = latest["inputs"]
    return {
        "sent": sent,
        "decoded": {camera: int(inputs[f"{camera}_frames"]) for camera in ("thermal", "rgb")},
        "messages": {camera: int(inputs[f"{camera}_messages"]) for camera in ("thermal", "rgb")},
        # Mid-stream: after the cameras leave, the node goes back to best effort (no publisher).
        "node_qos": {camera: streaming.get(f"{camera}_qos", "?") for camera in ("thermal", "rgb")},
        "loss_estimate": {camera: streaming.get(f"{camera}_loss", "?") for camera in ("thermal", "rgb")},
        "inputs_message": inputs["_message"],
        "while_streaming": streaming.get("_message", ""),
        "fusion_message": latest.get("fusion", {}).get("_message", ""),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", choices=list(ENV_SETTINGS), action="append", default=None,
                        help="environment setting(s) to run (default: both)")
    parser.add_argument("--camera-qos", choices=["reliable", "best_effort"], action="append", default=None,
                        help="camera publisher QoS (default: both)")
    parser.add_argument("--camera-profile", action="store_true",
                        help="also load the large-images profile in the camera processes")
    parser.add_argument("--method", default=None, help="fusion method (default: the parameters file's)")
    parser.add_argument("--device", default=None, help="device (default: the parameters file's)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=5.0, help="streaming time per case")
    parser.add_argument("--one-case", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one_case:
        print("RESULT " + json.dumps(run_case(args)), flush=True)
        return 0

    results = []
    for setting in args.env or list(ENV_SETTINGS):
        for qos in args.camera_qos or ["reliable", "best_effort"]:
            command = [sys.executable, __file__, "--one-case", "--camera-qos", qos, "--width", str(args.width),
                       "--height", str(args.height), "--rate", str(args.rate), "--seconds", str(args.seconds)]
            command += ["--camera-profile"] if args.camera_profile else []
            command += ["--method", args.method] if args.method else []
            command += ["--device", args.device] if args.device else []
            child = subprocess.run(command, env=case_environment(setting), capture_output=True, text=True,
                                   timeout=300)
            line = next((line for line in child.stdout.splitlines() if line.startswith("RESULT ")), None)
            if line is None:
                print(f"{setting}, cameras {qos}: failed\n{child.stdout[-3000:]}\n{child.stderr[-3000:]}")
                continue
            result = json.loads(line[len("RESULT "):])
            results.append((setting, qos, result))
            delivered = {camera: result["decoded"][camera] / max(1, result["sent"][camera])
                         for camera in ("thermal", "rgb")}
            print(f"{setting:42s} cameras {qos:11s}{' +profile' if args.camera_profile else '':9s} "
                  f"node QoS {result['node_qos']['thermal']}/{result['node_qos']['rgb']}: delivered "
                  f"thermal {result['decoded']['thermal']}/{result['sent']['thermal']} ({delivered['thermal']:.0%}), "
                  f"rgb {result['decoded']['rgb']}/{result['sent']['rgb']} ({delivered['rgb']:.0%}); "
                  f"diagnostics while streaming: {result['while_streaming']!r}", flush=True)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
