"""Degradation models: determinism, measured strength, physical behaviour, labels and presets."""
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mex_fusion_ros.data import paired
from mex_fusion_ros.data.degradations import (
    DEGRADATION_TYPES,
    PRESETS,
    DegradationLabel,
    Preset,
    UnknownPresetError,
    add_gaussian_noise,
    add_haze,
    add_stripe_noise,
    apply_preset,
    defocus_blur,
    depth_proxy,
    disk_kernel,
    get_preset,
    low_light,
    over_exposure,
    sample_training_preset,
    stripe_pattern,
)

# The paper's single tasks, mixed and clean, its multi-degradation pairs (Tables 12-15), exposure.
PAPER_PRESETS = {
    "noise15": {"vi_noise": 0.3},
    "noise25": {"vi_noise": 0.5},
    "noise50": {"vi_noise": 1.0},
    "haze": {"vi_haze": None},
    "defocus": {"vi_defocus": None},
    "stripe": {"ir_stripe": None},
    "mixed": {"vi_noise": 1.0, "vi_haze": None, "vi_defocus": None, "ir_stripe": None},
    "clean": {},
    "defocus_haze": {"vi_defocus": None, "vi_haze": None},
    "noise50_haze_stripe": {"vi_noise": 1.0, "vi_haze": None, "ir_stripe": None},
    "noise15_defocus": {"vi_noise": 0.3, "vi_defocus": None},
    "noise15_haze": {"vi_noise": 0.3, "vi_haze": None},
    "noise25_defocus": {"vi_noise": 0.5, "vi_defocus": None},
    "noise25_haze": {"vi_noise": 0.5, "vi_haze": None},
    "noise50_defocus": {"vi_noise": 1.0, "vi_defocus": None},
    "noise50_haze": {"vi_noise": 1.0, "vi_haze": None},
    "lowlight": {"vi_lowlight": None},
    "overexposure": {"vi_overexposure": None},
}


def textured_pair(height: int = 48, width: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth-plus-texture synthetic pair in [0.1, 0.9] (no clipping at mild strengths)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 0.5 + 0.25 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    ir = np.clip(base + 0.05 * rng.standard_normal((height, width)), 0.1, 0.9).astype(np.float32)
    vi = np.stack([base, 0.8 * base + 0.1, np.clip(1.0 - base, 0.1, 0.9)], axis=2)
    vi = np.clip(vi + 0.05 * rng.standard_normal(vi.shape), 0.1, 0.9).astype(np.float32)
    return ir, vi


@pytest.fixture
def real_pair(roadscene):
    listing = paired.find_pairs(roadscene / "val")
    return paired.read_pair(listing.pairs[0])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_deterministic_bounded_and_labelled(name):
    ir, vi = textured_pair()
    ir_before, vi_before = ir.copy(), vi.copy()
    first = apply_preset(name, ir, vi, seed=7)
    second = apply_preset(name, ir, vi, seed=7)
    assert np.array_equal(first.ir, second.ir) and np.array_equal(first.vi, second.vi)
    assert np.array_equal(ir, ir_before) and np.array_equal(vi, vi_before), "inputs were modified"
    for image, clean in ((first.ir, ir), (first.vi, vi)):
        assert image.dtype == np.float32 and image.shape == clean.shape
        assert image.min() >= 0.0 and image.max() <= 1.0
    assert first.label == PRESETS[name].label()
    assert first.preset == name
    # A modality is changed exactly when the preset degrades it.
    present = first.label.present()
    assert np.array_equal(first.vi, vi) == (not any(t.startswith("vi_") for t in present))
    assert np.array_equal(first.ir, ir) == (not any(t.startswith("ir_") for t in present))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_accepts_a_grey_visible_image(name):
    ir, vi = textured_pair()
    grey = vi.mean(axis=2).astype(np.float32)
    out = apply_preset(name, ir, grey, seed=1)
    assert out.vi.shape == grey.shape and out.vi.dtype == np.float32
    assert out.vi.min() >= 0.0 and out.vi.max() <= 1.0


@pytest.mark.parametrize("name, expected", sorted(PAPER_PRESETS.items()))
def test_paper_presets_exist_with_the_right_types(name, expected):
    label = PRESETS[name].label()
    assert label.present() == tuple(t for t in DEGRADATION_TYPES if t in expected)
    for kind, severity in expected.items():
        if severity is not None:
            assert label.severity(kind) == pytest.approx(severity)
        assert 0.0 < label.severity(kind) <= 1.0


def test_random_streams_differ_by_seed_and_are_shared_across_compositions():
    ir, vi = textured_pair()
    assert not np.array_equal(apply_preset("noise25", ir, vi, 1).vi, apply_preset("noise25", ir, vi, 2).vi)
    # The stripe pattern of one seed is the same whether or not visible degradations come with it.
    assert np.array_equal(apply_preset("stripe", ir, vi, 5).ir, apply_preset("mixed", ir, vi, 5).ir)
    generator_result = apply_preset("noise50", ir, vi, np.random.default_rng(3))
    assert np.array_equal(generator_result.vi, apply_preset("noise50", ir, vi, np.random.default_rng(3)).vi)


@pytest.mark.parametrize("sigma", [15, 25, 50])
def test_noise_sigma_is_measured_back_within_5_percent(sigma):
    grey = np.full((256, 256, 3), 0.5, dtype=np.float32)
    noisy, label = add_gaussian_noise(grey, sigma, rng=0)
    measured = float((noisy - grey).std() * 255.0)
    assert measured == pytest.approx(sigma, rel=0.05)
    assert label.severities == {"vi_noise": pytest.approx(sigma / 50.0)}
    ir_noisy, ir_label = add_gaussian_noise(grey[:, :, 0], sigma, rng=1, modality="infrared")
    assert float((ir_noisy - 0.5).std() * 255.0) == pytest.approx(sigma, rel=0.05)
    assert ir_label.present() == ("ir_noise",)


def test_noise_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        add_gaussian_noise(np.zeros((4, 4, 3), np.uint8), 15)
    with pytest.raises(ValueError, match=r"\(2, 4, 4\)"):
        add_gaussian_noise(np.zeros((2, 4, 4), np.float32), 15)
    with pytest.raises(ValueError, match="infrared"):
        add_gaussian_noise(np.zeros((4, 4, 3), np.float32), 15, modality="infrared")
    with pytest.raises(ValueError, match="modality"):
        add_gaussian_noise(np.zeros((4, 4), np.float32), 15, modality="thermal")


def test_haze_lowers_contrast_monotonically_with_density(real_pair):
    _, vi = real_pair
    stds = [float(add_haze(vi, beta)[0].std()) for beta in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)]
    assert stds[0] == pytest.approx(float(vi.std()), abs=1e-6)
    assert all(a > b for a, b in zip(stds, stds[1:])), stds
    severities = [add_haze(vi, beta)[1].severity("vi_haze") for beta in (0.5, 1.5, 3.0)]
    assert severities == sorted(severities) and severities[-1] == 1.0


