"""Ground-truth labels for the offline bag evaluation: the project's JSON, YOLO txt directories, COCO JSON."""

from __future__ import annotations

import json
import math
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mex_fusion_ros.bag.detection import YOLO_TOLERANCE, LabelError, load_labels, read_labels
from mex_fusion_ros.eval.detection_metrics import PERFECT_AP, LabeledBox, ScoredBox, mean_average_precision

NAMES = ("person", "car", "bicycle")
SIZE = (640, 480)
#: stamp (ns) -> [(class name, (x0, y0, x1, y1) in pixels)]
FRAMES = {
    1_700_000_000_000_000_000: [("person", (10.0, 20.0, 50.0, 200.0)), ("car", (300.5, 100.25, 639.0, 479.0))],
    1_700_000_000_033_333_333: [("car", (0.0, 0.0, 640.0, 480.0))],
    1_700_000_000_066_666_667: [],
    1_700_000_000_100_000_000: [("bicycle", (123.0, 45.0, 124.0, 46.0)), ("person", (1.0, 2.0, 3.0, 4.0))],
}


# -------------------------------------------------------------------------------------------- writers
def write_json(path: Path, frames: dict) -> Path:
    document = {"classes": list(NAMES), "frames": {str(s): [[n, *box] for n, box in b] for s, b in frames.items()}}
    path.write_text(json.dumps(document))
    return path


