"""Classical fusion baselines and the fuser registry (tiny synthetic images, no data needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mex_fusion_ros.data.degradations import add_gaussian_noise, add_haze, add_stripe_noise, defocus_blur
from mex_fusion_ros.data.paired import find_pairs, read_pair
from mex_fusion_ros.fusion import classical, registry
from mex_fusion_ros.fusion.base import FusionInputError, FusionResult, ImageFuser
from mex_fusion_ros.fusion.registry import CLASSICAL_METHODS, create_fuser, parse_model_spec


def scene(height: int = 61, width: int = 83, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth synthetic pair with edges: IR hot square on a ramp; visible colour bars and a disk."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ir = 0.2 + 0.3 * xs / width
    ir[height // 4: height // 2, width // 4: width // 2] = 0.9
    vi = np.stack([0.3 + 0.4 * (xs // 10 % 2), 0.2 + 0.5 * ys / height, np.full_like(xs, 0.5)], axis=2)
    vi[(ys - height / 2) ** 2 + (xs - 2 * width / 3) ** 2 < (height / 5) ** 2] = (0.9, 0.8, 0.1)
    ir += rng.uniform(-0.02, 0.02, ir.shape).astype(np.float32)
    return np.clip(ir, 0, 1).astype(np.float32), np.clip(vi, 0, 1).astype(np.float32)


def luminance(vi: np.ndarray) -> np.ndarray:
    return classical.split_luminance(vi)[0]


def unclipped(fused: np.ndarray) -> np.ndarray:
    """Pixels whose RGB was not clipped: there a luminance + chroma round trip is exact."""
    return np.all((fused > 0.01) & (fused < 0.99), axis=2)


@pytest.mark.parametrize("method", CLASSICAL_METHODS)
@pytest.mark.parametrize("colour", [True, False])
def test_output_shape_dtype_range(method: str, colour: bool) -> None:
    ir, vi = scene(37, 53)  # odd sizes on purpose
    if not colour:
        vi = luminance(vi)
    fuser = create_fuser(method)
    assert isinstance(fuser, ImageFuser) and fuser.name == method
    result = fuser.fuse(ir, vi)
    assert isinstance(result, FusionResult)
    assert result.fused.shape == vi.shape
    assert result.fused.dtype == np.float32
    assert result.fused.min() >= 0.0 and result.fused.max() <= 1.0
    assert result.timings["total"] > 0.0


@pytest.mark.parametrize("method", CLASSICAL_METHODS)
def test_rejects_mismatched_or_integer_inputs(method: str) -> None:
    ir, vi = scene(32, 40)
    fuser = create_fuser(method)
    with pytest.raises(FusionInputError, match="sizes differ"):
        fuser.fuse(ir[:-1], vi)
    with pytest.raises(FusionInputError, match="float32"):
        fuser.fuse((ir * 255).astype(np.uint8), vi)


@pytest.mark.parametrize("method", ["average", "laplacian", "gff", "max"])
def test_identical_inputs_give_the_input(method: str) -> None:
    ir, _ = scene()
    fused = create_fuser(method).fuse(ir, ir.copy()).fused
    tolerance = 1e-5 if method != "gff" else 1e-3
    np.testing.assert_allclose(fused, ir, atol=tolerance)


def test_average_is_the_mean_of_ir_and_luminance() -> None:
    ir, vi = scene()
    fused = create_fuser("average").fuse(ir, vi).fused
    inside = unclipped(fused)
    assert inside.mean() > 0.8
    np.testing.assert_allclose(luminance(fused)[inside], (0.5 * (ir + luminance(vi)))[inside], atol=1e-4)
    grey = create_fuser("average").fuse(ir, luminance(vi)).fused
    np.testing.assert_allclose(grey, 0.5 * (ir + luminance(vi)), atol=1e-6)


def test_max_is_at_least_both_luminances() -> None:
    ir, vi = scene()
    fused = create_fuser("max").fuse(ir, vi).fused
    inside = unclipped(fused)
    assert inside.mean() > 0.8
    fused_luminance = luminance(fused)[inside]
    assert np.all(fused_luminance >= ir[inside] - 1e-4)
    assert np.all(fused_luminance >= luminance(vi)[inside] - 1e-4)
    grey = create_fuser("max").fuse(ir, luminance(vi)).fused
    np.testing.assert_array_equal(grey, np.maximum(ir, luminance(vi)))


@pytest.mark.parametrize("method", ["average", "max", "laplacian", "gff"])
def test_colour_output_keeps_the_visible_chroma(method: str) -> None:
    ir, vi = scene()
    fused = create_fuser(method).fuse(ir, vi).fused
    _, chroma_in = classical.split_luminance(vi)
    _, chroma_out = classical.split_luminance(fused)
    # Where the fused RGB is not clipped, the chroma survives the round trip unchanged.
    inside = unclipped(fused)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(chroma_out[inside], chroma_in[inside], atol=5e-3)


def test_laplacian_takes_the_stronger_detail_and_averages_the_base() -> None:
    ir, _ = scene()
    flat = np.full_like(ir, 0.4)
    fused = classical.laplacian_fuse(ir, flat)
    levels = classical.pyramid_levels(*ir.shape)
    ir_pyramid = classical.laplacian_pyramid(ir, levels)
    flat_pyramid = classical.laplacian_pyramid(flat, levels)
    assert all(np.abs(detail).max() < 1e-6 for detail in flat_pyramid[:-1])
    # A flat image has no detail, so every detail level must come from the IR; bases are averaged.
    base = 0.5 * (ir_pyramid[-1] + flat_pyramid[-1])
    expected = classical.collapse_laplacian_pyramid([*ir_pyramid[:-1], base])
    np.testing.assert_allclose(fused, expected, atol=1e-6)
    assert np.abs(fused - ir).max() > 0.05  # the base mix really changed the image


@settings(max_examples=15, deadline=None)
@given(height=st.integers(1, 40), width=st.integers(1, 40), levels=st.integers(0, 6))
def test_laplacian_pyramid_reconstructs_any_size(height: int, width: int, levels: int) -> None:
    image = np.random.default_rng(height * 41 + width).random((height, width), dtype=np.float32)
    pyramid = classical.laplacian_pyramid(image, min(levels, classical.pyramid_levels(height, width, 6)))
    np.testing.assert_allclose(classical.collapse_laplacian_pyramid(pyramid), image, atol=1e-5)


def test_guided_filter_preserves_edges_and_smooths_flat_regions() -> None:
    step = np.zeros((40, 40), np.float32)
    step[:, 20:] = 1.0
    noisy = step + np.random.default_rng(1).normal(0, 0.05, step.shape).astype(np.float32)
    smoothed = classical.guided_filter(step, noisy, radius=4, eps=1e-2)
    assert np.std(smoothed[:, :15] - step[:, :15]) < 0.5 * np.std(noisy[:, :15] - step[:, :15])
    assert smoothed[:, 22:].mean() - smoothed[:, :18].mean() > 0.9


def test_noise_estimate_tracks_sigma_and_ignores_stripes() -> None:
    ir, _ = scene(128, 128)
    for sigma in (10.0, 25.0, 50.0):
        noisy, _ = add_gaussian_noise(np.full_like(ir, 0.5), sigma, rng=3, modality="infrared")
        assert classical.estimate_noise_sigma(noisy) * 255 == pytest.approx(sigma, rel=0.1)
    # The scene itself has ~2.9/255 of texture noise; stripes (column offsets) must not add to it.
    striped, _ = add_stripe_noise(ir, 0.08, rng=4, gain_ratio=0.0)
    estimate = classical.estimate_noise_sigma(striped)
    assert estimate == pytest.approx(classical.estimate_noise_sigma(ir), abs=1e-3)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def real_crop(roadscene: Path, height: int = 144, width: int = 192) -> tuple[np.ndarray, np.ndarray]:
    """A full-resolution centre crop of one real pair (the cascade's thresholds are set on these)."""
    ir, vi = read_pair(find_pairs(roadscene / "val")[0])
    top, left = (ir.shape[0] - height) // 2, (ir.shape[1] - width) // 2
    return (np.ascontiguousarray(ir[top:top + height, left:left + width]),
            np.ascontiguousarray(vi[top:top + height, left:left + width]))


def test_cascade_reduces_noise_error_against_plain_laplacian(roadscene: Path) -> None:
    ir, vi = real_crop(roadscene)
    noisy_vi, _ = add_gaussian_noise(vi, 40.0, rng=5)
    clean_fused = create_fuser("laplacian").fuse(ir, vi).fused
    plain = create_fuser("laplacian").fuse(ir, noisy_vi).fused
    cascade = create_fuser("cascade")
    result = cascade.fuse(ir, noisy_vi)
    assert "vi_denoise" in cascade.last_report.applied
    assert psnr(result.fused, clean_fused) > psnr(plain, clean_fused) + 3.0
    assert psnr(result.restored_vi, vi) > psnr(noisy_vi, vi) + 3.0
    assert set(result.timings) >= {"restore_ir", "restore_vi", "fuse", "total"}


def test_cascade_removes_stripes_and_leaves_clean_pairs_alone(roadscene: Path) -> None:
    ir, vi = real_crop(roadscene)
    striped, _ = add_stripe_noise(ir, 0.06, rng=6)
    cascade = create_fuser("cascade")
    result = cascade.fuse(striped, vi)
    assert cascade.last_report.applied == ("ir_destripe",)
    assert psnr(result.restored_ir, ir) > psnr(striped, ir) + 6.0
    clean = cascade.fuse(ir, vi)
    assert cascade.last_report.applied == ()
    np.testing.assert_allclose(clean.restored_vi, vi, atol=2e-3)
    np.testing.assert_array_equal(clean.restored_ir, ir)


def test_cascade_detects_haze_and_blur(roadscene: Path) -> None:
    ir, vi = real_crop(roadscene)
    cascade = classical.CascadeFuser()
    hazy, _ = add_haze(vi, 1.5)
    result = cascade.fuse(ir, hazy)
    assert cascade.last_report.applied == ("vi_dehaze",)
    assert psnr(result.restored_vi, vi) > psnr(hazy, vi) + 3.0
    blurred, _ = defocus_blur(vi, 4.0)
    result = cascade.fuse(ir, blurred)
    assert cascade.last_report.applied == ("vi_deblur",)
    assert psnr(result.restored_vi, vi) > psnr(blurred, vi)


def test_registry_rejects_unknown_specs_and_missing_weights(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown fuser 'bilateral'.*average, max, laplacian, gff, cascade"):
        create_fuser("bilateral")
    with pytest.raises(ValueError, match="non-empty"):
        create_fuser("  ")
    with pytest.raises(ValueError, match="does not exist"):
        create_fuser(str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="must end in .pt"):
        create_fuser("nano:weights.bin")
    with pytest.raises(ValueError, match="does not exist"):
        create_fuser("nano:missing.onnx")
    assert parse_model_spec("nano") == ("nano", None)
    assert parse_model_spec("small:w/a.pt") == ("small", Path("w/a.pt"))
    assert parse_model_spec("run/last.pt") == (None, Path("run/last.pt"))


def test_registry_model_names_match_the_model_package() -> None:
    # The registry keeps its own tuple so that building a baseline never imports torch.
    model_config = pytest.importorskip("mex_fusion_ros.model.config")
    assert set(registry.MODEL_CONFIGS) == set(model_config.MODEL_CONFIGS)
