"""The mex_fusion_msgs interface package: definitions, generated Python types, and transport over Fast DDS.

Needs the package built into the environment (``scripts/build_interfaces.sh .venv``, run by
``scripts/setup.sh``; on a robot ``colcon build``): when it is missing these tests fail, on purpose.
"""
from __future__ import annotations

import importlib
import os
import threading
import time
from pathlib import Path

import pytest

MSG_DIR = Path(__file__).resolve().parent.parent / "mex_fusion_msgs" / "msg"

# The contract the nodes (and docs/interfaces.md) rely on: message -> field -> .msg type.
DOCUMENTED_FIELDS: dict[str, dict[str, str]] = {
    "DegradationScore": {"type": "string", "probability": "float32", "severity": "float32",
                         "threshold": "float32"},
    "ExpertRouting": {"gate": "string", "experts": "uint16[]", "weights": "float32[]"},
    "FusionStatus": {
        "header": "std_msgs/Header",
        "thermal_stamp": "builtin_interfaces/Time",
        "rgb_stamp": "builtin_interfaces/Time",
        "skew_ms": "float32",
        "mode": "uint8",
        "method": "string",
        "device": "string",
        "half_precision": "bool",
        "degradations": "mex_fusion_msgs/DegradationScore[]",
        "routing": "mex_fusion_msgs/ExpertRouting[]",
        "preprocess_ms": "float32",
        "inference_ms": "float32",
        "postprocess_ms": "float32",
        "latency_ms": "float32",
        "dropped_pairs": "uint32",
    },
    "Detection": {
        "class_id": "int32",
        "class_name": "string",
        "score": "float32",
        "center_x": "float32",
        "center_y": "float32",
        "width": "float32",
        "height": "float32",
    },
    "DetectionArray": {"header": "std_msgs/Header", "detections": "mex_fusion_msgs/Detection[]"},
}
DOCUMENTED_CONSTANTS = {"FusionStatus": {"MODE_FUSED": 0, "MODE_THERMAL_ONLY": 1, "MODE_RGB_ONLY": 2}}

# .msg primitive type -> the name rosidl_generator_py reports in get_fields_and_field_types().
PY_TYPE_NAMES = {"float32": "float", "float64": "double", "bool": "boolean", "byte": "octet"}


def generated_module():
    try:
        return importlib.import_module("mex_fusion_msgs.msg")
    except ImportError as error:
        pytest.fail(f"mex_fusion_msgs is not built into this environment ({error}); run "
                    "scripts/build_interfaces.sh .venv (or colcon build on a ROS 2 machine)")


def parse_definition(name: str):
    from rosidl_adapter.parser import parse_message_file

    return parse_message_file("mex_fusion_msgs", str(MSG_DIR / f"{name}.msg"))


def generated_type_name(field_type) -> str:
    """How rosidl_generator_py names a .msg field type (``float32[]`` -> ``sequence<float>``)."""
    base = (f"{field_type.pkg_name}/{field_type.type}" if field_type.pkg_name
            else PY_TYPE_NAMES.get(field_type.type, field_type.type))
    if field_type.is_array:
        assert field_type.array_size is None, "fixed-size arrays are not used by this package"
        return f"sequence<{base}>"
    return base


def test_sources_define_the_documented_messages() -> None:
    assert sorted(path.stem for path in MSG_DIR.glob("*.msg")) == sorted(DOCUMENTED_FIELDS)
    for name, fields in DOCUMENTED_FIELDS.items():
        spec = parse_definition(name)
        assert {field.name: str(field.type) for field in spec.fields} == fields, name
        constants = {constant.name: constant.value for constant in spec.constants}
        assert constants == DOCUMENTED_CONSTANTS.get(name, {}), name


def test_generated_types_match_the_sources() -> None:
    """Catches a stale build: the importable types must have exactly the fields of the .msg files."""
    module = generated_module()
    for name in DOCUMENTED_FIELDS:
        spec = parse_definition(name)
        message_class = getattr(module, name)
        expected = {field.name: generated_type_name(field.type) for field in spec.fields}
        assert message_class.get_fields_and_field_types() == expected, name
        for constant in spec.constants:
            assert getattr(message_class, constant.name) == constant.value


