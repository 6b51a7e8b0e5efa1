"""``mex-fusion bench --pipeline``: model-only and full-pipeline timings per backend and precision.

For every (configuration, backend, precision, size) it builds the fuser exactly as the node does
(``fusion.registry.create_fuser``) and measures, interleaved round by round so a change of machine
load hits all three alike:

- **model**: ``fuser.infer`` on ``(1, 1, H, W)`` / ``(1, 3, H, W)`` tensors already on the device
  (pad -> network -> crop; on CUDA timed with CUDA events after a synchronisation);
- **pipeline**: what the node does per frame: decode a ``mono16`` thermal and an ``rgb8`` message
  payload (``codec.image_codec``), ``nodes.pipeline.FusionPipeline.process`` (AGC, registration
  through a homography, fuse, conversion to uint8), encode the fused ``rgb8`` payload;
- **YOLOv8n** (ultralytics, random weights, 640x640) as the reference in the same rounds.

Reported per row: median and p95 (ms), FPS of the median, ratio to YOLOv8n, peak host RSS while
the row ran (sampled every 5 ms) and peak device memory (CUDA), and the one-off set-up time (for
onnxruntime that includes the ONNX export, cached afterwards). Rows that cannot run here are listed
with the reason (fp16 on a CPU, TensorRT not installed, ``paper`` on a CPU unless ``--include-slow``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_SIZES = ("640x512", "1280x1024")
YOLO_SIZE = 640
#: (model, WIDTHxHEIGHT) pairs skipped on a CPU unless --include-slow: a warm-up and two rounds of
#: ``paper`` at 640x512 did not finish within 15 minutes on the 2-core development machine.
SLOW_ON_CPU = {("paper", "640x512"), ("paper", "1280x1024")}


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the pipeline/backends benchmark (used with ``mex-fusion bench --pipeline``)."""
    group = parser.add_argument_group("pipeline and backends (with --pipeline)")
    group.add_argument("--pipeline", action="store_true",
                       help="model-only AND node-pipeline timings per backend/precision/size (JSON + table)")
    group.add_argument("--backends", nargs="+", default=["torch", "onnxruntime", "tensorrt"],
                       help="torch, torch+compile, torch+cudagraphs, onnxruntime, tensorrt")
    group.add_argument("--precisions", nargs="+", default=["fp32", "fp16"], choices=("fp32", "fp16"))
    group.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), help="WIDTHxHEIGHT inputs")
    group.add_argument("--weights", nargs="+", default=[], metavar="NAME=PATH",
                       help="weights per configuration (default: shipped weights, else freshly initialised)")
    group.add_argument("--include-slow", action="store_true", help="also paper at 1280x1024 on a CPU")
    group.add_argument("--out", default=None, help="also write the JSON report to this file")


@dataclass
class Row:
    """One measured (or skipped) configuration; times in milliseconds, memory in MiB."""

    model: str
    backend: str
    precision: str
    size: str
    weights: str = ""
    skipped: str | None = None
    setup_s: float | None = None
    model_median_ms: float | None = None
    model_p95_ms: float | None = None
    pipeline_median_ms: float | None = None
    pipeline_p95_ms: float | None = None
    yolo_median_ms: float | None = None
    model_fps: float | None = None
    pipeline_fps: float | None = None
    model_vs_yolov8n: float | None = None
    pipeline_vs_yolov8n: float | None = None
    peak_rss_mib: float | None = None
    peak_device_mib: float | None = None
    notes: list[str] = field(default_factory=list)