def write_yolo(directory: Path, frames: dict, size: tuple[int, int], names=NAMES, names_file="classes.txt") -> Path:
    """One ``<stamp>.txt`` per frame, ``class_id cx cy w h`` as fractions, full float precision."""
    directory.mkdir(parents=True, exist_ok=True)
    width, height = size
    if names_file == "classes.txt":
        (directory / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    elif names_file == "data.yaml":
        (directory / "data.yaml").write_text(f"path: .\nnc: {len(names)}\nnames: {json.dumps(list(names))}\n")
    for stamp, boxes in frames.items():
        lines = []
        for name, (x0, y0, x1, y1) in boxes:
            cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
            w, h = (x1 - x0) / width, (y1 - y0) / height
            lines.append(f"{list(names).index(name)} {cx!r} {cy!r} {w!r} {h!r}\n")
        (directory / f"{stamp}.txt").write_text("".join(lines))
    return directory


def coco_document(frames: dict, names=NAMES, stamp_style="stamp_ns") -> dict:
    categories = [{"id": i + 1, "name": n, "supercategory": "thing"} for i, n in enumerate(names)]
    images, annotations = [], []
    for image_id, (stamp, boxes) in enumerate(frames.items(), start=7):
        image = {"id": image_id, "width": SIZE[0], "height": SIZE[1], "file_name": f"frame_{image_id}.png"}
        if stamp_style == "stamp_ns":
            image["stamp_ns"] = stamp
        elif stamp_style == "stamp":
            image["stamp"] = {"sec": stamp // 10**9, "nanosec": stamp % 10**9}
        else:
            image["file_name"] = f"images/{stamp}.png"
        images.append(image)
        for name, (x0, y0, x1, y1) in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": list(names).index(name) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    return {"info": {}, "images": images, "annotations": annotations, "categories": categories}


def write_coco(path: Path, frames: dict, names=NAMES, stamp_style="stamp_ns") -> Path:
    path.write_text(json.dumps(coco_document(frames, names, stamp_style)))
    return path


def assert_same_boxes(loaded: dict, frames: dict, tolerance: float = 1e-6) -> None:
    assert set(loaded) == set(frames)
    for stamp, boxes in frames.items():
        assert [b.label for b in loaded[stamp]] == [name for name, _ in boxes], stamp
        for got, (_, expected) in zip(loaded[stamp], boxes):
            assert got.box == pytest.approx(expected, abs=tolerance), stamp


def assert_well_formed(labels: dict) -> None:
    """What a successful load must look like, whatever the input was."""
    assert isinstance(labels, dict)
    for stamp, boxes in labels.items():
        assert isinstance(stamp, int) and stamp >= 0
        for box in boxes:
            assert isinstance(box, LabeledBox) and isinstance(box.label, str)
            assert len(box.box) == 4 and all(isinstance(v, float) and math.isfinite(v) for v in box.box)


# ------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("stamp_style", ["stamp_ns", "stamp", "file_name"])
def test_the_same_boxes_load_alike_from_all_three_formats(tmp_path, stamp_style):
    from_json = load_labels(write_json(tmp_path / "labels.json", FRAMES))
    from_yolo = load_labels(write_yolo(tmp_path / "yolo", FRAMES, SIZE), image_size=SIZE)
    from_coco = load_labels(write_coco(tmp_path / "coco.json", FRAMES, stamp_style=stamp_style))
    for loaded in (from_json, from_yolo, from_coco):
        assert_same_boxes(loaded, FRAMES)
    assert from_yolo[1_700_000_000_066_666_667] == []  # an empty txt file: a frame without objects
    assert [read_labels(p).format for p in (tmp_path / "labels.json", tmp_path / "yolo", tmp_path / "coco.json")] == [
        "json",
        "yolo",
        "coco",
    ]


def test_yolo_names_from_data_yaml_list_or_dict_or_the_ids(tmp_path):
    write_yolo(tmp_path / "list", FRAMES, SIZE, names_file="data.yaml")
    assert_same_boxes(load_labels(tmp_path / "list", SIZE), FRAMES)
    write_yolo(tmp_path / "dict", FRAMES, SIZE, names_file=None)
    (tmp_path / "dict" / "data.yaml").write_text("names:\n  0: person\n  1: car\n  2: bicycle\n")
    assert_same_boxes(load_labels(tmp_path / "dict", SIZE), FRAMES)
    write_yolo(tmp_path / "ids", FRAMES, SIZE, names_file=None)
    ids = load_labels(tmp_path / "ids", SIZE)
    assert [b.label for b in ids[1_700_000_000_000_000_000]] == ["0", "1"]
    # Both files present: they must agree.
    write_yolo(tmp_path / "both", FRAMES, SIZE)
    (tmp_path / "both" / "data.yaml").write_text("names: [person, car, bicycle]\n")
    assert_same_boxes(load_labels(tmp_path / "both", SIZE), FRAMES)
    (tmp_path / "both" / "data.yaml").write_text("names: [car, person, bicycle]\n")
    with pytest.raises(LabelError, match="name the classes differently"):
        load_labels(tmp_path / "both", SIZE)


def test_yolo_confidence_column_blank_lines_and_tolerance(tmp_path):
    directory = tmp_path / "yolo"
    directory.mkdir()
    (directory / "classes.txt").write_text("person\ncar\n\n")
    (directory / "5.txt").write_text("1 0.5 0.5 0.5 0.5 0.87\n\n0 0.25 0.75 0.5 0.5\n")
    (directory / "6.txt").write_text(f"0 0.5 0.5 {1 + YOLO_TOLERANCE / 2} 1.0\n")  # rounding just outside
    (directory / "notes.md").write_text("ignored: not a .txt file")
    labels = load_labels(directory, image_size=(200, 100))
    assert labels[5] == [LabeledBox("car", (50.0, 25.0, 150.0, 75.0)), LabeledBox("person", (0.0, 50.0, 100.0, 100.0))]
    assert labels[6][0].box == pytest.approx((-0.05, 0.0, 200.05, 100.0))


def test_yolo_needs_the_image_size(tmp_path):
    write_yolo(tmp_path / "yolo", FRAMES, SIZE)
    with pytest.raises(LabelError, match="image_size"):
        load_labels(tmp_path / "yolo")
    labels = read_labels(tmp_path / "yolo")
    assert labels.normalised
    stamp = 1_700_000_000_033_333_333
    assert labels.boxes_at(stamp, (64, 48))[0].box == pytest.approx((0.0, 0.0, 64.0, 48.0))
    assert labels.boxes_at(stamp, SIZE)[0].box == pytest.approx((0.0, 0.0, 640.0, 480.0))
    assert labels.boxes_at(12345, SIZE) == []


def test_coco_skips_crowds_and_keeps_images_without_annotations(tmp_path):
    document = coco_document(FRAMES)
    document["annotations"].append(
        {"id": 99, "image_id": 7, "category_id": 1, "bbox": [0, 0, 640, 480], "iscrowd": 1, "segmentation": {}}
    )
    (tmp_path / "coco.json").write_text(json.dumps(document))
    labels = load_labels(tmp_path / "coco.json")
    assert_same_boxes(labels, FRAMES)
    assert labels[1_700_000_000_066_666_667] == []


# -------------------------------------------------------------------------------------- bad inputs named
def _yolo_dir(tmp_path: Path, line: str, names: str | None = "person\ncar\n") -> Path:
    directory = tmp_path / "yolo"
    directory.mkdir()
    if names is not None:
        (directory / "classes.txt").write_text(names)
    (directory / "100.txt").write_text(f"0 0.5 0.5 0.1 0.1\n{line}\n")
    return directory


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("2 0.5 0.5 0.1 0.1", "class id 2 has no name"),
        ("-1 0.5 0.5 0.1 0.1", "class id must be a non-negative integer"),
        ("person 0.5 0.5 0.1 0.1", "class id must be a non-negative integer"),
        ("0 1.2 0.5 0.1 0.1", r"fractions of the image in \[0, 1\]"),
        ("0 0.98 0.5 0.1 0.1", r"fractions of the image in \[0, 1\]"),  # the box sticks out on the right
        ("0 -0.01 0.5 0.01 0.1", r"fractions of the image in \[0, 1\]"),
        ("0 0.5 0.5 0.1", "got 4 columns"),
        ("0 0.1 0.1 0.2 0.1 0.2 0.3 0.4", "got 8 columns"),  # a segmentation polygon
        ("0 0.5 nan 0.1 0.1", "cy must be a finite number"),
        ("0 0.5 0.5 0.1 0.1 high", "confidence must be a finite number"),
    ],
)
def test_bad_yolo_line_is_named(tmp_path, line, message):
    directory = _yolo_dir(tmp_path, line)
    with pytest.raises(LabelError, match=message) as caught:
        read_labels(directory)
    assert "100.txt is malformed at line 2" in str(caught.value)