def test_every_field_and_constant_is_documented() -> None:
    """Each field line has a trailing comment or belongs to a block of fields under a comment."""
    for path in sorted(MSG_DIR.glob("*.msg")):
        previous = "blank"
        for number, raw in enumerate(path.read_text().splitlines(), start=1):
            line = raw.strip()
            if not line:
                previous = "blank"
            elif line.startswith("#"):
                previous = "comment"
            else:
                documented = "#" in line or previous in ("comment", "documented field")
                assert documented, f"{path.name}:{number}: {line!r} has no comment"
                previous = "documented field"


def make_status(module):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return module.FusionStatus(
        header=Header(stamp=Time(sec=1_700_000_000, nanosec=33_000_000), frame_id="rgb_optical_frame"),
        thermal_stamp=Time(sec=1_700_000_000, nanosec=21_000_000),
        rgb_stamp=Time(sec=1_700_000_000, nanosec=33_000_000),
        skew_ms=-12.0, mode=module.FusionStatus.MODE_FUSED, method="nano", device="cpu",
        half_precision=False,
        degradations=[module.DegradationScore(type="vi_haze", probability=0.875, severity=0.5, threshold=0.25),
                      module.DegradationScore(type="ir_stripe", probability=0.125, severity=0.0, threshold=0.5)],
        routing=[module.ExpertRouting(gate="encoder.0", experts=[3, 7], weights=[0.75, 0.25]),
                 module.ExpertRouting(gate="decoder.fusion", experts=[1], weights=[1.0])],
        preprocess_ms=1.5, inference_ms=42.25, postprocess_ms=0.75, latency_ms=51.5, dropped_pairs=3)


def make_detections(module):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return module.DetectionArray(
        header=Header(stamp=Time(sec=1_700_000_000, nanosec=33_000_000), frame_id="rgb_optical_frame"),
        detections=[module.Detection(class_id=0, class_name="person", score=0.875, center_x=320.5,
                                     center_y=256.0, width=40.0, height=96.25),
                    module.Detection(class_id=2, class_name="car", score=0.5, center_x=10.0,
                                     center_y=500.0, width=120.0, height=64.0)])


def test_messages_survive_serialisation() -> None:
    from rclpy.serialization import deserialize_message, serialize_message

    module = generated_module()
    for message in (make_status(module), make_detections(module)):
        assert deserialize_message(serialize_message(message), type(message)) == message


@pytest.mark.ros
def test_status_and_detections_cross_fast_dds() -> None:
    """Two nodes, each on its own executor thread, exchange both messages over reliable QoS."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    assert os.environ.get("ROS_LOCALHOST_ONLY") == "1", "test/conftest.py keeps DDS on loopback"
    module = generated_module()
    sent = {"status": make_status(module), "detections": make_detections(module)}
    topics = {"status": f"mex_msgs_test_{os.getpid()}/status",
              "detections": f"mex_msgs_test_{os.getpid()}/detections"}
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.VOLATILE)
    received: dict[str, object] = {}
    arrived = {key: threading.Event() for key in sent}

    def keep(key: str):
        def callback(message) -> None:
            received.setdefault(key, message)
            arrived[key].set()
        return callback

    context = Context()
    rclpy.init(context=context)
    executors: list[SingleThreadedExecutor] = []
    threads: list[threading.Thread] = []
    nodes = []
    try:
        talker = rclpy.create_node("mex_msgs_talker", context=context)
        nodes.append(talker)
        listener = rclpy.create_node("mex_msgs_listener", context=context)
        nodes.append(listener)
        publishers = {key: talker.create_publisher(type(message), topics[key], qos)
                      for key, message in sent.items()}
        for key, message in sent.items():
            listener.create_subscription(type(message), topics[key], keep(key), qos)
        for node in (talker, listener):
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
            executors.append(executor)
            threads.append(threading.Thread(target=executor.spin, daemon=True))
            threads[-1].start()

        deadline = time.monotonic() + 10
        while any(pub.get_subscription_count() == 0 for pub in publishers.values()):
            assert time.monotonic() < deadline, "the listener was not discovered within 10 s"
            time.sleep(0.02)
        for key, message in sent.items():
            publishers[key].publish(message)
        for key, event in arrived.items():
            assert event.wait(timeout=10), f"{topics[key]} did not arrive within 10 s"
        assert received == sent
    finally:
        for executor in executors:
            executor.shutdown(timeout_sec=2)
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
        for thread in threads:
            thread.join(timeout=5)
