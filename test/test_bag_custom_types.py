"""Custom message types in bags: mex_fusion_msgs (and any installed package) through the rosbags typestore.

Registered from the installed ``.msg`` files (or the source checkout), with the RIHS01 hashes rosidl
generated; written, recorded over DDS, read back (from the bag's own stored definition) and replayed.
"""

import array
import dataclasses
import functools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rosbags.interfaces import Nodetype
from rosbags.typesys import Stores, get_typestore

from mex_fusion_ros.bag import typestore as typestore_module
from mex_fusion_ros.bag.reader import BagError, BagReader
from mex_fusion_ros.bag.typestore import (
    SOURCE_MSG_DIRS,
    TYPESTORE,
    definition_candidates,
    ensure_msgtype,
)
from mex_fusion_ros.bag.writer import BagWriteError, BagWriter

FUSION_STATUS = "mex_fusion_msgs/msg/FusionStatus"
DETECTION_ARRAY = "mex_fusion_msgs/msg/DetectionArray"
NESTED = (
    "mex_fusion_msgs/msg/DegradationScore",
    "mex_fusion_msgs/msg/ExpertRouting",
    "mex_fusion_msgs/msg/Detection",
)
STORAGES = ("mcap", "sqlite3")
INSTALLED_SHARE = Path(sys.prefix) / "share" / "mex_fusion_msgs" / "msg"
_SEQUENCE_DTYPES = {"uint16": np.uint16, "float32": np.float32}


def fresh_store():
    """A Kilted typestore of its own, so each test sees the custom types unregistered."""
    return get_typestore(Stores.ROS2_KILTED)


@functools.cache
def registered_store():
    store = fresh_store()
    ensure_msgtype(FUSION_STATUS, store)
    ensure_msgtype(DETECTION_ARRAY, store)
    return store