def test_haze_tends_to_the_mean_of_the_clean_image():
    _, vi = textured_pair()
    depth = np.ones(vi.shape[:2], np.float32)
    dense, _ = add_haze(vi, 30.0, depth=depth)
    # A = per-channel mean of the clean image (TG-ECNet Appendix A.1), reached as t -> 0.
    assert np.allclose(dense, vi.reshape(-1, 3).mean(axis=0), atol=1e-5)
    # With a uniform depth, I = J t + A (1 - t) exactly.
    t = np.exp(-1.0)
    half, _ = add_haze(vi, 1.0, depth=depth)
    assert np.allclose(half, vi * t + vi.reshape(-1, 3).mean(axis=0) * (1 - t), atol=1e-6)


def test_depth_proxy_range_and_far_top():
    _, vi = textured_pair(64, 80)
    depth = depth_proxy(vi)
    assert depth.shape == (64, 80) and depth.dtype == np.float32
    assert depth.min() >= 0.2 - 1e-6 and depth.max() <= 1.0 + 1e-6
    assert depth[:8].mean() > depth[-8:].mean(), "the top rows should be farther away"
    # More haze where the proxy says far: transmission falls with depth.
    hazy, _ = add_haze(vi, 2.0)
    assert np.abs(hazy - vi)[:8].mean() > np.abs(hazy - vi)[-8:].mean()


def test_disk_kernel_and_defocus_blur():
    for radius in (0.0, 1.0, 2.5, 4.0):
        kernel = disk_kernel(radius)
        assert kernel.sum() == pytest.approx(1.0, abs=1e-6)
        assert np.allclose(kernel, kernel.T) and np.allclose(kernel, kernel[::-1, ::-1])
    assert np.count_nonzero(disk_kernel(0.0)) == 1
    ir, vi = textured_pair(64, 64)
    flat = np.full((16, 16, 3), 0.3, np.float32)
    assert np.allclose(defocus_blur(flat, 5.0)[0], 0.3, atol=1e-6)
    energies = []
    for radius in (0.0, 1.0, 2.0, 4.0, 8.0):
        blurred, label = defocus_blur(vi, radius)
        energies.append(float(np.abs(np.diff(blurred, axis=1)).mean()))
        assert label.severity("vi_defocus") == pytest.approx(min(1.0, radius / 8.0))
    assert all(a > b for a, b in zip(energies, energies[1:])), energies


