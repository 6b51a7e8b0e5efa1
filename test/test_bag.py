"""rosbag2 writing and reading: bit-identical round trips (MCAP and sqlite3), ``bag make``, bad bags."""

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mex_fusion_ros import cli
from mex_fusion_ros.bag import (
    IMAGE_MSGTYPE,
    REFERENCE_RGB_TOPIC,
    REFERENCE_THERMAL_TOPIC,
    RGB_TOPIC,
    THERMAL_TOPIC,
    TIMELINE_SIDECAR,
    TIMELINE_TOPIC,
)
from mex_fusion_ros.bag.make import BagTiming, DatasetSource, SceneSource, make_bag, schedule
from mex_fusion_ros.bag.reader import BagError, BagReader
from mex_fusion_ros.bag.scene import SceneConfig
from mex_fusion_ros.bag.timeline import parse_document, parse_segment
from mex_fusion_ros.bag.writer import MAX_STAMP_NS, TYPESTORE, BagWriteError, BagWriter
from mex_fusion_ros.data.degradations import UnknownPresetError

STORAGES = ("mcap", "sqlite3")
T0 = 1_700_000_000_000_000_000


def _random_frames(rng, count=4):
    frames = []
    for i in range(count):
        frames.append((THERMAL_TOPIC, T0 + i * 111_111_111, rng.integers(0, 256, (12, 10), dtype=np.uint8), "mono8"))
        frames.append((RGB_TOPIC, T0 + i * 33_333_333 + 7, rng.integers(0, 256, (12, 10, 3), dtype=np.uint8), "rgb8"))
    frames.append(("/thermal/raw16", T0 + 5, rng.integers(0, 65536, (9, 7), dtype=np.uint16), "mono16"))
    return sorted(frames, key=lambda f: f[1])


@pytest.mark.parametrize("storage", STORAGES)
def test_round_trip_is_bit_identical_with_stamps(tmp_path, storage):
    frames = _random_frames(np.random.default_rng(0))
    with BagWriter(tmp_path / "bag", storage=storage) as writer:
        for topic, stamp, image, encoding in frames:
            writer.write_image(topic, stamp, image, encoding, frame_id=f"{topic}_frame")
    with BagReader(tmp_path / "bag") as reader:
        assert reader.storage == storage
        assert reader.topics[RGB_TOPIC].count == 4 and reader.topics[RGB_TOPIC].msgtype == IMAGE_MSGTYPE
        read = list(reader.iter_images([THERMAL_TOPIC, RGB_TOPIC, "/thermal/raw16"]))
        assert not reader.problems
    assert len(read) == len(frames)
    for (topic, stamp, image, encoding), message in zip(frames, read):
        assert (message.topic, message.stamp_ns, message.log_time_ns, message.encoding) == (
            topic,
            stamp,
            stamp,
            encoding,
        )
        assert message.frame_id == f"{topic}_frame"
        assert message.image.dtype == image.dtype
        np.testing.assert_array_equal(message.image, image)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    encoding=st.sampled_from(["mono8", "mono16", "rgb8", "bgr8"]),
    stamp=st.integers(0, MAX_STAMP_NS - 1),
    storage=st.sampled_from(STORAGES),
    seed=st.integers(0, 2**16),
)
def test_any_image_survives_a_round_trip(height, width, encoding, stamp, storage, seed):
    rng = np.random.default_rng(seed)
    dtype = np.uint16 if encoding == "mono16" else np.uint8
    shape = (height, width) if encoding.startswith("mono") else (height, width, 3)
    image = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    with tempfile.TemporaryDirectory() as folder:
        with BagWriter(Path(folder) / "bag", storage=storage) as writer:
            writer.write_image("/cam", stamp, image, encoding)
        with BagReader(Path(folder) / "bag") as reader:
            (message,) = reader.iter_images(["/cam"])
    assert message.stamp_ns == stamp and message.log_time_ns == stamp
    # The reader hands colour frames on in RGB order, as the nodes do.
    expected = image[:, :, ::-1] if encoding == "bgr8" else image
    np.testing.assert_array_equal(message.image, expected)


