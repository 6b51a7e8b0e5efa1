"""``mex-fusion eval`` end to end on two real pairs (tiny size), and its error messages."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from mex_fusion_ros.cli import main
from mex_fusion_ros.data.degradations import DEGRADATION_TYPES
from mex_fusion_ros.eval import runner
from mex_fusion_ros.eval.metrics import METRICS
from mex_fusion_ros.fusion.base import DegradationEstimate, FusionResult
from mex_fusion_ros.fusion.classical import AverageFuser

PRESETS = ("noise25", "stripe")
METHODS = ("laplacian", "cascade")


@pytest.fixture(scope="module")
def evaluated(roadscene: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp("eval")
    argv = ["eval", "--data", str(roadscene / "val"), "--out", str(out), "--limit", "2", "--max-side", "96",
            "--no-progress", "--seed", "3"]
    for preset in PRESETS:
        argv += ["--preset", preset]
    for method in METHODS:
        argv += ["--method", method]
    return out, main(argv)


def test_results_json_structure(evaluated: tuple[Path, int]) -> None:
    out, code = evaluated
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["presets"] == list(PRESETS) and results["methods"] == list(METHODS)
    assert len(results["images"]) == 2
    assert "--max-side 96" in results["command"] and results["settings"]["seed"] == 3
    assert {"python", "numpy", "mex_fusion_ros"} <= set(results["versions"])
    assert set(results["metrics"]) == set(METRICS)
    for preset in PRESETS:
        assert set(results["per_image"][preset]) == set(results["images"])
        for entry in results["per_image"][preset].values():
            assert list(entry["label"]) == [{"noise25": "vi_noise", "stripe": "ir_stripe"}[preset]]
            for method in METHODS:
                record = entry["methods"][method]
                assert record["time_s"] > 0
                assert set(record["metrics"]) == set(METRICS)
                assert all(v is None or math.isfinite(v) for v in record["metrics"].values())
        # The summary is the mean over images of the per-image numbers.
        for method in METHODS:
            psnrs = [e["methods"][method]["metrics"]["PSNR"] for e in results["per_image"][preset].values()]
            assert results["summary"][preset][method]["PSNR"] == pytest.approx(np.mean(psnrs))
    for method in METHODS:
        timing = results["timing"][method]
        assert timing["calls"] == 2 * len(PRESETS) and timing["median_s_per_image"] > 0
        overall = np.mean([results["summary"][p][method]["CC"] for p in PRESETS])
        assert results["overall"][method]["CC"] == pytest.approx(overall)
    assert results["degradation_accuracy"] == {}  # classical fusers emit no estimates
    # Restoration pays off: the cascade is the Laplacian fusion of restored inputs, so it must win.
    for preset in PRESETS:
        summary = results["summary"][preset]
        assert summary["cascade"]["PSNR"] > summary["laplacian"]["PSNR"], preset


def test_reports_reference_existing_files(evaluated: tuple[Path, int]) -> None:
    out, _ = evaluated
    page = (out / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == len(PRESETS) + len(runner.KEY_METRICS)
    for source in sources:
        assert not Path(source).is_absolute() and (out / source).is_file(), source
    assert cv2.imread(str(out / "images" / "grid_noise25.jpg")) is not None
    markdown = (out / "report.md").read_text()
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown):
        assert (out / link).is_file(), link
    # Best values are bold, and each metric's direction is shown.
    assert "<b>" in page and "PSNR ↑" in page and "N_abf ↓" in page and "**" in markdown


def test_inputs_are_identical_across_runs_and_limits(roadscene: Path) -> None:
    def first_image_metrics(limit: int) -> dict:
        settings = runner.EvalSettings(data=roadscene / "val", presets=("noise15",), methods=("max",),
                                       limit=limit, max_side=80, seed=1)
        results = runner.run_evaluation(settings, progress=False).results
        return results["per_image"]["noise15"][results["images"][0]]["methods"]["max"]["metrics"]

    assert first_image_metrics(1) == first_image_metrics(2)
    seeds = {runner.degradation_seed(0, name, preset) for name in ("a", "b") for preset in ("clean", "haze")}
    assert len(seeds) == 4
    assert runner.degradation_seed(0, "a", "haze") == runner.degradation_seed(0, "a", "haze")


class NoiseDetector:
    """A fuser that always reports visible noise and nothing else (to check the accuracy bookkeeping)."""

    name = "detector"

    def fuse(self, ir: np.ndarray, vi: np.ndarray) -> FusionResult:
        result = AverageFuser().fuse(ir, vi)
        probabilities = {kind: float(kind == "vi_noise") for kind in DEGRADATION_TYPES}
        result.degradation = DegradationEstimate(probabilities, dict(probabilities))
        return result


def test_degradation_estimates_are_scored(roadscene: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "create_fuser", lambda spec, device, half: NoiseDetector())
    settings = runner.EvalSettings(data=roadscene / "val", presets=("noise15", "stripe"), methods=("x",),
                                   limit=2, max_side=80)
    results = runner.run_evaluation(settings, progress=False).results
    accuracy = results["degradation_accuracy"]["detector"]
    assert accuracy["noise15"] == {"type_accuracy": 1.0, "exact_match": 1.0, "recall": 1.0, "false_alarm": 0.0,
                                   "images": 2}
    # Stripe pairs: vi_noise wrongly present, ir_stripe missed; the other five types are right.
    assert accuracy["stripe"]["exact_match"] == 0.0
    assert accuracy["stripe"]["recall"] == 0.0 and accuracy["stripe"]["false_alarm"] == 1.0
    types = len(DEGRADATION_TYPES)
    assert accuracy["stripe"]["type_accuracy"] == pytest.approx((types - 2) / types)
    record = results["per_image"]["stripe"][results["images"][0]]["methods"]["detector"]["degradation"]
    assert record["predicted"] == ["vi_noise"] and record["label"] == ["ir_stripe"]


class CalibratedStripeDetector:
    """Reports infrared stripes at probability 0.3, with a threshold of 0.2 calibrated for that type."""

    name = "calibrated"

    def fuse(self, ir: np.ndarray, vi: np.ndarray) -> FusionResult:
        result = AverageFuser().fuse(ir, vi)
        probabilities = {kind: 0.3 if kind == "ir_stripe" else 0.0 for kind in DEGRADATION_TYPES}
        result.degradation = DegradationEstimate(probabilities, dict(probabilities), thresholds={"ir_stripe": 0.2})
        return result


@pytest.mark.parametrize(("presence_threshold", "detected"), [(None, True), (0.5, False)])
def test_calibrated_thresholds_decide_unless_overridden(roadscene: Path, monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path, presence_threshold: float | None,
                                                        detected: bool) -> None:
    from mex_fusion_ros.eval.report import write_report

    monkeypatch.setattr(runner, "create_fuser", lambda spec, device, half: CalibratedStripeDetector())
    settings = runner.EvalSettings(data=roadscene / "val", presets=("stripe",), methods=("x",), limit=1,
                                   max_side=64, presence_threshold=presence_threshold)
    outcome = runner.run_evaluation(settings, progress=False)
    results = outcome.results
    write_report(outcome, tmp_path)
    page = (tmp_path / "report.md").read_text()
    if presence_threshold is None:
        assert "calibrated: calibrated thresholds ir_stripe 0.200; every other type 0.5." in page
    else:
        assert "probability ≥ 0.5 for every type" in page and "calibrated thresholds" not in page
    record = results["per_image"]["stripe"][results["images"][0]]["methods"]["calibrated"]["degradation"]
    assert record["predicted"] == (["ir_stripe"] if detected else [])
    assert record["thresholds"]["ir_stripe"] == (0.2 if presence_threshold is None else 0.5)
    assert record["thresholds"]["vi_noise"] == 0.5
    assert results["degradation_accuracy"]["calibrated"]["stripe"]["recall"] == float(detected)
    assert results["settings"]["presence_threshold"] == presence_threshold


def write_dataset(root: Path, ir_names: list[str], vi_names: list[str]) -> Path:
    rng = np.random.default_rng(0)
    for folder, names in (("ir", ir_names), ("vi", vi_names)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            shape = (72, 96) if folder == "ir" else (72, 96, 3)
            cv2.imwrite(str(root / folder / name), rng.integers(0, 256, shape, dtype=np.uint8))
    return root


def run_eval_cli(data: Path, out: Path, *, preset: str = "noise15", method: str = "average") -> int:
    return main(["eval", "--data", str(data), "--preset", preset, "--method", method, "--out", str(out),
                 "--no-progress"])


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("empty", r"holds no image pairs"),
        ("unpaired", r"unpaired image files: b \(no visible\)"),
        ("unreadable", r"image file .*ir/a\.png is unreadable"),
        ("preset", r"unknown preset 'fog'; valid: all, clean"),
        ("method", r"method 'wavelet': unknown fuser 'wavelet'; valid: classical: average"),
        ("no-folder", r"dataset folder .*missing does not exist"),
    ],
)
def test_bad_input_gives_one_clear_error(case: str, expected: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    preset, method = "noise15", "average"
    if case == "empty":
        write_dataset(data, [], [])
    elif case == "unpaired":
        write_dataset(data, ["a.png", "b.png"], ["a.png"])
    elif case == "unreadable":
        write_dataset(data, [], ["a.png"])
        (data / "ir" / "a.png").write_bytes(b"not a png")
    elif case == "preset":
        write_dataset(data, ["a.png"], ["a.png"])
        preset = "fog"
    elif case == "method":
        write_dataset(data, ["a.png"], ["a.png"])
        method = "wavelet"
    else:
        data = tmp_path / "missing"
    code = run_eval_cli(data, tmp_path / "out", preset=preset, method=method)
    error = capsys.readouterr().err
    assert code == 2
    assert re.search(expected, error), error
    assert error.startswith("mex-fusion eval: error: ") and error.count("\n") == 1
    assert not (tmp_path / "out" / "results.json").exists()


def test_preset_and_method_shorthands() -> None:
    assert runner.resolve_presets(["all"]) == runner.DEFAULT_PRESETS
    assert runner.resolve_presets(["haze", "all"])[0] == "haze"
    assert runner.resolve_methods(["baselines", "max"]) == ("average", "max", "laplacian", "gff", "cascade")
    with pytest.raises(runner.EvalError, match="max-side must be >= 16"):
        runner.run_evaluation(runner.EvalSettings(data=Path("."), presets=("clean",), methods=("max",),
                                                  max_side=8), progress=False)


class VandalFuser:
    """Overwrites its inputs in place, then returns a fused image of the wrong size."""

    name = "vandal"

    def __init__(self, wrong_shape: bool) -> None:
        self.wrong_shape = wrong_shape

    def fuse(self, ir: np.ndarray, vi: np.ndarray) -> FusionResult:
        ir[...] = 0.0
        vi[...] = 0.0
        return FusionResult(fused=vi[1:] if self.wrong_shape else vi)


def test_methods_cannot_alter_each_others_inputs_and_bad_outputs_are_named(
    roadscene: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def build(spec: str, device: str, half: bool):
        return VandalFuser(spec == "broken") if spec in ("vandal", "broken") else AverageFuser()

    monkeypatch.setattr(runner, "create_fuser", build)
    common = {"data": roadscene / "val", "presets": ("noise15",), "limit": 1, "max_side": 80}
    alone = runner.run_evaluation(runner.EvalSettings(methods=("average",), **common), progress=False).results
    after = runner.run_evaluation(runner.EvalSettings(methods=("vandal", "average"), **common),
                                  progress=False).results
    image = alone["images"][0]
    metrics_alone = alone["per_image"]["noise15"][image]["methods"]["average"]["metrics"]
    assert after["per_image"]["noise15"][image]["methods"]["average"]["metrics"] == metrics_alone
    with pytest.raises(runner.EvalError, match=r"'vandal' returned a fused image of shape .* \(noise15\)"):
        runner.run_evaluation(runner.EvalSettings(methods=("broken",), **common), progress=False)


def test_network_through_the_registry_reports_degradation_estimates(roadscene: Path, tmp_path: Path) -> None:
    """The real inference path: a (freshly initialised) nano weights file given as ``nano:FILE``."""
    model = pytest.importorskip("mex_fusion_ros.model")
    weights = pytest.importorskip("mex_fusion_ros.model.weights")
    path = weights.save_weights(tmp_path / "nano.pt", model.create_model("nano"))
    settings = runner.EvalSettings(data=roadscene / "val", presets=("clean", "stripe"),
                                   methods=(f"nano:{path}", "laplacian"), limit=1, max_side=64, device="cpu")
    results = runner.run_evaluation(settings, progress=False).results
    assert results["methods"] == ["nano", "laplacian"]
    assert results["method_specs"]["nano"] == f"nano:{path}"
    accuracy = results["degradation_accuracy"]["nano"]
    assert set(accuracy) == {"clean", "stripe"}
    assert all(0.0 <= a["type_accuracy"] <= 1.0 and a["images"] == 1 for a in accuracy.values())
    record = results["per_image"]["stripe"][results["images"][0]]["methods"]["nano"]["degradation"]
    assert set(record["probabilities"]) == set(DEGRADATION_TYPES) and record["label"] == ["ir_stripe"]
    assert "degradation" not in results["per_image"]["stripe"][results["images"][0]]["methods"]["laplacian"]
    with pytest.raises(runner.EvalError, match="method 'small:.*nano.pt'.*another configuration"):
        runner.create_fusers([f"small:{path}"], device="cpu")