# ------------------------------------------------------------------ plain values of either representation
def plain(value):
    """A rosbags or rclpy message (or field value) as nested dicts, lists and Python scalars."""
    if hasattr(value, "__msgtype__"):  # rosbags dataclass; ROS constants are upper case, fields lower case
        names = [f.name for f in dataclasses.fields(value) if f.name.islower() and not f.name.startswith("__")]
        return {name: plain(getattr(value, name)) for name in names}
    if hasattr(value, "get_fields_and_field_types"):  # rclpy message
        return {name: plain(getattr(value, name)) for name in value.get_fields_and_field_types()}
    if isinstance(value, (np.ndarray, array.array, list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def build(store, msgtype: str, values: dict):
    """The rosbags message of ``msgtype`` with the plain ``values`` (as ``plain`` returns them)."""
    fields = {}
    for name, (node_type, detail) in store.fielddefs[msgtype][1]:
        value = values[name]
        if node_type == Nodetype.NAME:
            fields[name] = build(store, detail, value)
        elif node_type == Nodetype.SEQUENCE and detail[0][0] == Nodetype.NAME:
            fields[name] = [build(store, detail[0][1], item) for item in value]
        elif node_type == Nodetype.SEQUENCE:
            fields[name] = np.array(value, dtype=_SEQUENCE_DTYPES[detail[0][1][0]])
        else:
            fields[name] = value
    return store.types[msgtype](**fields)


# Values that survive float32 and CDR strings unchanged (no NUL, no lone surrogate).
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)
_f32 = st.floats(width=32, allow_nan=False)
_time = st.fixed_dictionaries({"sec": st.integers(-(2**31), 2**31 - 1), "nanosec": st.integers(0, 2**32 - 1)})
_header = st.fixed_dictionaries({"stamp": _time, "frame_id": _text})
FUSION_STATUS_VALUES = st.fixed_dictionaries(
    {
        "header": _header,
        "thermal_stamp": _time,
        "rgb_stamp": _time,
        "skew_ms": _f32,
        "mode": st.integers(0, 255),
        "method": _text,
        "device": _text,
        "half_precision": st.booleans(),
        "degradations": st.lists(
            st.fixed_dictionaries({"type": _text, "probability": _f32, "severity": _f32, "threshold": _f32}),
            max_size=3
        ),
        "routing": st.lists(
            st.fixed_dictionaries(
                {
                    "gate": _text,
                    "experts": st.lists(st.integers(0, 2**16 - 1), max_size=4),
                    "weights": st.lists(_f32, max_size=4),
                }
            ),
            max_size=2,
        ),
        "preprocess_ms": _f32,
        "inference_ms": _f32,
        "postprocess_ms": _f32,
        "latency_ms": _f32,
        "dropped_pairs": st.integers(0, 2**32 - 1),
    }
)
_detection = st.fixed_dictionaries(
    {
        "class_id": st.integers(-(2**31), 2**31 - 1),
        "class_name": _text,
        "score": _f32,
        "center_x": _f32,
        "center_y": _f32,
        "width": _f32,
        "height": _f32,
    }
)
DETECTION_ARRAY_VALUES = st.fixed_dictionaries({"header": _header, "detections": st.lists(_detection, max_size=4)})


# ------------------------------------------------------------------ registration
def test_ensure_msgtype_registers_both_types_and_their_nested_types():
    store = fresh_store()
    assert FUSION_STATUS not in store.types and DETECTION_ARRAY not in store.types
    ensure_msgtype(FUSION_STATUS, store)
    ensure_msgtype(DETECTION_ARRAY, store)
    for msgtype in (FUSION_STATUS, DETECTION_ARRAY, *NESTED):
        assert msgtype in store.types
    constants = {name: value for name, _, value in store.fielddefs[FUSION_STATUS][0]}
    assert constants == {"MODE_FUSED": 0, "MODE_THERMAL_ONLY": 1, "MODE_RGB_ONLY": 2}
    ensure_msgtype(FUSION_STATUS, store)  # known now: nothing to do, no error


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(status=FUSION_STATUS_VALUES, detections=DETECTION_ARRAY_VALUES)
def test_cdr_round_trip_keeps_every_field(status, detections):
    store = registered_store()
    for msgtype, values in ((FUSION_STATUS, status), (DETECTION_ARRAY, detections)):
        cdr = store.serialize_cdr(build(store, msgtype, values), msgtype)
        assert plain(store.deserialize_cdr(cdr, msgtype)) == values


def test_rihs01_hashes_equal_the_ones_rosidl_generated():
    if not INSTALLED_SHARE.is_dir():
        pytest.skip(f"mex_fusion_msgs is not installed in {sys.prefix} (scripts/build_interfaces.sh)")
    store = registered_store()
    compared = 0
    for description in sorted(INSTALLED_SHARE.glob("*.json")):
        for entry in json.loads(description.read_text())["type_hashes"]:
            assert store.hash_rihs01(entry["type_name"]) == entry["hash_string"], description.name
            compared += 1
    assert compared >= 5


def test_source_checkout_is_the_fallback_and_gives_the_same_types(monkeypatch):
    monkeypatch.setattr(typestore_module, "ament_prefixes", lambda: [])
    assert definition_candidates(FUSION_STATUS) == [SOURCE_MSG_DIRS["mex_fusion_msgs"] / "FusionStatus.msg"]
    store = fresh_store()
    ensure_msgtype(FUSION_STATUS, store)
    for msgtype in (FUSION_STATUS, *NESTED[:2]):
        assert store.hash_rihs01(msgtype) == registered_store().hash_rihs01(msgtype)


def test_custom_package_is_found_through_ament_prefix_path(tmp_path, monkeypatch):
    share = tmp_path / "share" / "robot_msgs" / "msg"
    share.mkdir(parents=True)
    (share / "Reading.msg").write_text("std_msgs/Header header\nPart[] parts\nfloat64 value\n")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))
    store = fresh_store()
    with pytest.raises(BagError, match=r"robot_msgs/msg/Part \(a field type of robot_msgs/msg/Reading\)") as info:
        ensure_msgtype("robot_msgs/msg/Reading", store)
    assert str(share / "Part.msg") in str(info.value)
    assert "robot_msgs/msg/Reading" not in store.types  # nothing half-registered
    (share / "Part.msg").write_text("string name\nuint8[4] code\n")
    ensure_msgtype("robot_msgs/msg/Reading", store)
    assert {"robot_msgs/msg/Reading", "robot_msgs/msg/Part"} <= set(store.types)


def test_unknown_type_names_the_type_and_where_it_looked(tmp_path):
    store = fresh_store()
    with pytest.raises(BagError, match="message type nopkg/msg/Nothing is unknown") as info:
        ensure_msgtype("nopkg/msg/Nothing", store)
    assert str(Path(sys.prefix) / "share" / "nopkg" / "msg" / "Nothing.msg") in str(info.value)
    with pytest.raises(BagError, match="not of the form package/msg/Name"):
        ensure_msgtype("nopkg/srv/Nothing", store)
    with BagWriter(tmp_path / "bag") as writer, pytest.raises(BagWriteError, match="nopkg/msg/Nothing"):
        writer.write_raw("/x", "nopkg/msg/Nothing", 1, b"\x00\x01\x00\x00")