def test_bad_yolo_directory_contents_are_named(tmp_path):
    with pytest.raises(LabelError, match="holds no YOLO label files"):
        read_labels(tmp_path)
    directory = _yolo_dir(tmp_path, "")
    (directory / "frame_0001.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(LabelError, match=r"frame_0001.txt is malformed: YOLO label files must be named"):
        read_labels(directory)
    (directory / "frame_0001.txt").unlink()
    (directory / "0100.txt").write_text("")
    with pytest.raises(LabelError, match="a second file for stamp 100"):
        read_labels(directory)
    (directory / "0100.txt").unlink()
    (directory / "classes.txt").write_text("person\n\ncar\n")
    with pytest.raises(LabelError, match="classes.txt is malformed at line 2: empty class name"):
        read_labels(directory)
    (directory / "classes.txt").unlink()
    for text, message in [
        ("names: [person, no]\n", r"names\[1\].*quote it"),
        ("nc: 2\n", "expected names:"),
        ("names: [person\n", "not YAML"),
        ("names: [person, 2001-13-45]\n", "not YAML"),  # an impossible date: PyYAML raises ValueError
        ("names: {-1: person}\n", "non-negative integers"),
    ]:
        (directory / "data.yaml").write_text(text)
        with pytest.raises(LabelError, match=message) as caught:
            read_labels(directory)
        assert "data.yaml" in str(caught.value)
    with pytest.raises(LabelError, match="single text file"):
        read_labels(directory / "100.txt")


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda d: d["images"][0].pop("stamp_ns"), r"images\[0\].*needs its stamp"),
        (lambda d: d["images"][0].update(stamp_ns="1700"), r"images\[0\].*stamp_ns\" must be a non-negative integer"),
        (lambda d: d["images"][1].update(stamp_ns=d["images"][0]["stamp_ns"]), "belongs to two images"),
        (lambda d: d["images"][1].update(id=7), "image id 7 given twice"),
        (lambda d: d["annotations"][1].update(category_id=42), r"annotations\[1\].*category_id 42"),
        (lambda d: d["annotations"][0].update(image_id=3), r"annotations\[0\].*image_id 3 is not among"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"annotations\[0\].*\"bbox\" must be \[x, y, w, h\]"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, -3, 4]), "width and height must be >= 0"),
        (lambda d: d["annotations"][0].update(bbox=[1, "2", 3, 4]), "bbox y must be a finite number"),
        (lambda d: d["annotations"][0].update(iscrowd="no"), "iscrowd"),
        (lambda d: d.pop("categories"), "categories"),
        (lambda d: d["categories"][0].pop("name"), r"categories\[0\].*\"name\" must be a string"),
        (lambda d: d.update(images={}), "images"),
    ],
)
def test_bad_coco_entry_is_named(tmp_path, corrupt, message):
    document = coco_document(FRAMES)
    corrupt(document)
    (tmp_path / "coco.json").write_text(json.dumps(document))
    with pytest.raises(LabelError, match=message) as caught:
        read_labels(tmp_path / "coco.json")
    assert "coco.json is malformed" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"frames": {"12": [["car", 1, 2]]}}', r"frame 12 box 0: expected \[\"class\", x0, y0, x1, y1\]"),
        ('{"frames": {"12.5": []}}', "stamp must be the header stamp in ns"),
        ('{"frames": {"12": [[3, 1, 2, 3, 4]]}}', "class must be a name"),
        ('{"frames": {"12": [["car", 5, 2, 3, 4]]}}', "x0 <= x1"),
        ('{"frames": {"12": [["car", 1, 2, 3, Infinity]]}}', "y1 must be a finite number"),
        ('{"frames": {"12": [["car", true, 2, 3, 4]]}}', "x0 must be a finite number"),
        ('{"frames": [1, 2]}', '"frames"'),
        ('{"objects": {}}', "expected"),
        ("[1, 2", "not JSON"),
        ("[" * 100_000, "JSON"),
    ],
)
def test_bad_json_labels_are_named(tmp_path, text, message):
    (tmp_path / "labels.json").write_text(text)
    with pytest.raises(LabelError, match=message) as caught:
        load_labels(tmp_path / "labels.json")
    assert "labels.json is malformed" in str(caught.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(LabelError, match="does not exist"):
        load_labels(tmp_path / "nope.json")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(LabelError, match="not UTF-8"):
        load_labels(tmp_path / "binary.json")


# ------------------------------------------------------------------------------------ property tests
@st.composite
def labelled_frames(draw):
    """An image size and frames of boxes inside it (pixel corners)."""
    width = draw(st.integers(1, 4096))
    height = draw(st.integers(1, 4096))
    finite = {"allow_nan": False, "allow_infinity": False}
    frames = {}
    for stamp in draw(st.lists(st.integers(0, 2**63), min_size=1, max_size=4, unique=True)):
        boxes = []
        for _ in range(draw(st.integers(0, 4))):
            x0, x1 = sorted(draw(st.lists(st.floats(0, width, **finite), min_size=2, max_size=2)))
            y0, y1 = sorted(draw(st.lists(st.floats(0, height, **finite), min_size=2, max_size=2)))
            boxes.append((draw(st.sampled_from(NAMES)), (x0, y0, x1, y1)))
        frames[stamp] = boxes
    return (width, height), frames


@settings(max_examples=60, deadline=None)
@given(labelled_frames(), st.sampled_from(["stamp_ns", "stamp", "file_name"]))
def test_random_boxes_round_trip_through_yolo_and_coco(case, stamp_style):
    size, frames = case
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        assert_same_boxes(load_labels(write_yolo(root / "yolo", frames, size), image_size=size), frames)
        assert_same_boxes(load_labels(write_coco(root / "coco.json", frames, stamp_style=stamp_style)), frames)
        assert_same_boxes(load_labels(write_json(root / "labels.json", frames)), frames)


def _load_or_label_error(path: Path, image_size=(32, 24)) -> None:
    """Loading must succeed with well-formed labels or raise LabelError naming the file; nothing else."""
    try:
        labels = load_labels(path, image_size=image_size)
    except LabelError as exc:
        assert str(path) in str(exc)
    else:
        assert_well_formed(labels)


KEYS = st.sampled_from(
    ["frames", "images", "annotations", "categories", "id", "name", "image_id", "category_id", "bbox", "iscrowd",
     "stamp_ns", "stamp", "sec", "nanosec", "file_name", "12", "1700000000123456789.png", "classes"]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["person", "123", "7.png", "-1", "1e400"])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(KEYS | st.text(max_size=4), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES)
def test_random_json_is_read_or_refused_with_a_label_error(document):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "labels.json"
        path.write_text(json.dumps(document))
        _load_or_label_error(path)


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.text(max_size=200).map(str.encode), st.binary(max_size=200)))
def test_random_bytes_are_read_or_refused_with_a_label_error(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "labels.json"
        path.write_bytes(data)
        _load_or_label_error(path)
        try:
            json.loads(data.decode("utf-8"))
        except ValueError:  # not UTF-8 or not JSON: always refused
            with pytest.raises(LabelError, match="labels.json is malformed"):
                load_labels(path)


YOLO_TOKENS = st.sampled_from(["0", "1", "2", "0.5", "1.0", "1e-3", "-0.2", "nan", "inf", "x", "3.0", "0.0"])
YOLO_LINES = st.lists(
    st.one_of(
        st.lists(YOLO_TOKENS, min_size=0, max_size=7).map(" ".join),
        st.text(alphabet=string.printable, max_size=40),
    ),
    max_size=6,
).map("\n".join)


@settings(max_examples=150, deadline=None)
@given(
    YOLO_LINES,
    st.one_of(st.none(), st.text(max_size=40)),
    st.one_of(
        st.none(), st.text(alphabet=string.printable, max_size=60), st.sampled_from(["names: [a, b]", "names: {0: a}"])
    ),
)
def test_random_yolo_files_are_read_or_refused_with_a_label_error(lines, classes, data_yaml):
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder) / "yolo"
        directory.mkdir()
        (directory / "1700000000000000000.txt").write_text(lines)
        if classes is not None:
            (directory / "classes.txt").write_text(classes, errors="surrogatepass")
        if data_yaml is not None:
            (directory / "data.yaml").write_text(data_yaml)
        _load_or_label_error(directory)
        try:
            labels = read_labels(directory)
        except LabelError:
            return
        for box in labels.frames[1700000000000000000]:  # accepted boxes are inside the image (within tolerance)
            assert all(-YOLO_TOLERANCE <= v <= 1 + YOLO_TOLERANCE for v in box.box)


