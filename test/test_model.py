"""MexFusionNet: configurations, shapes, determinism, sparse gated experts, balancing loss."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mex_fusion_ros.model import ConfigError, MexFusionNet, create_model, get_config, list_models
from mex_fusion_ros.model.bench_command import count_macs, parse_size
from mex_fusion_ros.model.layers import rgb_to_luminance, rgb_to_ycbcr, ycbcr_to_rgb
from mex_fusion_ros.model.moe import SparseMoE, cv_squared
from mex_fusion_ros.model.network import pad_to_multiple

NUM_TYPES = 7


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The machine is shared: one intra-op thread avoids OpenMP spin contention with other jobs.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _pair(batch: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 1, height, width, generator=generator),
            torch.rand(batch, 3, height, width, generator=generator))


@pytest.mark.parametrize("name", list_models())
def test_every_config_forward_backward(name: str) -> None:
    model = create_model(name)
    model.train()
    ir, vi = _pair(2, 32, 32)
    out = model(ir, vi)
    assert out.fused is not None and out.fused_luminance is not None
    assert out.fused.shape == (2, 3, 32, 32)
    assert out.fused_luminance.shape == (2, 1, 32, 32)
    assert out.restored_ir.shape == (2, 1, 32, 32) and out.restored_vi.shape == (2, 3, 32, 32)
    assert out.degradation_logits.shape == (2, NUM_TYPES) and out.degradation_severity.shape == (2, NUM_TYPES)
    for tensor in (out.fused, out.restored_ir, out.restored_vi, out.degradation_logits, out.balance_loss):
        assert torch.isfinite(tensor).all()
    loss = out.fused.mean() + out.restored_ir.mean() + out.restored_vi.mean() + out.degradation_logits.mean()
    (loss + out.balance_loss).backward()
    assert model.stem_ir.weight.grad is not None and torch.isfinite(model.stem_ir.weight.grad).all()
    assert any(p.grad is not None for p in model.fusion_head.parameters())


def test_paper_config_reproduces_tg_ecnet_scale() -> None:
    config = get_config("paper")
    assert (config.num_experts, config.top_k) == (11, 6)
    assert config.widths[0] == 48 and config.encoder_blocks == (4, 6, 6, 8)
    assert config.block == "restormer" and config.moe_levels == (0, 1, 2) and "output" in config.fusion_moe
    model = MexFusionNet(config)
    assert len(model.encoder_moe) == 3 and all(len(m.experts) == 11 for m in model.encoder_moe.values())


@pytest.mark.parametrize("height,width", [(37, 53), (17, 9), (5, 3), (64, 48), (1, 1)])
def test_odd_sizes_keep_their_shape(height: int, width: int) -> None:
    model = create_model("nano").eval()
    ir, vi = _pair(1, height, width)
    with torch.no_grad():
        out = model(ir, vi)
    assert out.fused is not None
    assert out.fused.shape == (1, 3, height, width)
    assert out.restored_vi.shape == (1, 3, height, width)
    assert torch.isfinite(out.fused).all()


def test_pad_to_multiple_pads_bottom_right_only() -> None:
    x = torch.arange(12.0).view(1, 1, 3, 4)
    padded = pad_to_multiple(x, 8)
    assert padded.shape == (1, 1, 8, 8)
    assert torch.equal(padded[..., :3, :4], x)


def test_bad_input_shapes_raise_with_the_shape() -> None:
    model = create_model("nano").eval()
    with pytest.raises(ValueError, match=r"\(1, 3, 8, 8\)"):
        model(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="differ"):
        model(torch.rand(1, 1, 8, 8), torch.rand(1, 3, 8, 9))


def test_eval_mode_is_deterministic() -> None:
    torch.manual_seed(3)
    model = create_model("nano").eval()
    ir, vi = _pair(2, 40, 48)
    with torch.no_grad():
        first, second = model(ir, vi), model(ir, vi)
    assert first.fused is not None and second.fused is not None
    assert torch.equal(first.fused, second.fused)
    for a, b in zip(first.routing, second.routing):
        assert torch.equal(a.indices, b.indices)


def test_fresh_network_restores_by_identity_and_fuses_by_averaging() -> None:
    model = create_model("nano", fusion_output="blend").eval()
    ir, vi = _pair(1, 32, 32)
    with torch.no_grad():
        out = model(ir, vi)
    assert torch.allclose(out.restored_ir, ir) and torch.allclose(out.restored_vi, vi)
    assert out.fused_luminance is not None and out.fused is not None
    assert torch.allclose(out.fused_luminance, 0.5 * (ir + rgb_to_luminance(vi)), atol=1e-6)
    # Colour: chroma of the fused image is the chroma of the restored visible image.
    assert torch.allclose(rgb_to_ycbcr(out.fused)[:, 1:], rgb_to_ycbcr(out.restored_vi)[:, 1:], atol=1e-5)


def test_ycbcr_round_trip_and_luminance_weights() -> None:
    rgb = torch.rand(2, 3, 5, 7)
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-5)
    expected = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    assert torch.allclose(rgb_to_ycbcr(rgb)[:, 0], expected)
    with pytest.raises(ValueError, match=r"\(2, 1, 5, 7\)"):
        rgb_to_ycbcr(torch.rand(2, 1, 5, 7))


def test_config_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="unknown model configuration 'huge'"):
        create_model("huge")
    with pytest.raises(ConfigError, match="colour_mode"):
        create_model("nano", colour_mode=True)
    with pytest.raises(ConfigError, match="top_k"):
        create_model("nano", top_k=9)
    with pytest.raises(ConfigError, match="decoder_blocks"):
        create_model("nano", decoder_blocks=(1, 1))


def test_config_dict_round_trip() -> None:
    for name in list_models():
        config = get_config(name)
        assert type(config).from_dict(config.to_dict()) == config


def test_routing_is_reported_per_gate_and_image() -> None:
    model = create_model("nano").eval()
    ir, vi = _pair(3, 32, 32)
    with torch.no_grad():
        out = model(ir, vi)
    gates = [decision.gate for decision in out.routing]
    assert gates == ["encoder0/ir", "encoder0/vi", "encoder1/ir", "encoder1/vi", "encoder2/ir", "encoder2/vi",
                     "fusion_bottleneck"]
    for decision in out.routing:
        assert decision.indices.shape == (3, 2) and decision.weights.shape == (3, 2)
        assert torch.allclose(decision.weights.sum(1), torch.ones(3))


def test_gradients_reach_every_expert_over_a_training_batch() -> None:
    torch.manual_seed(0)
    model = create_model("nano").train()
    # Heads start at zero (identity restoration); after any training step they are not, and only
    # then do gradients flow back into the trunk. Give them that trained-like state.
    for head in model.output_heads():
        torch.nn.init.normal_(head.weight, std=0.1)
    ir, vi = _pair(16, 32, 32, seed=1)
    out = model(ir, vi)
    assert out.fused is not None
    (out.fused.square().mean() + out.restored_vi.square().mean() + out.restored_ir.square().mean()
     + out.balance_loss).backward()
    moes = [*model.encoder_moe.values(), *model.fusion_moe.values()]
    for moe in moes:
        for index, expert in enumerate(moe.experts):
            grads = [p.grad for p in expert.parameters()]
            assert all(g is not None for g in grads), f"{moe.name} expert {index} got no gradient"
            assert any(float(g.abs().sum()) > 0 for g in grads if g is not None), f"{moe.name} expert {index}"
        # The noise std of the gate learns through the smooth load estimate.
        assert moe.w_noise.grad is not None and float(moe.w_noise.grad.abs().sum()) > 0


def test_unselected_experts_do_not_run() -> None:
    torch.manual_seed(0)
    moe = SparseMoE("test", channels=4, num_experts=6, top_k=2, condition_dim=3).eval()
    torch.nn.init.normal_(moe.w_gate)
    calls = [0] * 6
    for index, expert in enumerate(moe.experts):
        expert.register_forward_hook(lambda module, args, output, i=index: calls.__setitem__(i, calls[i] + 1))
    x, condition = torch.rand(1, 4, 8, 8), torch.rand(1, 3)
    out = moe(x, condition)
    chosen = set(out.indices[0].tolist())
    assert len(chosen) == 2
    assert [calls[i] for i in range(6)] == [1 if i in chosen else 0 for i in range(6)]


def test_experts_see_only_the_images_that_chose_them() -> None:
    torch.manual_seed(1)
    moe = SparseMoE("test", channels=4, num_experts=5, top_k=1, condition_dim=5).eval()
    with torch.no_grad():
        moe.w_gate.zero_()
        moe.w_gate[4:, :] = 10 * torch.eye(5)  # condition one-hot -> expert
    seen: dict[int, int] = {}
    for index, expert in enumerate(moe.experts):
        expert.register_forward_hook(lambda m, args, o, i=index: seen.__setitem__(i, args[0].shape[0]))
    condition = torch.eye(5)[[0, 0, 3, 0]]
    out = moe(torch.rand(4, 4, 6, 6), condition)
    assert out.indices[:, 0].tolist() == [0, 0, 3, 0]
    assert seen == {0: 3, 3: 1}


def test_cost_falls_with_k() -> None:
    macs = []
    for k in (4, 3, 2, 1):
        torch.manual_seed(0)
        model = create_model("nano", top_k=k, fusion_top_k=k).eval()
        macs.append(count_macs(model, _pair(1, 32, 32)))
    assert macs == sorted(macs, reverse=True) and len(set(macs)) == 4


def test_balance_loss_decreases_under_a_toy_imbalance() -> None:
    torch.manual_seed(0)
    moe = SparseMoE("toy", channels=4, num_experts=4, top_k=2, condition_dim=2).train()
    with torch.no_grad():
        # Every image prefers expert 0 (logit ~1.2 above the others, the noise std is ~0.7).
        moe.w_gate[:, 0] = 0.4
    x, condition = torch.rand(32, 4, 4, 4), torch.rand(32, 2)
    optimizer = torch.optim.Adam([moe.w_gate, moe.w_noise], lr=0.05)
    losses = []
    for _ in range(60):
        _, _, balance = moe.route(x, condition)
        optimizer.zero_grad()
        balance.backward()
        optimizer.step()
        losses.append(float(balance.detach()))
    assert losses[0] > 1.0
    assert sum(losses[-10:]) / 10 < 0.25 * losses[0]
    # The preference for expert 0 was unlearned, not just hidden by the noise.
    clean_logits, _ = moe.gate_logits(x, condition)
    assert float(clean_logits.argmax(1).eq(0).float().mean()) < 0.9


def test_image_statistics_respond_to_noise_and_blur() -> None:
    import cv2
    import numpy as np

    from mex_fusion_ros.model.network import image_statistics

    rng = np.random.default_rng(0)
    # A smooth textured scene: blurred noise, so it has edges at several scales.
    scene = cv2.GaussianBlur(rng.random((96, 128)).astype(np.float32), (0, 0), 2.0)
    scene = (scene - scene.min()) / (scene.max() - scene.min())
    clean = torch.from_numpy(scene)[None, None]
    noisy = (clean + 0.2 * torch.from_numpy(rng.standard_normal((96, 128)).astype(np.float32))).clamp(0, 1)
    blurred = torch.from_numpy(cv2.GaussianBlur(scene, (0, 0), 3.0))[None, None]
    stats = image_statistics(torch.cat((clean, noisy, blurred)))
    assert stats.shape == (3, 8) and torch.isfinite(stats).all()
    assert stats[1, 0] > stats[0, 0] + 1.0  # log noise level rises by far more than e
    assert stats[2, 5] < stats[0, 5]  # fine-to-coarse gradient ratio falls with defocus
    # Size independence: a crop of a stationary texture gives nearly the same cues.
    crop = image_statistics(noisy[..., :48, :64])
    assert torch.allclose(crop[0, :3], stats[1, :3], atol=0.15)


def _image_statistics_by_definition(image: torch.Tensor) -> torch.Tensor:
    """The cues as the docstring defines them, written plainly (channel mean, avg_pool2d)."""
    import torch.nn.functional as F

    grey = image.mean(1, keepdim=True)

    def energy(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return ((x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1),
                (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1))

    diagonal = grey[..., 1:, 1:] - grey[..., 1:, :-1] - grey[..., :-1, 1:] + grey[..., :-1, :-1]
    noise = diagonal.abs().flatten(1).median(dim=1).values / (2 * 0.6745)
    dx, dy = energy(grey)
    dx2, dy2 = energy(F.avg_pool2d(grey, 2))
    dx4, dy4 = energy(F.avg_pool2d(grey, 4))
    coarse = torch.log(dx4 + dy4 + 1e-4)
    return torch.stack([torch.log(noise + 1e-4), torch.log(dx + 1e-4), torch.log(dy + 1e-4),
                        torch.log(dx2 + dy2 + 1e-4), coarse, torch.log(dx + dy + 1e-4) - coarse,
                        grey.flatten(1).mean(1), grey.flatten(1).std(1)], dim=1)


@given(channels=st.sampled_from([1, 3]), height=st.integers(8, 41), width=st.integers(8, 41),
       channels_last=st.booleans(), seed=st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_image_statistics_match_their_definition(channels: int, height: int, width: int, channels_last: bool,
                                                 seed: int) -> None:
    # The fast version (channel slices, reused differences, pooling twice) must give the plainly
    # written cues, on odd sizes and in both memory layouts, up to float rounding.
    from mex_fusion_ros.model.network import image_statistics

    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(2, channels, height, width, generator=generator)
    image[1] = image[1] * 0.1 + 0.45  # a low-contrast image too
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(image_statistics(image), _image_statistics_by_definition(image),
                               atol=1e-4, rtol=1e-4)


def test_cv_squared() -> None:
    assert float(cv_squared(torch.tensor([2.0, 2.0, 2.0]))) == pytest.approx(0.0)
    assert float(cv_squared(torch.tensor([4.0, 0.0]))) == pytest.approx(2.0)
    assert float(cv_squared(torch.tensor([5.0]))) == 0.0


@given(channels=st.integers(1, 9), height=st.integers(2, 7), width=st.integers(2, 7), seed=st.integers(0, 2**16))
@settings(max_examples=30, deadline=None)
def test_layer_norm_channels_last_matches_the_plain_layout(channels, height, width, seed) -> None:
    from mex_fusion_ros.model.layers import LayerNorm2d

    generator = torch.Generator().manual_seed(seed)
    norm = LayerNorm2d(channels)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(channels, generator=generator))
        norm.bias.copy_(torch.randn(channels, generator=generator))
    x = torch.randn(2, channels, height, width, generator=generator) * 5 + 3
    expected = norm(x)
    fast = norm(x.contiguous(memory_format=torch.channels_last))
    if channels > 1:  # one channel is contiguous in both layouts: the same path
        assert not fast.is_contiguous() and fast.is_contiguous(memory_format=torch.channels_last)
    # Two float32 reductions in another order: 1.5e-5 apart was seen; a wrong axis is off by O(1).
    torch.testing.assert_close(fast, expected, rtol=1e-4, atol=5e-5)


def test_bench_size_parser() -> None:
    assert parse_size("640x512") == (640, 512)
    with pytest.raises(ValueError, match="'640'"):
        parse_size("640")


def test_bench_table_reports_every_model_and_the_allocator(capsys) -> None:
    import json

    from mex_fusion_ros.cli import main

    assert main(["bench", "--models", "nano", "--size", "64x48", "--repeats", "2", "--warmup", "0",
                 "--threads", "1", "--no-yolo", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["allocator"] == "freed memory retained"
    row = report["models"]["nano"]
    assert row["input"] == "64x48" and row["params"] > 0 and row["macs"] > 0 and row["median_ms"] > 0
    assert row["ratio_to_yolov8n"] is None  # --no-yolo: nothing to compare with


@given(rows=st.integers(1, 3), count=st.integers(1, 2000), seed=st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_fast_median_equals_torch_median(rows, count, seed):
    from mex_fusion_ros.model.network import lower_median

    values = torch.rand(rows, count, generator=torch.Generator().manual_seed(seed))
    values[:, ::3] = values[:, :1].clone()  # ties, as in flat image regions
    assert torch.equal(lower_median(values), values.median(dim=1).values)
    assert torch.equal(lower_median(values.t().contiguous().t()), values.median(dim=1).values)  # strided
