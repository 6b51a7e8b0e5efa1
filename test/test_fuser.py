"""Weights files, Fuser.from_weights / fuse / fuse_batch, and the `mex-fusion fuse` command."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mex_fusion_ros.cli import main
from mex_fusion_ros.data.degradations import DEGRADATION_TYPES
from mex_fusion_ros.fusion.base import FusionInputError, GateRouting, ImageFuser
from mex_fusion_ros.model import create_model
from mex_fusion_ros.model import weights as weights_module
from mex_fusion_ros.model.config import ConfigError
from mex_fusion_ros.model.fuser import Fuser
from mex_fusion_ros.model.layers import rgb_to_ycbcr
from mex_fusion_ros.model.weights import WeightsError, load_weights, save_weights, shipped_weights_path


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _trained_like_model(seed: int = 0, **overrides):
    """A nano network whose zero-initialised heads are perturbed, so outputs depend on the input."""
    torch.manual_seed(seed)
    model = create_model("nano", **overrides)
    with torch.no_grad():
        for head in model.output_heads():
            head.weight.normal_(std=0.05)
    return model.eval()


@pytest.fixture()
def weights_file(tmp_path: Path) -> Path:
    return save_weights(tmp_path / "mex_nano.pt", _trained_like_model(), {"note": "test"})


def _pair(height: int, width: int, colour: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ir = rng.random((height, width), dtype=np.float32)
    vi = rng.random((height, width, 3) if colour else (height, width), dtype=np.float32)
    return ir, vi


def test_weights_round_trip(weights_file: Path) -> None:
    model, metadata = load_weights(weights_file, expected="nano")
    assert metadata == {"note": "test"}
    reference = _trained_like_model()
    ir, vi = torch.rand(1, 1, 32, 32), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(ir, vi).fused, reference(ir, vi).fused)


def test_missing_weights_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(WeightsError, match=str(missing)):
        Fuser.from_weights(missing)


def test_corrupt_weights_name_the_path(tmp_path: Path, weights_file: Path) -> None:
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(weights_file.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="truncated.pt.*cannot be read"):
        Fuser.from_weights(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(WeightsError, match="garbage.pt"):
        load_weights(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}}, foreign)
    with pytest.raises(WeightsError, match="foreign.pt is not a mex_fusion_ros.weights file"):
        load_weights(foreign)


def test_config_mismatch_is_refused(tmp_path: Path, weights_file: Path) -> None:
    with pytest.raises(WeightsError, match="another configuration.*top_k"):
        load_weights(weights_file, expected=create_model("nano", top_k=3).config)
    with pytest.raises(WeightsError, match="name: file 'nano' != expected 'small'"):
        Fuser.from_weights(weights_file, expected="small")
    # A state dict that does not fit the stored configuration.
    payload = torch.load(weights_file, weights_only=True)
    payload["config"]["widths"] = [16, 32, 48, 64]
    tampered = tmp_path / "tampered.pt"
    torch.save(payload, tampered)
    with pytest.raises(WeightsError, match="tampered.pt does not fit its configuration"):
        load_weights(tampered)
    payload["config"]["colour"] = True
    torch.save(payload, tampered)
    with pytest.raises(WeightsError, match="invalid model configuration.*colour"):
        load_weights(tampered)


def test_weights_from_before_a_new_config_field_still_load(tmp_path: Path) -> None:
    # Fields added later have defaults that keep the old behaviour; files without them load.
    model = _trained_like_model(estimator_statistics=False)
    path = save_weights(tmp_path / "old.pt", model)
    payload = torch.load(path, weights_only=True)
    del payload["config"]["estimator_statistics"]
    torch.save(payload, path)
    loaded, _ = load_weights(path)
    assert loaded.config.estimator_statistics is False


def test_shipped_weights_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMENT_PREFIX_PATH", "")
    monkeypatch.setattr(weights_module, "SOURCE_WEIGHTS_DIR", tmp_path)
    with pytest.raises(WeightsError, match="no shipped weights for model 'nano'.*mex_nano.pt"):
        shipped_weights_path("nano")
    save_weights(tmp_path / "mex_nano.pt", create_model("nano"))
    assert shipped_weights_path("nano") == tmp_path / "mex_nano.pt"
    with pytest.raises(ConfigError, match="unknown model configuration"):
        shipped_weights_path("giant")


def test_fuse_numpy_colour_any_size(weights_file: Path) -> None:
    fuser = Fuser.from_weights(weights_file, device="cpu")
    assert isinstance(fuser, ImageFuser) and fuser.name == "nano"
    ir, vi = _pair(37, 45)
    result = fuser.fuse(ir, vi)
    assert result.fused.shape == (37, 45, 3) and result.fused.dtype == np.float32
    assert result.fused.min() >= 0.0 and result.fused.max() <= 1.0
    assert result.restored_ir is not None and result.restored_ir.shape == (37, 45)
    assert result.restored_vi is not None and result.restored_vi.shape == (37, 45, 3)
    assert result.degradation is not None and tuple(result.degradation.probabilities) == DEGRADATION_TYPES
    assert all(0.0 <= s <= 1.0 for s in result.degradation.severities.values())
    assert len(result.routing) == 7 and all(isinstance(r, GateRouting) for r in result.routing)
    assert all(len(r.experts) == 2 and abs(sum(r.weights) - 1) < 1e-5 for r in result.routing)
    assert {"preprocess", "forward", "postprocess"} <= set(result.timings)


def test_channels_last_inference_matches_the_plain_network(weights_file: Path) -> None:
    fuser = Fuser.from_weights(weights_file, device="cpu")
    assert fuser.memory_format == torch.channels_last
    reference = _trained_like_model()
    generator = torch.Generator().manual_seed(5)
    ir, vi = torch.rand(2, 1, 40, 72, generator=generator), torch.rand(2, 3, 40, 72, generator=generator)
    with torch.no_grad():
        expected = reference(ir, vi)
    output = fuser.infer(ir, vi)
    assert output.fused is not None and expected.fused is not None
    torch.testing.assert_close(output.fused, expected.fused, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(output.restored_vi, expected.restored_vi, atol=1e-5, rtol=1e-4)


def test_colour_output_takes_chroma_from_the_restored_visible(weights_file: Path) -> None:
    fuser = Fuser.from_weights(weights_file, device="cpu")
    ir, vi = _pair(32, 48, seed=4)
    result = fuser.fuse(ir, vi)
    assert result.restored_vi is not None
    fused = torch.from_numpy(result.fused).permute(2, 0, 1)[None]
    restored = torch.from_numpy(result.restored_vi).permute(2, 0, 1)[None]
    inside = (fused > 0.01).all(1) & (fused < 0.99).all(1)  # clipping changes chroma at the limits
    difference = (rgb_to_ycbcr(fused)[:, 1:] - rgb_to_ycbcr(restored)[:, 1:]).abs().amax(1)
    assert float(difference[inside].max()) < 1e-4


def test_grey_visible_gives_grey_output(weights_file: Path) -> None:
    fuser = Fuser.from_weights(weights_file, device="cpu")
    ir, vi = _pair(20, 30, colour=False)
    result = fuser.fuse(ir, vi)
    assert result.fused.shape == (20, 30)
    assert result.restored_vi is not None and result.restored_vi.shape == (20, 30)


def test_tensor_and_batch_inputs_agree_with_single_numpy(weights_file: Path) -> None:
    fuser = Fuser.from_weights(weights_file, device="cpu")
    pairs = [_pair(24, 40, seed=1), _pair(33, 17, seed=2), _pair(24, 40, seed=3)]
    singles = [fuser.fuse(ir, vi).fused for ir, vi in pairs]
    batched = fuser.fuse_batch([p[0] for p in pairs], [p[1] for p in pairs])
    for single, result in zip(singles, batched):
        np.testing.assert_allclose(result.fused, single, atol=1e-5)
    ir, vi = pairs[0]
    from_tensors = fuser.fuse(torch.from_numpy(ir)[None], torch.from_numpy(vi).permute(2, 0, 1))
    np.testing.assert_allclose(from_tensors.fused, singles[0], atol=1e-6)


def test_bad_inputs_raise(weights_file: Path) -> None:
    fuser = Fuser.from_weights(weights_file, device="cpu")
    ir, vi = _pair(16, 16)
    with pytest.raises(FusionInputError, match="sizes differ"):
        fuser.fuse(ir, vi[:8])
    with pytest.raises(FusionInputError, match="float32"):
        fuser.fuse(ir.astype(np.float64), vi)
    with pytest.raises(FusionInputError, match=r"use fuse_batch for \(2, 1, 16, 16\)"):
        fuser.fuse(torch.rand(2, 1, 16, 16), torch.rand(2, 3, 16, 16))
    with pytest.raises(FusionInputError, match="2 infrared but 1 visible"):
        fuser.fuse_batch([ir, ir], [vi])
    with pytest.raises(ValueError, match="CUDA is not available"):
        if torch.cuda.is_available():
            raise ValueError("CUDA is not available (skipped on a GPU machine)")
        Fuser.from_weights(weights_file, device="cuda")


def _write_pairs(root: Path, names: list[str], colour: bool) -> None:
    rng = np.random.default_rng(0)
    (root / "ir").mkdir(parents=True)
    (root / "vi").mkdir(parents=True)
    for name in names:
        cv2.imwrite(str(root / "ir" / f"{name}.png"), rng.integers(0, 256, (30, 41), dtype=np.uint8))
        shape = (30, 41, 3) if colour else (30, 41)
        cv2.imwrite(str(root / "vi" / f"{name}.jpg"), rng.integers(0, 256, shape, dtype=np.uint8))


def test_fuse_command_writes_pngs_named_after_pairs(tmp_path: Path, weights_file: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    _write_pairs(data, ["a_001", "b_002"], colour=True)
    code = main(["fuse", "--data", str(data), "--out", str(out), "--weights", str(weights_file),
                 "--device", "cpu", "--save-restored", "--no-progress"])
    assert code == 0
    for name in ("a_001", "b_002"):
        fused = cv2.imread(str(out / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert fused.shape == (30, 41, 3) and fused.dtype == np.uint8
        assert cv2.imread(str(out / "restored_ir" / f"{name}.png"), cv2.IMREAD_UNCHANGED).shape == (30, 41)
        assert (out / "restored_vi" / f"{name}.png").is_file()
    rows = (out / "degradation.csv").read_text().splitlines()
    assert rows[0].split(",")[1:8] == list(DEGRADATION_TYPES) and len(rows) == 3


def test_fuse_command_errors(tmp_path: Path, weights_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fuse", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o"),
                 "--weights", str(weights_file)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["fuse", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--weights", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt does not exist" in capsys.readouterr().err