@settings(max_examples=100, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False), st.integers(0, 3))
def test_yolo_values_outside_the_image_are_refused(value, column):
    fields = [0.5, 0.5, 0.2, 0.2]
    fields[column] = value
    cx, cy, w, h = fields
    corners = (cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2)
    inside = w >= 0 and h >= 0 and all(-YOLO_TOLERANCE <= v <= 1 + YOLO_TOLERANCE for v in (*fields, *corners))
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        (directory / "1.txt").write_text("0 " + " ".join(repr(v) for v in fields))
        if inside:
            assert len(load_labels(directory, (10, 10))[1]) == 1
        else:
            with pytest.raises(LabelError, match="1.txt is malformed at line 1"):
                load_labels(directory, (10, 10))


# ------------------------------------------------------------------------------------------ scoring
def test_detections_equal_to_yolo_labels_score_one(tmp_path):
    labels = load_labels(write_yolo(tmp_path / "yolo", FRAMES, SIZE), image_size=SIZE)
    from_json = load_labels(write_json(tmp_path / "labels.json", FRAMES))
    detections = [ScoredBox(stamp, box.label, 0.9, box.box) for stamp, boxes in from_json.items() for box in boxes]
    result = mean_average_precision(detections, labels)
    assert result["mAP50"] == pytest.approx(PERFECT_AP) and result["mAP50-95"] == pytest.approx(PERFECT_AP)
    assert set(result["per_class"]) == set(NAMES) and result["frames"] == len(FRAMES)
    # And the scoring is not blind: boxes shifted by half their size no longer match at IoU 0.5.
    shifted = [
        ScoredBox(d.frame, d.label, d.score, (d.box[0] + 0.75 * (d.box[2] - d.box[0]), *d.box[1:])) for d in detections
    ]
    assert mean_average_precision(shifted, labels)["mAP50"] < PERFECT_AP


