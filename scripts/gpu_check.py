#!/usr/bin/env python3
"""One-shot GPU figures for docs/deployment.md: one command, a time budget, a JSON file and a table.

Made for a lent GPU machine (an H100 or H200 with its own Python, torch, torchvision, onnx,
onnxruntime and OpenCV, but no ROS, no internet and no project virtualenv), run from the
repository root with the source tree on the path::

    PYTHONPATH=. python3 scripts/gpu_check.py --out "$OUT"                 # the GPU run (< 8 min)
    .venv/bin/python scripts/gpu_check.py --device cpu --sizes 64x64 --models nano \\
        --repeats 2 --quick --out /tmp/gpu_check                           # tiny CPU check

It imports only the ROS-free code (``mex_fusion_ros.model``, ``.fusion``, ``.deploy``, and the
ROS-free helpers they use: ``codec``, ``data``, ``bag.scene``, ``nodes.pipeline``) and measures:

- **model_forward**: ``Fuser.infer`` of ``nano``, ``small`` and ``paper`` per size, fp32/fp16 and
  mode (``eager``: the sparse-routing ``Fuser``; ``cudagraphs``/``compile``: the deployed
  ``AcceleratedTorchFuser``): median, p95, FPS, peak GPU memory;
- **fuser_pipeline**: ``Fuser.fuse`` on numpy images (pre-processing, forward, post-processing to
  numpy) and **node_pipeline**: what ``fusion_node`` does per frame (decode, AGC, registration,
  fuse, uint8, encode; ``nodes.pipeline.FusionPipeline``), at 640x512 fp16;
- **yolov8n**: the reference detector in the same run (ultralytics, random weights, offline);
- **parity**: fp16 against fp32 on the shipped ``weights/mex_nano.pt`` as the PSNR of the fused
  image, on frames of the built-in demo scene;
- **training**: optimiser steps per second of ``nano`` and ``small`` at batch 16 with 128x128
  crops, through ``model.training``'s own ``configure_stage``/``compute_losses`` on crops made by
  the training dataset from demo-scene frames (no data files needed), per stage.

Budget: the measurements run in a worker process, most important first (the acceptance figures,
then the grid, training, and ``torch.compile`` last). The worker skips an item when the time left
is below the item's estimate; this supervising process stops an item that overruns its allowance
and the whole run at the global budget, then starts a fresh worker for what is left (also after a
crash or a broken CUDA context). Every requested entry ends up in the JSON, measured or with the
reason why not. The JSON and the table are rewritten after every item, so a run cut short by an
outside limit still leaves what it measured.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import hashlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Nothing here starts rclpy, but child processes inherit the environment: keep DDS on loopback.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SCHEMA = "mex_fusion_ros.gpu_check/1"
MODELS = ("nano", "small", "paper")
SIZES = ("640x512", "1280x1024")
PRECISIONS = ("fp32", "fp16")
MODES = ("eager", "cudagraphs", "compile")
STAGES = ("restoration", "fusion")
#: TG-ECNet (ICML 2025) reports 1.03 FPS on an RTX 4090; ``paper`` is its scale.
TG_ECNET_FPS = 1.03
TARGET_NANO_FPS = 300.0
TARGET_PIPELINE_HZ = 60.0
TARGET_PARITY_DB = 40.0
#: PSNR reported for identical images (the MSE floor keeps the JSON finite).
PSNR_CAP_DB = 200.0
#: Exit status of a worker whose CUDA context is unusable after an error: start a fresh one.
EXIT_BROKEN_CONTEXT = 3
EXIT_FATAL = 2
MAX_WORKER_STARTS = 6
JSON_NAME, TABLE_NAME, LOG_NAME, RECORDS_NAME = "gpu_check.json", "gpu_check.md", "gpu_check.log", "gpu_check.jsonl"
#: Third-party modules the lent GPU machine has (KINDS.md), plus those imported optionally with a fallback.
GPU_MACHINE_MODULES = frozenset({
    "torch", "torchvision", "numpy", "cv2", "yaml", "tqdm", "psutil", "PIL", "scipy", "sympy", "mpmath",
    "networkx", "jinja2", "markupsafe", "filelock", "fsspec", "typing_extensions", "packaging", "triton",
    "onnx", "onnxruntime", "onnxscript", "onnx_ir", "ml_dtypes", "pynvml", "cuda", "matplotlib", "requests",
    "urllib3", "certifi", "charset_normalizer", "idna", "setuptools", "pkg_resources", "google",
    "opt_einsum", "einops", "dateutil", "six", "pyparsing", "cycler", "kiwisolver", "fontTools", "contourpy",
    "pandas", "torchgen", "functorch", "nvidia",
    # optional, with a recorded fallback: carried wheel (YOLOv8n), ROS share lookup of shipped weights
    "ultralytics", "ultralytics_thop", "thop", "ament_index_python",
})


# ================================================================================================
# Small helpers shared by both processes
# ================================================================================================
def parse_size(text: str) -> tuple[int, int]:
    """``"640x512"`` -> ``(width, height)``: the pipeline bench's parser (numpy and the standard
    library only, so the supervisor process stays free of torch)."""
    from mex_fusion_ros.deploy.pipeline_bench import parse_size as parse

    return parse(text)


def psnr_db(test: Any, reference: Any) -> float:
    """PSNR in dB of ``test`` against ``reference`` (images in [0, 1], clipped), capped at 200 dB."""
    import numpy as np

    a = np.clip(np.asarray(test, dtype=np.float64), 0.0, 1.0)
    b = np.clip(np.asarray(reference, dtype=np.float64), 0.0, 1.0)
    if a.shape != b.shape:
        raise ValueError(f"PSNR of images of different shapes {a.shape} and {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    return min(PSNR_CAP_DB, 10.0 * math.log10(1.0 / max(mse, 1e-20)))


def finite(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become None (json.dumps would write non-standard tokens)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def skipped(reason: str) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason}


def failed(reason: str) -> dict[str, Any]:
    return {"status": "failed", "reason": reason}


# ================================================================================================
# The plan: every entry of the report, in execution order (most important first)
# ================================================================================================
def _forward_priority(model: str, precision: str, mode: str, first_size: bool) -> float:
    """Lower runs earlier: the acceptance figures first, torch.compile (minutes) last."""
    if mode == "compile":
        if (model, precision, first_size) == ("nano", "fp16", True):
            return 9.0
        return 50.0 + {"nano": 0, "small": 5, "paper": 20}.get(model, 30) + (0 if first_size else 2) \
            + (0 if precision == "fp16" else 1)
    if (model, precision, first_size) == ("nano", "fp16", True):
        return 0.0
    if model == "paper":
        if mode == "eager" and first_size:
            return 5.0  # against TG-ECNet's published figure
        return 25.0 if first_size else 40.0
    return {"nano": 10.0, "small": 20.0}.get(model, 30.0) + (0 if first_size else 1)


def _forward_need(model: str, size: str, mode: str) -> float:
    """Seconds an H100 is expected to need (set-up, warm-up, a few calls); used to skip, not to stop."""
    width, height = parse_size(size)
    scale = max(1.0, width * height / (640 * 512))
    if mode == "compile":
        return {"nano": 60.0, "small": 90.0, "paper": 240.0}.get(model, 240.0)
    return {"nano": 5.0, "small": 7.0, "paper": 25.0}.get(model, 25.0) * (scale**0.5 if model == "paper" else 1.0)


def build_plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every item of the run with its section, parameters, priority, estimate and allowance."""
    items: list[dict[str, Any]] = []

    def add(section: str, item_id: str, params: dict[str, Any], priority: float, need: float,
            allowance: float | None = None) -> None:
        items.append({"id": item_id, "section": section, "params": params, "priority": priority,
                      "need_s": need, "allowance_s": allowance if allowance is not None else max(60.0, 3 * need),
                      "order": len(items)})

    for model in args.models:
        for size in args.sizes:
            for precision in args.precisions:
                for mode in args.modes:
                    need = _forward_need(model, size, mode)
                    add("model_forward", f"forward/{model}/{size}/{precision}/{mode}",
                        {"model": model, "size": size, "precision": precision, "mode": mode},
                        _forward_priority(model, precision, mode, size == args.sizes[0]), need,
                        2.5 * need if mode == "compile" else None)
    if "pipeline" not in args.skip:
        for kind, base in (("fuser", 1.0), ("node", 1.5)):
            for precision in args.pipeline_precisions:
                for index, mode in enumerate(args.pipeline_modes):
                    compile_mode = mode == "compile"
                    add(f"{kind}_pipeline", f"pipeline/{kind}/{args.pipeline_size}/{precision}/{mode}",
                        {"model": args.pipeline_model, "size": args.pipeline_size, "precision": precision,
                         "mode": mode},
                        (55.0 if compile_mode else base) + index / 10, 60.0 if compile_mode else 8.0,
                        150.0 if compile_mode else None)
    if "parity" not in args.skip:
        add("parity", "parity", {"model": args.pipeline_model, "size": args.parity_size,
                                 "frames": args.parity_frames}, 2.0, 10.0)
    if "yolo" not in args.skip:
        for index, precision in enumerate(args.precisions):
            add("yolov8n", f"yolov8n/{args.yolo_size}/{precision}",
                {"model": "yolov8n", "size": f"{args.yolo_size}x{args.yolo_size}", "precision": precision},
                3.0 + index / 10, 8.0)
    if "training" not in args.skip:
        add("training_data", "training/data", {"batch": args.train_batch, "crop": args.train_crop}, 29.0, 5.0)
        for index, model in enumerate(args.train_models):
            for stage_index, stage in enumerate(STAGES):
                add("training", f"training/{model}/{stage}",
                    {"model": model, "stage": stage, "batch": args.train_batch, "crop": args.train_crop},
                    30.0 + index + stage_index / 10, 20.0 if model == "small" else 15.0, 90.0)
    items.sort(key=lambda item: (item["priority"], item["order"]))
    return items


