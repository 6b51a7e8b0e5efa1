"""Damaged bags: every readable message before and after the damage is read, the rest is counted.

Each variant is built here from an intact bag, as storage damage makes it: bytes flipped inside a
chunk, a chunk's length or size fields garbled, a message's CDR length garbled, a message on a
channel no record defines, the summary's chunk index garbled, the file cut off, a broken
``metadata.yaml``, a damaged sqlite3 page. Before, two of them ended in a traceback, one stopped
the read at the damage, one dropped a message silently, flipped pixels were decoded as if intact
(``bag make`` wrote no chunk CRCs), and a bag with all its data but a broken ``metadata.yaml`` was
called "truncated". The fuzz test mutates a small valid MCAP file at random and allows nothing but
``BagError``, and never a message that is not one of the bag's own.
"""

from __future__ import annotations

import shutil
import struct
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mex_fusion_ros import cli
from mex_fusion_ros.bag import RGB_TOPIC, THERMAL_TOPIC
from mex_fusion_ros.bag.evaluate import BagEvalSettings, evaluate_bag
from mex_fusion_ros.bag.make import SceneSource, make_bag
from mex_fusion_ros.bag.reader import BagError, BagReader
from mex_fusion_ros.bag.report import write_report
from mex_fusion_ros.bag.scene import SceneConfig
from mex_fusion_ros.bag.writer import BagWriter

CAMERAS = [THERMAL_TOPIC, RGB_TOPIC]
T0 = 1_700_000_000_000_000_000


# ------------------------------------------------------------------------------ MCAP, by hand
def records(data: bytes, start: int = 8, end: int | None = None) -> list[tuple[int, int, int]]:
    """``(opcode, offset, length)`` of the records in ``data[start:end]`` (a plain walk, for the tests)."""
    end = len(data) if end is None else end
    out, offset = [], start
    while offset + 9 <= end:
        opcode, (length,) = data[offset], struct.unpack_from("<Q", data, offset + 1)
        out.append((opcode, offset, length))
        offset += 9 + length
    return out


def chunk_layout(data: bytes, chunk: int) -> tuple[int, int, int]:
    """``(chunk record offset, records start, records length)`` of an uncompressed chunk."""
    name_length = struct.unpack_from("<I", data, chunk + 9 + 28)[0]
    size_at = chunk + 9 + 28 + 4 + name_length
    return chunk, size_at + 8, struct.unpack_from("<Q", data, size_at)[0]


def messages_in(data: bytes, chunk: int) -> list[int]:
    """Offsets of the Message records inside an uncompressed chunk."""
    _, start, length = chunk_layout(data, chunk)
    return [offset for opcode, offset, _ in records(data, start, start + length) if opcode == 0x05]


def refresh_crc(data: bytearray, chunk: int) -> None:
    """Recompute a chunk's CRC: damage that happened before the writer stored it."""
    _, start, length = chunk_layout(data, chunk)
    struct.pack_into("<I", data, chunk + 9 + 24, zlib.crc32(data[start : start + length]))