# ------------------------------------------------------------------------------------- offline evaluation
#: Power-of-two sizes: pixel corners <-> YOLO fractions are exact, so every format gives the same
#: boxes bit for bit and the mAP summaries can be compared for equality.
EVAL_SCENE_SIZE = (128, 64)


@pytest.fixture(scope="module")
def scene_bag(tmp_path_factory):
    from mex_fusion_ros.bag.make import OBJECTS_SIDECAR, SceneSource, make_bag
    from mex_fusion_ros.bag.scene import SceneConfig

    bag = tmp_path_factory.mktemp("labels") / "bag"
    width, height = EVAL_SCENE_SIZE
    make_bag(SceneSource(SceneConfig(width=width, height=height, num_frames=16, seed=3)), ["clean"], bag,
             with_clean=False, seed=1, progress=False)
    document = json.loads((bag / OBJECTS_SIDECAR).read_text())
    frames = {int(s): [(n, tuple(float(v) for v in box)) for n, *box in b] for s, b in document["frames"].items()}
    assert sum(len(b) for b in frames.values()) >= 4, "the scene should hold objects to score"
    return bag, frames


class _EchoDetector:
    """Stands in for ``YoloDetector``: reports every labelled box of the bag on every frame, scaled
    from the RGB size to the image it is given (hits on the frame a box belongs to, false positives
    on the others), so the mAP depends on where each label lands."""

    boxes: list = []

    def __init__(self, model, device="cpu", conf=0.25) -> None:
        pass

    def detect(self, image):
        from mex_fusion_ros.nodes.yolo import Box, Detections

        scale_x, scale_y = image.shape[1] / EVAL_SCENE_SIZE[0], image.shape[0] / EVAL_SCENE_SIZE[1]
        boxes = [
            Box(0, name, score, x0 * scale_x, y0 * scale_y, x1 * scale_x, y1 * scale_y)
            for name, score, (x0, y0, x1, y1) in self.boxes
        ]
        return Detections(boxes, None, 0.0)


