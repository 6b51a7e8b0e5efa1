"""``mex-fusion bench``: forward time, parameters and MACs of the network configurations.

Measures the median forward time of each configuration at ``--size`` (default 640x512, one pair)
and of a YOLOv8n detector at 640x640 (ultralytics ``YOLO("yolov8n.yaml")``, random weights: the
cost does not depend on them) in the same run; the fusion networks run in the memory layout the
``Fuser`` uses (channels-last on the CPU), interleaved round by round so that a change of the
machine's load affects all of them alike. MACs are counted with ``thop`` (ultralytics-thop) plus a
rule for the attention products of the Restormer blocks, which thop does not see; the sparse
experts are counted only when they run, so the counts reflect top-k routing.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

YOLO_SIZE = 640


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=["nano", "paper"], help="configurations to measure")
    parser.add_argument("--size", default="640x512", help="input WIDTHxHEIGHT of the fusion network")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per model (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forwards first")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--no-yolo", action="store_true", help="skip the YOLOv8n reference")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--default-allocator", action="store_true",
                        help="leave glibc malloc as it is (by default freed memory is retained for reuse, "
                             "as in the nodes; see mex_fusion_ros/deploy/allocator.py)")
    # Pipeline / backend / precision timings live in deploy.pipeline_bench (selected with --pipeline).
    from mex_fusion_ros.deploy.pipeline_bench import add_pipeline_arguments

    add_pipeline_arguments(parser)


def parse_size(text: str) -> tuple[int, int]:
    """``"640x512"`` -> ``(640, 512)`` (width, height); ``ValueError`` naming the text otherwise."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must look like 640x512, got {text!r}") from None
    if width < 1 or height < 1:
        raise ValueError(f"--size must be positive, got {text!r}")
    return width, height


def count_macs(model: Any, inputs: tuple[Any, ...]) -> int:
    """Multiply-accumulates of one forward of ``model(*inputs)`` (thop + Restormer attention)."""
    from thop import profile

    from mex_fusion_ros.model.layers import MDTA

    def count_mdta(module: MDTA, args: tuple[Any, ...], output: Any) -> None:
        # q k^T and attention @ v: 2 * (C / heads)^2 * heads * HW multiply-accumulates.
        b, c, h, w = args[0].shape
        module.total_ops += 2 * b * (c // module.heads) ** 2 * module.heads * h * w

    macs, _ = profile(model, inputs=inputs, custom_ops={MDTA: count_mdta}, verbose=False)
    return int(macs)


def _timer(function: Callable[[], Any], synchronize: Callable[[], None]) -> float:
    started = time.perf_counter()
    function()
    synchronize()
    return time.perf_counter() - started


def run(args: argparse.Namespace) -> int:
    if getattr(args, "pipeline", False):
        from mex_fusion_ros.deploy.pipeline_bench import run_pipeline_bench

        return run_pipeline_bench(args)
    import copy

    import torch

    from mex_fusion_ros.deploy.allocator import retain_freed_memory
    from mex_fusion_ros.model import create_model
    from mex_fusion_ros.model.config import ConfigError
    from mex_fusion_ros.model.fuser import select_device

    # Before any tensor exists, so both the networks and YOLOv8n run with it (or both without).
    allocator = "default" if getattr(args, "default_allocator", False) else (
        "freed memory retained" if retain_freed_memory() else "default (not glibc)")
    try:
        width, height = parse_size(args.size)
        device = select_device(args.device)
        models = {name: create_model(name).eval().to(device) for name in args.models}
    except (ValueError, ConfigError) as error:
        print(f"mex-fusion bench: {error}", file=sys.stderr)
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    # The layout the Fuser uses: channels-last on the CPU (fast 1x1 convolutions), plain on CUDA.
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    ir = torch.rand(1, 1, height, width, device=device).contiguous(memory_format=layout)
    vi = torch.rand(1, 3, height, width, device=device).contiguous(memory_format=layout)
    for model in models.values():
        model.to(memory_format=layout)
    functions: dict[str, Callable[[], Any]] = {name: (lambda m=model: m(ir, vi))
                                               for name, model in models.items()}
    rows: dict[str, dict[str, Any]] = {
        name: {"params": sum(p.numel() for p in model.parameters()),
               "macs": count_macs(copy.deepcopy(model).cpu(), (ir.cpu(), vi.cpu())),
               "input": f"{width}x{height}"}
        for name, model in models.items()
    }
    if not args.no_yolo:
        os.environ.setdefault("YOLO_OFFLINE", "1")
        from ultralytics import YOLO

        yolo = YOLO("yolov8n.yaml").model.eval().to(device)
        image = torch.rand(1, 3, YOLO_SIZE, YOLO_SIZE, device=device)
        functions["yolov8n"] = lambda: yolo(image)
        rows["yolov8n"] = {"params": sum(p.numel() for p in yolo.parameters()),
                           "macs": count_macs(copy.deepcopy(yolo).cpu(), (image.cpu(),)),
                           "input": f"{YOLO_SIZE}x{YOLO_SIZE}"}

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times: dict[str, list[float]] = {name: [] for name in functions}
    with torch.inference_mode():
        for function in functions.values():
            for _ in range(args.warmup):
                function()
        from tqdm import tqdm

        for _ in tqdm(range(args.repeats), desc="bench", unit="round", file=sys.stderr, disable=args.json):
            for name, function in functions.items():
                times[name].append(_timer(function, synchronize))
    for name, samples in times.items():
        rows[name]["median_ms"] = 1000.0 * statistics.median(samples)
    reference = rows.get("yolov8n", {}).get("median_ms")
    for row in rows.values():
        row["ratio_to_yolov8n"] = row["median_ms"] / reference if reference else None
    report = {"device": str(device), "threads": torch.get_num_threads(), "repeats": args.repeats,
              "allocator": allocator, "models": rows}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"device {device}, {torch.get_num_threads()} threads, median of {args.repeats} forwards, "
          f"allocator: {allocator}")
    print(f"{'model':<10} {'input':>9} {'params (M)':>11} {'GMACs':>8} {'median ms':>10} {'x YOLOv8n':>10}")
    for name, row in rows.items():
        ratio = f"{row['ratio_to_yolov8n']:.2f}" if row["ratio_to_yolov8n"] is not None else "-"
        print(f"{name:<10} {row['input']:>9} {row['params'] / 1e6:>11.3f} {row['macs'] / 1e9:>8.2f} "
              f"{row['median_ms']:>10.1f} {ratio:>10}")
    return 0
