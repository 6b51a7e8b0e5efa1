"""Thermal AGC: percentile limits, [0, 1] output, temporal smoothing, degenerate frames, validation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mex_fusion_ros.codec.agc import ThermalAGC, _histogram_percentiles
from mex_fusion_ros.config import parameter_specs

SETTINGS = settings(max_examples=120, deadline=None)


def thermal_frame(seed: int, gain: float = 1.0, offset: float = 0.0, shape=(24, 32)) -> np.ndarray:
    """Raw 16-bit counts: a warm blob on a background with sensor noise, scaled by an exposure ``gain``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]]
    scene = 7000 + 1500 * np.exp(-((y - shape[0] / 2) ** 2 + (x - shape[1] / 3) ** 2) / 40.0)
    counts = offset + gain * (scene + rng.normal(0, 30, shape))
    return np.clip(counts, 0, 65535).astype(np.uint16)


def test_defaults_match_the_configuration_schema():
    specs = parameter_specs("fusion_node")
    agc = ThermalAGC()
    assert agc.low_percentile == specs["agc.low_percentile"].default
    assert agc.high_percentile == specs["agc.high_percentile"].default
    assert agc.smoothing == specs["agc.smoothing"].default
    # Every value the schema accepts on its own is accepted here (low < high is the only joint rule).
    ThermalAGC(specs["agc.low_percentile"].minimum, specs["agc.high_percentile"].maximum,
               specs["agc.smoothing"].maximum)
    ThermalAGC(specs["agc.low_percentile"].maximum - 1e-3, specs["agc.high_percentile"].minimum + 1e-3,
               specs["agc.smoothing"].minimum)


@pytest.mark.parametrize("kwargs,key", [
    ({"low_percentile": -1.0}, "agc.low_percentile"),
    ({"low_percentile": 60.0}, "agc.low_percentile"),
    ({"high_percentile": 101.0}, "agc.high_percentile"),
    ({"high_percentile": 40.0}, "agc.high_percentile"),
    ({"low_percentile": 50.0, "high_percentile": 50.0}, "agc.low_percentile"),
    ({"smoothing": 1.0}, "agc.smoothing"),
    ({"smoothing": -0.1}, "agc.smoothing"),
    ({"smoothing": float("nan")}, "agc.smoothing"),
    ({"low_percentile": "1"}, "agc.low_percentile"),
    ({"high_percentile": True}, "agc.high_percentile"),
])
def test_invalid_parameters_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        ThermalAGC(**kwargs)


@SETTINGS
@given(hnp.arrays(st.sampled_from([np.uint8, np.uint16]), hnp.array_shapes(max_dims=2, max_side=40)),
       st.floats(0, 50), st.floats(50, 100))
def test_histogram_percentiles_equal_numpy(values, low, high):
    expected = np.percentile(values, (low, high))
    np.testing.assert_allclose(_histogram_percentiles(values, (low, high)), expected, rtol=1e-9, atol=1e-6)