def _evaluate(bag, out, labels, monkeypatch, frames, node_params=None):
    from mex_fusion_ros.bag.evaluate import BagEvalSettings, evaluate_bag

    every = [(name, box) for boxes in frames.values() for name, box in boxes]
    monkeypatch.setattr(_EchoDetector, "boxes", [(n, 1.0 - i / (len(every) + 1), b) for i, (n, b) in enumerate(every)])
    monkeypatch.setattr("mex_fusion_ros.nodes.yolo.YoloDetector", _EchoDetector)
    settings = BagEvalSettings(
        bag=bag,
        methods=("average",),
        out=out,
        node_params=node_params or {},
        metrics_every=1000,
        write_video=False,
        write_bags=False,
        detector="echo",
        labels=labels,
    )
    return evaluate_bag(settings, progress=False)


def test_offline_evaluation_scores_yolo_and_coco_labels_like_the_json(scene_bag, tmp_path, monkeypatch):
    bag, frames = scene_bag
    reference = _evaluate(bag, tmp_path / "json", None, monkeypatch, frames).detection
    assert reference["labels"].endswith("scene_objects.json")
    yolo = write_yolo(tmp_path / "yolo_labels", frames, EVAL_SCENE_SIZE, names=("person", "car"))
    coco = write_coco(tmp_path / "coco.json", frames, names=("person", "car"), stamp_style="file_name")
    for labels in (yolo, coco):
        detection = _evaluate(bag, tmp_path / labels.stem, labels, monkeypatch, frames).detection
        assert detection["labels"] == str(labels)
        assert detection["map"] == reference["map"]
    fused = reference["map"]["average"]
    assert 0.0 < fused["mAP50-95"] < 1.0 and set(fused["per_class"]) == {"person", "car"}
    # YOLO fractions are converted with the fused frame's size, which output.width/height can set.
    double = {"output.width": 2 * EVAL_SCENE_SIZE[0], "output.height": 2 * EVAL_SCENE_SIZE[1]}
    scaled = _evaluate(bag, tmp_path / "double", yolo, monkeypatch, frames, node_params=double).detection
    assert scaled["map"]["average"] == fused


def test_malformed_yolo_labels_stop_the_evaluation_before_any_work(scene_bag, tmp_path, monkeypatch):
    from mex_fusion_ros.bag.evaluate import EvalSetupError

    bag, frames = scene_bag
    yolo = write_yolo(tmp_path / "yolo_labels", frames, EVAL_SCENE_SIZE, names=("person", "car"))
    stamp = min(frames)
    (yolo / f"{stamp}.txt").write_text("5 0.5 0.5 0.1 0.1\n")
    with pytest.raises(EvalSetupError, match=rf"{stamp}.txt is malformed at line 1: class id 5 has no name"):
        _evaluate(bag, tmp_path / "out", yolo, monkeypatch, frames)
    assert not any((tmp_path / "out").rglob("*.mcap"))
