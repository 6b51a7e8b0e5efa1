"""Presence-threshold calibration: the choice rule, its validation, the weights file and the command."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mex_fusion_ros.cli import main
from mex_fusion_ros.data.degradations import DEGRADATION_TYPES
from mex_fusion_ros.fusion.base import DegradationEstimate
from mex_fusion_ros.model import create_model
from mex_fusion_ros.model.calibration import (
    CalibrationError,
    EstimateRecord,
    balanced_accuracies,
    choose_threshold,
    choose_thresholds,
    validate_thresholds,
)
from mex_fusion_ros.model.fuser import Fuser
from mex_fusion_ros.model.weights import WeightsError, read_weights_file, save_weights


def records(group: str, present: list[float], absent: list[float], kind: str = "vi_haze") -> list[EstimateRecord]:
    return ([EstimateRecord(group, frozenset({kind}), {kind: p}) for p in present]
            + [EstimateRecord(group, frozenset(), {kind: p}) for p in absent])


def test_a_separating_default_is_kept() -> None:
    choice = choose_threshold(records("a", [0.7, 0.9, 0.95], [0.01, 0.2, 0.3]), "vi_haze")
    assert choice.threshold == 0.5
    assert choice.balanced_accuracy == choice.default_balanced_accuracy == 1.0
    assert (choice.positives, choice.negatives) == (3, 3)


def test_an_under_confident_type_moves_into_the_gap() -> None:
    # Hazy pairs at 0.15-0.45, clean ones at most 0.05: 0.5 misses every hazy pair.
    data = records("a", [0.15, 0.2, 0.3, 0.45], [0.0, 0.01, 0.02, 0.05])
    choice = choose_threshold(data, "vi_haze")
    assert 0.05 < choice.threshold < 0.15
    assert choice.balanced_accuracy == 1.0 and choice.default_balanced_accuracy == 0.5


def test_every_folder_counts_equally() -> None:
    # A large folder separated at 0.5 and a small one whose positives sit at 0.3: the small camera's
    # misses weigh as much as the large one's hits, so the threshold moves below 0.3.
    data = records("big", [0.8] * 50, [0.05] * 50) + records("small", [0.3, 0.32], [0.02, 0.04])
    accuracy = balanced_accuracies(data, "vi_haze", [0.5, 0.2])
    assert accuracy is not None and accuracy[0] == pytest.approx(0.75) and accuracy[1] == 1.0
    assert 0.05 < choose_threshold(data, "vi_haze").threshold < 0.3


def test_types_without_examples_keep_the_default() -> None:
    choices = choose_thresholds(records("a", [0.9], [0.1]), ["vi_haze", "ir_noise"])
    assert choices["ir_noise"].threshold == 0.5 and choices["ir_noise"].balanced_accuracy is None
    with pytest.raises(CalibrationError, match="no estimates"):
        choose_thresholds([], ["vi_haze"])


PROBABILITIES = st.integers(0, 1000).map(lambda n: n / 1000)


@given(present=st.lists(PROBABILITIES, min_size=1, max_size=30),
       absent=st.lists(PROBABILITIES, min_size=1, max_size=30))
@settings(max_examples=60, deadline=None)
def test_the_choice_is_never_worse_than_the_default(present: list[float], absent: list[float]) -> None:
    data = records("a", present, absent)
    choice = choose_threshold(data, "vi_haze")
    assert choice.balanced_accuracy is not None and choice.default_balanced_accuracy is not None
    assert choice.balanced_accuracy >= choice.default_balanced_accuracy
    assert 0.05 <= choice.threshold <= 0.95
    recomputed = balanced_accuracies(data, "vi_haze", [choice.threshold])
    assert recomputed is not None and recomputed[0] == pytest.approx(choice.balanced_accuracy)
    if choice.threshold not in (0.05, 0.5, 0.95):
        assert choice.threshold not in set(present) | set(absent)  # a midpoint, never on an example


@pytest.mark.parametrize(("values", "message"), [
    ([0.3], "must be a mapping"),
    ({"fog": 0.3}, "unknown degradation type 'fog'"),
    ({"vi_haze": 0.0}, r"expected a number in \(0, 1\)"),
    ({"vi_haze": 1.0}, r"expected a number in \(0, 1\)"),
    ({"vi_haze": float("nan")}, r"expected a number in \(0, 1\)"),
    ({"vi_haze": True}, r"expected a number in \(0, 1\)"),
    ({"vi_haze": "0.3"}, r"expected a number in \(0, 1\)"),
])
def test_malformed_thresholds_are_refused(values: object, message: str) -> None:
    with pytest.raises(CalibrationError, match=message):
        validate_thresholds(values, DEGRADATION_TYPES)


def test_estimates_apply_their_thresholds() -> None:
    estimate = DegradationEstimate({"vi_haze": 0.3, "vi_noise": 0.4}, {}, thresholds={"vi_haze": 0.2})
    assert estimate.present() == ("vi_haze",)
    assert estimate.present(0.35) == ("vi_noise",)
    assert DegradationEstimate({"vi_haze": 0.3}, {}).present() == ()


def test_weights_carry_thresholds_to_the_fuser_and_bad_ones_are_named(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("nano")
    good = save_weights(tmp_path / "good.pt", model, {"presence_thresholds": {"vi_haze": 0.2}})
    fuser = Fuser.from_weights(good, device="cpu")
    rng = np.random.default_rng(0)
    result = fuser.fuse(rng.random((64, 64), dtype=np.float32), rng.random((64, 64, 3), dtype=np.float32))
    assert result.degradation is not None and result.degradation.thresholds == {"vi_haze": 0.2}
    bad = save_weights(tmp_path / "bad.pt", model, {"presence_thresholds": {"vi_haze": 1.5}})
    with pytest.raises(WeightsError, match=r"bad\.pt.*presence_thresholds\['vi_haze'\] = 1\.5"):
        Fuser.from_weights(bad, device="cpu")


def write_pairs(root: Path, count: int) -> Path:
    rng = np.random.default_rng(1)
    for folder in ("ir", "vi"):
        (root / folder).mkdir(parents=True)
    for index in range(count):
        scene = cv2.GaussianBlur(rng.random((64, 80), dtype=np.float32), (0, 0), 2.0)
        scene = (255 * (scene - scene.min()) / (scene.max() - scene.min())).astype(np.uint8)
        cv2.imwrite(str(root / "ir" / f"p{index}.png"), scene)
        cv2.imwrite(str(root / "vi" / f"p{index}.png"), np.stack([scene, scene[::-1], scene[:, ::-1]], axis=2))
    return root


def test_calibrate_command_writes_thresholds_and_provenance(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    weights = save_weights(tmp_path / "nano.pt", create_model("nano"), {"note": "kept"})
    data = write_pairs(tmp_path / "pairs", 3)
    (tmp_path / "holdout.txt").write_text("# validation\np2\n")
    out = tmp_path / "calibrated.pt"
    code = main(["calibrate", "--weights", str(weights), "--data", str(data), "--holdout",
                 str(tmp_path / "holdout.txt"), "--out", str(out), "--no-progress", "--threads", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "16 estimates" in printed and "vi_haze" in printed and str(out) in printed
    metadata = read_weights_file(out)["metadata"]
    assert metadata["note"] == "kept"
    assert set(metadata["presence_thresholds"]) == set(DEGRADATION_TYPES)
    calibration = metadata["calibration"]
    assert calibration["data"] == {str(data): 2} and calibration["estimates"] == 16
    assert calibration["types"]["vi_haze"]["positives"] == 4  # haze and mixed, two pairs each
    assert read_weights_file(weights)["metadata"] == {"note": "kept"}  # --out leaves the input alone
    assert Fuser.from_weights(out, device="cpu").presence_thresholds == metadata["presence_thresholds"]


def test_calibrate_command_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = write_pairs(tmp_path / "pairs", 1)
    (tmp_path / "all.txt").write_text("p0\n")
    weights = save_weights(tmp_path / "nano.pt", create_model("nano"))
    assert main(["calibrate", "--weights", str(tmp_path / "missing.pt"), "--data", str(data)]) == 2
    assert "missing.pt does not exist" in capsys.readouterr().err
    assert main(["calibrate", "--weights", str(weights), "--data", str(data), "--holdout",
                 str(tmp_path / "all.txt")]) == 2
    assert "no pairs left to calibrate on" in capsys.readouterr().err