# ------------------------------------------------------------------ bags
@pytest.mark.parametrize("storage", STORAGES)
def test_writer_and_reader_keep_custom_messages(tmp_path, storage):
    store = registered_store()
    status = build(store, FUSION_STATUS, _example_status(3))
    with BagWriter(tmp_path / "bag", storage=storage) as writer:
        writer.write_raw("/fusion/status", FUSION_STATUS, 7, store.serialize_cdr(status, FUSION_STATUS))
    with BagReader(tmp_path / "bag") as reader:
        assert reader.type_hash("/fusion/status") == store.hash_rihs01(FUSION_STATUS)
        (message,) = reader.iter_messages(["/fusion/status"])
    assert (message.topic, message.msgtype, message.log_time_ns) == ("/fusion/status", FUSION_STATUS, 7)
    assert plain(message.msg) == plain(status)


def test_reader_registers_a_type_from_the_bag_definition(tmp_path):
    """A type installed nowhere is read with the definition the bag stores."""
    sample_type = "bagonly_msgs/msg/Sample"
    author = fresh_store()
    author.register(
        {
            **_parse(sample_type, "bagonly_msgs/Part[] parts\nstring note\n"),
            **_parse("bagonly_msgs/msg/Part", "int64 id\nfloat32[] values\n"),
        }
    )
    sample = author.types[sample_type](
        parts=[author.types["bagonly_msgs/msg/Part"](id=-5, values=np.array([1.5, 2.0], np.float32))], note="x"
    )
    msgdef, _ = author.generate_msgdef(sample_type, ros_version=2)
    with BagWriter(tmp_path / "bag") as writer:
        writer.add_raw_connection("/s", sample_type, msgdef, author.hash_rihs01(sample_type))
        writer.write_raw("/s", sample_type, 1, author.serialize_cdr(sample, sample_type))
    with pytest.raises(BagError, match=f"{sample_type} is unknown"):
        ensure_msgtype(sample_type, fresh_store())
    with BagReader(tmp_path / "bag") as reader:
        (message,) = reader.iter_messages(["/s"])
    assert message.msg.note == "x" and message.msg.parts[0].id == -5
    assert message.msg.parts[0].values.tolist() == [1.5, 2.0]


def test_reader_refuses_a_bag_whose_type_hash_differs_from_the_registered_type(tmp_path):
    ensure_msgtype(DETECTION_ARRAY)
    older = "std_msgs/Header header\nint32 count\n"  # an earlier DetectionArray, say
    author = fresh_store()
    author.register(_parse(DETECTION_ARRAY, older))
    with BagWriter(tmp_path / "bag") as writer:
        writer.add_raw_connection("/detections", DETECTION_ARRAY, older, author.hash_rihs01(DETECTION_ARRAY))
        writer.write_raw("/detections", DETECTION_ARRAY, 1, b"\x00\x01\x00\x00" + bytes(16))
    with BagReader(tmp_path / "bag") as reader, pytest.raises(BagError, match="definition changed") as info:
        list(reader.iter_messages(["/detections"]))
    assert author.hash_rihs01(DETECTION_ARRAY) in str(info.value)


def _parse(msgtype: str, text: str) -> dict:
    from rosbags.typesys import get_types_from_msg

    return get_types_from_msg(text, msgtype)


def _example_status(i: int) -> dict:
    """Plain values of a populated FusionStatus (float32-exact numbers)."""
    return {
        "header": {"stamp": {"sec": 1_700_000_000 + i, "nanosec": 250_000_000}, "frame_id": "rgb_optical"},
        "thermal_stamp": {"sec": 1_700_000_000 + i, "nanosec": 240_000_000},
        "rgb_stamp": {"sec": 1_700_000_000 + i, "nanosec": 250_000_000},
        "skew_ms": -10.0 + i,
        "mode": i % 3,
        "method": "nano",
        "device": "cpu",
        "half_precision": bool(i % 2),
        "degradations": [
            {"type": "vi_haze", "probability": 0.75, "severity": 0.5, "threshold": 0.25},
            {"type": "ir_stripe", "probability": 0.125, "severity": 0.25 * (i % 4), "threshold": 0.5},
        ][: 1 + i % 2],
        "routing": [{"gate": "encoder.0", "experts": [i, 3], "weights": [0.625, 0.375]}],
        "preprocess_ms": 1.5,
        "inference_ms": 20.25 + i,
        "postprocess_ms": 0.5,
        "latency_ms": 33.0,
        "dropped_pairs": i,
    }


def _example_detections(i: int) -> dict:
    return {
        "header": {"stamp": {"sec": 1_700_000_000 + i, "nanosec": 250_000_000}, "frame_id": "rgb_optical"},
        "detections": [
            {
                "class_id": k,
                "class_name": ("person", "car")[k % 2],
                "score": 0.875 - 0.125 * k,
                "center_x": 10.5 + k,
                "center_y": 20.0,
                "width": 4.0,
                "height": 8.0 + i,
            }
            for k in range(i)
        ],
    }