def test_stripe_noise_is_exactly_a_per_column_gain_and_offset():
    ir, _ = textured_pair(40, 50)
    striped, label = add_stripe_noise(ir, 0.05, rng=3)
    gains, offsets = stripe_pattern(ir.shape[1], 0.05, rng=3)
    assert np.allclose(striped, np.clip(ir * gains + offsets, 0, 1), atol=1e-6)
    # Independently of the generator: a straight line per column fits the degradation exactly.
    for column in range(ir.shape[1]):
        slope, intercept = np.polyfit(ir[:, column], striped[:, column], 1)
        assert np.abs(slope * ir[:, column] + intercept - striped[:, column]).max() < 1e-5
    # A flat image shows the offsets alone: constant down each column, varying across columns.
    flat = np.full((30, 20), 0.5, np.float32)
    flat_striped, _ = add_stripe_noise(flat, 0.05, rng=4)
    assert np.allclose(flat_striped, flat_striped[0:1], atol=1e-7)
    assert flat_striped[0].std() > 0.01
    assert label.severities == {"ir_stripe": pytest.approx(0.05 / 0.15)}
    with pytest.raises(ValueError, match="infrared"):
        add_stripe_noise(np.zeros((4, 4, 3), np.float32), 0.05)


def test_low_light_darkens_with_signal_dependent_noise():
    levels = [np.full((128, 128), level, np.float32) for level in (0.2, 0.9)]
    outputs = [low_light(image, gain=0.2, gamma=1.5, rng=0)[0] for image in levels]
    means = [float(out.mean()) for out in outputs]
    stds = [float(out.std()) for out in outputs]
    assert means[0] == pytest.approx(0.2 * 0.2**1.5, abs=0.003)
    assert means[1] == pytest.approx(0.2 * 0.9**1.5, abs=0.003)
    assert stds[1] > 1.5 * stds[0], "shot noise must grow with the signal"
    # Variance model: x / full_well + read^2 (the defaults: 500 electrons, 2/255 read noise).
    expected = np.sqrt(0.2 * 0.9**1.5 / 500 + (2 / 255) ** 2)
    assert stds[1] == pytest.approx(expected, rel=0.05)
    severities = [
        low_light(levels[0], gain, 1.0, rng=0)[1].severity("vi_lowlight") for gain in (0.5, 0.2, 0.05)
    ]
    assert severities == sorted(severities) and severities[-1] == 1.0


def test_over_exposure_saturates():
    _, vi = textured_pair()
    out, label = over_exposure(vi, 2.0)
    assert np.allclose(out, np.minimum(vi * 2.0, 1.0))
    assert (out == 1.0).mean() > (vi == 1.0).mean()
    assert label.severity("vi_overexposure") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="gain"):
        over_exposure(vi, 0.5)


def test_label_vector_roundtrip_and_validation():
    label = DegradationLabel({"ir_stripe": 0.25, "vi_noise": 1.0})
    vector = label.vector()
    assert vector.dtype == np.float32 and vector.shape == (len(DEGRADATION_TYPES),)
    assert vector[DEGRADATION_TYPES.index("vi_noise")] == 1.0
    assert vector[DEGRADATION_TYPES.index("ir_stripe")] == 0.25
    assert label.present() == ("vi_noise", "ir_stripe")
    assert list(label.present_mask()) == [1, 0, 0, 0, 0, 1, 0]
    assert DegradationLabel.from_vector(vector) == label
    assert DegradationLabel().is_clean and str(DegradationLabel()) == "clean"
    assert DegradationLabel({"vi_haze": 0.0}).is_clean
    assert label.merge(DegradationLabel({"vi_noise": 0.3, "vi_haze": 0.5})).severities == {
        "vi_noise": 1.0, "vi_haze": 0.5, "ir_stripe": 0.25,
    }
    with pytest.raises(ValueError, match="rain"):
        DegradationLabel({"rain": 0.5})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        DegradationLabel({"vi_noise": 1.5})


def test_unknown_preset_names_the_preset_and_lists_valid_ones():
    ir, vi = textured_pair()
    with pytest.raises(UnknownPresetError) as info:
        apply_preset("fog", ir, vi, 0)
    assert isinstance(info.value, ValueError) and isinstance(info.value, KeyError)
    message = str(info.value)
    assert "'fog'" in message and "noise50" in message and "mixed" in message


def test_custom_presets_and_their_validation():
    from mex_fusion_ros.data.degradations import Degradation

    custom = Preset("mine", (Degradation("ir_noise", {"sigma": 10}), Degradation("vi_haze", {"beta": 1.0})))
    assert [step.kind for step in custom.steps] == ["vi_haze", "ir_noise"]  # canonical order
    assert get_preset(custom) is custom
    with pytest.raises(ValueError, match="missing parameters"):
        Degradation("vi_noise", {})
    with pytest.raises(ValueError, match="unknown"):
        Degradation("vi_noise", {"sigma": 1, "beta": 2})
    with pytest.raises(ValueError, match="repeats"):
        Preset("twice", (Degradation("vi_noise", {"sigma": 1}), Degradation("vi_noise", {"sigma": 2})))
    with pytest.raises(ValueError, match="under- and over-exposed"):
        Preset("both", (Degradation("vi_lowlight", {"gain": 0.2, "gamma": 1}),
                        Degradation("vi_overexposure", {"gain": 2})))


