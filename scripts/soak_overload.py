#!/usr/bin/env python3
"""Soak / overload run of fusion_node: separate camera processes far faster than the node can fuse.

Three kinds of process, as on a robot: a thermal camera (mono16 or mono8) and an RGB camera (rgb8),
each its own process publishing 640x512 frames stamped at capture at ``--hz`` (default 150 Hz: five
times a 30 Hz camera, several times what the node can fuse on a CPU); ``fusion_node`` in its own
process, started as ``ros2 run`` starts it; and this process, which consumes ``fused/image`` (as
the detector would) and ``fusion/status``, samples the node's memory and finally stops it with
SIGINT. Reported for the measurement window (``--duration`` s after ``--warmup`` s):

- output rate: ``fused/image`` messages received per second (and ``fusion/status`` per second);
- latency p50/p95/max: ``FusionStatus.latency_ms`` (node clock at publication minus the pair's
  stamp) and, end to end, arrival of ``fused/image`` here minus its stamp;
- RSS of the node process at the start, middle and end of the window (and its maximum), and its
  CPU use;
- what the cameras achieved, the node's last /diagnostics values, and how it stopped.

A table goes to stdout, everything to ``--json``. DDS stays on this machine: the script sets
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and ``ROS_LOCALHOST_ONLY=1`` for itself and every child,
and gives the children the Fast DDS profile the launch file gives the nodes
(``nodes.dds_env.large_image_environment``; ``--no-dds-profile`` leaves it out).

    .venv/bin/python scripts/soak_overload.py --method laplacian
    .venv/bin/python scripts/soak_overload.py --method nano --duration 60 --json /tmp/soak_nano.json
    .venv/bin/python scripts/soak_overload.py --method nano --hz 150 --thermal-encoding mono8
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# Before rclpy loads, here and (inherited) in every child: discovery stays on this machine.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_LOCALHOST_ONLY"] = "1"
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

THERMAL_TOPIC = "thermal/image_raw"
RGB_TOPIC = "rgb/image_raw"


# ------------------------------------------------------------------------------------------
# Camera process: `soak_overload.py camera ...`
# ------------------------------------------------------------------------------------------
def camera_frames(kind: str, encoding: str, width: int, height: int, count: int = 8) -> list[np.ndarray]:
    """Smooth random scenes (white noise is no camera's picture): 16/8-bit thermal or rgb8."""
    rng = np.random.default_rng(1 if kind == "thermal" else 2)
    frames = []
    for _ in range(count):
        coarse = rng.random((height // 16 + 1, width // 16 + 1, 3)).astype(np.float32)
        scene = np.kron(coarse, np.ones((16, 16, 1), dtype=np.float32))[:height, :width]
        if kind == "rgb":
            frames.append((scene * 255).astype(np.uint8))
        elif encoding == "mono16":
            frames.append((7000 + scene[:, :, 0] * 3000).astype(np.uint16))  # 14-bit radiometric counts
        else:
            frames.append((scene[:, :, 0] * 255).astype(np.uint8))
    return frames


def run_camera(args: argparse.Namespace) -> int:
    """Publish frames at ``args.hz`` for ``args.duration`` s on a drift-free schedule; print a JSON summary."""
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from mex_fusion_ros.nodes.image_msgs import array_to_image_msg

    rclpy.init()
    node = Node(f"soak_{args.kind}_camera")
    qos = (QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
           if args.qos == "reliable" else qos_profile_sensor_data)
    topic = THERMAL_TOPIC if args.kind == "thermal" else RGB_TOPIC
    publisher = node.create_publisher(Image, topic, qos)
    frame_id = "thermal" if args.kind == "thermal" else "rgb_optical"
    messages = [array_to_image_msg(frame, args.encoding, Header(frame_id=frame_id))
                for frame in camera_frames(args.kind, args.encoding, args.width, args.height)]
    deadline = time.monotonic() + 30.0
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    period = 1.0 / args.hz
    start = time.monotonic()
    end = start + args.duration
    slot = published = skipped = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = start + slot * period
        if due > now:
            time.sleep(due - now)
        elif now - due > period:  # fell behind: a camera does not send a burst of old frames
            missed = int((now - due) / period)
            skipped += missed
            slot += missed
        message = messages[slot % len(messages)]
        message.header.stamp = node.get_clock().now().to_msg()  # stamped at capture
        publisher.publish(message)
        published += 1
        slot += 1
    elapsed = time.monotonic() - start
    print(json.dumps({"camera": args.kind, "encoding": args.encoding, "published": published,
                      "skipped_slots": skipped, "seconds": elapsed, "rate_hz": published / elapsed}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


# ------------------------------------------------------------------------------------------
# The soak run
# ------------------------------------------------------------------------------------------
@dataclass
class Measurements:
    fused: list[tuple[float, int]] = field(default_factory=list)  # (arrival monotonic, stamp ns)
    fused_arrival_wall_ns: list[int] = field(default_factory=list)
    status: list[tuple[float, float, int]] = field(default_factory=list)  # (arrival, latency_ms, dropped)
    diagnostics: dict[str, dict[str, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None, "count": 0}
    ordered = sorted(values)
    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
    return {"p50": at(0.50), "p95": at(0.95), "max": ordered[-1], "mean": statistics.fmean(ordered),
            "count": len(ordered)}


def child_environment(use_profile: bool) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if use_profile:
        from mex_fusion_ros.config import source_config_dir
        from mex_fusion_ros.nodes.dds_env import LARGE_IMAGES_PROFILE, large_image_environment

        env.update(large_image_environment(source_config_dir() / LARGE_IMAGES_PROFILE, env))
    return env


def rss_mb(process) -> float:
    return process.memory_info().rss / 2**20


def soak(args: argparse.Namespace) -> dict:
    import psutil
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.context import Context
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from mex_fusion_msgs.msg import FusionStatus
    from mex_fusion_ros.nodes.spinning import IsolatedExecutors

    env = child_environment(not args.no_dds_profile)
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    node_log = log_dir / f"soak_fusion_node_{args.method}.log"
    node_command = [sys.executable, "-m", "mex_fusion_ros.nodes.fusion_node", "--ros-args",
                    "-p", f"method:={args.method}", "-p", f"device:={args.device}",
                    *(["-p", f"weights:={args.weights}"] if args.weights else []),
                    *(argument for parameter in args.param for argument in ("-p", parameter))]
    load_before = os.getloadavg()
    started = time.monotonic()
    with node_log.open("w") as sink:
        node_process = subprocess.Popen(node_command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    node_ps = psutil.Process(node_process.pid)
    measurements = Measurements()
    reliable = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
    context = Context()
    rclpy.init(context=context)
    probe = Node("soak_probe", context=context)

    def on_fused(msg: Image) -> None:
        now_wall = probe.get_clock().now().nanoseconds
        with measurements.lock:
            measurements.fused.append((time.monotonic(), msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec))
            measurements.fused_arrival_wall_ns.append(now_wall)

    def on_status(msg: FusionStatus) -> None:
        with measurements.lock:
            measurements.status.append((time.monotonic(), float(msg.latency_ms), int(msg.dropped_pairs)))

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith("fusion_node"):
                values = {item.key: item.value for item in status.values}
                values["_level"] = str(status.level[0] if isinstance(status.level, bytes) else status.level)
                values["_message"] = status.message
                with measurements.lock:
                    measurements.diagnostics[status.name] = values

    if not args.no_consumer:
        probe.create_subscription(Image, "fused/image", on_fused, reliable)
    probe.create_subscription(FusionStatus, "fusion/status", on_status,
                              QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                                         reliability=ReliabilityPolicy.RELIABLE))
    probe.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    cameras: list[subprocess.Popen] = []
    samples: list[tuple[float, float]] = []
    result: dict = {}
    with IsolatedExecutors([probe], context=context, poll_s=0.05):
        try:
            # The node is ready when it subscribes to both cameras.
            deadline = time.monotonic() + args.start_timeout
            while (probe.count_subscribers(THERMAL_TOPIC) == 0 or probe.count_subscribers(RGB_TOPIC) == 0):
                if node_process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"fusion_node did not start (see {node_log}):\n{node_log.read_text()[-2000:]}")
                time.sleep(0.1)
            ready_s = time.monotonic() - started
            total = args.warmup + args.duration + 2.0
            for kind, encoding in (("thermal", args.thermal_encoding), ("rgb", "rgb8")):
                cameras.append(subprocess.Popen(
                    [sys.executable, __file__, "camera", "--kind", kind, "--encoding", encoding,
                     "--hz", str(args.hz), "--duration", str(total), "--width", str(args.width),
                     "--height", str(args.height), "--qos", args.camera_qos],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO))
            deadline = time.monotonic() + 60.0
            while not measurements.status:
                if node_process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"no fused output (see {node_log}):\n{node_log.read_text()[-2000:]}")
                time.sleep(0.1)
            time.sleep(args.warmup)
            window_start = time.monotonic()
            window_end = window_start + args.duration
            cpu_start = node_ps.cpu_times()
            rss = {"start": rss_mb(node_ps)}
            middle_at = window_start + args.duration / 2
            while time.monotonic() < window_end:
                now = time.monotonic()
                samples.append((now - window_start, rss_mb(node_ps)))
                if "middle" not in rss and now >= middle_at:
                    rss["middle"] = samples[-1][1]
                if node_process.poll() is not None:
                    raise SystemExit(f"fusion_node ended during the soak (see {node_log})")
                time.sleep(min(1.0, max(0.0, window_end - time.monotonic())))
            rss["end"] = rss_mb(node_ps)
            rss["max"] = max([rss["end"], *(value for _, value in samples)])
            cpu_end = node_ps.cpu_times()
            cpu_seconds = (cpu_end.user + cpu_end.system) - (cpu_start.user + cpu_start.system)
            cpu_percent = 100.0 * cpu_seconds / args.duration
            with measurements.lock:
                fused = [(t, stamp, wall) for (t, stamp), wall in zip(measurements.fused,
                                                                       measurements.fused_arrival_wall_ns)
                         if window_start <= t <= window_end]
                status = [entry for entry in measurements.status if window_start <= entry[0] <= window_end]
                diagnostics = dict(measurements.diagnostics)
            # Stop the node as an operator would (Ctrl-C), while the cameras still run.
            stop_sent = time.monotonic()
            node_process.send_signal(signal.SIGINT)
            try:
                stop_code = node_process.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                node_process.kill()
                stop_code = node_process.wait()
            stop_s = time.monotonic() - stop_sent
            camera_reports = []
            for camera in cameras:
                output, _ = camera.communicate(timeout=args.warmup + args.duration + 60)
                line = next((line for line in reversed(output.splitlines()) if line.startswith("{")), None)
                camera_reports.append(json.loads(line) if line else {"error": output[-500:]})
        finally:
            for process in (node_process, *cameras):
                if process.poll() is None:
                    process.kill()
                    process.wait()
    probe.destroy_node()
    rclpy.try_shutdown(context=context)
    node_text = node_log.read_text(errors="replace")
    result = {
        "method": args.method, "device": args.device, "weights": args.weights or None,
        "cameras": {"hz": args.hz, "width": args.width, "height": args.height,
                    "thermal_encoding": args.thermal_encoding, "qos": args.camera_qos,
                    "achieved": camera_reports},
        "dds_profile": not args.no_dds_profile, "domain_id": os.environ["ROS_DOMAIN_ID"],
        "node_ready_s": ready_s, "warmup_s": args.warmup, "duration_s": args.duration,
        "output_rate_hz": {"fused_image_received": len(fused) / args.duration if not args.no_consumer else None,
                           "fusion_status": len(status) / args.duration},
        "latency_ms": {"fusion_status": percentiles([latency for _, latency, _ in status]),
                       "end_to_end_fused_image": percentiles([(wall - stamp) / 1e6 for _, stamp, wall in fused])},
        "dropped_pairs_in_window": sum(dropped for _, _, dropped in status),
        "rss_mb": rss, "rss_samples_mb": [(round(t, 1), round(value, 1)) for t, value in samples],
        "node_cpu_percent": cpu_percent,
        "last_diagnostics": diagnostics,
        "stop": {"signal": "SIGINT", "exit_code": stop_code, "seconds": stop_s,
                 "traceback": "Traceback" in node_text, "context_invalid": "context is invalid" in node_text},
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "node_log": str(node_log),
    }
    return result


def format_table(result: dict) -> str:
    def ms(summary: dict) -> str:
        if not summary["count"]:
            return "-"
        return (f"p50 {summary['p50']:.1f}  p95 {summary['p95']:.1f}  max {summary['max']:.1f} ms  "
                f"(n={summary['count']})")

    cams = result["cameras"]
    achieved = ", ".join(f"{report.get('camera', '?')} {report.get('rate_hz', float('nan')):.1f} Hz"
                         for report in cams["achieved"])
    rates = result["output_rate_hz"]
    rss = result["rss_mb"]
    stop = result["stop"]
    fused_rate = "-" if rates["fused_image_received"] is None else f"{rates['fused_image_received']:.2f} Hz"
    rows = [
        ("method / device", f"{result['method']} / {result['device']}"),
        ("cameras", f"{cams['width']}x{cams['height']} thermal {cams['thermal_encoding']} + rgb8, "
                    f"{cams['hz']:g} Hz asked ({achieved}), {cams['qos']} QoS"),
        ("window", f"{result['duration_s']:g} s after {result['warmup_s']:g} s warm-up"),
        ("output rate", f"fused/image {fused_rate}, fusion/status {rates['fusion_status']:.2f} Hz"),
        ("latency (FusionStatus)", ms(result["latency_ms"]["fusion_status"])),
        ("latency (end to end)", ms(result["latency_ms"]["end_to_end_fused_image"])),
        ("pairs dropped (mailbox)", str(result["dropped_pairs_in_window"])),
        ("node RSS", f"start {rss['start']:.0f} MB, middle {rss.get('middle', float('nan')):.0f} MB, "
                     f"end {rss['end']:.0f} MB (max {rss['max']:.0f} MB)"),
        ("node CPU", f"{result['node_cpu_percent']:.0f} %"),
        ("stop (SIGINT)", f"exit {stop['exit_code']} in {stop['seconds']:.2f} s"
                          f"{', traceback' if stop['traceback'] else ''}"
                          f"{', context invalid' if stop['context_invalid'] else ''}"),
        ("load average", f"{result['load_average']['before'][0]:.1f} before, "
                         f"{result['load_average']['after'][0]:.1f} after"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["camera"]:
        camera = argparse.ArgumentParser(prog="soak_overload.py camera")
        camera.add_argument("--kind", choices=("thermal", "rgb"), required=True)
        camera.add_argument("--encoding", required=True)
        camera.add_argument("--hz", type=float, required=True)
        camera.add_argument("--duration", type=float, required=True)
        camera.add_argument("--width", type=int, default=640)
        camera.add_argument("--height", type=int, default=512)
        camera.add_argument("--qos", choices=("sensor", "reliable"), default="sensor")
        return run_camera(camera.parse_args(argv[1:]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="laplacian", help="fusion method: nano, laplacian, ... (default laplacian)")
    parser.add_argument("--weights", default="", help="network weights (default: the shipped ones of --method)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hz", type=float, default=150.0, help="each camera's rate (default 150: 5x 30 Hz)")
    parser.add_argument("--duration", type=float, default=60.0, help="measurement window, seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of overload before the window")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--thermal-encoding", choices=("mono16", "mono8"), default="mono16")
    parser.add_argument("--camera-qos", choices=("sensor", "reliable"), default="sensor",
                        help="camera publishers' QoS: sensor data (best effort, REP-2003) or reliable")
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="another fusion_node parameter (repeatable), e.g. --param sync.slop:=0.02")
    parser.add_argument("--no-consumer", action="store_true", help="do not subscribe fused/image here")
    parser.add_argument("--no-dds-profile", action="store_true",
                        help="leave out the Fast DDS large-image profile the launch file gives the nodes")
    parser.add_argument("--start-timeout", type=float, default=120.0)
    parser.add_argument("--log-dir", default="/tmp", help="where the node's output goes")
    parser.add_argument("--json", default="", help="write the results here (default soak_<method>.json in --log-dir)")
    args = parser.parse_args(argv)
    result = soak(args)
    print(format_table(result))
    out = Path(args.json or Path(args.log_dir) / f"soak_{args.method}.json")
    out.write_text(json.dumps(result, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
