"""Full-resolution pyramid fusion (model.pyramid) and the edge-transfer loss."""
import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mex_fusion_ros.eval.metrics import q_abf, vif
from mex_fusion_ros.model import create_model
from mex_fusion_ros.model.config import ConfigError, get_config
from mex_fusion_ros.model.layers import replace_luminance, rgb_to_luminance, rgb_to_ycbcr, ycbcr_to_rgb
from mex_fusion_ros.model.losses import FUSION_TERMS, edge_transfer, fusion_losses, information_fidelity
from mex_fusion_ros.model.pyramid import PyramidFusion, collapse_pyramid, laplacian_pyramid, pyramid_down


@settings(max_examples=25, deadline=None)
@given(levels=st.integers(1, 4), h=st.integers(1, 4), w=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_pyramid_round_trip_is_exact(levels: int, h: int, w: int, seed: int) -> None:
    x = torch.rand(2, 1, h * 2**levels, w * 2**levels, generator=torch.Generator().manual_seed(seed))
    pyramid = laplacian_pyramid(x, levels)
    assert [p.shape[-1] for p in pyramid] == [w * 2 ** (levels - k) for k in range(levels + 1)]
    assert torch.allclose(collapse_pyramid(pyramid), x, atol=1e-6)


def test_pyramid_down_is_two_by_two_average_and_sizes_are_checked() -> None:
    x = torch.rand(3, 2, 8, 12)
    assert torch.allclose(pyramid_down(x), F.avg_pool2d(x, 2), atol=1e-7)
    with pytest.raises(ValueError, match="not divisible"):
        laplacian_pyramid(torch.rand(1, 1, 12, 12), 3)


def _checkerboard(height: int, width: int, amplitude: float) -> torch.Tensor:
    rows = torch.arange(height)[:, None]
    cols = torch.arange(width)[None, :]
    return (0.5 + amplitude * (((rows + cols) % 2) * 2 - 1)).float()[None, None]


def test_fresh_pyramid_fusion_keeps_single_pixel_detail_that_averaging_halves() -> None:
    """The point of the design: the network works on 4x4 cells, the fused image keeps 1-pixel detail."""
    flat_ir = torch.full((1, 1, 64, 64), 0.3)
    textured = _checkerboard(64, 64, 0.2)
    fusion = PyramidFusion(feature_channels=8, levels=4).eval()
    with torch.no_grad():
        fused, maps = fusion(torch.zeros(1, 8, 16, 16), flat_ir, textured)
    detail = (fused - F.avg_pool2d(fused, 2).repeat_interleave(2, -1).repeat_interleave(2, -2)).abs().mean()
    source_detail = (textured - 0.5).abs().mean()
    assert detail > 0.95 * source_detail  # averaging would keep 0.5
    assert abs(float(fused.mean()) - 0.5 * (0.3 + 0.5)) < 1e-4  # base: averaged
    assert float(maps.detail_weights[0].max()) < 0.01  # flat infrared never selected


def test_nano_forward_keeps_detail_at_full_resolution() -> None:
    model = create_model("nano").eval()
    ir = torch.full((1, 1, 64, 64), 0.3)
    vi = _checkerboard(64, 64, 0.2).repeat(1, 3, 1, 1)
    blend = create_model("nano", fusion_output="blend").eval()
    with torch.no_grad():
        pyramid_y = model(ir, vi).fused_luminance
        blend_y = blend(ir, vi).fused_luminance
    assert pyramid_y is not None and blend_y is not None
    assert (pyramid_y - pyramid_y.mean()).abs().mean() > 0.19
    assert (blend_y - blend_y.mean()).abs().mean() < 0.11


def test_pyramid_fusion_trains_its_head_and_sharpness() -> None:
    fusion = PyramidFusion(feature_channels=4, levels=2)
    features = torch.rand(2, 4, 8, 8, requires_grad=True)
    ir, vi = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    fused, _ = fusion(features, ir, vi)
    fused.square().mean().backward()
    assert fusion.head.weight.grad is not None and torch.isfinite(fusion.head.weight.grad).all()
    assert fusion.log_sharpness.grad is not None and features.grad is not None


def test_pyramid_levels_must_divide_the_stride() -> None:
    with pytest.raises(ConfigError, match="pyramid_levels"):
        get_config("paper", pyramid_levels=4)  # stride 8
    with pytest.raises(ConfigError, match="fusion_output"):
        get_config("nano", fusion_output="wavelet")


def test_replace_luminance_equals_the_ycbcr_round_trip() -> None:
    rgb, y = torch.rand(2, 3, 9, 7), torch.rand(2, 1, 9, 7)
    reference = ycbcr_to_rgb(torch.cat((y, rgb_to_ycbcr(rgb)[:, 1:]), dim=1))
    assert torch.allclose(replace_luminance(rgb, y), reference, atol=1e-6)
    assert torch.allclose(rgb_to_luminance(replace_luminance(rgb, y)), y, atol=1e-6)


def _edges_image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.zeros((48, 48), np.float32)
    for _ in range(6):
        top, left = rng.integers(0, 40, 2)
        image[top:top + rng.integers(4, 20), left:left + rng.integers(4, 20)] += rng.uniform(0.1, 0.5)
    return np.clip(image, 0, 1)


def test_edge_transfer_follows_the_evaluation_q_abf() -> None:
    a, b = _edges_image(1), _edges_image(2)
    candidates = {"average": 0.5 * (a + b), "max": np.maximum(a, b), "a": a, "faded": 0.25 * (a + b)}
    ours, metric = {}, {}
    for name, fused in candidates.items():
        t = [torch.from_numpy(x)[None, None] for x in (fused, a, b)]
        ours[name] = float(edge_transfer(*t)[0])
        metric[name] = q_abf(a, b, fused)
        assert abs(ours[name] - metric[name]) < 0.08, (name, ours[name], metric[name])
    assert sorted(ours, key=ours.get) == sorted(metric, key=metric.get)
    same = torch.from_numpy(a)[None, None]
    assert float(edge_transfer(same, same, same)[0]) == pytest.approx(0.9994 * 0.9879 / (1 + math.exp(-7.5))
                                                                      / (1 + math.exp(-4.4)), abs=5e-3)


def test_fusion_losses_are_finite_with_gradients_on_flat_images() -> None:
    fused = torch.full((2, 1, 16, 16), 0.5, requires_grad=True)
    terms = fusion_losses(fused, torch.full((2, 1, 16, 16), 0.2), torch.full((2, 3, 16, 16), 0.7))
    total = sum(terms.values())
    total.backward()
    assert all(torch.isfinite(v) for v in terms.values()) and torch.isfinite(fused.grad).all()
    assert "edge_transfer" in terms


def test_fusion_losses_compute_only_the_terms_asked_for() -> None:
    """Training asks only for the weighted terms; each one is the same as in the full set."""
    generator = torch.Generator().manual_seed(3)
    fused, ir, vi = (torch.rand(2, c, 48, 48, generator=generator) for c in (1, 1, 3))
    every = fusion_losses(fused, ir, vi)
    assert tuple(every) == FUSION_TERMS
    for wanted in (("information",), ("overshoot", "ssim"), ("gradient", "overshoot"), ()):
        some = fusion_losses(fused, ir, vi, wanted)
        assert set(some) == set(wanted)
        for name, value in some.items():
            assert torch.equal(value, every[name]), name
    small = fusion_losses(fused[..., :24, :24], ir[..., :24, :24], vi[..., :24, :24], ("information", "ssim"))
    assert set(small) == {"ssim"}  # below the four VIF scales' minimum size
    with pytest.raises(ValueError, match="unknown fusion loss terms.*'sharpness'"):
        fusion_losses(fused, ir, vi, ("ssim", "sharpness"))


def test_information_fidelity_is_the_evaluation_vif() -> None:
    """The loss is the metric: same value where the metric has no special case, same order everywhere."""
    a = _edges_image(3)
    a = 0.5 * cv2.GaussianBlur(a, (0, 0), 1.0) + 0.1  # room to stretch without clipping
    rng = np.random.default_rng(0)
    candidates = {"same": a, "faded": 0.5 * a + 0.2, "noisy": np.clip(a + rng.normal(0, 0.04, a.shape), 0, 1),
                  "blurred": cv2.GaussianBlur(a, (0, 0), 1.5), "stretched": 1.3 * (a - 0.35) + 0.35}
    ours, metric = {}, {}
    for name, distorted in candidates.items():
        t = [torch.from_numpy(x.astype(np.float64))[None, None] for x in (a, distorted)]
        ours[name] = float(information_fidelity(*t)[0])
        metric[name] = vif(a.astype(np.float64), distorted.astype(np.float64))
        assert ours[name] == pytest.approx(metric[name], abs=2e-3), name
    assert sorted(ours, key=ours.get) == sorted(metric, key=metric.get)
    assert ours["faded"] < ours["same"] < ours["stretched"]


def test_information_term_has_finite_gradients_on_flat_crops_and_needs_41_pixels() -> None:
    fused = torch.full((2, 1, 48, 48), 0.5, requires_grad=True)
    terms = fusion_losses(fused, torch.full((2, 1, 48, 48), 0.2), torch.rand(2, 3, 48, 48))
    terms["information"].backward()
    assert torch.isfinite(terms["information"]) and torch.isfinite(fused.grad).all()
    assert "information" not in fusion_losses(torch.rand(1, 1, 40, 40), torch.rand(1, 1, 40, 40),
                                               torch.rand(1, 3, 40, 40))