# ------------------------------------------------------------------ rclpy (type support, DDS)
def _ros_message(cls, values: dict):
    """The rclpy message of class ``cls`` with the plain ``values``."""
    msg = cls()
    for name, value in values.items():
        current = getattr(msg, name)
        if isinstance(value, dict):
            setattr(msg, name, _ros_message(type(current), value))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            item_cls = _ros_item_class(cls, name)
            setattr(msg, name, [_ros_message(item_cls, item) for item in value])
        else:
            setattr(msg, name, value)
    return msg


def _ros_item_class(cls, field: str):
    import importlib

    package, name = cls.get_fields_and_field_types()[field].removeprefix("sequence<").rstrip(">").split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def test_rosbags_cdr_is_what_rclpy_serialises():
    """The registered definitions lay bytes out as the generated type support does."""
    msgs = pytest.importorskip("mex_fusion_msgs.msg")
    from rclpy.serialization import deserialize_message, serialize_message

    store = registered_store()
    for cls, msgtype, values in (
        (msgs.FusionStatus, FUSION_STATUS, _example_status(3)),
        (msgs.DetectionArray, DETECTION_ARRAY, _example_detections(2)),
    ):
        ros_bytes = serialize_message(_ros_message(cls, values))
        assert plain(store.deserialize_cdr(ros_bytes, msgtype)) == values
        ours = bytes(store.serialize_cdr(build(store, msgtype, values), msgtype))
        assert plain(deserialize_message(ours, cls)) == values


# sqlite3 too: the node is spun in another thread than the one that subscribes and closes, which
# sqlite3 refuses unless one thread owns the database (BagRecorder's writer thread).
@pytest.mark.ros
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_record_read_and_play_custom_types_over_dds(tmp_path, storage):
    msgs = pytest.importorskip("mex_fusion_msgs.msg")
    import rclpy
    from node_harness import RELIABLE, BackgroundExecutor, ros_context, wait_for

    from mex_fusion_ros.bag.live import BagPlayer, BagRecorder, publisher_type_hash
    from mex_fusion_ros.nodes.spinning import IsolatedExecutors

    sent = {
        "/fusion/status": [_example_status(i) for i in range(3)],
        "/detections": [_example_detections(i) for i in range(3)],
    }
    classes = {"/fusion/status": msgs.FusionStatus, "/detections": msgs.DetectionArray}
    msgtypes = {"/fusion/status": FUSION_STATUS, "/detections": DETECTION_ARRAY}
    with ros_context() as context:
        source = rclpy.create_node("custom_source", context=context)
        recorder_node = rclpy.create_node("custom_recorder", context=context)
        publishers = {topic: source.create_publisher(cls, topic, RELIABLE) for topic, cls in classes.items()}
        recorder = BagRecorder(recorder_node, tmp_path / "recorded", list(sent), storage=storage)
        try:
            assert recorder.subscribe(timeout=10.0) == msgtypes  # types learnt from the graph
            ros_hashes = {topic: publisher_type_hash(recorder_node, topic) for topic in sent}
            with IsolatedExecutors([source, recorder_node], context=context, poll_s=0.05) as executors:
                assert wait_for(
                    lambda: all(p.get_subscription_count() for p in publishers.values())
                    and all(s.get_publisher_count() for s in recorder_node.subscriptions),
                    10.0,
                )
                for i in range(3):
                    for topic, values in sent.items():
                        publishers[topic].publish(_ros_message(classes[topic], values[i]))
                assert wait_for(lambda: all(recorder.counts[t] == 3 for t in sent), 10.0), recorder.counts
            assert executors.error is None
        finally:
            recorder.close()
            source.destroy_node()
            recorder_node.destroy_node()

        with BagReader(tmp_path / "recorded") as reader:
            assert reader.storage == storage
            for topic, msgtype in msgtypes.items():
                # rclpy's hash of the generated type support == the one stored with the recording.
                assert reader.type_hash(topic) == ros_hashes[topic] == TYPESTORE.hash_rihs01(msgtype)
            received = {topic: [] for topic in sent}
            for message in reader.iter_messages(list(sent)):
                received[message.topic].append(plain(message.msg))
        assert received == sent

        player_node = rclpy.create_node("custom_player", context=context)
        sink = rclpy.create_node("custom_sink", context=context)
        replayed = []
        sink.create_subscription(msgs.FusionStatus, "/fusion/status", lambda m: replayed.append(plain(m)), RELIABLE)
        player = BagPlayer(player_node, tmp_path / "recorded", topics=["/fusion/status"], rate=20.0)
        with BackgroundExecutor(context, [player_node, sink]):
            assert player.wait_for_subscribers(10.0) == []
            player.play()
            assert wait_for(lambda: len(replayed) == 3, 10.0), replayed
        assert replayed == sent["/fusion/status"]