@pytest.fixture(scope="module")
def intact_bag(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A multi-chunk MCAP bag (15 pairs) and, per topic, the (log time, CDR) of every message."""
    bag = tmp_path_factory.mktemp("damage") / "intact"
    make_bag(SceneSource(SceneConfig(width=160, height=128, num_frames=48, seed=0)), ["clean"], bag,
             with_clean=True, progress=False)
    with BagReader(bag) as reader:
        originals = {(topic, log_time, bytes(raw)) for topic, _, log_time, raw in reader.iter_raw()}
    return bag, {"messages": originals}


def damaged_copy(intact_bag, tmp_path: Path, damage) -> tuple[Path, bytes, list[tuple[int, int, int]]]:
    """A copy of the intact bag whose .mcap ``damage(data, chunks)`` changed; returns it and the original."""
    source, _ = intact_bag
    bag = tmp_path / "bag"
    shutil.copytree(source, bag)
    (mcap,) = bag.glob("*.mcap")
    original = mcap.read_bytes()
    data = bytearray(original)
    chunks = [offset for opcode, offset, _ in records(original) if opcode == 0x06]
    damage(data, chunks)
    mcap.write_bytes(bytes(data))
    return bag, original, records(original)


def read_cameras(bag: Path) -> tuple[Counter, BagReader]:
    with BagReader(bag) as reader:
        counts = Counter(message.topic for message in reader.iter_images(CAMERAS))
    return counts, reader


def expected_counts(intact_bag) -> Counter:
    return Counter(topic for topic, _, _ in intact_bag[1]["messages"] if topic in CAMERAS)


# ------------------------------------------------------------------------------ writing
def test_bag_make_writes_chunk_crcs(intact_bag):
    bag, _ = intact_bag
    (mcap,) = bag.glob("*.mcap")
    data = mcap.read_bytes()
    chunks = [offset for opcode, offset, _ in records(data) if opcode == 0x06]
    assert len(chunks) >= 4
    for chunk in chunks:
        _, start, length = chunk_layout(data, chunk)
        stored = struct.unpack_from("<I", data, chunk + 9 + 24)[0]
        assert stored == zlib.crc32(data[start : start + length]) != 0


# ------------------------------------------------------------------------------ MCAP damage
def _camera_messages_of_chunk(intact_bag, original: bytes, chunk: int) -> Counter:
    """Camera messages per topic stored in one chunk of the intact file."""
    from mex_fusion_ros.bag.mcap_salvage import McapFile

    (mcap,) = intact_bag[0].glob("*.mcap")
    with McapFile(mcap) as intact:
        topics = {channel: topic for channel, (topic, _) in intact.channels.items()}
    counts = Counter(topics[struct.unpack_from("<H", original, offset + 9)[0]]
                     for offset in messages_in(original, chunk))
    return Counter({topic: n for topic, n in counts.items() if topic in CAMERAS})


@pytest.mark.parametrize("damage", ["flipped_pixels", "garbled_message_length", "garbled_chunk_length",
                                    "garbled_uncompressed_size", "zeroed_chunk_start"])
def test_a_damaged_chunk_costs_its_own_messages_only(intact_bag, tmp_path, damage):
    def mutate(data: bytearray, chunks: list[int]) -> None:
        third = chunks[2]
        first_message = messages_in(bytes(data), third)[1]
        if damage == "flipped_pixels":
            for offset in range(first_message + 400, first_message + 460):
                data[offset] ^= 0x5A
        elif damage == "garbled_message_length":
            struct.pack_into("<Q", data, first_message + 1, 2**40)
        elif damage == "garbled_chunk_length":
            struct.pack_into("<Q", data, third + 1, 2**62)
        elif damage == "garbled_uncompressed_size":
            struct.pack_into("<Q", data, third + 9 + 16, 12345)
        else:
            data[third : third + 200] = bytes(200)

    bag, original, _ = damaged_copy(intact_bag, tmp_path, mutate)
    chunks = [offset for opcode, offset, _ in records(original) if opcode == 0x06]
    lost = _camera_messages_of_chunk(intact_bag, original, chunks[2])
    assert sum(lost.values()) > 0
    counts, reader = read_cameras(bag)
    expected = expected_counts(intact_bag)
    # Every message outside the damaged chunk, before and after it, is read; its own are counted.
    assert counts == expected - lost
    assert reader.salvaged is not None and "damaged" in reader.salvaged and "truncated" not in reader.salvaged
    for topic, n in lost.items():
        assert reader.problems[f"messages lost on {topic} (damaged storage)"] == n
    with BagReader(bag) as again:  # nothing read is other than the bag's own messages
        for topic, _, log_time, raw in again.iter_raw():
            assert (topic, log_time, bytes(raw)) in intact_bag[1]["messages"]


def test_a_message_whose_cdr_is_garbled_is_counted_and_the_rest_read(intact_bag, tmp_path):
    def mutate(data: bytearray, chunks: list[int]) -> None:
        message = messages_in(bytes(data), chunks[2])[1]
        # The header's frame_id length (CDR offset 12 after the 4-byte encapsulation header).
        struct.pack_into("<I", data, message + 9 + 22 + 4 + 8, 0x7FFFFFFF)
        refresh_crc(data, chunks[2])  # garbled before the writer computed the CRC

    bag, _, _ = damaged_copy(intact_bag, tmp_path, mutate)
    counts, reader = read_cameras(bag)
    assert sum(counts.values()) == sum(expected_counts(intact_bag).values()) - 1
    assert sum(n for key, n in reader.problems.items() if key.startswith("undecodable message")) == 1


def test_a_message_on_an_undefined_channel_is_counted_not_dropped_silently(intact_bag, tmp_path):
    def mutate(data: bytearray, chunks: list[int]) -> None:
        message = messages_in(bytes(data), chunks[2])[1]
        struct.pack_into("<H", data, message + 9, 99)
        refresh_crc(data, chunks[2])

    bag, _, _ = damaged_copy(intact_bag, tmp_path, mutate)
    counts, reader = read_cameras(bag)
    assert sum(counts.values()) == sum(expected_counts(intact_bag).values()) - 1
    assert "channel 99, which no Channel record defines" in reader.salvaged
    assert sum(n for key, n in reader.problems.items() if key.startswith("messages lost")) == 1


def test_a_garbled_chunk_index_in_the_summary_does_not_matter(intact_bag, tmp_path):
    def mutate(data: bytearray, chunks: list[int]) -> None:
        index = [offset for opcode, offset, _ in records(bytes(data)) if opcode == 0x08][2]
        struct.pack_into("<Q", data, index + 9 + 16, 2**63 + 5)  # its chunk_start_offset

    bag, _, _ = damaged_copy(intact_bag, tmp_path, mutate)
    counts, reader = read_cameras(bag)
    assert counts == expected_counts(intact_bag) and not reader.problems


def test_a_cut_off_bag_is_read_to_the_cut_and_the_loss_counted(intact_bag, tmp_path):
    def mutate(data: bytearray, chunks: list[int]) -> None:
        del data[chunks[2] + 5000 :]

    bag, _, _ = damaged_copy(intact_bag, tmp_path, mutate)
    counts, reader = read_cameras(bag)
    expected = expected_counts(intact_bag)
    assert 0 < sum(counts.values()) < sum(expected.values())
    assert "truncated" in reader.salvaged and "before the cut" in reader.salvaged
    # metadata.yaml is whole: it says how many were lost
    assert reader.lost_messages()[RGB_TOPIC] == expected[RGB_TOPIC] - counts[RGB_TOPIC]


@pytest.mark.parametrize("metadata", ["cut in half", "not yaml", "deleted"])
def test_broken_metadata_is_named_and_the_data_read_from_the_storage(intact_bag, tmp_path, metadata):
    bag, _, _ = damaged_copy(intact_bag, tmp_path, lambda data, chunks: None)
    path = bag / "metadata.yaml"
    if metadata == "cut in half":
        path.write_text(path.read_text()[: len(path.read_text()) // 2])
    elif metadata == "not yaml":
        path.write_bytes(b"rosbag2_bagfile_information: [\x01\x02")
    else:
        path.unlink()
    counts, reader = read_cameras(bag)
    assert counts == expected_counts(intact_bag)
    problem = reader.salvaged
    assert "metadata.yaml" in problem and "truncated" not in problem and "shows no damage" in problem
    if metadata != "cut in half":
        return
    outcome = evaluate_bag(BagEvalSettings(bag=bag, methods=("laplacian",), out=tmp_path / "eval",
                                           write_video=False, write_bags=False), progress=False)
    assert outcome.pairs_processed == 15  # as many as from the intact bag
    html = write_report(outcome, tmp_path / "eval")["html"].read_text()
    assert "ended early" not in html and "metadata.yaml" in html


def test_bag_eval_reads_past_a_damaged_chunk(intact_bag, tmp_path, capsys):
    def mutate(data: bytearray, chunks: list[int]) -> None:
        struct.pack_into("<Q", data, messages_in(bytes(data), chunks[2])[1] + 1, 2**40)

    bag, _, _ = damaged_copy(intact_bag, tmp_path, mutate)
    assert cli.main(["bag", "eval", str(bag), "--out", str(tmp_path / "eval"), "--no-video", "--no-bags"]) == 0
    out = capsys.readouterr().out
    pairs = int(out.split(" pairs processed")[0].split()[-1])
    assert 12 <= pairs < 15  # of 15 from the intact bag; before: 5 (the read stopped at the damage)
    assert "Bag problem:" in out and "fails its CRC check" in out and "ended early" not in out


def test_bag_info_check_reports_damage(intact_bag, tmp_path, capsys):
    def mutate(data: bytearray, chunks: list[int]) -> None:
        data[messages_in(bytes(data), chunks[1])[0] + 500] ^= 1

    bag, _, _ = damaged_copy(intact_bag, tmp_path, mutate)
    assert cli.main(["bag", "info", str(bag), "--check"]) == 0
    assert "fails its CRC check" in capsys.readouterr().out


# ------------------------------------------------------------------------------ sqlite3
@pytest.fixture(scope="module")
def sqlite_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bag = tmp_path_factory.mktemp("damage_sqlite") / "intact"
    make_bag(SceneSource(SceneConfig(width=160, height=128, num_frames=48, seed=0)), ["clean"], bag,
             storage="sqlite3", with_clean=True, progress=False)
    return bag


def test_a_damaged_sqlite_page_costs_its_rows_only(sqlite_bag, tmp_path):
    bag = tmp_path / "bag"
    shutil.copytree(sqlite_bag, bag)
    (db,) = bag.glob("*.db3")
    data = bytearray(db.read_bytes())
    middle = (len(data) // 4096 // 2) * 4096
    data[middle : middle + 4096] = b"\xff" * 4096  # one page of the messages table
    db.write_bytes(bytes(data))
    with BagReader(bag) as reader:
        read = sum(1 for _ in reader.iter_raw())
        total = reader.message_count
    assert total - 3 <= read < total  # before: the read stopped at the damaged page
    assert "damaged page" in reader.salvaged


def test_sqlite_bag_with_broken_metadata_is_read_from_the_database(sqlite_bag, tmp_path):
    bag = tmp_path / "bag"
    shutil.copytree(sqlite_bag, bag)
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information:\n  version: 9\n")
    counts, reader = read_cameras(bag)
    assert counts[THERMAL_TOPIC] == 15 and counts[RGB_TOPIC] == 48
    assert "broken metadata.yaml (missing storage_identifier" in reader.salvaged


# ------------------------------------------------------------------------------ fuzz
@pytest.fixture(scope="module")
def small_mcap(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, set]:
    """A small valid MCAP file of three chunks (rosbags closes a chunk past 1 MiB)."""
    rng = np.random.default_rng(7)
    bag = tmp_path_factory.mktemp("fuzz") / "bag"
    with BagWriter(bag) as writer:
        for number in range(12):
            image = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
            writer.write_image(RGB_TOPIC, T0 + number * 1000, image, "rgb8")
            writer.write_image(THERMAL_TOPIC, T0 + number * 1000 + 1, image[:40, :40, 0], "mono8")
    (mcap,) = bag.glob("*.mcap")
    with BagReader(mcap) as reader:
        originals = {(topic, log_time, bytes(raw)) for topic, _, log_time, raw in reader.iter_raw()}
    return mcap.read_bytes(), originals


def _edits(data: bytes) -> st.SearchStrategy[list]:
    """Flips near record boundaries and anywhere, overwritten, inserted and deleted bytes, cuts."""
    boundaries = [offset for _, offset, _ in records(data)]
    position = st.one_of(st.integers(0, len(data) - 1),
                         st.builds(lambda base, delta: min(max(base + delta, 0), len(data) - 1),
                                   st.sampled_from(boundaries), st.integers(-4, 60)))
    edit = st.one_of(
        st.tuples(st.just("flip"), position, st.integers(1, 255)),
        st.tuples(st.just("set"), position, st.binary(min_size=1, max_size=8)),
        st.tuples(st.just("insert"), position, st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("delete"), position, st.integers(1, 64)),
        st.tuples(st.just("cut"), position, st.just(0)),
    )
    return st.lists(edit, min_size=1, max_size=4)


def _apply(data: bytes, edits: list) -> bytes:
    out = bytearray(data)
    for kind, at, value in edits:
        at = min(at, max(len(out) - 1, 0))
        if kind == "flip" and out:
            out[at] ^= value
        elif kind == "set":
            out[at : at + len(value)] = value
        elif kind == "insert":
            out[at:at] = value
        elif kind == "delete":
            del out[at : at + value]
        else:
            del out[at:]
    return bytes(out)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_mutated_mcap_raises_only_bag_errors_and_reads_only_its_own_messages(small_mcap, tmp_path, data):
    original, messages = small_mcap
    edits = data.draw(_edits(original), label="edits")
    path = tmp_path / "fuzz.mcap"
    path.write_bytes(_apply(original, edits))
    try:
        with BagReader(path) as reader:
            read = [(topic, log_time, bytes(raw)) for topic, _, log_time, raw in reader.iter_raw()]
            reader.info()
            if all(topic in reader.topics for topic in CAMERAS):
                list(reader.iter_images(CAMERAS))
            summary = reader.salvaged
    except BagError:
        return
    # The CRCs see to it that nothing but the bag's own messages comes out of a damaged file.
    assert all(message in messages for message in read)
    if len(read) < len(messages):
        assert summary is not None  # what was lost is said


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunk=st.integers(0, 2), at=st.floats(0.0, 1.0), flip=st.integers(1, 255))
def test_fuzz_one_flip_in_a_chunk_loses_that_chunk_only(small_mcap, tmp_path, chunk, at, flip):
    original, messages = small_mcap
    chunks = [offset for opcode, offset, _ in records(original) if opcode == 0x06]
    _, start, length = chunk_layout(original, chunks[chunk])
    data = bytearray(original)
    data[start + int(at * (length - 1))] ^= flip
    path = tmp_path / "flip.mcap"
    path.write_bytes(bytes(data))
    first, last = struct.unpack_from("<QQ", original, chunks[chunk] + 9)
    with BagReader(path) as reader:
        read = {(topic, log_time, bytes(raw)) for topic, _, log_time, raw in reader.iter_raw()}
        assert "fails its CRC check" in reader.salvaged
    assert read == {m for m in messages if not first <= m[1] <= last}