def test_writer_refuses_an_existing_path_an_unknown_storage_and_a_second_type(tmp_path):
    (tmp_path / "exists").mkdir()
    with pytest.raises(BagWriteError, match="already exists"):
        BagWriter(tmp_path / "exists")
    with pytest.raises(BagWriteError, match="unknown bag storage 'rosbag1'"):
        BagWriter(tmp_path / "x", storage="rosbag1")
    with BagWriter(tmp_path / "bag") as writer:
        with pytest.raises(BagWriteError, match="int32"):
            writer.write_image("/cam", MAX_STAMP_NS, np.zeros((2, 2), np.uint8), "mono8")
        writer.write_string("/t", T0, "hello")
        with pytest.raises(BagWriteError, match="already holds std_msgs/msg/String"):
            writer.write_image("/t", T0, np.zeros((2, 2), np.uint8), "mono8")


# ------------------------------------------------------------------------------------ bag make
TINY_SCENE = SceneConfig(width=64, height=48, num_frames=20, seed=1)


@pytest.fixture(scope="module")
def scene_bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("make") / "scene_bag"
    timing = BagTiming(fps_thermal=9.0, fps_rgb=30.0, jitter_ms=1.0, offset_ms=4.0)
    summary = make_bag(
        SceneSource(TINY_SCENE),
        ["clean", "haze"],
        path,
        timing=timing,
        with_clean=True,
        seed=5,
        progress=False,
    )
    return path, summary, timing


def test_make_bag_writes_both_cameras_at_their_rates_with_references(scene_bag):
    path, summary, timing = scene_bag
    expected_thermal = int(19 / 30 * 9) + 1
    assert (summary.rgb_frames, summary.thermal_frames) == (20, expected_thermal)
    with BagReader(path) as reader:
        topics = reader.topics
        assert topics[RGB_TOPIC].count == topics[REFERENCE_RGB_TOPIC].count == 20
        assert topics[THERMAL_TOPIC].count == topics[REFERENCE_THERMAL_TOPIC].count == expected_thermal
        messages = list(reader.iter_images([THERMAL_TOPIC, RGB_TOPIC, REFERENCE_THERMAL_TOPIC, REFERENCE_RGB_TOPIC]))
        assert not reader.problems  # stamps increase on every topic despite the jitter
    by_topic = {t: [m for m in messages if m.topic == t] for t in topics if t != TIMELINE_TOPIC}
    rgb_stamps = np.array([m.stamp_ns for m in by_topic[RGB_TOPIC]])
    thermal_stamps = np.array([m.stamp_ns for m in by_topic[THERMAL_TOPIC]])
    # Nominal capture times + offset, within a few jitter standard deviations.
    rgb_nominal = rgb_stamps[0] + np.round(np.arange(20) * 1e9 / 30)
    assert np.abs(rgb_stamps - rgb_nominal).max() < 8e6
    thermal_error = thermal_stamps - (rgb_nominal[0] + np.round(np.arange(expected_thermal) * 1e9 / 9))
    assert 1e6 < thermal_error.mean() < 7e6  # the 4 ms offset shows
    assert [m.stamp_ns for m in by_topic[REFERENCE_RGB_TOPIC]] == list(rgb_stamps)
    assert [m.stamp_ns for m in by_topic[REFERENCE_THERMAL_TOPIC]] == list(thermal_stamps)
    # Clean segment: degraded == reference, bit for bit; haze segment: the RGB differs.
    clean_rgb, clean_ref = by_topic[RGB_TOPIC][0].image, by_topic[REFERENCE_RGB_TOPIC][0].image
    np.testing.assert_array_equal(clean_rgb, clean_ref)
    assert not np.array_equal(by_topic[RGB_TOPIC][-1].image, by_topic[REFERENCE_RGB_TOPIC][-1].image)
    assert by_topic[THERMAL_TOPIC][0].encoding == "mono8" and by_topic[RGB_TOPIC][0].encoding == "rgb8"


