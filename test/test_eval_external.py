"""``mex-fusion eval`` against results made elsewhere: saved inputs, external fused images, reference
figures, held-out pair lists."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mex_fusion_ros.cli import main
from mex_fusion_ros.data.paired import find_pairs, read_ir, read_vi
from mex_fusion_ros.eval import runner
from mex_fusion_ros.eval.external import to_file_image
from mex_fusion_ros.fusion.classical import AverageFuser

PRESETS = ("clean", "noise25")
COMPARED = ("CC", "PSNR", "SSIM", "Q_abf", "VIF", "MS-SSIM", "N_abf", "MI", "SD")


def _write_dataset(root: Path, names: tuple[str, ...] = ("a", "b")) -> Path:
    """Two small structured pairs (VIF needs at least 41 px)."""
    rng = np.random.default_rng(0)
    for modality in ("ir", "vi"):
        (root / modality).mkdir(parents=True)
    for name in names:
        base = cv2.GaussianBlur(rng.random((80, 96)).astype(np.float32), (0, 0), 3)
        ir = np.clip((base - base.min()) / np.ptp(base), 0, 1)
        vi = np.stack([np.clip(0.2 + 0.6 * np.roll(ir, shift, axis=1), 0, 1) for shift in (3, 5, 7)], axis=2)
        cv2.imwrite(str(root / "ir" / f"{name}.png"), to_file_image(ir, 8))
        cv2.imwrite(str(root / "vi" / f"{name}.png"), to_file_image(vi, 8))
    return root


def _settings(data: Path, **values) -> runner.EvalSettings:
    return runner.EvalSettings(data=data, presets=PRESETS, methods=values.pop("methods", ("average",)),
                               grid_images=1, **values)


def test_saved_inputs_fused_elsewhere_score_like_the_method_itself(tmp_path: Path) -> None:
    """Round trip: save the inputs, fuse them with `average` as an outside tool would (8-bit PNG in,
    8-bit PNG out), score the files as an external method: `average`'s own numbers."""
    data = _write_dataset(tmp_path / "data")
    saved = tmp_path / "inputs"
    own = runner.run_evaluation(_settings(data, save_inputs=saved), progress=False).results
    manifest = json.loads((saved / "inputs.json").read_text())
    assert manifest["presets"] == list(PRESETS) and manifest["bits"] == 8
    external = tmp_path / "external"
    fuser = AverageFuser()
    for preset in PRESETS:
        listing = find_pairs(saved / preset)
        assert [pair.name for pair in listing.pairs] == ["a", "b"]
        (external / preset).mkdir(parents=True)
        for pair in listing.pairs:
            fused = fuser.fuse(read_ir(pair.ir_path), read_vi(pair.vi_path)).fused
            cv2.imwrite(str(external / preset / f"{pair.name}.png"), to_file_image(fused, 8))
    scored = runner.run_evaluation(_settings(data, externals=(f"outside={external}",)), progress=False).results
    assert scored["methods"] == ["average", "outside"] and scored["external_methods"] == ["outside"]
    for preset in PRESETS:
        for metric in COMPARED:
            ours, theirs = own["summary"][preset]["average"][metric], scored["summary"][preset]["outside"][metric]
            # Only the rounding of the fused image to 8 bits differs.
            assert theirs == pytest.approx(ours, rel=5e-3, abs=2e-3), (preset, metric)
    assert "outside" not in scored["timing"]


def test_inputs_are_rounded_to_the_requested_bits(tmp_path: Path) -> None:
    data = _write_dataset(tmp_path / "data")
    for bits, peak in ((8, 255.0), (16, 65535.0)):
        outcome = runner.run_evaluation(_settings(data, input_bits=bits), progress=False)
        sample = outcome.samples["noise25"][0]
        assert np.allclose(sample.degraded_vi * peak, np.rint(sample.degraded_vi * peak), atol=1e-3)
    floats = runner.run_evaluation(_settings(data, input_bits=0), progress=False).samples["noise25"][0]
    assert not np.allclose(floats.degraded_vi * 255.0, np.rint(floats.degraded_vi * 255.0), atol=1e-3)
    with pytest.raises(runner.EvalError, match="--input-bits 8 or 16"):
        runner.run_evaluation(_settings(data, input_bits=0, save_inputs=tmp_path / "x"), progress=False)