def percentile(samples: list[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` in [0, 100] of ``samples`` (numpy's default)."""
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q))


class PeakRss:
    """Highest resident set size of this process while the context is open (sampled every 5 ms)."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def parse_size(text: str) -> tuple[int, int]:
    """``"640x512"`` -> ``(640, 512)`` (width, height); ``ValueError`` naming the text otherwise."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must look like 640x512, got {text!r}") from None
    if width < 1 or height < 1:
        raise ValueError(f"size must be positive, got {text!r}")
    return width, height


def resolve_weights(names: list[str], given: list[str], scratch: Path) -> dict[str, tuple[Path, str]]:
    """Weights file and its origin per configuration: ``--weights``, shipped, or freshly initialised.

    Speed does not depend on the weights' values (routing aside), so a fresh network saved to
    ``scratch`` stands in where no trained file exists; the report says which was used.
    """
    from mex_fusion_ros.model import create_model
    from mex_fusion_ros.model.weights import WeightsError, save_weights, shipped_weights_path

    explicit: dict[str, Path] = {}
    for item in given:
        name, separator, path = item.partition("=")
        if not separator or not path:
            raise ValueError(f"--weights takes NAME=PATH, got {item!r}")
        explicit[name] = Path(path)
    resolved: dict[str, tuple[Path, str]] = {}
    for name in names:
        if name in explicit:
            if not explicit[name].is_file():
                raise ValueError(f"--weights {name}: file {explicit[name]} does not exist")
            resolved[name] = (explicit[name], str(explicit[name]))
            continue
        try:
            shipped = Path(shipped_weights_path(name))
            if shipped.is_file():
                resolved[name] = (shipped, str(shipped))
                continue
        except WeightsError:
            pass
        model = create_model(name)
        randomise_gates(model)
        resolved[name] = (save_weights(scratch / f"{name}_init.pt", model), "freshly initialised, random gates")
    return resolved


def randomise_gates(model: Any, std: float = 0.5, seed: int = 0) -> None:
    """Random gate weights for a fresh network: its zero-initialised gates tie every expert, and a
    benchmark (and the export parity check) should see input-dependent routing as after training."""
    import torch

    from mex_fusion_ros.model.moe import SparseMoE

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, SparseMoE):
                module.w_gate.copy_(torch.randn(module.w_gate.shape, generator=generator) * std)


def synthetic_messages(width: int, height: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Raw ``mono16`` thermal and ``rgb8`` message fields of one structured frame pair."""
    from mex_fusion_ros.codec.image_codec import encode_image
    from mex_fusion_ros.deploy.export import structured_pair

    ir, vi = structured_pair(height, width)
    thermal = (ir[0, 0].numpy() * 12000 + 20000).astype(np.uint16)  # radiometric-like counts
    rgb = (vi[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    def fields(array: np.ndarray, encoding: str) -> dict[str, Any]:
        packed = encode_image(array, encoding)
        return {"height": packed.height, "width": packed.width, "encoding": packed.encoding,
                "is_bigendian": packed.is_bigendian, "step": packed.step, "data": packed.data}

    return fields(thermal, "mono16"), fields(rgb, "rgb8")


def backend_options(backend: str) -> dict[str, Any]:
    """``create_fuser`` keywords of a benchmark backend name."""
    options = {"torch": {"backend": "torch"}, "torch+compile": {"backend": "torch", "torch_compile": True},
               "torch+cudagraphs": {"backend": "torch", "cuda_graphs": True},
               "onnxruntime": {"backend": "onnxruntime"}, "tensorrt": {"backend": "tensorrt"}}
    if backend not in options:
        raise ValueError(f"unknown benchmark backend {backend!r}; valid: {', '.join(options)}")
    return options[backend]


def skip_reason(model: str, backend: str, precision: str, size: str, device: Any, include_slow: bool) -> str | None:
    """Why a row cannot (or by default does not) run on this machine, or None."""
    from mex_fusion_ros.deploy.backends import installed_runtimes

    runtimes = installed_runtimes()
    if precision == "fp16" and device.type != "cuda":
        return "fp16 needs a CUDA device (no GPU here)"
    if backend == "torch+cudagraphs" and device.type != "cuda":
        return "CUDA graphs need a CUDA device (no GPU here)"
    if backend == "tensorrt" and (runtimes["tensorrt"] is None or device.type != "cuda"):
        return f"tensorrt {'not installed' if runtimes['tensorrt'] is None else 'needs CUDA'}"
    if backend == "onnxruntime" and runtimes["onnxruntime"] is None:
        return "onnxruntime not installed"
    if device.type == "cpu" and (model, size) in SLOW_ON_CPU and not include_slow:
        return "too slow on a CPU (minutes per frame); --include-slow to run it"
    return None


def _timer(device: Any) -> Callable[[Callable[[], Any]], float]:
    """Milliseconds of one call: CUDA events on a GPU (after draining queued work), else perf_counter."""
    import torch

    if device.type == "cuda":
        def timed(function: Callable[[], Any]) -> float:
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            function()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))
        return timed

    def timed_cpu(function: Callable[[], Any]) -> float:
        started = time.perf_counter()
        function()
        return (time.perf_counter() - started) * 1e3
    return timed_cpu


def measure_row(row: Row, weights: Path, device: Any, repeats: int, warmup: int,
                yolo: Callable[[], Any] | None) -> None:
    """Fill ``row`` with timings and memory (fuser built through ``create_fuser`` like the node)."""
    import torch

    from mex_fusion_ros.codec.agc import ThermalAGC
    from mex_fusion_ros.codec.image_codec import decode_image, encode_image
    from mex_fusion_ros.fusion.registry import create_fuser
    from mex_fusion_ros.nodes.pipeline import FusionPipeline

    width, height = parse_size(row.size)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with PeakRss() as rss:
        started = time.perf_counter()
        fuser = create_fuser(str(weights), device=str(device), half=row.precision == "fp16",
                             **backend_options(row.backend))
        row.setup_s = time.perf_counter() - started
        # A small translation and scale: registration really warps, as on a calibrated rig.
        homography = (1.01, 0.0, 3.0, 0.0, 1.01, -2.0, 0.0, 0.0, 1.0)
        pipeline = FusionPipeline(fuser, homography=homography, color=True, agc=ThermalAGC(1.0, 99.0, 0.9))
        thermal_msg, rgb_msg = synthetic_messages(width, height)
        layout = getattr(fuser, "memory_format", torch.contiguous_format)
        ir = torch.rand(1, 1, height, width, device=device).contiguous(memory_format=layout)
        vi = torch.rand(1, 3, height, width, device=device).contiguous(memory_format=layout)

        def model_only() -> Any:
            return fuser.infer(ir, vi)

        def full_pipeline() -> Any:
            thermal = decode_image(**thermal_msg)
            rgb = decode_image(**rgb_msg)
            frame = pipeline.process(thermal, rgb)
            return encode_image(frame.fused, "rgb8")

        timed = _timer(device)
        for _ in range(warmup):
            model_only()
            full_pipeline()
            if yolo is not None:
                yolo()
        samples: dict[str, list[float]] = {"model": [], "pipeline": [], "yolo": []}
        for _ in range(repeats):
            samples["model"].append(timed(model_only))
            samples["pipeline"].append(timed(full_pipeline))
            if yolo is not None:
                samples["yolo"].append(timed(yolo))
    row.peak_rss_mib = rss.peak / 2**20
    if device.type == "cuda":
        row.peak_device_mib = torch.cuda.max_memory_allocated(device) / 2**20
    row.model_median_ms = statistics.median(samples["model"])
    row.model_p95_ms = percentile(samples["model"], 95)
    row.pipeline_median_ms = statistics.median(samples["pipeline"])
    row.pipeline_p95_ms = percentile(samples["pipeline"], 95)
    row.model_fps = 1e3 / row.model_median_ms
    row.pipeline_fps = 1e3 / row.pipeline_median_ms
    if samples["yolo"]:
        row.yolo_median_ms = statistics.median(samples["yolo"])
        row.model_vs_yolov8n = row.model_median_ms / row.yolo_median_ms
        row.pipeline_vs_yolov8n = row.pipeline_median_ms / row.yolo_median_ms


def build_yolo(device: Any) -> Callable[[], Any]:
    """YOLOv8n (random weights, no download) forward on one 640x640 image."""
    import torch

    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml").model.eval().to(device)
    image = torch.rand(1, 3, YOLO_SIZE, YOLO_SIZE, device=device)

    def forward() -> Any:
        with torch.inference_mode():
            return model(image)
    return forward


def format_table(report: dict[str, Any]) -> str:
    """Fixed-width table of a report's rows (skipped rows at the end, with their reason)."""
    lines = [f"device {report['device']}, {report['threads']} threads, {report['repeats']} rounds "
             f"(median / p95 ms; YOLOv8n 640x640 timed in the same rounds)"]
    if report.get("load_average"):
        lines.append(f"load average at start: {report['load_average']}")
    header = (f"{'model':<6} {'backend':<16} {'prec':<4} {'size':>9} {'model med':>9} {'p95':>7} {'FPS':>6} "
              f"{'pipe med':>9} {'p95':>7} {'FPS':>6} {'xYOLO':>6} {'RSS MiB':>8} {'dev MiB':>8}")
    lines += [header, "-" * len(header)]
    skipped = []
    for row in report["rows"]:
        if row["skipped"]:
            skipped.append(f"  {row['model']} {row['backend']} {row['precision']} {row['size']}: {row['skipped']}")
            continue
        ratio = f"{row['model_vs_yolov8n']:.2f}" if row["model_vs_yolov8n"] is not None else "-"
        device_mib = f"{row['peak_device_mib']:.0f}" if row["peak_device_mib"] is not None else "-"
        lines.append(
            f"{row['model']:<6} {row['backend']:<16} {row['precision']:<4} {row['size']:>9} "
            f"{row['model_median_ms']:>9.1f} {row['model_p95_ms']:>7.1f} {row['model_fps']:>6.1f} "
            f"{row['pipeline_median_ms']:>9.1f} {row['pipeline_p95_ms']:>7.1f} {row['pipeline_fps']:>6.1f} "
            f"{ratio:>6} {row['peak_rss_mib']:>8.0f} {device_mib:>8}")
    if skipped:
        lines += ["skipped:", *skipped]
    lines.append("weights: " + "; ".join(f"{k}: {v}" for k, v in report["weights"].items()))
    return "\n".join(lines)


def run_pipeline_bench(args: argparse.Namespace) -> int:
    """Entry point of ``mex-fusion bench --pipeline`` (arguments of bench_command + add_pipeline_arguments)."""
    import torch
    from tqdm import tqdm

    from mex_fusion_ros.deploy.backends import installed_runtimes
    from mex_fusion_ros.model.config import ConfigError, get_config
    from mex_fusion_ros.model.fuser import select_device

    try:
        device = select_device(args.device)
        for name in args.models:
            get_config(name)
        for size in args.sizes:
            parse_size(size)
        for backend in args.backends:
            backend_options(backend)
    except (ValueError, ConfigError) as error:
        print(f"mex-fusion bench: {error}", file=sys.stderr)
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    # Other processes share this machine; the load when the run starts goes into the report.
    load = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="mex_bench_") as scratch:
        try:
            weights = resolve_weights(args.models, args.weights, Path(scratch))
        except ValueError as error:
            print(f"mex-fusion bench: {error}", file=sys.stderr)
            return 2
        yolo = None if args.no_yolo else build_yolo(device)
        rows = [Row(model, backend, precision, size, weights=weights[model][1])
                for model in args.models for size in args.sizes
                for backend in args.backends for precision in args.precisions]
        for row in tqdm(rows, desc="bench", unit="config", file=sys.stderr, disable=args.json):
            row.skipped = skip_reason(row.model, row.backend, row.precision, row.size, device, args.include_slow)
            if row.skipped:
                continue
            try:
                measure_row(row, weights[row.model][0], device, args.repeats, args.warmup, yolo)
            except (ImportError, RuntimeError, ValueError, FileNotFoundError) as error:
                row.skipped = f"failed: {type(error).__name__}: {str(error)[:200]}"
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "threads": torch.get_num_threads(), "repeats": args.repeats, "warmup": args.warmup,
        "load_average": load,
        "runtimes": installed_runtimes(),
        "weights": {name: origin for name, (_, origin) in weights.items()},
        "rows": [asdict(row) for row in rows],
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0 if any(not row.skipped for row in rows) else 1