# ================================================================================================
# Worker: imports torch, measures the items it is given, appends records to a JSON-lines file
# ================================================================================================
class Worker:
    """State shared by the items of one worker process (device, cached models, inputs, batches)."""

    def __init__(self, plan: dict[str, Any], records: Path) -> None:
        self.plan = plan
        self.args = plan["args"]
        self.records = records.open("a", buffering=1)
        self.deadline = float(plan["deadline"])
        self.modules_at_start = set(sys.modules)
        self._models: dict[str, tuple[Any, str]] = {}
        self._pairs: dict[str, Any] = {}
        self._batches: dict[tuple[int, int], tuple[list[dict[str, Any]], float]] = {}
        self.device: Any = None
        self.cuda = False

    # ---------------------------------------------------------------------------------- records
    def emit(self, record: dict[str, Any]) -> None:
        self.records.write(json.dumps(finite(record)) + "\n")
        self.records.flush()

    def third_party_modules(self) -> list[str]:
        """Top-level modules imported since this worker started that live outside the standard library."""
        names = set()
        for name in set(sys.modules) - self.modules_at_start:
            top = name.split(".")[0]
            module = sys.modules.get(top)
            location = getattr(module, "__file__", None) or ""
            if top.startswith("_") or not location or top == "mex_fusion_ros":
                continue
            if "site-packages" in location or "dist-packages" in location:
                names.add(top)
        return sorted(names)

    # ---------------------------------------------------------------------------------- set-up
    def start(self) -> None:
        import torch

        from mex_fusion_ros.deploy.allocator import retain_freed_memory
        from mex_fusion_ros.model.fuser import select_device

        retain_freed_memory()  # as every node and mex-fusion command does
        if self.args["threads"] > 0:
            torch.set_num_threads(self.args["threads"])
        self.device = select_device(self.args["device"])
        self.cuda = self.device.type == "cuda"
        # An H100 idles at a low clock: a second of matrix products before the first timing.
        if self.cuda and not self.args["quick"]:
            a = torch.randn(4096, 4096, device=self.device, dtype=torch.float16)
            until = time.perf_counter() + 1.0
            while time.perf_counter() < until:
                a @ a  # noqa: B018 - the work is the point
            torch.cuda.synchronize(self.device)

    def environment(self) -> dict[str, Any]:
        import importlib.metadata

        import torch

        def version(distribution: str) -> str | None:
            try:
                return importlib.metadata.version(distribution)
            except importlib.metadata.PackageNotFoundError:
                return None

        env: dict[str, Any] = {
            "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "worker_pid": os.getpid(),
            "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "device": str(self.device), "threads": torch.get_num_threads(),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "tf32_convolutions": bool(torch.backends.cudnn.allow_tf32),
            "onnxruntime": version("onnxruntime") or version("onnxruntime-gpu"),
            "ultralytics": version("ultralytics"), "git_commit": _git_commit(),
            "weights": {}, "input": None,
        }
        with contextlib.suppress(Exception):
            env["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
        if self.cuda:
            properties = torch.cuda.get_device_properties(self.device)
            env.update(device_name=properties.name, capability=f"{properties.major}.{properties.minor}",
                       multiprocessors=properties.multi_processor_count,
                       gpu_memory_gib=round(properties.total_memory / 2**30, 1), driver=_nvidia_smi())
        else:
            env.update(device_name=f"cpu ({os.cpu_count()} cores)", driver=None)
        with contextlib.suppress(Exception):
            from mex_fusion_ros.model.weights import shipped_weights_path

            for name in MODELS:
                with contextlib.suppress(Exception):
                    path = Path(shipped_weights_path(name))
                    env["weights"][name] = {"path": _relative(path),
                                            "sha1": hashlib.sha1(path.read_bytes()).hexdigest()[:16]}
        env["input"] = self.input_origin()
        return env

    def input_origin(self) -> str:
        try:
            import mex_fusion_ros.bag.scene  # noqa: F401
        except ImportError as error:
            return f"deploy.export.structured_pair (demo scene not importable: {error})"
        return "frames of the built-in demo scene (bag.scene.DemoScene), rendered at each size"

    # ---------------------------------------------------------------------------------- inputs
    def pair(self, size: str, index: int = 1, frames: int = 3) -> tuple[Any, Any]:
        """A real-looking ``ir (H, W)``, ``vi (H, W, 3)`` float32 numpy pair of ``size`` (WxH)."""
        key = f"{size}/{index}/{frames}"
        if key not in self._pairs:
            width, height = parse_size(size)
            try:
                from mex_fusion_ros.bag.scene import DemoScene, SceneConfig

                frame = DemoScene(SceneConfig(width=max(64, width), height=max(48, height),
                                              num_frames=frames, seed=0)).render(index)
                ir, vi = frame.ir[:height, :width], frame.vi[:height, :width]
            except ImportError:
                from mex_fusion_ros.deploy.export import structured_pair

                ir_t, vi_t = structured_pair(height, width, seed=index)
                ir, vi = ir_t[0, 0].numpy(), vi_t[0].permute(1, 2, 0).numpy()
            import numpy as np

            self._pairs[key] = (np.ascontiguousarray(ir, dtype=np.float32), np.ascontiguousarray(vi, dtype=np.float32))
        return self._pairs[key]

    def tensors(self, size: str, dtype: Any, memory_format: Any) -> tuple[Any, Any]:
        import torch

        ir, vi = self.pair(size)
        ir_t = torch.from_numpy(ir)[None, None].to(self.device, dtype).contiguous(memory_format=memory_format)
        vi_t = torch.from_numpy(vi).permute(2, 0, 1)[None].to(self.device, dtype).contiguous(
            memory_format=memory_format)
        return ir_t, vi_t

    # ---------------------------------------------------------------------------------- models
    def base_model(self, name: str) -> tuple[Any, str]:
        """CPU network of ``name``: the shipped weights where they exist, else freshly initialised
        with random gates (speed does not depend on weight values; zero gates would tie all experts)."""
        if name not in self._models:
            from mex_fusion_ros.model import create_model
            from mex_fusion_ros.model.weights import WeightsError, load_weights, shipped_weights_path

            try:
                path = Path(shipped_weights_path(name))
                model, _ = load_weights(path, expected=name)
                origin = _relative(path)
            except WeightsError as error:
                from mex_fusion_ros.deploy.pipeline_bench import randomise_gates

                model = create_model(name)
                randomise_gates(model)
                # Say why: a shipped file that no longer matches the configuration is worth knowing.
                origin = f"freshly initialised, random gates ({' '.join(str(error).split())[:200]})"
            self._models[name] = (model.cpu().eval(), origin)
        return self._models[name]

    def fuser(self, name: str, precision: str, mode: str) -> tuple[Any, str]:
        """A fresh fuser as the node builds it: ``Fuser`` (eager) or ``AcceleratedTorchFuser``."""
        from mex_fusion_ros.model.fuser import Fuser

        model, origin = self.base_model(name)
        fuser = Fuser(copy.deepcopy(model), device=self.device, half=precision == "fp16", name=name)
        if mode == "eager":
            return fuser, origin
        from mex_fusion_ros.deploy.backends import AcceleratedTorchFuser

        return AcceleratedTorchFuser(fuser, torch_compile=mode == "compile", cuda_graphs=mode == "cudagraphs"), origin

    def inapplicable(self, item: dict[str, Any]) -> str | None:
        """Why an item cannot run on this device or in this run (checked before the time budget), or None."""
        params = item["params"]
        if (item["section"] == "parity" or params.get("precision") == "fp16") and not self.cuda:
            return "fp16 needs a CUDA device (the Fuser runs fp32 on a CPU)"
        if params.get("mode") == "cudagraphs" and not self.cuda:
            return "CUDA graphs need a CUDA device"
        if params.get("mode") == "compile" and self.args["quick"]:
            return "--quick: torch.compile not tried (minutes of compilation)"
        return None

    # ---------------------------------------------------------------------------------- timing
    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)

    def reset_memory(self) -> None:
        """From here the peak counts what stays allocated (weights, inputs) and what the calls add; the
        set-up's temporaries (e.g. the eager copy an AcceleratedTorchFuser is made from) are gone."""
        gc.collect()
        if self.cuda:
            import torch

            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_mib(self) -> float | None:
        if not self.cuda:
            return None
        import torch

        return torch.cuda.max_memory_allocated(self.device) / 2**20

    def measure(self, call: Callable[[], Any], *, repeats: int | None = None) -> dict[str, Any]:
        """Wall-clock ms per synchronous call (device drained before and after each call).

        The first call (compilation, graph capture, cuDNN set-up) is reported apart; warm-up calls
        stop after a fifth of the per-item time, the timed calls after ``item_seconds`` (at least 3).
        """
        import numpy as np

        cap = float(self.args["item_seconds"])
        repeats = int(repeats or self.args["repeats"])
        self.sync()
        started = time.perf_counter()
        call()
        self.sync()
        first_ms = (time.perf_counter() - started) * 1e3
        warm_start, warmups = time.perf_counter(), 0
        while warmups < self.args["warmup"] and time.perf_counter() - warm_start < cap / 5:
            call()
            warmups += 1
        self.sync()
        samples: list[float] = []
        loop_start = time.perf_counter()
        while len(samples) < repeats and (len(samples) < 3 or time.perf_counter() - loop_start < cap):
            t0 = time.perf_counter()
            call()
            self.sync()
            samples.append((time.perf_counter() - t0) * 1e3)
        median = statistics.median(samples)
        return {"status": "ok", "reason": None, "median_ms": median,
                "p95_ms": float(np.percentile(samples, 95)), "min_ms": min(samples), "fps": 1e3 / median,
                "samples": len(samples), "warmup": warmups, "first_call_ms": first_ms}

    # ---------------------------------------------------------------------------------- items
    def run_forward(self, params: dict[str, Any]) -> dict[str, Any]:
        import torch

        started = time.perf_counter()
        fuser, origin = self.fuser(params["model"], params["precision"], params["mode"])
        dtype = torch.float16 if fuser.half else torch.float32
        ir, vi = self.tensors(params["size"], dtype, fuser.memory_format)
        build_s = time.perf_counter() - started
        self.reset_memory()
        result = self.measure(lambda: fuser.infer(ir, vi))
        network, _ = self.base_model(params["model"])
        result.update(weights=origin, build_s=build_s, peak_gpu_mib=self.peak_memory_mib(),
                      parameters_m=sum(p.numel() for p in network.parameters()) / 1e6)
        return result

    def run_pipeline(self, params: dict[str, Any], node: bool) -> dict[str, Any]:
        import numpy as np

        fuser, origin = self.fuser(params["model"], params["precision"], params["mode"])
        self.reset_memory()
        timings: list[dict[str, float]] = []
        if node:
            from mex_fusion_ros.codec.agc import ThermalAGC
            from mex_fusion_ros.codec.image_codec import decode_image, encode_image
            from mex_fusion_ros.deploy.pipeline_bench import synthetic_messages
            from mex_fusion_ros.nodes.pipeline import FusionPipeline

            width, height = parse_size(params["size"])
            # A small translation and scale, as `mex-fusion bench --pipeline`: registration really warps.
            homography = (1.01, 0.0, 3.0, 0.0, 1.01, -2.0, 0.0, 0.0, 1.0)
            pipeline = FusionPipeline(fuser, homography=homography, color=True, agc=ThermalAGC(1.0, 99.0, 0.9))
            thermal_msg, rgb_msg = synthetic_messages(width, height)

            def call() -> Any:
                frame = pipeline.process(decode_image(**thermal_msg), decode_image(**rgb_msg))
                return encode_image(frame.fused, "rgb8")
        else:
            ir, vi = self.pair(params["size"])

            def call() -> Any:
                result = fuser.fuse(ir, vi)
                timings.append(result.timings)
                return result

        result = self.measure(call)
        result.update(hz=result.pop("fps"), weights=origin, peak_gpu_mib=self.peak_memory_mib())
        if timings:
            for stage in ("preprocess", "forward", "postprocess"):
                values = [t[stage] * 1e3 for t in timings[-result["samples"]:] if stage in t]
                result[f"{stage}_median_ms"] = float(np.median(values)) if values else None
        return result

    def run_yolo(self, params: dict[str, Any]) -> dict[str, Any]:
        import torch

        try:
            from ultralytics import YOLO
        except Exception as error:  # ImportError, or a dependency of it failing at import
            return skipped(f"ultralytics not importable ({type(error).__name__}: {error}); carry its wheel, "
                           f"see docs/deployment.md, 'GPU check'")
        self.reset_memory()
        model = YOLO("yolov8n.yaml").model
        bn_fused = True
        try:  # what ultralytics' predictor (the detector node) runs: convolutions with batch norm folded
            model = model.fuse(verbose=False)
        except Exception:
            bn_fused = False
        model = model.eval().to(self.device)
        dtype = torch.float16 if params["precision"] == "fp16" else torch.float32
        if dtype == torch.float16:
            model = model.half()
        side = parse_size(params["size"])[0]
        image = torch.rand(1, 3, side, side, device=self.device, dtype=dtype)

        def call() -> Any:
            with torch.inference_mode():
                return model(image)

        result = self.measure(call)
        result.update(weights="random (yolov8n.yaml, offline)", bn_fused=bn_fused,
                      peak_gpu_mib=self.peak_memory_mib())
        return result

    def run_parity(self, params: dict[str, Any]) -> dict[str, Any]:
        from mex_fusion_ros.model.fuser import Fuser
        from mex_fusion_ros.model.weights import WeightsError, shipped_weights_path

        try:
            weights = Path(self.args["parity_weights"] or shipped_weights_path(params["model"]))
        except WeightsError as error:
            return skipped(str(error))
        reference = Fuser.from_weights(weights, device=self.device, half=False)
        variants: dict[str, Any] = {"eager fp16": Fuser.from_weights(weights, device=self.device, half=True)}
        if self.cuda:  # what a node with `cuda_graphs: true` and `fp16: true` publishes
            from mex_fusion_ros.deploy.backends import AcceleratedTorchFuser

            variants["cudagraphs fp16"] = AcceleratedTorchFuser(
                Fuser.from_weights(weights, device=self.device, half=True), cuda_graphs=True)
        frames = int(params["frames"])
        per_variant: dict[str, Any] = {}
        for label, fuser in variants.items():
            rows = []
            for index in range(frames):
                ir, vi = self.pair(params["size"], index=index, frames=frames)
                ref, test = reference.fuse(ir, vi), fuser.fuse(ir, vi)
                same = sum(set(a.experts) == set(b.experts) for a, b in zip(ref.routing, test.routing))
                rows.append({"frame": index, "psnr_fused_db": psnr_db(test.fused, ref.fused),
                             "psnr_restored_ir_db": psnr_db(test.restored_ir, ref.restored_ir),
                             "psnr_restored_vi_db": psnr_db(test.restored_vi, ref.restored_vi),
                             "max_abs_fused": float(abs(test.fused - ref.fused).max()),
                             "routing_equal": f"{same}/{len(ref.routing)}"})
            per_variant[label] = {"psnr_fused_db": min(r["psnr_fused_db"] for r in rows), "frames": rows}
        main = per_variant["eager fp16"]
        return {"status": "ok", "reason": None, "weights": _relative(weights), "reference": "eager fp32",
                "psnr_fused_db": main["psnr_fused_db"],
                "psnr_restored_ir_db": min(r["psnr_restored_ir_db"] for r in main["frames"]),
                "psnr_restored_vi_db": min(r["psnr_restored_vi_db"] for r in main["frames"]),
                "max_abs_fused": max(r["max_abs_fused"] for r in main["frames"]),
                "variants": per_variant}

    def training_batches(self, batch: int, crop: int) -> tuple[list[dict[str, Any]], float]:
        """A few real training batches (DegradedCropDataset on demo-scene frames) and the crops/s of
        making them in this one process (what a DataLoader worker delivers)."""
        key = (batch, crop)
        if key not in self._batches:
            from torch.utils.data import default_collate

            from mex_fusion_ros.data.training import DegradedCropDataset
            from mex_fusion_ros.model.training import scene_training_images

            count = max(1, int(self.args["train_batches"]))
            dataset = DegradedCropDataset([], crop_size=crop, seed=0, samples_per_epoch=batch * count,
                                          extra_images=scene_training_images(16))
            started = time.perf_counter()
            items = [dataset[i] for i in range(batch * count)]
            rate = len(items) / (time.perf_counter() - started)
            batches = []
            for index in range(count):
                collated = default_collate(items[index * batch:(index + 1) * batch])
                if self.cuda:  # the training loader pins host memory on CUDA
                    collated = {k: v.pin_memory() if hasattr(v, "pin_memory") else v for k, v in collated.items()}
                batches.append(collated)
            self._batches[key] = (batches, rate)
        return self._batches[key]

    def run_training_data(self, params: dict[str, Any]) -> dict[str, Any]:
        _, rate = self.training_batches(params["batch"], params["crop"])
        return {"status": "ok", "reason": None, "crops_per_s_per_process": rate,
                "note": "DegradedCropDataset items (crop, flips, synthetic degradation, labels) made in one process"}

    def run_training(self, params: dict[str, Any]) -> dict[str, Any]:
        import numpy as np
        import torch
        from torch import nn

        from mex_fusion_ros.model import create_model
        from mex_fusion_ros.model.training import (
            TrainConfig,
            compute_losses,
            configure_stage,
            learning_rate,
            load_train_config,
        )

        config_path = REPO_ROOT / "config" / "train_nano.yaml"
        try:
            config = load_train_config(config_path)
            config_origin = _relative(config_path)
        except Exception as error:  # the schedule file is a convenience; the defaults are the code's
            config, config_origin = TrainConfig(), f"TrainConfig() defaults ({config_path.name}: {error})"
        batches, _ = self.training_batches(params["batch"], params["crop"])
        stage = params["stage"]
        stage_config = getattr(config, stage)
        self.reset_memory()
        overrides = config.model_overrides if params["model"] == config.model else {}
        torch.manual_seed(0)
        model = create_model(params["model"], **overrides).to(self.device)
        parameters = configure_stage(model, stage)
        optimizer = torch.optim.AdamW(parameters, lr=stage_config.lr, weight_decay=stage_config.weight_decay)
        losses: list[float] = []

        def step(index: int) -> None:
            # The loop body of model.training.train, step for step.
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(stage_config, index)
            loss, _, _ = compute_losses(model, batches[index % len(batches)], stage, config.loss, self.device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            losses.append(float(loss.detach()))
            if stage_config.grad_clip > 0:
                nn.utils.clip_grad_norm_(parameters, stage_config.grad_clip)
            optimizer.step()

        cap = float(self.args["item_seconds"])
        warmup = 1 if self.args["quick"] else 3
        for index in range(warmup):
            step(index)
        self.sync()
        samples: list[float] = []
        loop_start = time.perf_counter()
        while len(samples) < self.args["train_steps"] and (len(samples) < 3 or time.perf_counter() - loop_start < cap):
            t0 = time.perf_counter()
            step(warmup + len(samples))
            self.sync()
            samples.append(time.perf_counter() - t0)
        median = statistics.median(samples)
        return {"status": "ok", "reason": None, "steps_per_s": 1.0 / median, "s_per_step_median": median,
                "s_per_step_p95": float(np.percentile(samples, 95)), "steps": len(samples), "warmup": warmup,
                "crops_per_s": params["batch"] / median, "loss_finite": all(math.isfinite(v) for v in losses),
                "peak_gpu_mib": self.peak_memory_mib(), "train_config": config_origin,
                "trainable_parameters_m": sum(p.numel() for p in parameters) / 1e6}

    def run_item(self, item: dict[str, Any]) -> dict[str, Any]:
        section, params = item["section"], item["params"]
        if section == "model_forward":
            return self.run_forward(params)
        if section in ("fuser_pipeline", "node_pipeline"):
            return self.run_pipeline(params, node=section == "node_pipeline")
        if section == "yolov8n":
            return self.run_yolo(params)
        if section == "parity":
            return self.run_parity(params)
        if section == "training_data":
            return self.run_training_data(params)
        if section == "training":
            return self.run_training(params)
        return failed(f"unknown section {section!r}")

    def context_usable(self) -> bool:
        """False when the CUDA context is broken (an illegal access or a failed capture poisons it)."""
        if not self.cuda:
            return True
        import torch

        try:
            torch.cuda.synchronize(self.device)
            return float(torch.ones(4, device=self.device).sum().item()) == 4.0
        except Exception:
            return False

    def cleanup(self, compiled: bool) -> None:
        gc.collect()
        if compiled:
            with contextlib.suppress(Exception):
                import torch._dynamo

                torch._dynamo.reset()
        if self.cuda:
            import torch

            torch.cuda.empty_cache()

    def run(self, items: list[dict[str, Any]]) -> int:
        scale = 1.0 if self.cuda else float(self.args["cpu_allowance_scale"])
        for item in items:
            reason = self.inapplicable(item)
            if reason:
                self.emit({"event": "done", "id": item["id"], "result": skipped(reason)})
                continue
            left = self.deadline - time.time()
            if left < item["need_s"]:
                self.emit({"event": "done", "id": item["id"], "result": skipped(
                    f"time budget: {max(0.0, left):.0f} s left, this item needs about {item['need_s']:.0f} s "
                    f"on an H100")})
                continue
            allowance = min(item["allowance_s"] * scale, max(1.0, left))
            self.emit({"event": "start", "id": item["id"], "allowance_s": allowance, "time": time.time()})
            started = time.perf_counter()
            simulated = self.args["simulate"].get(item["id"])
            if simulated == "crash":  # tests of the supervisor: a worker dying without a word
                os._exit(70)
            if simulated == "hang":
                time.sleep(3600)
            try:
                result = self.run_item(item)
            except Exception as error:
                print(f"--- {item['id']} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
                message = " ".join(str(error).split())[:300]
                result = failed(f"{type(error).__name__}: {message}")
            result["elapsed_s"] = time.perf_counter() - started
            usable = self.context_usable()
            if not usable:
                result["reason"] = (result.get("reason") or "") + " (CUDA context unusable afterwards)"
            self.emit({"event": "done", "id": item["id"], "result": result})
            self.emit({"event": "modules", "modules": self.third_party_modules()})
            if not usable:
                return EXIT_BROKEN_CONTEXT
            if result.get("status") != "skipped":
                self.cleanup(compiled=item["params"].get("mode") == "compile")
        return 0


def _git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def _nvidia_smi() -> str | None:
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                 "--format=csv,noheader"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _exit_with_parent() -> None:
    """End this worker when the supervisor is gone (killed from outside): no orphan keeps the GPU busy."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(75)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def worker_main(plan_path: Path, records_path: Path) -> int:
    _exit_with_parent()
    plan = json.loads(plan_path.read_text())
    worker = Worker(plan, records_path)
    try:
        worker.start()
        worker.emit({"event": "environment", "environment": worker.environment()})
    except Exception as error:
        traceback.print_exc()
        worker.emit({"event": "fatal", "reason": f"{type(error).__name__}: {error}"})
        return EXIT_FATAL
    code = worker.run(plan["items"])
    worker.emit({"event": "modules", "modules": worker.third_party_modules()})
    return code


# ================================================================================================
# Supervisor: budget, allowances, restarts, report
# ================================================================================================
class Supervisor:
    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.args = args
        self.out = out
        self.started = time.time()
        self.deadline = self.started + args.budget_s
        self.plan = build_plan(args)
        self.results: dict[str, dict[str, Any]] = {}
        self.environment: dict[str, Any] | None = None
        self.modules: set[str] = set()
        self.worker_starts = 0
        self.fatal: str | None = None
        self.records_path = out / RECORDS_NAME
        self.log_path = out / LOG_NAME
        self.process: subprocess.Popen[bytes] | None = None
        self.offset = 0  # bytes of the records file handled so far

    def worker_args(self) -> dict[str, Any]:
        keys = ("device", "threads", "quick", "repeats", "warmup", "item_seconds", "train_steps",
                "train_batches", "parity_weights", "cpu_allowance_scale")
        values = {key: getattr(self.args, key) for key in keys}
        values["simulate"] = dict(item.split("=", 1) for item in self.args.simulate)
        return values

    def _kill(self, process: subprocess.Popen[bytes]) -> None:
        """End the worker and what it started (torch.compile's helpers): its own process group."""
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if process.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(wait)

    def _record(self, item_id: str, result: dict[str, Any]) -> None:
        self.results[item_id] = result
        print(f"[{time.time() - self.started:6.1f} s] {item_id}: {_summary(result)}", flush=True)
        self.write_report()

    def _handle(self, record: dict[str, Any], current: dict[str, Any]) -> None:
        event = record.get("event")
        if event == "environment" and self.environment is None:
            self.environment = record["environment"]
        elif event == "start":
            current.update(id=record["id"], since=time.time(), allowance=record["allowance_s"], announced=False)
        elif event == "done":
            self._record(record["id"], record["result"])
            current.clear()
        elif event == "modules":
            self.modules.update(record["modules"])
        elif event == "fatal":
            self.fatal = record["reason"]

    def run(self) -> None:
        script = Path(__file__).resolve()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.write_report()
        while self.fatal is None and self.worker_starts < MAX_WORKER_STARTS:
            pending = [item for item in self.plan if item["id"] not in self.results]
            if not pending or time.time() >= self.deadline:
                break
            handle, name = tempfile.mkstemp(prefix="gpu_check_plan_", suffix=".json")
            plan_file = Path(name)
            with os.fdopen(handle, "w") as plan_handle:
                json.dump({"args": self.worker_args(), "deadline": self.deadline, "items": pending}, plan_handle)
            self.offset = self.records_path.stat().st_size if self.records_path.exists() else 0
            self.worker_starts += 1
            # Its own process group (not session), so that killing it takes torch.compile's helper
            # processes along, and whatever ends this process's session still ends the worker.
            with self.log_path.open("ab") as log:
                process = subprocess.Popen([sys.executable, str(script), "--worker", str(plan_file),
                                            "--records", str(self.records_path)],
                                           stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
                                           preexec_fn=os.setpgrp)  # safe: this process runs no threads
            self.process = process
            current: dict[str, Any] = {}
            stop_reason = None
            while True:
                self._read_records(current)
                if process.poll() is not None:
                    break
                now = time.time()
                if now >= self.deadline:
                    stop_reason = f"stopped: the global budget of {self.args.budget_s:.0f} s ran out during this item"
                elif current and now - current["since"] > current["allowance"]:
                    stop_reason = f"stopped: exceeded its allowance of {current['allowance']:.0f} s"
                if stop_reason:
                    self._kill(process)
                    break
                if current and not current["announced"] and now - current["since"] > 3:
                    # So that a run cut short from outside still shows what it was doing.
                    print(f"[{now - self.started:6.1f} s] {current['id']} running ...", flush=True)
                    current["announced"] = True
                time.sleep(0.2)
            self._read_records(current)
            with contextlib.suppress(OSError):
                plan_file.unlink()
            self.process = None
            if stop_reason is None and process.returncode not in (0, EXIT_BROKEN_CONTEXT):
                print(f"worker exited with status {process.returncode}; the end of {LOG_NAME}:\n"
                      + _tail(self.log_path), flush=True)
            if current:
                reason = stop_reason or (f"the worker process ended (exit status {process.returncode}) during this "
                                         f"item; see {LOG_NAME}")
                self._record(current["id"], failed(reason))
        self.finish()

    def finish(self, interrupted: str | None = None) -> None:
        """Give every entry not measured its reason and write the report (also after a signal)."""
        if self.process is not None:
            self._read_records({})  # what the worker reported up to the signal
            self._kill(self.process)
            self.process = None
        for item in self.plan:
            if item["id"] not in self.results:
                if interrupted:
                    reason = interrupted
                elif self.fatal:
                    reason = f"worker could not start: {self.fatal}"
                elif self.worker_starts >= MAX_WORKER_STARTS:
                    reason = f"not run: the worker was started {MAX_WORKER_STARTS} times already"
                else:
                    reason = f"not started: the global budget of {self.args.budget_s:.0f} s was spent"
                self.results[item["id"]] = skipped(reason)
        self.write_report()

    def _read_records(self, current: dict[str, Any]) -> None:
        """Handle the complete records the worker appended since the last call."""
        if not self.records_path.exists():
            return
        with self.records_path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                self._handle(json.loads(line), current)

    # ---------------------------------------------------------------------------------- report
    def report(self) -> dict[str, Any]:
        sections: dict[str, list[dict[str, Any]]] = {}
        for item in sorted(self.plan, key=lambda i: i["order"]):
            result = self.results.get(item["id"], {"status": "pending", "reason": "not measured yet"})
            sections.setdefault(item["section"], []).append({"id": item["id"], **item["params"], **result})
        report: dict[str, Any] = {
            "schema": SCHEMA,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "wall_s": time.time() - self.started, "budget_s": self.args.budget_s,
            "command": " ".join(sys.argv), "worker_starts": self.worker_starts,
            "environment": self.environment or {
                "status": "failed", "reason": self.fatal or "no worker reported its environment (not started yet, "
                                                            "or the budget ran out before it did)"},
            "third_party_modules": sorted(self.modules),
            "modules_not_on_gpu_machine": sorted(self.modules - GPU_MACHINE_MODULES),
            "model_forward": sections.get("model_forward", []),
            "fuser_pipeline": sections.get("fuser_pipeline", []),
            "node_pipeline": sections.get("node_pipeline", []),
            "yolov8n": sections.get("yolov8n", []),
            "parity": (sections.get("parity") or [None])[0],
            "training_data": (sections.get("training_data") or [None])[0],
            "training": sections.get("training", []),
        }
        report["targets"] = targets(report)
        return finite(report)

    def write_report(self) -> None:
        report = self.report()
        (self.out / JSON_NAME).write_text(json.dumps(report, indent=2) + "\n")
        (self.out / TABLE_NAME).write_text(markdown(report))


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"({error})"


def _summary(result: dict[str, Any]) -> str:
    if result.get("status") != "ok":
        return f"{result.get('status')}: {result.get('reason')}"
    for key, unit in (("median_ms", "ms"), ("psnr_fused_db", "dB"), ("steps_per_s", "steps/s"),
                      ("crops_per_s_per_process", "crops/s")):
        if result.get(key) is not None:
            return f"{result[key]:.3g} {unit}"
    return "ok"


def _best(rows: list[dict[str, Any]], key: str, **match: Any) -> dict[str, Any] | None:
    candidates = [r for r in rows if r.get("status") == "ok" and r.get(key) is not None
                  and all(r.get(k) == v for k, v in match.items())]
    return max(candidates, key=lambda r: r[key]) if candidates else None


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's acceptance figures: measured value, goal, met or not (None: not measured)."""
    size = SIZES[0]
    entries = []

    def add(name: str, goal: str, row: dict[str, Any] | None, key: str, threshold: float | None,
            detail: Callable[[dict[str, Any]], str]) -> None:
        value = row.get(key) if row else None
        met = None if value is None or threshold is None else bool(value >= threshold)
        entries.append({"name": name, "goal": goal, "measured": value, "met": met,
                        "detail": detail(row) if row else "not measured in this run"})

    forward = report["model_forward"]
    add(f"nano model-only fp16 {size}", f">= {TARGET_NANO_FPS:.0f} FPS",
        _best(forward, "fps", model="nano", size=size, precision="fp16"), "fps", TARGET_NANO_FPS,
        lambda r: f"best mode {r['mode']}, {r['median_ms']:.2f} ms median")
    add(f"Fuser pipeline nano fp16 {size}", f">= {TARGET_PIPELINE_HZ:.0f} Hz",
        _best(report["fuser_pipeline"], "hz", size=size, precision="fp16"), "hz", TARGET_PIPELINE_HZ,
        lambda r: f"best mode {r['mode']}, {r['median_ms']:.2f} ms median")
    add(f"node pipeline nano fp16 {size}", f">= {TARGET_PIPELINE_HZ:.0f} Hz",
        _best(report["node_pipeline"], "hz", size=size, precision="fp16"), "hz", TARGET_PIPELINE_HZ,
        lambda r: f"best mode {r['mode']}, {r['median_ms']:.2f} ms median (decode, AGC, warp, fuse, encode)")
    parity = report["parity"] if report["parity"] and report["parity"].get("status") == "ok" else None
    add("fp16 vs fp32 parity (fused image)", f">= {TARGET_PARITY_DB:.0f} dB", parity, "psnr_fused_db",
        TARGET_PARITY_DB, lambda r: f"{r['weights']}, worst of {r['frames']} demo-scene frames")
    for paper_size in SIZES:
        row = _best(forward, "fps", model="paper", size=paper_size)
        add(f"paper FPS {paper_size} vs TG-ECNet", f"{TG_ECNET_FPS} FPS (TG-ECNet, RTX 4090)", row, "fps", None,
            lambda r: f"{r['fps'] / TG_ECNET_FPS:.1f}x TG-ECNet's figure ({r['precision']} {r['mode']}; "
                      f"other GPU, TG-ECNet's input size not stated here)")
    return entries


def _cell(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _note(row: dict[str, Any]) -> str:
    return "" if row.get("status") == "ok" else f"{row.get('status')}: {row.get('reason')}"


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables (every entry, with the reason where it was not measured)."""
    env = report["environment"]
    lines = [f"# GPU check: {env.get('device_name', '?')} ({report['created_utc']})", "",
             f"torch {env.get('torch')}, CUDA {env.get('cuda_runtime')}, cuDNN {env.get('cudnn')}, "
             f"driver {env.get('driver') or '–'}, Python {env.get('python')}, {env.get('cpu_count')} CPUs, "
             f"commit {env.get('git_commit') or '–'}; wall {report['wall_s']:.0f} s of a {report['budget_s']:.0f} s "
             f"budget, {report['worker_starts']} worker start(s). Input: {env.get('input') or '–'}.", "",
             "## Targets", "", "| figure | goal | measured | met | detail |", "|---|---|---|---|---|"]
    for t in report["targets"]:
        met = {True: "yes", False: "**no**", None: "–"}[t["met"]]
        lines.append(f"| {t['name']} | {t['goal']} | {_cell(t['measured'])} | {met} | {t['detail']} |")
    lines += ["", "## Model-only forward (batch 1; `Fuser.infer` on device tensors)", "",
              "| model | size | prec | mode | median ms | p95 ms | FPS | peak GPU MiB | n | first call ms | note |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["model_forward"]:
        lines.append(f"| {r['model']} | {r['size']} | {r['precision']} | {r['mode']} | {_cell(r.get('median_ms'), 2)} "
                     f"| {_cell(r.get('p95_ms'), 2)} | {_cell(r.get('fps'))} | {_cell(r.get('peak_gpu_mib'), 0)} "
                     f"| {_cell(r.get('samples'))} | {_cell(r.get('first_call_ms'), 0)} | {_note(r)} |")
    origins = {r["model"]: r["weights"] for r in report["model_forward"] if r.get("weights")}
    if origins:
        lines += ["", "Weights: " + "; ".join(f"{model}: {origin}" for model, origin in origins.items()) + "."]
    for section, title in (("fuser_pipeline", "Fuser pipeline (`Fuser.fuse`: numpy in, numpy out)"),
                           ("node_pipeline", "Node pipeline (decode, AGC, registration, fuse, uint8, encode)")):
        lines += ["", f"## {title}", "",
                  "| model | size | prec | mode | median ms | p95 ms | Hz | pre ms | forward ms | post ms | "
                  "peak GPU MiB | n | note |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in report[section]:
            lines.append(
                f"| {r['model']} | {r['size']} | {r['precision']} | {r['mode']} | {_cell(r.get('median_ms'), 2)} | "
                f"{_cell(r.get('p95_ms'), 2)} | {_cell(r.get('hz'))} | {_cell(r.get('preprocess_median_ms'), 2)} | "
                f"{_cell(r.get('forward_median_ms'), 2)} | {_cell(r.get('postprocess_median_ms'), 2)} | "
                f"{_cell(r.get('peak_gpu_mib'), 0)} | {_cell(r.get('samples'))} | {_note(r)} |")
    lines += ["", "## YOLOv8n reference (random weights, batch norm folded)", "",
              "| size | prec | median ms | p95 ms | FPS | peak GPU MiB | n | note |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["yolov8n"]:
        lines.append(f"| {r['size']} | {r['precision']} | {_cell(r.get('median_ms'), 2)} | {_cell(r.get('p95_ms'), 2)} "
                     f"| {_cell(r.get('fps'))} | {_cell(r.get('peak_gpu_mib'), 0)} | {_cell(r.get('samples'))} "
                     f"| {_note(r)} |")
    for yolo in report["yolov8n"]:
        nano = _best(report["model_forward"], "fps", model="nano", size=SIZES[0], precision=yolo["precision"])
        if nano and yolo.get("status") == "ok":
            lines.append(f"\n`nano` {SIZES[0]} {yolo['precision']} ({nano['mode']}) takes "
                         f"{nano['median_ms'] / yolo['median_ms']:.2f}x the time of YOLOv8n {yolo['size']}.")
    parity = report["parity"]
    if parity:
        lines += ["", "## fp16 vs fp32 parity (PSNR against eager fp32, worst frame)", ""]
        if parity.get("status") == "ok":
            lines += ["| variant | fused dB | per frame: fused dB, max abs, experts equal |", "|---|---|---|"]
            for label, variant in parity["variants"].items():
                frames = "; ".join(f"{f['psnr_fused_db']:.1f}, {f['max_abs_fused']:.1e}, {f['routing_equal']}"
                                   for f in variant["frames"])
                lines.append(f"| {label} | {_cell(variant['psnr_fused_db'])} | {frames} |")
            lines.append(f"\nWeights {parity['weights']}, {parity['size']}; restored IR "
                         f"{_cell(parity['psnr_restored_ir_db'])} dB, restored visible "
                         f"{_cell(parity['psnr_restored_vi_db'])} dB (eager fp16).")
        else:
            lines.append(_note(parity))
    data = report["training_data"] or {}
    crops_per_s = data.get("crops_per_s_per_process")
    lines += ["", "## Training throughput (fp32, `model.training` step: forward, losses, backward, clip, AdamW)", "",
              f"Crops made by one data process: {_cell(crops_per_s)} per s. "
              + ("" if data.get("status") == "ok" else _note(data)), "",
              "| model | stage | batch | crop | steps/s | s/step median | p95 | crops/s | data processes needed "
              "| peak GPU MiB | note |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["training"]:
        needed = (math.ceil(r["crops_per_s"] / crops_per_s) if r.get("crops_per_s") and crops_per_s else None)
        lines.append(f"| {r['model']} | {r['stage']} | {r['batch']} | {r['crop']} | {_cell(r.get('steps_per_s'), 2)} "
                     f"| {_cell(r.get('s_per_step_median'), 4)} | {_cell(r.get('s_per_step_p95'), 4)} "
                     f"| {_cell(r.get('crops_per_s'), 0)} | {_cell(needed)} | {_cell(r.get('peak_gpu_mib'), 0)} "
                     f"| {_note(r)} |")
    return "\n".join(lines) + "\n"


# ================================================================================================
# Command line
# ================================================================================================
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for gpu_check.json, gpu_check.md and the logs")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cuda, cuda:N or cpu")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="whole run, worker start-ups included (default 420: seven minutes)")
    parser.add_argument("--item-seconds", type=float, default=8.0,
                        help="timed calls of one entry stop after this long (at least 3 calls)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), help="WIDTHxHEIGHT")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--repeats", type=int, default=100, help="timed calls per entry (fewer if slow)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up calls after the first (fewer if slow)")
    parser.add_argument("--pipeline-model", default="nano", choices=MODELS)
    parser.add_argument("--pipeline-size", default=SIZES[0])
    parser.add_argument("--pipeline-precisions", nargs="+", default=["fp16"], choices=PRECISIONS)
    parser.add_argument("--pipeline-modes", nargs="+", default=["eager", "cudagraphs"], choices=MODES)
    parser.add_argument("--parity-size", default=SIZES[0])
    parser.add_argument("--parity-frames", type=int, default=3, help="demo-scene frames, day to dusk")
    parser.add_argument("--parity-weights", default=None, help="weights file (default: shipped nano weights)")
    parser.add_argument("--yolo-size", type=int, default=640)
    parser.add_argument("--train-models", nargs="+", default=["nano", "small"], choices=MODELS)
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--train-crop", type=int, default=128)
    parser.add_argument("--train-steps", type=int, default=40, help="timed optimiser steps (fewer if slow)")
    parser.add_argument("--train-batches", type=int, default=4, help="distinct batches cycled through")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--skip", nargs="*", default=[], choices=("pipeline", "parity", "yolo", "training"))
    parser.add_argument("--quick", action="store_true",
                        help="no torch.compile, no GPU clock warm-up, one training warm-up step (tiny CPU checks)")
    # For the tests: allowances on a CPU, and ITEM_ID=crash|hang to exercise the supervisor.
    parser.add_argument("--cpu-allowance-scale", type=float, default=10.0, help=argparse.SUPPRESS)
    parser.add_argument("--simulate", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        for size in [*args.sizes, args.pipeline_size, args.parity_size]:
            parse_size(size)
    except ValueError as error:
        parser.error(str(error))
    if any("=" not in item for item in args.simulate):
        parser.error("--simulate takes ITEM_ID=crash|hang")
    if args.budget_s <= 0 or args.item_seconds <= 0 or args.repeats < 1 or args.train_steps < 1:
        parser.error("--budget-s, --item-seconds, --repeats and --train-steps must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        worker = argparse.ArgumentParser()
        worker.add_argument("--worker", type=Path, required=True)
        worker.add_argument("--records", type=Path, required=True)
        options = worker.parse_args(argv)
        return worker_main(options.worker, options.records)
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in (RECORDS_NAME, LOG_NAME):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    supervisor = Supervisor(args, out)

    def interrupted(number: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(number).name)

    signal.signal(signal.SIGTERM, interrupted)
    try:
        supervisor.run()
    except KeyboardInterrupt as stop:
        # Stopped from outside (a time limit, Ctrl-C): keep what was measured, end the worker.
        supervisor.finish(interrupted=f"not measured: the run was interrupted ({stop or 'SIGINT'})")
        print(f"interrupted; wrote what was measured to {out / JSON_NAME}", flush=True)
        return 130
    report = supervisor.report()
    print()
    print((out / TABLE_NAME).read_text())
    print(f"wrote {out / JSON_NAME} and {out / TABLE_NAME} ({report['wall_s']:.0f} s)")
    measured = sum(1 for section in ("model_forward", "fuser_pipeline", "node_pipeline", "yolov8n", "training")
                   for row in report[section] if row.get("status") == "ok")
    return 0 if measured else 1


if __name__ == "__main__":
    sys.exit(main())
