"""Fusion metrics (eval.metrics) and ``mex-fusion metrics``: hand-computed values, invariants, references."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mex_fusion_ros.cli import main
from mex_fusion_ros.eval import metrics as m
from mex_fusion_ros.eval.metrics import METRICS, fusion_metrics

IMAGE_METRICS = [name for name, info in METRICS.items() if info.kind == "image"]


def smooth_scene(height: int = 96, width: int = 112, seed: int = 0) -> np.ndarray:
    """A textured float [0, 1] grey image: blurred noise plus a gradient, so every metric is defined."""
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.random((height, width)), (0, 0), 2.0)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    ramp = np.linspace(0.0, 1.0, width)[None, :] * np.ones((height, 1))
    return (0.7 * texture + 0.3 * ramp).astype(np.float32)


@pytest.fixture(scope="module")
def triple() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ir = smooth_scene(seed=1)
    vi = np.stack([smooth_scene(seed=2), smooth_scene(seed=3), smooth_scene(seed=4)], axis=-1)
    fused = 0.5 * ir + 0.5 * (vi @ np.asarray(m.BT601_LUMA, dtype=np.float32))
    return ir, vi, fused.astype(np.float32)


# --------------------------------------------------------------------------- hand-computable values


def test_entropy_of_constant_image_is_zero_and_of_two_equal_halves_one_bit():
    assert m.entropy(np.full((20, 30), 0.4, dtype=np.float32)) == 0.0
    halves = np.zeros((10, 20), dtype=np.uint8)
    halves[:, 10:] = 255
    assert m.entropy(halves) == pytest.approx(1.0, abs=1e-12)


def test_standard_deviation_spatial_frequency_and_average_gradient_by_hand():
    stripes = np.zeros((8, 10), dtype=np.uint8)
    stripes[:, 1::2] = 255
    assert m.standard_deviation(stripes) == pytest.approx(127.5)
    # Every horizontal neighbour differs by 255, no vertical one does: RF = 255, CF = 0.
    assert m.spatial_frequency(stripes) == pytest.approx(255.0)
    ramp = np.tile(np.arange(12, dtype=np.uint8), (9, 1))  # slope 1 grey level per column
    expected = 9 * 12 * math.sqrt(0.5) / (8 * 11)
    assert m.average_gradient(ramp) == pytest.approx(expected)


def test_identity_values_of_the_pair_metrics(triple):
    image = triple[0]
    assert m.ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    assert m.ms_ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    assert m.correlation(image, image) == pytest.approx(1.0, abs=1e-12)
    assert m.correlation(image, 1.0 - image) == pytest.approx(-1.0, abs=1e-12)
    assert m.vif(image, image) == pytest.approx(1.0, abs=1e-9)
    assert m.mse(image, image) == 0.0
    assert m.psnr(image, image) == math.inf


def test_mutual_information_of_an_image_with_itself_is_its_entropy(triple):
    image = triple[0]
    assert m.mutual_information(image, image) == pytest.approx(m.entropy(image), abs=1e-12)
    assert m.mutual_information_fusion(image, image, image) == pytest.approx(2 * m.entropy(image), abs=1e-12)


def test_psnr_of_a_known_mse():
    black = np.zeros((16, 16), dtype=np.uint8)
    grey = np.full((16, 16), 51, dtype=np.uint8)  # 51/255 = 0.2 on the [0, 1] scale
    assert m.mse(black, grey) == pytest.approx(0.04)
    assert m.psnr(black, grey) == pytest.approx(10 * math.log10(1 / 0.04))
    scores = fusion_metrics(black, black, grey, names=["MSE", "PSNR"])
    assert scores == pytest.approx({"MSE": 0.04, "PSNR": 10 * math.log10(25)})


def test_q_abf_of_identical_images_is_its_maximum_and_n_abf_is_zero(triple):
    image = triple[0]
    best = (m.QABF_TG / (1 + math.exp(m.QABF_KG * (1 - m.QABF_DG)))) * (
        m.QABF_TA / (1 + math.exp(m.QABF_KA * (1 - m.QABF_DA)))
    )
    assert best == pytest.approx(0.97479, abs=1e-5)
    assert m.q_abf(image, image, image) == pytest.approx(best, abs=1e-12)
    assert m.n_abf(image, image, np.maximum(image, image)) == 0.0
    assert m.n_abf(image, image, image, peak=255.0) == 0.0


def test_sharpening_the_fused_image_creates_artifacts(triple):
    ir, vi, fused = triple
    sharpened = np.clip(fused + 1.5 * (fused - cv2.GaussianBlur(fused, (0, 0), 1.5)), 0, 1)
    assert m.n_abf(ir, vi, sharpened) > 5 * m.n_abf(ir, vi, fused)


def test_vif_of_the_fusion_sums_both_sources(triple):
    image = triple[0]
    assert fusion_metrics(image, image, image, names=["VIF"])["VIF"] == pytest.approx(2.0, abs=1e-9)


# --------------------------------------------------------------------------- invariants


def test_every_metric_is_symmetric_in_the_two_sources(triple):
    ir, vi, fused = triple
    forward = fusion_metrics(ir, vi, fused)
    swapped = fusion_metrics(vi, ir, fused)
    assert list(forward) == list(METRICS)
    for name in METRICS:
        assert swapped[name] == pytest.approx(forward[name], rel=1e-9, abs=1e-12), name


@settings(max_examples=15, deadline=None)
@given(
    arrays(np.uint8, (70, 72), elements=st.integers(0, 255)),
    arrays(np.uint8, (70, 72), elements=st.integers(0, 255)),
    st.floats(0.0, 1.0),
    st.integers(0, 2),
)
def test_metrics_stay_in_their_ranges(ir, vi, weight, blur):
    fused = weight * ir.astype(np.float64) + (1 - weight) * vi.astype(np.float64)
    if blur:
        fused = cv2.GaussianBlur(fused, (0, 0), blur)
    scores = fusion_metrics(ir, vi, np.rint(fused).astype(np.uint8))
    assert 0.0 <= scores["EN"] <= 8.0
    assert scores["SD"] >= 0 and scores["SF"] >= 0 and scores["AG"] >= 0 and scores["MI"] >= 0
    assert -1.0 <= scores["SSIM"] <= 1.0
    assert 0.0 <= scores["MS-SSIM"] <= 1.0
    for name in ("Q_abf", "N_abf", "MSE"):
        assert math.isnan(scores[name]) or 0.0 <= scores[name] <= 1.0, name
    assert math.isnan(scores["CC"]) or -1.0 <= scores["CC"] <= 1.0
    assert math.isnan(scores["SCD"]) or -2.0 <= scores["SCD"] <= 2.0


def test_noise_lowers_ssim_psnr_and_cc_against_the_clean_sources(triple):
    ir, vi, fused = triple
    noisy = np.clip(fused + np.random.default_rng(5).normal(0, 0.08, fused.shape), 0, 1).astype(np.float32)
    clean_scores = fusion_metrics(ir, vi, fused)
    noisy_scores = fusion_metrics(ir, vi, noisy)
    for name in ("SSIM", "MS-SSIM", "PSNR", "CC", "VIF", "Q_abf"):
        assert noisy_scores[name] < clean_scores[name], name
    assert noisy_scores["MSE"] > clean_scores["MSE"]
    assert noisy_scores["N_abf"] > clean_scores["N_abf"]


def test_source_metrics_use_the_clean_sources_when_given(triple):
    ir, vi, fused = triple
    rng = np.random.default_rng(7)
    degraded_vi = np.clip(vi + rng.normal(0, 0.1, vi.shape), 0, 1).astype(np.float32)
    against_inputs = fusion_metrics(ir, degraded_vi, fused)
    against_clean = fusion_metrics(ir, degraded_vi, fused, clean_vi=vi)
    assert against_clean == fusion_metrics(ir, vi, fused)
    assert against_clean["SSIM"] > against_inputs["SSIM"]
    assert IMAGE_METRICS == ["EN", "SD", "SF", "AG"]
    for name in IMAGE_METRICS:  # image-only metrics ignore the sources
        assert against_clean[name] == against_inputs[name]
    assert list(fusion_metrics(ir, vi, fused, names=["PSNR", "EN"])) == ["EN", "PSNR"]  # METRICS order


def test_inputs_in_uint8_float_and_rgb_agree(triple):
    ir, vi, fused = triple
    grey_vi = vi.astype(np.float64) @ np.asarray(m.BT601_LUMA)
    assert m.to_gray(vi) == pytest.approx(grey_vi * 255.0)
    assert fusion_metrics(ir, vi, fused) == pytest.approx(fusion_metrics(ir, grey_vi, fused), rel=1e-9)
    as_uint8 = np.rint(ir * 255).astype(np.uint8)
    assert m.to_gray(as_uint8) == pytest.approx(m.to_gray(as_uint8.astype(np.float32) / 255.0))
    assert m.to_gray(as_uint8.astype(np.uint16) * 257) == pytest.approx(m.to_gray(as_uint8))


def test_bad_inputs_raise_one_clear_error(triple):
    ir, vi, fused = triple
    with pytest.raises(ValueError, match=r"fused: float images must lie in \[0, 1\]"):
        fusion_metrics(ir, vi, fused * 255.0)
    with pytest.raises(ValueError, match="differ in size.*vi 100x96"):
        fusion_metrics(ir, vi[:, :100], fused)
    with pytest.raises(ValueError, match="unknown metric.*'QABF'"):
        fusion_metrics(ir, vi, fused, names=["QABF"])
    with pytest.raises(ValueError, match=r"expected an \(H, W\) or \(H, W, 3\)"):
        m.entropy(np.zeros((4, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        m.entropy(np.full((4, 4), np.nan))


def test_small_images_fewer_ms_ssim_scales_and_nan_where_undefined():
    sides = (10, 11, 21, 22, 43, 44, 87, 88, 175, 176, 5000)
    assert [m.ms_ssim_max_scales(side, 400) for side in sides] == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    small = smooth_scene(100, 120)
    with pytest.raises(ValueError, match="5 scales needs images of at least 176x176"):
        m.ms_ssim(small, small, scales=5)
    assert m.ms_ssim(small, 0.5 * small) == pytest.approx(m.ms_ssim(small, 0.5 * small, scales=4))
    assert m.vif(small[:41], small[:41]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="VIF needs at least 41x41 px"):
        m.vif(small[:40], small[:40])
    scores = fusion_metrics(small[:40], small[:40], small[:40])
    assert math.isnan(scores["VIF"]) and scores["SSIM"] == pytest.approx(1.0)


def test_all_metrics_of_a_vga_triple_take_under_a_second():
    # Budget: < 1 s for one 640x480 triple. CPU time (measured 0.25-0.32 s) rather than wall time,
    # which on the shared development machine varies with its load.
    import time

    ir, vi, fused = smooth_scene(480, 640, 1), smooth_scene(480, 640, 2), smooth_scene(480, 640, 3)
    start = time.process_time()
    fusion_metrics(ir, vi, fused)
    assert time.process_time() - start < 1.0


# --------------------------------------------------------------------------- CLI


@pytest.fixture()
def image_files(tmp_path, triple):
    ir, vi, fused = triple
    paths = {}
    for role, image in (("ir", ir), ("vi", vi), ("fused", fused)):
        paths[role] = tmp_path / f"{role}.png"
        pixels = np.rint(image * 255).astype(np.uint8)
        cv2.imwrite(str(paths[role]), pixels[..., ::-1] if pixels.ndim == 3 else pixels)
    return paths


def test_cli_prints_every_metric_with_its_direction(image_files, capsys):
    args = ["metrics", "--ir", str(image_files["ir"]), "--vi", str(image_files["vi"])]
    assert main([*args, "--fused", str(image_files["fused"])]) == 0
    out = capsys.readouterr().out
    assert "BT.601" in out and "against the fusion inputs" in out
    for name, info in METRICS.items():
        assert any(line.split()[:2] == [name, info.arrow] for line in out.splitlines()), name


def test_cli_json_matches_the_library(image_files, capsys):
    args = ["metrics", "--ir", str(image_files["ir"]), "--vi", str(image_files["vi"])]
    args += ["--fused", str(image_files["fused"]), "--clean-vi", str(image_files["vi"])]
    assert main([*args, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    read = {role: cv2.imread(str(path), cv2.IMREAD_UNCHANGED) for role, path in image_files.items()}
    expected = fusion_metrics(read["ir"], read["vi"][..., ::-1], read["fused"])
    assert document["metrics"] == pytest.approx(expected)
    assert document["sources"] == "clean visible source and the other fusion input"
    assert document["higher_is_better"]["N_abf"] is False


def test_cli_reports_unreadable_files_and_size_mismatch(image_files, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    args = ["metrics", "--ir", str(image_files["ir"]), "--vi", str(image_files["vi"])]
    assert main([*args, "--fused", str(broken)]) == 1
    assert f"{broken} is not a readable image" in capsys.readouterr().err
    assert main([*args, "--fused", str(tmp_path / "missing.png")]) == 1
    assert "missing.png does not exist" in capsys.readouterr().err
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((10, 10), dtype=np.uint8))
    assert main([*args, "--fused", str(small)]) == 1
    assert "differ in size" in capsys.readouterr().err


# --------------------------------------------------------------------------- reference implementations

# Values from the reference implementations, run beside the project (never copied into it) on
# RoadScene val pairs: infrared read as grey, visible converted with COLOR_BGR2GRAY (both uint8,
# opencv-python-headless 5.0.0.93), fused = round((IR + VI) / 2) ("average") or max(IR, VI) ("max").
# - Tang's MATLAB toolbox "General Evaluation Metric", github.com/Linfeng-Tang/Image-Fusion @ dba5bf3,
#   under GNU Octave 7.3 + image 2.14: EN, SD, SF, AG, SCD, VIF, Q_abf, CC, MSE (analysis_Reference),
#   PSNR (its 20*log10(255/sqrt(MSE)) minus 20*log10(255)), N_abf (analysis_nabf on 0-255 doubles).
# - CDDFuse utils/Evaluator.py, github.com/Zhaozixiang1228/MMIF-CDDFuse @ fd8da1f: MI (nats / ln 2).
# - Wang's msssim.m / ssim_index_new (copy in github.com/zengzhengda/myNEWIQA @ 2b4d146) under Octave:
#   SSIM and MS-SSIM, each the mean over the two sources.
# Tolerances: relative 1e-7 (float64 references agree to ~1e-10; N_abf to 2e-10), except Q_abf 1e-3:
# the reference sets G = g_F where g_A = g_F instead of 1 (docs/metrics.md), up to 4.6e-4 with max fusion.
REFERENCE_PIXEL_SUMS = {  # (IR, VI) sums of the decoded grey pixels the references were computed on
    "FLIR_01415": (25802619, 31116123),
    "FLIR_01463": (21399111, 31185651),
    "FLIR_03909": (20634837, 29374785),
}
REFERENCE_VALUES = {
    ("FLIR_01415", "average"): {
        "EN": 6.178586397, "SD": 20.9965366, "SF": 5.973194281, "AG": 2.388712098, "MI": 3.123403621,
        "SCD": 1.890510122, "VIF": 0.4578759477, "Q_abf": 0.3239385832, "N_abf": 4.439509879e-07,
        "SSIM": 0.7077978997, "MS-SSIM": 0.5917459223, "CC": 0.3210699881, "MSE": 0.05839366319,
        "PSNR": 12.33634279,
    },
    ("FLIR_01415", "max"): {
        "EN": 7.017651251, "SD": 42.22756116, "SF": 8.842928534, "AG": 3.146608087, "MI": 8.007270967,
        "SCD": 1.818622436, "VIF": 0.8656835448, "Q_abf": 0.5451640206, "N_abf": 7.477422179e-05,
        "SSIM": 0.6611865534, "MS-SSIM": 0.5352104566, "CC": 0.2298130242, "MSE": 0.1167834892,
        "PSNR": 9.326185531,
    },
    ("FLIR_01463", "average"): {
        "EN": 6.386429311, "SD": 25.11825087, "SF": 6.986267136, "AG": 2.714990969, "MI": 3.571432007,
        "SCD": 1.806361806, "VIF": 0.6269167151, "Q_abf": 0.3851957721, "N_abf": 3.517466373e-07,
        "SSIM": 0.7239232704, "MS-SSIM": 0.6408344554, "CC": 0.3791923488, "MSE": 0.05053940949,
        "PSNR": 12.96369837,
    },
    ("FLIR_01463", "max"): {
        "EN": 6.692565983, "SD": 37.94179998, "SF": 9.781938367, "AG": 2.867055485, "MI": 7.562154181,
        "SCD": 1.521613429, "VIF": 0.7042223688, "Q_abf": 0.4892392055, "N_abf": 0.0001887915618,
        "SSIM": 0.6943430057, "MS-SSIM": 0.594443957, "CC": 0.2637498981, "MSE": 0.1010749913,
        "PSNR": 9.953562871,
    },
    ("FLIR_03909", "average"): {
        "EN": 6.737392826, "SD": 33.77890805, "SF": 6.47503503, "AG": 2.437662131, "MI": 2.555725463,
        "SCD": 1.329512229, "VIF": 0.5772539803, "Q_abf": 0.4097025711, "N_abf": 7.160454669e-07,
        "SSIM": 0.7876109482, "MS-SSIM": 0.7367944016, "CC": 0.7237419523, "MSE": 0.02500392697,
        "PSNR": 16.01991778,
    },
    ("FLIR_03909", "max"): {
        "EN": 6.80390744, "SD": 34.7304319, "SF": 8.589896569, "AG": 2.814781865, "MI": 6.760624975,
        "SCD": 1.19537627, "VIF": 0.8941725067, "Q_abf": 0.5307307554, "N_abf": 2.915339484e-05,
        "SSIM": 0.7226563114, "MS-SSIM": 0.6496846024, "CC": 0.6502747408, "MSE": 0.05000399474,
        "PSNR": 13.00995299,
    },
}
REFERENCE_TOLERANCE = {"Q_abf": 1e-3}


@pytest.mark.data
@pytest.mark.parametrize("name", sorted(REFERENCE_PIXEL_SUMS))
def test_metrics_match_reference_values(roadscene, name):
    ir = cv2.imread(str(roadscene / "val" / "ir" / f"{name}.jpg"), cv2.IMREAD_GRAYSCALE)
    vi_bgr = cv2.imread(str(roadscene / "val" / "vi" / f"{name}.jpg"), cv2.IMREAD_COLOR)
    vi = cv2.cvtColor(vi_bgr, cv2.COLOR_BGR2GRAY)
    sums = (int(ir.sum(dtype=np.int64)), int(vi.sum(dtype=np.int64)))
    assert sums == REFERENCE_PIXEL_SUMS[name], "decoded JPEG pixels differ (OpenCV version?)"
    fusions = {
        "average": np.rint(0.5 * ir.astype(np.float64) + 0.5 * vi.astype(np.float64)).astype(np.uint8),
        "max": np.maximum(ir, vi),
    }
    for fusion, fused in fusions.items():
        scores = fusion_metrics(ir, vi, fused)
        for metric, expected in REFERENCE_VALUES[(name, fusion)].items():
            tolerance = REFERENCE_TOLERANCE.get(metric, 1e-7)
            assert scores[metric] == pytest.approx(expected, rel=tolerance), (fusion, metric)