def test_make_bag_stores_the_timeline_as_sidecar_and_topic(scene_bag):
    path, summary, _ = scene_bag
    segments = parse_document(json.loads((path / TIMELINE_SIDECAR).read_text()), "sidecar")
    assert [s.preset for s in segments] == ["clean", "haze"]
    assert (segments[0].start_frame, segments[0].end_frame, segments[1].end_frame) == (0, 10, 20)
    assert segments[0].end_ns == segments[1].start_ns
    assert segments[1].severity["vi_haze"] > 0 and segments[0].severity["vi_haze"] == 0
    with BagReader(path) as reader:
        from_topic = [parse_segment(m.data, "topic") for m in reader.iter_strings(TIMELINE_TOPIC)]
        rgb = [m.stamp_ns for m in reader.iter_images([RGB_TOPIC])]
    assert from_topic == segments
    assert segments[1].start_ns == rgb[10]


def test_make_bag_is_deterministic_and_writes_sqlite3_and_mono16(tmp_path):
    timing = BagTiming(jitter_ms=2.0)
    config = SceneConfig(width=64, height=48, num_frames=8, seed=2)
    for name in ("a", "b"):
        make_bag(
            SceneSource(config),
            ["stripe"],
            tmp_path / name,
            timing=timing,
            storage="sqlite3",
            thermal_encoding="mono16",
            seed=9,
            progress=False,
        )
    with BagReader(tmp_path / "a") as first, BagReader(tmp_path / "b") as second:
        assert first.storage == "sqlite3"
        a = list(first.iter_images([THERMAL_TOPIC, RGB_TOPIC]))
        b = list(second.iter_images([THERMAL_TOPIC, RGB_TOPIC]))
    assert [m.stamp_ns for m in a] == [m.stamp_ns for m in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.image, y.image)
    thermal = [m for m in a if m.topic == THERMAL_TOPIC]
    assert thermal[0].encoding == "mono16" and thermal[0].image.dtype == np.uint16
    assert thermal[0].image.min() >= 8000  # raw counts, not display values


def test_schedule_pairs_each_thermal_frame_with_the_nearest_rgb_frame():
    events = schedule(31, BagTiming(fps_thermal=10.0, fps_rgb=30.0, jitter_ms=0.0), seed=0)
    thermal = [e for e in events if e[1] == "thermal"]
    assert [e[3] for e in thermal] == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
    assert [e[0] for e in events] == sorted(e[0] for e in events)


def test_make_bag_refuses_bad_presets_and_jitter(tmp_path):
    with pytest.raises(UnknownPresetError, match="no_such_preset"):
        make_bag(SceneSource(TINY_SCENE), ["clean", "no_such_preset"], tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="jitter_ms"):
        BagTiming(jitter_ms=10.0)


@pytest.mark.data
def test_make_bag_from_real_pairs(roadscene, tmp_path):
    source = DatasetSource(roadscene / "val", (64, 48), hold=4, limit=2)
    summary = make_bag(source, ["noise25"], tmp_path / "real", progress=False)
    assert summary.rgb_frames == 8
    with BagReader(tmp_path / "real") as reader:
        frames = list(reader.iter_images([RGB_TOPIC]))
    assert frames[0].image.shape == (48, 64, 3)


