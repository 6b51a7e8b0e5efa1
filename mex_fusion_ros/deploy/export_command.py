"""``mex-fusion export``: write the network as ONNX or TorchScript and check it against PyTorch.

    mex-fusion export --weights weights/mex_nano.pt --format onnx --size 512 640 --out nano.onnx
    mex-fusion export --weights weights/mex_nano.pt --format onnx --half --out nano_fp16.onnx

Sparse top-k routing survives the export as gathered expert weights and grouped convolutions
(``deploy.export`` explains how); H and W stay dynamic in multiples of the network stride when the
exporter manages it (the report says whether it did). After writing, the file is run (ONNX Runtime
or ``torch.jit.load``) on a random and a structured input at the export size and at a second size,
and the largest absolute difference per output is printed; the exit status is 1 when an fp32 image
output differs by more than ``--tolerance`` or an expert choice differs.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mex_fusion_ros.model.config import ModelConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="weights file (.pt) written by training / save_weights")
    parser.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help="export format")
    parser.add_argument("--half", action="store_true", help="fp16 weights and inputs (for GPU runtimes)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=(512, 640),
                        help="example input height and width (multiples of the model stride)")
    parser.add_argument("--out", default=None, help="output file (default: the weights path with .onnx / .ts)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: deploy.export.DEFAULT_OPSET)")
    parser.add_argument("--fixed", action="store_true", help="fixed H and W instead of dynamic axes")
    parser.add_argument("--no-parity", action="store_true", help="skip the parity check")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="fp32 parity tolerance (max abs difference)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--routing-cost", action="store_true",
                        help="instead of exporting: time ONNX Runtime at k=1, the configured k and k=N (dense) "
                             "for the weights' configuration at --size, to show the sparse saving survives export")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per setting (--routing-cost)")


def run(args: argparse.Namespace) -> int:
    from mex_fusion_ros.deploy.export import DEFAULT_OPSET, ExportError, export_onnx, export_torchscript
    from mex_fusion_ros.model.weights import WeightsError, load_weights

    weights = Path(args.weights)
    suffix = ".onnx" if args.format == "onnx" else ".ts"
    out = Path(args.out) if args.out else weights.with_name(weights.stem + ("_fp16" if args.half else "") + suffix)
    try:
        model, metadata = load_weights(weights)
        thresholds = metadata.get("presence_thresholds")
        size = (int(args.size[0]), int(args.size[1]))
        if args.routing_cost:
            return _print_routing_cost(model.config, size, args)
        if args.format == "onnx":
            result = export_onnx(model, out, size=size, half=args.half, opset=args.opset or DEFAULT_OPSET,
                                 dynamic=not args.fixed, parity=not args.no_parity, source=str(weights),
                                 presence_thresholds=thresholds)
        else:
            result = export_torchscript(model, out, size=size, half=args.half, parity=not args.no_parity,
                                        source=str(weights), presence_thresholds=thresholds)
    except (WeightsError, ExportError) as error:
        print(f"mex-fusion export: {error}", file=sys.stderr)
        return 2
    report = {"path": str(result.path), "format": result.format, "exporter": result.exporter,
              "dynamic_hw": result.dynamic_hw, "half": args.half, "seconds": round(result.seconds, 2),
              "notes": result.notes, "parity": result.parity.to_dict() if result.parity else None}
    ok = True
    if result.parity is not None:
        # fp16 graphs are compared with fp32 PyTorch: reported, judged only by the routing.
        ok = (args.half or result.parity.worst() <= args.tolerance) and all(result.parity.routing_equal.values())
    report["parity_ok"] = ok
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if ok else 1
    print(f"wrote {result.path} ({result.format} via {result.exporter}, "
          f"{'dynamic' if result.dynamic_hw else 'fixed'} H/W, {'fp16' if args.half else 'fp32'}, "
          f"{result.seconds:.1f} s)")
    for note in result.notes:
        print(f"note: {note}")
    if result.parity is None:
        return 0
    print(f"parity vs PyTorch fp32 (max abs difference; tolerance {args.tolerance:g} for fp32):")
    print(f"  {'input':<22} {'fused':>10} {'restored_ir':>12} {'restored_vi':>12} {'severity':>10} {'routing':>8}")
    for label, values in result.parity.max_abs.items():
        routing = "equal" if result.parity.routing_equal[label] else "DIFFERS"
        print(f"  {label:<22} {values['fused']:>10.2e} {values['restored_ir']:>12.2e} "
              f"{values['restored_vi']:>12.2e} {values['degradation_severity']:>10.2e} {routing:>8}")
    print("parity OK" if ok else "parity FAILED")
    return 0 if ok else 1


def _print_routing_cost(config: ModelConfig, size: tuple[int, int], args: argparse.Namespace) -> int:
    from mex_fusion_ros.deploy.export import routing_cost

    with tempfile.TemporaryDirectory(prefix="mex_routing_") as directory:
        rows = routing_cost(config, directory, size=size, repeats=args.repeats)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{config.name} at {size[0]}x{size[1]} (HxW), ONNX Runtime CPU, median of {args.repeats} runs")
    print(f"{'setting':<13} {'encoder k/N':>11} {'fusion k/N':>10} {'median ms':>10} {'min ms':>8}  expert conv groups")
    for row in rows:
        print(f"{row['setting']:<13} {row['top_k']:>5}/{row['num_experts']:<5} "
              f"{row['fusion_top_k']:>4}/{row['fusion_num_experts']:<5} {row['median_ms']:>10.1f} "
              f"{row['min_ms']:>8.1f}  {row['expert_conv_groups']}")
    return 0
