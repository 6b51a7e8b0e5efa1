"""``mex-fusion detect``: labelled paired datasets, detect eval, detect train, the demo-scene detector."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mex_fusion_ros import cli
from mex_fusion_ros.bag.scene import SCENE_CLASSES, DemoScene, SceneConfig
from mex_fusion_ros.detect.dataset import DetectDatasetError, load_labelled_dataset
from mex_fusion_ros.detect.scene_dataset import frame_indices, write_scene_dataset

REPO = Path(__file__).resolve().parents[1]
DEMO_DETECTOR = REPO / "weights" / "demo_scene_yolo.pt"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("YOLO_OFFLINE", "1")


def tiny_dataset(root: Path, names=("a", "b"), size=(40, 32)) -> Path:
    """Two grey 40x32 pairs with one labelled car each; classes.txt = person, car."""
    for folder in ("ir", "vi", "labels"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name in names:
        cv2.imwrite(str(root / "ir" / f"{name}.png"), np.full(size[::-1], 80, np.uint8))
        cv2.imwrite(str(root / "vi" / f"{name}.png"), np.full((*size[::-1], 3), 120, np.uint8))
        (root / "labels" / f"{name}.txt").write_text("1 0.5 0.5 0.25 0.25\n")
    (root / "labels" / "classes.txt").write_text("person\ncar\n")
    return root


# ------------------------------------------------------------------------------------ labelled data
@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda root: (root / "labels" / "b.txt").write_text("1 0.5 0.5 0.1 0.1\n5 0.5 0.5 0.1 0.1\n"),
         r"b\.txt is malformed at line 2: class id 5 has no name"),
        (lambda root: (root / "labels" / "a.txt").write_text("0 0.95 0.5 0.2 0.1\n"),
         r"a\.txt is malformed at line 1: cx cy w h must be fractions of the image in \[0, 1\]"),
        (lambda root: (root / "labels" / "b.txt").unlink(),
         r"label file \S+/labels/b\.txt does not exist: every image pair needs one"),
        (lambda root: (root / "labels" / "classes.txt").unlink(), r"labels/? names no classes"),
    ],
    ids=["class outside the names", "box outside the image", "missing label file", "no class names"],
)
def test_malformed_labels_are_one_line_errors_naming_file_and_line(tmp_path, capsys, break_it, message):
    root = tiny_dataset(tmp_path / "data")
    break_it(root)
    with pytest.raises(DetectDatasetError, match=message):
        load_labelled_dataset(root)
    # The command says the same in one line and stops before loading any detector.
    code = cli.main(["detect", "eval", "--data", str(root), "--detector", "unused.pt", "--out", str(tmp_path / "o")])
    error = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in error
    assert error.startswith("mex-fusion detect eval:")


def test_labels_keyed_by_image_name_in_every_format(tmp_path):
    yolo = load_labelled_dataset(tiny_dataset(tmp_path / "data"))
    assert yolo.classes == ("person", "car") and [p.name for p in yolo.pairs] == ["a", "b"]
    assert [(b.label, b.box) for b in yolo.boxes("a", (40, 32))] == [("car", (15.0, 12.0, 25.0, 20.0))]
    coco = {
        "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "sub/b.jpg"}],
        "annotations": [{"image_id": 1, "category_id": 7, "bbox": [15, 12, 10, 8]}],
        "categories": [{"id": 3, "name": "person"}, {"id": 7, "name": "car"}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    from_coco = load_labelled_dataset(tmp_path / "data", labels=tmp_path / "coco.json")
    assert from_coco.classes == ("person", "car")
    assert from_coco.boxes("a", (40, 32)) == yolo.boxes("a", (40, 32)) and from_coco.boxes("b", (40, 32)) == []
    coco["images"].pop()
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    with pytest.raises(DetectDatasetError, match=r"coco\.json has no image named 'b'"):
        load_labelled_dataset(tmp_path / "data", labels=tmp_path / "coco.json")


def test_scene_dataset_labels_are_the_scene_objects(tmp_path):
    summary = write_scene_dataset(tmp_path / "scene", [5], frames_per_seed=4, size=(128, 96), num_frames=40)
    dataset = load_labelled_dataset(tmp_path / "scene")
    assert summary.frames == 4 == len(dataset.pairs) and dataset.classes == SCENE_CLASSES
    scene = DemoScene(SceneConfig(width=128, height=96, num_frames=40, seed=5))
    for pair, index in zip(dataset.pairs, frame_indices(5, 4, 40)):
        assert pair.name == f"s5_f{index:04d}"
        truth = scene.render(index).objects
        boxes = dataset.boxes(pair.name, (128, 96))
        assert [b.label for b in boxes] == [o.label for o in truth]
        np.testing.assert_allclose([b.box for b in boxes], [o.box for o in truth], atol=0.01)
    assert sum(summary.objects.values()) > 0
    with pytest.raises(FileExistsError, match="not empty"):
        write_scene_dataset(tmp_path / "scene", [6], 2, size=(128, 96), num_frames=40)


# ------------------------------------------------------------------------------------ detect train
class KilledError(Exception):
    pass


def test_detect_train_end_to_end_resumes_and_gives_a_loadable_model(tmp_path, capsys):
    from mex_fusion_ros.detect.train import TrainError, TrainSettings, train_detector
    from mex_fusion_ros.nodes.yolo import YoloDetector

    write_scene_dataset(tmp_path / "scene", [11, 12], frames_per_seed=4, size=(96, 64), num_frames=40)
    settings = TrainSettings(data=tmp_path / "scene", out=tmp_path / "run", inputs=("ir", "laplacian"),
                             val_fraction=0.3, degrade="training", epochs=2, imgsz=64, batch=4)

    def stop_after_first_epoch(trainer):  # as if the process were killed once epoch 1 is saved
        if trainer.epoch == 0:
            raise KilledError

    with pytest.raises(KilledError):
        train_detector(settings, progress=False, callbacks={"on_fit_epoch_end": stop_after_first_epoch})
    manifest = json.loads((tmp_path / "run" / "dataset" / "manifest.json").read_text())
    assert manifest["inputs"] == ["ir", "laplacian"] and manifest["classes"] == list(SCENE_CLASSES)
    counts = manifest["counts"]
    assert counts["train"]["images"] == 2 * counts["train"]["pairs"] and counts["val"]["pairs"] >= 1
    assert sum(counts["degradation_presets"].values()) == 8
    with pytest.raises(TrainError, match="already holds a training run: --resume"):
        train_detector(settings, progress=False)

    # Resume through the command line: the dataset is reused, epoch 2 is trained, val numbers written.
    argv = ["detect", "train", "--data", str(tmp_path / "scene"), "--input", "ir", "--input", "laplacian",
            "--val-fraction", "0.3", "--degrade", "training", "--epochs", "2", "--imgsz", "64", "--batch", "4",
            "--out", str(tmp_path / "run"), "--resume", "--no-progress"]
    assert cli.main(argv) == 0
    assert "validation: mAP50" in capsys.readouterr().out
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results["val"]) >= {"mAP50", "mAP50-95", "precision", "recall", "per_class"}
    assert 0.0 <= results["val"]["mAP50"] <= 1.0
    assert len((tmp_path / "run" / "train" / "results.csv").read_text().strip().splitlines()) == 1 + 2
    names = (tmp_path / "run" / "dataset" / "data.yaml").read_text()
    assert '0: "person"' in names and '1: "car"' in names
    detector = YoloDetector(results["weights"]["best"], device="cpu")
    assert tuple(detector.names.values()) == SCENE_CLASSES
    detector.detect(np.zeros((64, 96, 3), np.uint8))

    # Other settings in the same folder are refused instead of mixing two datasets.
    other = TrainSettings(**{**settings.__dict__, "inputs": ("vi",), "resume": True})
    with pytest.raises(TrainError, match="built from other settings"):
        train_detector(other, progress=False)


# ------------------------------------------------------------------------------------ detect eval
@pytest.fixture(scope="module")
def demo_scene(tmp_path_factory) -> Path:
    """Frames of the demo's own scene (seed 0, 320x256), which the demo detector never trained on."""
    root = tmp_path_factory.mktemp("demo_scene") / "scene"
    write_scene_dataset(root, [0], frames_per_seed=30)
    return root