def test_cli_bag_make_and_info(tmp_path, capsys):
    bag = tmp_path / "cli_bag"
    assert (
        cli.main(
            [
                "bag",
                "make",
                "--out",
                str(bag),
                "--frames",
                "6",
                "--size",
                "64",
                "48",
                "--preset",
                "clean",
                "--storage",
                "sqlite3",
            ]
        )
        == 0
    )
    assert cli.main(["bag", "info", str(bag)]) == 0
    out = capsys.readouterr().out
    assert "sqlite3" in out and THERMAL_TOPIC in out and "degradation timeline" in out
    assert cli.main(["bag", "info", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ bad bags
def _cut(bag: Path, keep: float) -> None:
    (storage_file,) = [p for p in bag.iterdir() if p.suffix in (".mcap", ".db3")]
    storage_file.write_bytes(storage_file.read_bytes()[: int(storage_file.stat().st_size * keep)])


def test_truncated_mcap_is_read_up_to_the_cut(tmp_path, caplog):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (200, 200, 3), dtype=np.uint8) for _ in range(30)]  # ~1 MiB chunks
    with BagWriter(tmp_path / "bag") as writer:
        for number, image in enumerate(images):
            writer.write_image(RGB_TOPIC, T0 + number, image, "rgb8")
    _cut(tmp_path / "bag", 0.6)
    (tmp_path / "bag" / "metadata.yaml").unlink()  # a crashed recorder writes none either
    with caplog.at_level(logging.WARNING), BagReader(tmp_path / "bag") as reader:
        assert reader.salvaged is not None and "truncated" in reader.salvaged
        read = list(reader.iter_images([RGB_TOPIC]))
        assert reader.topics[RGB_TOPIC].count == len(read)
    assert 0 < len(read) < 30
    for message in read:  # every message before the cut is intact
        np.testing.assert_array_equal(message.image, images[message.stamp_ns - T0])
    assert "truncated" in caplog.text


@pytest.mark.parametrize("storage", STORAGES)
def test_bag_cut_before_its_first_intact_message_is_a_clear_error(tmp_path, storage):
    bag = tmp_path / "bag"
    make_bag(SceneSource(TINY_SCENE), ["clean"], bag, storage=storage, progress=False)
    _cut(bag, 0.5)  # a tiny bag is one MCAP chunk: nothing survives; sqlite3 pages are lost
    with pytest.raises(BagError, match="truncated"), BagReader(bag) as reader:
        list(reader.iter_images([THERMAL_TOPIC, RGB_TOPIC]))