@SETTINGS
@given(st.integers(0, 1000), st.floats(0, 20), st.floats(80, 100))
def test_unsmoothed_output_is_the_percentile_stretch(seed, low, high):
    raw = thermal_frame(seed)
    agc = ThermalAGC(low, high, smoothing=0.0)
    out = agc.apply(raw)
    p_low, p_high = np.percentile(raw, (low, high))
    assert agc.limits == pytest.approx((p_low, p_high))
    expected = np.clip((raw.astype(np.float64) - p_low) / max(p_high - p_low, 1.0), 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # The percentiles are respected: black exactly at/below the low limit, white at/above the high one,
    # and (ties aside) no more than the requested share of pixels lies beyond each limit.
    np.testing.assert_array_equal(out == 0.0, raw <= p_low)
    assert np.all(out[raw >= p_high] == 1.0) and np.all(out[raw < p_high - 1e-3] < 1.0)
    assert np.mean(raw < p_low) <= low / 100 + 1 / raw.size
    assert np.mean(raw > p_high) <= (100 - high) / 100 + 1 / raw.size


@SETTINGS
@given(hnp.arrays(st.sampled_from([np.uint16, np.uint8, np.int16, np.float32, np.float64]),
                  hnp.array_shapes(min_dims=1, max_dims=3, max_side=12)),
       st.floats(0, 0.99))
# Found by hypothesis in CI: limits near the float64 maximum overflowed low + high (and the span) to inf.
@example(np.array([8.98846567e307]), 0.0)
@example(np.array([-1.7e308, 1.7e308, 0.0]), 0.5)
def test_output_is_float32_unit_range_and_nan_free(raw, smoothing):
    agc = ThermalAGC(1.0, 99.0, smoothing)
    with np.errstate(all="ignore"):  # huge float inputs overflow in the reference, not in the AGC
        for _ in range(2):
            out = agc.apply(raw)
            assert out.dtype == np.float32 and out.shape == raw.shape
            assert np.all(np.isfinite(out)) and np.all((out >= 0.0) & (out <= 1.0))
    eight = agc.apply_uint8(raw)
    assert eight.dtype == np.uint8 and eight.shape == raw.shape


def test_constant_frame_is_mid_grey_without_division_by_zero():
    with np.errstate(all="raise"):  # a 0/0 would raise FloatingPointError here
        for value in (0, 1234, 65535):
            out = ThermalAGC().apply(np.full((8, 8), value, np.uint16))
            np.testing.assert_array_equal(out, np.full((8, 8), 0.5, np.float32))
        np.testing.assert_array_equal(ThermalAGC().apply(np.full((3, 3), 21.5, np.float32)), 0.5)


def test_non_finite_pixels_map_to_zero_and_do_not_move_the_limits():
    raw = np.array([[np.nan, 10.0], [20.0, np.inf], [-np.inf, 15.0]])
    agc = ThermalAGC(0.0, 100.0, smoothing=0.0)
    out = agc.apply(raw)
    assert agc.limits == (10.0, 20.0)
    np.testing.assert_allclose(out, [[0.0, 0.0], [1.0, 0.0], [0.0, 0.5]])
    assert agc.apply(np.full((2, 2), np.nan)).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert agc.limits == (10.0, 20.0)  # a frame with nothing finite keeps the previous limits


def test_smoothing_is_an_exponential_moving_average_of_the_limits():
    first, second = thermal_frame(1), thermal_frame(2, gain=1.5)
    agc = ThermalAGC(2.0, 98.0, smoothing=0.75)
    agc.apply(first)
    limits_1 = np.percentile(first, (2.0, 98.0))
    assert agc.limits == pytest.approx(tuple(limits_1))
    agc.apply(second)
    expected = 0.75 * limits_1 + 0.25 * np.percentile(second, (2.0, 98.0))
    assert agc.limits == pytest.approx(tuple(expected))


def test_smoothing_reduces_flicker_of_the_limits_when_exposure_changes():
    # The camera's exposure/gain hunts by a few percent frame to frame: unsmoothed limits jump with it.
    gains = [1.0, 1.04, 0.97, 1.05, 0.98] * 4
    frames = [thermal_frame(i, gain=g) for i, g in enumerate(gains)]

    def limit_jumps(smoothing: float) -> np.ndarray:
        agc = ThermalAGC(1.0, 99.0, smoothing)
        limits = []
        for frame in frames:
            agc.apply(frame)
            limits.append(agc.limits)
        return np.abs(np.diff(np.array(limits[5:]), axis=0))  # after the first frames settle

    raw_jumps, smooth_jumps = limit_jumps(0.0), limit_jumps(0.9)
    assert raw_jumps.mean() > 50  # the scenario really moves the limits (counts)
    assert smooth_jumps.mean() < 0.25 * raw_jumps.mean()


def test_smoothing_keeps_the_background_steady_when_a_hot_object_blinks():
    # A hot object (3 % of the view) appears in every other frame: without smoothing the high limit
    # leaps to it and the unchanged background turns dark and bright in turn.
    frames, masks = [], []
    for i in range(16):
        frame = thermal_frame(i)
        hot = np.zeros(frame.shape, bool)
        if i % 2:
            hot[:4, :6] = True
            frame[hot] = 20000
        frames.append(frame)
        masks.append(hot)

    def background_flicker(smoothing: float) -> float:
        agc = ThermalAGC(1.0, 99.0, smoothing)
        means = [agc.apply(frame)[~hot].mean() for frame, hot in zip(frames, masks)]
        return float(np.abs(np.diff(means[6:])).mean())

    unsmoothed, smoothed = background_flicker(0.0), background_flicker(0.9)
    assert unsmoothed > 0.1
    assert smoothed < 0.25 * unsmoothed


def test_reset_forgets_the_history():
    agc = ThermalAGC(1.0, 99.0, smoothing=0.9)
    agc.apply(thermal_frame(0))
    assert agc.limits is not None
    agc.reset()
    assert agc.limits is None
    bright = thermal_frame(3, gain=2.0)
    agc.apply(bright)
    assert agc.limits == pytest.approx(tuple(np.percentile(bright, (1.0, 99.0))))


def test_apply_uint8_rounds_the_unit_output():
    raw = thermal_frame(4)
    unit = ThermalAGC(smoothing=0.0).apply(raw)
    eight = ThermalAGC(smoothing=0.0).apply_uint8(raw)
    np.testing.assert_array_equal(eight, np.round(unit * 255).astype(np.uint8))
    assert eight.min() == 0 and eight.max() == 255


@pytest.mark.parametrize("raw", [np.zeros((0, 4), np.uint16), np.array([["a"]]), np.array([[1 + 2j]]),
                                 np.array([[True]])])
def test_invalid_frames_raise(raw):
    with pytest.raises(ValueError, match="thermal AGC"):
        ThermalAGC().apply(raw)