def test_detect_eval_scores_inputs_per_preset_with_the_same_degradations_as_eval(demo_scene, tmp_path):
    from mex_fusion_ros.data.degradations import apply_preset
    from mex_fusion_ros.data.paired import read_pair
    from mex_fusion_ros.detect.evaluate import DetectEvalSettings, run_detection_eval
    from mex_fusion_ros.detect.report import write_report
    from mex_fusion_ros.eval.runner import degradation_seed
    from mex_fusion_ros.nodes.pipeline import to_uint8

    settings = DetectEvalSettings(data=demo_scene, detector=str(DEMO_DETECTOR), inputs=("ir", "vi", "laplacian"),
                                  presets=("clean", "haze"), limit=12, device="cpu", grid_images=1)
    outcome = run_detection_eval(settings, progress=False)
    results = outcome.results
    assert results["inputs"] == ["ir", "vi", "laplacian"] and results["classes"] == list(SCENE_CLASSES)
    assert results["detector"]["imgsz"] == 320  # the size the demo detector was trained at
    for preset in ("clean", "haze"):
        for name in results["inputs"]:
            scores = results["summary"][preset][name]
            assert set(scores["per_class"]) == set(SCENE_CLASSES)
            assert 0.0 <= scores["mAP50-95"] <= scores["mAP50"] <= 1.0 and 0.0 <= scores["recall"] <= 1.0
    # A detector trained on this scene finds its objects on clean RGB frames of an unseen seed.
    assert results["summary"]["clean"]["vi"]["mAP50"] > 0.6
    # The inputs are degraded exactly as `mex-fusion eval` degrades them (same seeds).
    sample = outcome.samples["haze"][0]
    pair = next(p for p in load_labelled_dataset(demo_scene).pairs if p.name == sample.image)
    ir, vi = read_pair(pair)
    degraded = apply_preset("haze", ir, vi, seed=degradation_seed(0, pair.name, "haze"))
    np.testing.assert_array_equal(sample.images["vi"], to_uint8(degraded.vi, color=True))
    np.testing.assert_array_equal(sample.images["ir"], to_uint8(degraded.ir, color=False))

    paths = write_report(outcome, tmp_path / "report")
    html = paths["html"].read_text()
    assert "<title>Detection evaluation</title>" in html and "mAP50 per preset and input" in html
    for relative in ("images/grid_clean.jpg", "images/grid_haze.jpg", "plots/mAP50.png", "plots/recall.png"):
        assert relative in html and (tmp_path / "report" / relative).is_file()
    assert json.loads(paths["results"].read_text())["summary"]["haze"]["ir"]["mAP50"] is not None


