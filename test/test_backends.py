"""Inference backends (deploy.backends) through ``fusion.registry.create_fuser``.

The ONNX Runtime fuser must return what the torch ``Fuser`` returns for the same weights (it reuses
its pre/post-processing); missing runtimes must fail with one error that lists what is installed.
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_export import tiny_model

from mex_fusion_ros.deploy.backends import (
    AcceleratedTorchFuser,
    BackendUnavailableError,
    OnnxRuntimeFuser,
    installed_runtimes,
)
from mex_fusion_ros.fusion.base import FusionResult, ImageFuser
from mex_fusion_ros.fusion.registry import create_fuser
from mex_fusion_ros.model.fuser import Fuser
from mex_fusion_ros.model.weights import save_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Calibrated thresholds must reach every backend's estimates (the ONNX graph carries them too).
    return save_weights(tmp_path_factory.mktemp("weights") / "tiny.pt", tiny_model(seed=3),
                        {"presence_thresholds": {"vi_haze": 0.2, "ir_stripe": 0.7}})


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx_cache")


@pytest.fixture(scope="module")
def ort_fuser(weights: Path, cache: Path) -> OnnxRuntimeFuser:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEX_FUSION_CACHE", str(cache))
        fuser = create_fuser(str(weights), device="cpu", backend="onnxruntime")
    assert isinstance(fuser, OnnxRuntimeFuser)
    return fuser


@pytest.fixture(scope="module")
def torch_fuser(weights: Path) -> Fuser:
    fuser = create_fuser(str(weights), device="cpu")
    assert isinstance(fuser, Fuser)
    return fuser


def real_pair(roadscene: Path, size: tuple[int, int] = (60, 44)) -> tuple[np.ndarray, np.ndarray]:
    """First RoadScene validation pair, resized to ``size`` (W, H; not a multiple of the stride)."""
    name = sorted((roadscene / "val" / "ir").glob("*.jpg"))[0].name
    ir = cv2.imread(str(roadscene / "val" / "ir" / name), cv2.IMREAD_GRAYSCALE)
    vi = cv2.cvtColor(cv2.imread(str(roadscene / "val" / "vi" / name), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    ir = cv2.resize(ir, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    vi = cv2.resize(vi, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return ir, vi


def assert_same_result(a: FusionResult, b: FusionResult, atol: float = 1e-4) -> None:
    assert a.fused.shape == b.fused.shape and a.fused.dtype == b.fused.dtype == np.float32
    np.testing.assert_allclose(a.fused, b.fused, atol=atol)
    np.testing.assert_allclose(a.restored_ir, b.restored_ir, atol=atol)
    np.testing.assert_allclose(a.restored_vi, b.restored_vi, atol=atol)
    assert [(r.gate, r.experts) for r in a.routing] == [(r.gate, r.experts) for r in b.routing]
    for ra, rb in zip(a.routing, b.routing, strict=True):
        np.testing.assert_allclose(ra.weights, rb.weights, atol=1e-5)
    assert a.degradation.thresholds == b.degradation.thresholds == {"vi_haze": 0.2, "ir_stripe": 0.7}
    for kind in ("probabilities", "severities"):
        da, db = getattr(a.degradation, kind), getattr(b.degradation, kind)
        assert da.keys() == db.keys()
        assert max(abs(da[k] - db[k]) for k in da) < 1e-5


def test_onnxruntime_fuser_matches_torch_on_real_pair(ort_fuser, torch_fuser, roadscene: Path) -> None:
    assert isinstance(ort_fuser, ImageFuser)
    ir, vi = real_pair(roadscene)
    ort_result, torch_result = ort_fuser.fuse(ir, vi), torch_fuser.fuse(ir, vi)
    assert ort_result.fused.shape == (44, 60, 3)
    assert_same_result(ort_result, torch_result)
    assert ort_result.fused.std() > 1e-3  # a real image, not a constant the heads happen to agree on
    assert {"preprocess", "forward", "postprocess"} <= ort_result.timings.keys()


def test_onnxruntime_fuser_grey_and_batch(ort_fuser, torch_fuser) -> None:
    generator = np.random.default_rng(1)
    irs = [generator.random((40, 56), dtype=np.float32), generator.random((33, 47), dtype=np.float32)]
    vis = [generator.random((40, 56), dtype=np.float32), generator.random((33, 47, 3), dtype=np.float32)]
    for ort_result, torch_result in zip(ort_fuser.fuse_batch(irs, vis), torch_fuser.fuse_batch(irs, vis),
                                        strict=True):
        assert_same_result(ort_result, torch_result)
    assert ort_fuser.fuse(irs[0], vis[0]).fused.shape == (40, 56)


def test_onnx_cache_is_reused_and_onnx_spec_loads(weights: Path, cache: Path, ort_fuser, monkeypatch) -> None:
    files = sorted(cache.glob("*.onnx"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    monkeypatch.setenv("MEX_FUSION_CACHE", str(cache))
    create_fuser(str(weights), device="cpu", backend="onnxruntime")
    assert files[0].stat().st_mtime_ns == stamp  # not exported again
    direct = create_fuser(str(files[0]), device="cpu", backend="onnxruntime")
    assert isinstance(direct, OnnxRuntimeFuser) and direct.config == ort_fuser.config
    with pytest.raises(ValueError, match="ONNX file"):
        create_fuser(str(files[0]), device="cpu", backend="torch")


def test_accelerated_torch_fuser_matches_eager(torch_fuser) -> None:
    """The gathered-routing network used by torch.compile / CUDA graphs fuses like the eager Fuser."""
    accelerated = AcceleratedTorchFuser(torch_fuser)
    generator = np.random.default_rng(2)
    ir, vi = generator.random((36, 52), dtype=np.float32), generator.random((36, 52, 3), dtype=np.float32)
    assert_same_result(accelerated.fuse(ir, vi), torch_fuser.fuse(ir, vi))


def test_tensorrt_missing_lists_installed_runtimes(weights: Path) -> None:
    if installed_runtimes()["tensorrt"] is not None:
        pytest.skip("tensorrt is installed here; the missing-runtime message cannot be provoked")
    with pytest.raises(BackendUnavailableError) as caught:
        create_fuser(str(weights), device="cpu", backend="tensorrt")
    message = str(caught.value)
    assert "backend 'tensorrt' needs the Python module 'tensorrt'" in message
    assert f"torch {torch.__version__.split('+')[0]}" in message
    assert "tensorrt not installed" in message
    assert isinstance(caught.value, ImportError)  # the node and bag eval report ImportErrors as setup errors


def test_onnxruntime_missing_lists_installed_runtimes(weights: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(BackendUnavailableError, match=r"backend 'onnxruntime' needs .*Installed: torch"):
        create_fuser(str(weights), device="cpu", backend="onnxruntime")


def test_backend_option_errors(weights: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend 'tvm'"):
        create_fuser(str(weights), device="cpu", backend="tvm")
    with pytest.raises(ValueError, match="torch backend only"):
        create_fuser(str(weights), device="cpu", backend="onnxruntime", torch_compile=True)
    with pytest.raises(BackendUnavailableError, match="cuda_graphs needs a CUDA device"):
        create_fuser(str(weights), device="cpu", cuda_graphs=True)
    # Classical baselines have no network: the backend options do not apply to them.
    assert create_fuser("laplacian", backend="onnxruntime").name == "laplacian"


def test_pipeline_bench_measures_a_tiny_row(weights: Path) -> None:
    """``mex-fusion bench --pipeline`` machinery on a tiny input: both timings, memory, ordering."""
    from mex_fusion_ros.deploy.pipeline_bench import Row, format_table, measure_row, skip_reason

    row = Row("tiny", "torch", "fp32", "64x48")
    calls = []
    measure_row(row, weights, torch.device("cpu"), repeats=3, warmup=1, yolo=lambda: calls.append(1))
    assert len(calls) == 1 + 3  # the reference is warmed up and timed in the same rounds as the fuser
    assert 0 < row.model_median_ms <= row.model_p95_ms
    assert 0 < row.pipeline_median_ms <= row.pipeline_p95_ms
    assert row.model_vs_yolov8n == pytest.approx(row.model_median_ms / row.yolo_median_ms)
    assert row.peak_rss_mib > 50 and row.peak_device_mib is None
    cpu = torch.device("cpu")
    assert "CUDA" in skip_reason("nano", "torch", "fp16", "640x512", cpu, include_slow=False)
    assert "--include-slow" in skip_reason("paper", "torch", "fp32", "1280x1024", cpu, include_slow=False)
    assert skip_reason("paper", "torch", "fp32", "1280x1024", cpu, include_slow=True) is None
    table = format_table({"device": "cpu", "threads": 1, "repeats": 3, "weights": {"tiny": "test"},
                          "rows": [vars(row)]})
    assert "64x48" in table and f"{row.model_median_ms:.1f}" in table