def test_not_a_bag_and_missing_bag(tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        BagReader(tmp_path / "nothing")
    (tmp_path / "folder").mkdir()
    with pytest.raises(BagError, match="not a readable rosbag2 bag"):
        BagReader(tmp_path / "folder")


def test_missing_topic_wrong_type_and_empty_topic_are_named(scene_bag, tmp_path):
    path, _, _ = scene_bag
    with BagReader(path) as reader:
        with pytest.raises(BagError, match=r"topic /nope not in bag .*it has: .*/rgb/image_raw"):
            list(reader.iter_images(["/nope"]))
        with pytest.raises(BagError, match="holds std_msgs/msg/String, expected sensor_msgs/msg/Image"):
            list(reader.iter_images([TIMELINE_TOPIC]))
    with BagWriter(tmp_path / "empty") as writer:
        writer.write_image(RGB_TOPIC, T0, np.zeros((4, 4, 3), np.uint8), "rgb8")
        writer.connection(THERMAL_TOPIC, IMAGE_MSGTYPE)  # registered, never written
    with (
        BagReader(tmp_path / "empty") as reader,
        pytest.raises(BagError, match=f"{THERMAL_TOPIC} .* has no messages"),
    ):
        reader.check_topic(THERMAL_TOPIC)


def test_stamps_out_of_order_warn_and_continue(tmp_path, caplog):
    stamps = [T0 + 3, T0 + 1, T0 + 2, T0 + 5]
    with BagWriter(tmp_path / "bag") as writer:
        for number, stamp in enumerate(stamps):
            writer.write_image(RGB_TOPIC, stamp, np.full((2, 2, 3), number, np.uint8), "rgb8", log_time_ns=T0 + number)
    with caplog.at_level(logging.WARNING), BagReader(tmp_path / "bag") as reader:
        read = list(reader.iter_images([RGB_TOPIC]))
        assert reader.problems == {f"stamps out of order on {RGB_TOPIC}": 2}
    assert [m.stamp_ns for m in read] == stamps
    assert "header stamps go backwards" in caplog.text


def test_undecodable_message_is_counted_and_skipped(tmp_path):
    image_type, header_type = TYPESTORE.types[IMAGE_MSGTYPE], TYPESTORE.types["std_msgs/msg/Header"]
    time_type = TYPESTORE.types["builtin_interfaces/msg/Time"]
    bad = image_type(
        header=header_type(stamp=time_type(sec=1, nanosec=0), frame_id=""),
        height=4,
        width=4,
        encoding="rgb8",
        is_bigendian=0,
        step=12,
        data=np.zeros(10, np.uint8),
    )  # 48 bytes needed
    with BagWriter(tmp_path / "bag") as writer:
        writer.write_image(RGB_TOPIC, 500_000_000, np.zeros((4, 4, 3), np.uint8), "rgb8")
        writer.write_raw(RGB_TOPIC, IMAGE_MSGTYPE, 1_000_000_000, TYPESTORE.serialize_cdr(bad, IMAGE_MSGTYPE))
        writer.write_image(RGB_TOPIC, 2_000_000_000, np.ones((4, 4, 3), np.uint8), "rgb8")
    with BagReader(tmp_path / "bag") as reader:
        read = list(reader.iter_images([RGB_TOPIC]))
        assert reader.problems == {f"undecodable message on {RGB_TOPIC}": 1}
    assert [m.stamp_ns for m in read] == [500_000_000, 2_000_000_000]


# ------------------------------------------------------------------------------------ live (rclpy over DDS)
@pytest.mark.ros
def test_play_and_record_over_dds_keep_frames_and_stamps(scene_bag, tmp_path):
    import threading
    import time

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from mex_fusion_ros.bag.live import BagPlayer, BagRecorder

    source, summary, _ = scene_bag
    topics = [THERMAL_TOPIC, RGB_TOPIC]
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    done = threading.Event()

    def spin() -> None:
        while not done.is_set():
            executor.spin_once(timeout_sec=0.05)

    try:
        player_node = rclpy.create_node("test_bag_player", context=context)
        recorder_node = rclpy.create_node("test_bag_recorder", context=context)
        player = BagPlayer(player_node, source, topics=topics, rate=4.0, clock=True)
        recorder = BagRecorder(recorder_node, tmp_path / "recorded", [*topics, "/clock"])
        recorder.subscribe(
            timeout=10.0,
            msgtypes={
                "/clock": "rosgraph_msgs/msg/Clock",
                RGB_TOPIC: IMAGE_MSGTYPE,
                THERMAL_TOPIC: IMAGE_MSGTYPE,
            },
        )
        executor.add_node(recorder_node)
        spinner = threading.Thread(target=spin, daemon=True)
        spinner.start()
        assert player.wait_for_subscribers(10.0) == []
        stats = player.play()
        deadline = time.monotonic() + 10.0  # reliable QoS: everything arrives, give it a bounded moment
        while recorder.counts[RGB_TOPIC] < summary.rgb_frames and time.monotonic() < deadline:
            time.sleep(0.05)
        done.set()
        spinner.join(timeout=5.0)
        recorder.close()
    finally:
        done.set()
        executor.shutdown()
        rclpy.try_shutdown(context=context)
    assert stats.published == {THERMAL_TOPIC: summary.thermal_frames, RGB_TOPIC: summary.rgb_frames}
    recorded_span = 19 / 30 / 4
    assert 0.9 * recorded_span < stats.wall_s < recorded_span + 5.0  # 4x the recorded pace
    assert recorder.counts[THERMAL_TOPIC] == summary.thermal_frames and recorder.counts["/clock"] > 0
    with BagReader(source) as original, BagReader(tmp_path / "recorded") as recorded:
        expected = {(m.topic, m.stamp_ns): m.image for m in original.iter_images(topics)}
        received = list(recorded.iter_images(topics))
        clocks = [
            TYPESTORE.deserialize_cdr(raw, "rosgraph_msgs/msg/Clock").clock
            for _, _, _, raw in recorded.iter_raw(["/clock"])
        ]
    assert len(received) == len(expected)
    for message in received:  # bit-identical frames with their original header stamps
        np.testing.assert_array_equal(message.image, expected[(message.topic, message.stamp_ns)])
    last_clock = clocks[-1].sec * 10**9 + clocks[-1].nanosec
    assert abs(last_clock - max(stamp for _, stamp in expected)) < 50_000_000  # /clock carries bag time