def test_map_agrees_with_ultralytics_val(demo_scene):
    from mex_fusion_ros.detect.agreement import check_against_ultralytics

    result = check_against_ultralytics(demo_scene, str(DEMO_DETECTOR), "vi", limit=30)
    differences = result.differences()
    # The same boxes: the two AP implementations agree to rounding.
    assert differences["same_boxes"]["mAP50"] < 1e-6 and differences["same_boxes"]["mAP50-95"] < 1e-6
    # detect eval's own path (predict) differs from val where val scores boxes unclipped (objects at the
    # border) and in the letterbox; with val's boxes clipped as predict clips them, only the letterbox
    # is left (docs/detection.md has the numbers).
    assert differences["letterbox"]["mAP50"] < 0.02 and differences["letterbox"]["mAP50-95"] < 0.02
    assert result.clipped["mAP50"] > result.ultralytics["mAP50"]


def test_demo_runs_the_demo_detector_and_scores_each_segment(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--frames", "60", "--method", "laplacian", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"detection report: {(out / 'report' / 'detection' / 'report.html').resolve()}" in printed
    assert "mAP50 per degradation segment" in printed and "| mixed |" in printed
    results = json.loads((out / "report" / "detection" / "results.json").read_text())
    assert results["detector"]["model"] == str(DEMO_DETECTOR) and results["detector"]["imgsz"] == 320
    # Thermal only, RGB only and the fused stream, per segment of the demo's timeline.
    assert results["inputs"] == ["ir", "vi", "laplacian"]
    assert results["presets"] == ["clean", "haze", "noise25", "stripe", "mixed"]
    assert sum(results["frames_per_preset"].values()) == 18  # every pair of the 60-frame bag (9 Hz thermal)
    assert results["summary"]["clean"]["laplacian"]["mAP50"] > 0.5
    # The main report's detection section: counts over time and mAP per input over the whole bag.
    bag_eval = json.loads((out / "report" / "bag_eval.json").read_text())
    assert set(bag_eval["detection"]["map"]) == {"thermal only", "RGB only", "laplacian"}
    assert bag_eval["detection"]["map"]["laplacian"]["mAP50"] > 0.5
    assert "detections_over_time.png" in (out / "report" / "report.html").read_text()
    # The boxes on the fused frames: one annotated frame per segment in the detection report.
    html = (out / "report" / "detection" / "report.html").read_text()
    for segment in results["presets"]:
        assert f"images/grid_{segment}.jpg" in html
        assert (out / "report" / "detection" / "images" / f"grid_{segment}.jpg").is_file()


def test_detect_eval_of_a_bag_eval_run_matches_the_demo(tmp_path, capsys):
    """`detect eval --bag-eval` reproduces the demo's detection step from its output folder."""
    out = tmp_path / "demo"
    assert cli.main(["demo", "--frames", "30", "--method", "laplacian", "--no-detector", "--out", str(out)]) == 0
    assert not (out / "report" / "detection").exists()
    capsys.readouterr()
    argv = ["detect", "eval", "--bag-eval", str(out / "report"), "--detector", str(DEMO_DETECTOR),
            "--out", str(tmp_path / "det")]
    assert cli.main(argv) == 0
    results = json.loads((tmp_path / "det" / "results.json").read_text())
    assert results["inputs"] == ["ir", "vi", "laplacian"] and results["input_specs"]["vi"] == "RGB only"
    assert cli.main([*argv[:-2], "--input", "ir", "--out", str(tmp_path / "x")]) == 1
    assert "drop --input and --preset" in capsys.readouterr().err