def test_external_results_must_cover_every_pair(tmp_path: Path) -> None:
    data = _write_dataset(tmp_path / "data")
    partial = tmp_path / "partial"
    (partial / "clean").mkdir(parents=True)
    cv2.imwrite(str(partial / "clean" / "a.png"), np.zeros((80, 96), np.uint8))
    with pytest.raises(runner.EvalError, match=r"no fused image for clean/b, noise25/a, noise25/b"):
        runner.run_evaluation(_settings(data, externals=(f"x={partial}",)), progress=False)
    wrong_size = tmp_path / "wrong_size"
    for preset in PRESETS:
        (wrong_size / preset).mkdir(parents=True)
        for name in ("a", "b"):
            cv2.imwrite(str(wrong_size / preset / f"{name}.png"), np.zeros((40, 48), np.uint8))
    with pytest.raises(runner.EvalError, match=r"is 48x40, the inputs are 96x80"):
        runner.run_evaluation(_settings(data, externals=(f"x={wrong_size}",)), progress=False)
    for bad in ("nodir", "=dir", "name="):
        with pytest.raises(runner.EvalError, match="expected NAME=DIR"):
            runner.run_evaluation(_settings(data, externals=(bad,)), progress=False)
    with pytest.raises(runner.EvalError, match="taken by a method"):
        runner.run_evaluation(_settings(data, externals=(f"average={wrong_size}",)), progress=False)


REFERENCE = {"_about": "made by hand for a test",
             "clean": {"peer": {"CC": 0.5, "PSNR": 12.0, "SSIM": 0.4, "refCC": 0.9, "n": 2}},
             "noise25": {"peer": {"CC": 0.4, "PSNR": 11.0, "SSIM": 0.3}}}


@pytest.mark.parametrize(("document", "message"), [
    ("not json {", "not valid JSON"),
    ([1, 2], "expected an object"),
    ({"fog": {"peer": {"CC": 0.5}}}, "'fog' is not a preset"),
    ({"clean": {"peer": [0.5]}}, r"clean\.peer: expected an object of metric values"),
    ({"clean": {"peer": {"CC": "high"}}}, r"clean\.peer\.CC: expected a finite number, got 'high'"),
    ({"clean": {"peer": {"CC": None}}}, r"clean\.peer\.CC: expected a finite number, got None"),
    ({"clean": {"peer": {"colourfulness": 1.0}}}, r"clean\.peer: no known metric"),
    ({"clean": {"peer": {"CC": 0.5, "n": 0}}}, r"clean\.peer\.n: expected a positive integer"),
    ({"stripe": {"peer": {"CC": 0.5}}}, "no figures for the evaluated presets"),
    ({"clean": []}, "clean: expected an object of methods"),
])
def test_malformed_reference_files_are_refused_with_the_key(tmp_path: Path, document, message: str) -> None:
    data = _write_dataset(tmp_path / "data")
    path = tmp_path / "reference.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    with pytest.raises(runner.EvalError, match=message) as raised:
        runner.run_evaluation(_settings(data, references=(path,)), progress=False)
    assert str(path) in str(raised.value)
    with pytest.raises(runner.EvalError, match="no such file"):
        runner.run_evaluation(_settings(data, references=(tmp_path / "missing.json",)), progress=False)


def test_reference_figures_appear_in_the_report_marked_as_references(tmp_path: Path) -> None:
    data = _write_dataset(tmp_path / "data")
    reference = tmp_path / "peers.json"
    reference.write_text(json.dumps(REFERENCE))
    out = tmp_path / "out"
    code = main(["eval", "--data", str(data), "--preset", "clean", "--preset", "noise25", "--method", "average",
                 "--reference", str(reference), "--out", str(out), "--no-progress"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    record = results["references"][str(reference)]
    assert record["about"] == "made by hand for a test" and record["counts"] == {"clean": {"peer": 2}}
    assert record["summary"]["clean"]["peer"]["CC"] == 0.5 and record["summary"]["clean"]["peer"]["VIF"] is None
    assert "refCC" not in record["summary"]["clean"]["peer"]
    assert results["methods"] == ["average"]  # a reference is never a run
    report = (out / "report.md").read_text()
    assert "| peer (ref) |" in report and "made by hand for a test" in report
    assert "## Runs against the reference figures" in report
    ours = results["summary"]["clean"]["average"]["CC"]
    assert f"{ours - 0.5:+.4f}" in report
    assert (out / "plots" / "PSNR.png").stat().st_size > 0


def test_a_pair_list_selects_a_held_out_split(tmp_path: Path) -> None:
    data = _write_dataset(tmp_path / "data", names=("a", "b", "c"))
    names = tmp_path / "split.txt"
    names.write_text("# held out\nc\n\na  # first\n")
    results = runner.run_evaluation(_settings(data, pairs=names), progress=False).results
    assert results["images"] == ["a", "c"] and results["settings"]["pairs"] == str(names)
    names.write_text("a\nzz\n")
    with pytest.raises(runner.EvalError, match="pairs not found: zz"):
        runner.run_evaluation(_settings(data, pairs=names), progress=False)
    names.write_text("# nothing\n")
    with pytest.raises(runner.EvalError, match="names no pairs"):
        runner.run_evaluation(_settings(data, pairs=names), progress=False)
