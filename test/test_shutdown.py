"""Stopping under load: ``fusion_node``, ``detector_node`` and ``mex-fusion run`` as real processes,
fed frames over Fast DDS, stopped with SIGINT, SIGINT twice (what a terminal's Ctrl-C plus
``ros2 launch``, ``timeout`` or a supervisor deliver to a process group) and SIGTERM.

Each must exit with status 0 within ``STOP_LIMIT_S``, print no traceback and publish nothing into
a shut-down context ("publisher's context is invalid"), and leave the ROS graph at once. The
processes of one executable run side by side, each in its own namespace, to keep the test short.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml
from node_harness import RELIABLE, BackgroundExecutor, ros_context, wait_for
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from mex_fusion_msgs.msg import DetectionArray
from mex_fusion_ros.nodes.image_msgs import array_to_image_msg
from mex_fusion_ros.nodes.spinning import StopSignals

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parent.parent
STOP_LIMIT_S = 2.0
START_TIMEOUT_S = 90.0  # importing torch + ultralytics on a busy 2-core machine
FEED_HZ = 20.0
SIZE = (320, 256)

#: (name, signals, seconds between them). The name is also the process's namespace.
STOPS = (("sigint", (signal.SIGINT,), 0.0),
         ("double_sigint", (signal.SIGINT, signal.SIGINT), 0.02),
         ("sigterm", (signal.SIGTERM,), 0.0))
#: The fusion node is cheap to start: also a second SIGINT while the clean-up is under way.
LATE_DOUBLE_SIGINT = ("late_double_sigint", (signal.SIGINT, signal.SIGINT), 0.15)


@dataclass
class StoppedProcess:
    namespace: str
    process: subprocess.Popen
    log: Path
    outputs: list[float] = field(default_factory=list)  # arrival times of its outputs
    returncode: int | None = None
    stop_s: float = float("nan")

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def command(executable: str, namespace: str, config: Path) -> list[str]:
    if executable == "mex-fusion run":
        return [sys.executable, "-m", "mex_fusion_ros.cli", "run", "--config", str(config),
                "--namespace", namespace, "--method", "laplacian", "--device", "cpu"]
    module = f"mex_fusion_ros.nodes.{executable}"  # what the `fusion_node`/`detector_node` scripts run
    return [sys.executable, "-m", module, "--ros-args", "-r", f"__ns:=/{namespace}",
            *(argument for name, value in PARAMETERS[executable].items() for argument in ("-p", f"{name}:={value}"))]


PARAMETERS = {"fusion_node": {"method": "laplacian", "device": "cpu"},
              "detector_node": {"model": "yolov8n.yaml", "device": "cpu", "image_size": 160}}


def write_parameters(tmp_path: Path) -> Path:
    config = tmp_path / "params.yaml"
    config.write_text(yaml.safe_dump({node: {"ros__parameters": values} for node, values in PARAMETERS.items()}))
    return config


def feed(probe: Node, executable: str, namespaces: list[str], stop: threading.Event) -> None:
    """Publish camera pairs (or fused images for the detector) at FEED_HZ into every namespace."""
    rng = np.random.default_rng(0)
    thermal = rng.integers(7000, 10000, (SIZE[1], SIZE[0]), dtype=np.uint16)
    rgb = rng.integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    if executable == "detector_node":
        publishers = [(probe.create_publisher(Image, f"/{ns}/fused/image", RELIABLE), rgb, "rgb8")
                      for ns in namespaces]
    else:
        publishers = [pair for ns in namespaces for pair in (
            (probe.create_publisher(Image, f"/{ns}/thermal/image_raw", RELIABLE), thermal, "mono16"),
            (probe.create_publisher(Image, f"/{ns}/rgb/image_raw", RELIABLE), rgb, "rgb8"))]
    while not stop.wait(1.0 / FEED_HZ):
        header = Header(stamp=probe.get_clock().now().to_msg(), frame_id="camera")
        for publisher, image, encoding in publishers:
            publisher.publish(array_to_image_msg(image, encoding, header))


@pytest.mark.parametrize("executable", ["fusion_node", "detector_node", "mex-fusion run"])
def test_stop_signals_under_load_exit_zero_quickly_and_cleanly(executable, tmp_path):
    stops = STOPS + ((LATE_DOUBLE_SIGINT,) if executable == "fusion_node" else ())
    config = write_parameters(tmp_path)
    env = dict(os.environ, YOLO_OFFLINE="1")
    processes: dict[str, StoppedProcess] = {}
    output_topic = "fused/image" if executable == "fusion_node" else "detections"
    output_type = Image if executable == "fusion_node" else DetectionArray
    with ros_context() as context:
        probe = Node("shutdown_probe", context=context)
        try:
            for name, _, _ in stops:
                log = tmp_path / f"{name}.log"
                with log.open("w") as sink:
                    process = subprocess.Popen(command(executable, name, config), stdout=sink,
                                               stderr=subprocess.STDOUT, env=env, cwd=REPO)
                processes[name] = StoppedProcess(name, process, log)
            for entry in processes.values():
                probe.create_subscription(output_type, f"/{entry.namespace}/{output_topic}",
                                          lambda _msg, e=entry: e.outputs.append(time.monotonic()), RELIABLE)
            stop_feeding = threading.Event()
            feeder = threading.Thread(target=feed, args=(probe, executable, list(processes), stop_feeding),
                                      daemon=True)
            with BackgroundExecutor(context, [probe]):
                feeder.start()
                try:
                    started = wait_for(lambda: all(len(e.outputs) >= 5 or e.process.poll() is not None
                                                   for e in processes.values()), START_TIMEOUT_S, poll=0.2)
                    for entry in processes.values():
                        assert entry.process.poll() is None, f"{entry.namespace} ended early:\n{entry.output()}"
                    assert started, {name: len(e.outputs) for name, e in processes.items()}
                    for name, signals, gap in stops:
                        entry = processes[name]
                        # Under load: it was producing output right up to the signal.
                        assert wait_for(lambda e=entry: time.monotonic() - e.outputs[-1] < 1.0, 5.0), name
                        sent = time.monotonic()
                        for index, number in enumerate(signals):
                            if index:
                                time.sleep(gap)
                            entry.process.send_signal(number)
                        try:
                            entry.returncode = entry.process.wait(timeout=10.0)
                        except subprocess.TimeoutExpired:
                            entry.process.kill()
                            entry.returncode = entry.process.wait()
                        entry.stop_s = time.monotonic() - sent
                        # The node left the graph at once (its DDS participant was destroyed on exit).
                        topic = f"/{name}/{output_topic}"
                        assert wait_for(lambda t=topic: probe.count_publishers(t) == 0, 2.0), \
                            f"{name}: {topic} still has a publisher after the process ended"
                finally:
                    stop_feeding.set()
                    feeder.join(timeout=5.0)
        finally:
            for entry in processes.values():
                if entry.process.poll() is None:
                    entry.process.kill()
                    entry.process.wait()
    print(f"\n{executable}: " + ", ".join(f"{name} exit {entry.returncode} in {entry.stop_s:.2f} s"
                                           for name, entry in processes.items()))
    failures = []
    for name, entry in processes.items():
        text = entry.output()
        problems = [problem for problem, bad in (
            (f"exit status {entry.returncode}", entry.returncode != 0),
            (f"took {entry.stop_s:.2f} s", not entry.stop_s < STOP_LIMIT_S),
            ("a traceback", "Traceback" in text),
            ("publishing into a shut-down context", "context is invalid" in text),
        ) if bad]
        if problems:
            failures.append(f"{executable} {name}: {', '.join(problems)}\n{text[-3000:]}")
    assert not failures, "\n\n".join(failures)


def test_a_stop_signal_interrupts_start_up_and_later_signals_are_ignored():
    previous = signal.getsignal(signal.SIGINT)
    stop = StopSignals().install()
    try:
        assert stop.installed
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt), stop.interruptible():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5.0)  # a slow model load, cut short
        assert time.monotonic() - started < 2.0
        assert stop.requested.is_set() and stop.received == "SIGTERM"
        os.kill(os.getpid(), signal.SIGINT)  # a second signal (here during clean-up): ignored, no exception
        time.sleep(0.1)
        assert stop.received == "SIGTERM"
        with pytest.raises(KeyboardInterrupt), stop.interruptible():
            pass  # a start-up that begins after the stop request does not run
    finally:
        stop.uninstall()
    assert signal.getsignal(signal.SIGINT) is previous