def test_training_sampler_covers_every_type_with_the_stated_probabilities():
    rng = np.random.default_rng(0)
    presets = [sample_training_preset(rng) for _ in range(3000)]
    names = [preset.name for preset in presets]
    assert names.count("sampled:clean") / len(names) == pytest.approx(0.12, abs=0.025)
    assert names.count("sampled:mixed") / len(names) == pytest.approx(0.12, abs=0.025)
    seen = {kind for preset in presets for kind in preset.label().present()}
    assert seen == set(DEGRADATION_TYPES)
    for preset in presets:
        vector = preset.label().vector()
        assert ((vector >= 0) & (vector <= 1)).all()
        assert not {"vi_lowlight", "vi_overexposure"} <= set(preset.label().present())
    severities = [p.label().severity("vi_noise") for p in presets if "vi_noise" in p.label().present()]
    assert min(severities) < 0.3 and max(severities) > 0.9, "severities must span their range"
    again = [sample_training_preset(np.random.default_rng(0)).name for _ in range(3)]
    assert len(set(again)) == 1


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(sorted(PRESETS)),
    seed=st.integers(0, 2**32 - 1),
    height=st.integers(1, 24),
    width=st.integers(1, 24),
    grey=st.booleans(),
)
def test_any_preset_on_any_image_stays_in_range(name, seed, height, width, grey):
    rng = np.random.default_rng(seed)
    ir = rng.random((height, width), dtype=np.float32)
    vi = rng.random((height, width) if grey else (height, width, 3), dtype=np.float32)
    out = apply_preset(name, ir, vi, seed)
    for image, source in ((out.ir, ir), (out.vi, vi)):
        assert image.shape == source.shape and image.dtype == np.float32
        assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0


def test_mixed_on_a_640x512_pair_is_fast():
    rng = np.random.default_rng(0)
    ir, vi = rng.random((512, 640), dtype=np.float32), rng.random((512, 640, 3), dtype=np.float32)
    apply_preset("mixed", ir, vi, 0)
    durations = []
    for seed in range(5):
        start = time.perf_counter()
        apply_preset("mixed", ir, vi, seed)
        durations.append(time.perf_counter() - start)
    # Target 50 ms; the bound leaves room for a shared, busy CI machine.
    assert np.median(durations) < 0.15, durations


def test_model_variants_of_the_training_sampler_keep_the_label_and_change_the_image():
    from mex_fusion_ros.data.degradations import add_gaussian_noise, add_haze, defocus_blur

    rng = np.random.default_rng(0)
    vi = np.clip(rng.random((48, 64, 3), dtype=np.float32) * 0.6 + 0.2, 0, 1)
    per_channel, label = add_gaussian_noise(vi, 20.0, 1)
    grey, grey_label = add_gaussian_noise(vi, 20.0, 1, mono=1.0)
    assert label == grey_label
    residual = grey - vi
    inside = (grey > 0).all(axis=2) & (grey < 1).all(axis=2)  # clipping aside
    assert np.allclose(residual[..., 0][inside], residual[..., 1][inside], atol=1e-5)  # one noise for all channels
    assert abs(float(residual.std()) - 20 / 255) < 0.1 * 20 / 255
    assert not np.allclose((per_channel - vi)[..., 0], (per_channel - vi)[..., 1])
    uniform, haze_label = add_haze(vi, 1.5, airlight=0.9, depth_mix=0.0)
    expected = vi * np.exp(-1.5) + 0.9 * (1 - np.exp(-1.5))
    assert np.allclose(uniform, expected, atol=1e-5) and haze_label == add_haze(vi, 1.5)[1]
    gaussian, blur_label = defocus_blur(vi, 4.0, gaussian=True)
    assert blur_label == defocus_blur(vi, 4.0)[1] and not np.allclose(gaussian, defocus_blur(vi, 4.0)[0])
    with pytest.raises(ValueError, match="mono"):
        add_gaussian_noise(vi, 5.0, 0, mono=1.5)
    with pytest.raises(ValueError, match="depth_mix"):
        add_haze(vi, 1.0, depth_mix=2.0)
    # The evaluation presets do not use the variants: their parameters are as before.
    from mex_fusion_ros.data.degradations import PRESETS
    assert all(set(step.params) <= {"sigma", "beta", "radius", "gain", "gamma"} for step in PRESETS["mixed"].steps)
