"""``mex-fusion metrics``: every fusion metric for one infrared / visible / fused triple of image files.

For users comparing fusion methods by hand. Prints a table (↑ higher is better, ↓ lower is better)
or, with ``--json``, one JSON object. Definitions and conventions: docs/metrics.md.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np

from mex_fusion_ros.eval.metrics import GRAY_CONVERSION, METRICS, fusion_metrics, ms_ssim_max_scales


class MetricsInputError(ValueError):
    """An image file cannot be used; the message names the file."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ir", required=True, type=Path, help="infrared image given to the fusion")
    parser.add_argument("--vi", required=True, type=Path, help="visible image given to the fusion")
    parser.add_argument("--fused", required=True, type=Path, help="fused image to score")
    parser.add_argument("--clean-ir", type=Path, help="clean infrared source (score against it, not --ir)")
    parser.add_argument("--clean-vi", type=Path, help="clean visible source (score against it, not --vi)")
    parser.add_argument("--metrics", nargs="+", metavar="NAME", choices=list(METRICS),
                        help=f"only these metrics (default: all of {', '.join(METRICS)})")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def read_image(path: Path) -> np.ndarray:
    """An image file as uint8/uint16 ``(H, W)`` or RGB ``(H, W, 3)`` (alpha dropped)."""
    if not path.is_file():
        raise MetricsInputError(f"{path} does not exist or is not a file")
    # IMREAD_UNCHANGED keeps 16-bit thermal images at full depth (to_gray scales them to 0-255).
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise MetricsInputError(f"{path} is not a readable image (corrupt or unsupported format?)")
    if image.dtype not in (np.uint8, np.uint16):
        raise MetricsInputError(f"{path}: unsupported pixel type {image.dtype} (expected 8 or 16 bit)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        image = cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2RGB)
    elif image.ndim != 2:
        raise MetricsInputError(f"{path}: unsupported image shape {image.shape}")
    return image


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


def run(args: argparse.Namespace) -> int:
    files = {"ir": args.ir, "vi": args.vi, "fused": args.fused}
    files.update(clean_ir=args.clean_ir, clean_vi=args.clean_vi)
    try:
        images = {role: read_image(path) for role, path in files.items() if path is not None}
        sizes = {role: image.shape[:2] for role, image in images.items()}
        if len(set(sizes.values())) > 1:
            described = ", ".join(f"{files[role]} {w}x{h}" for role, (h, w) in sizes.items())
            raise MetricsInputError(f"images differ in size: {described}")
        scores = fusion_metrics(
            images["ir"], images["vi"], images["fused"],
            clean_ir=images.get("clean_ir"), clean_vi=images.get("clean_vi"), names=args.metrics,
        )
    except ValueError as error:
        print(f"mex-fusion metrics: {error}", file=sys.stderr)
        return 1
    height, width = sizes["fused"]
    if args.clean_ir and args.clean_vi:
        reference = "clean sources"
    elif args.clean_ir or args.clean_vi:
        reference = f"clean {'infrared' if args.clean_ir else 'visible'} source and the other fusion input"
    else:
        reference = "fusion inputs"
    if args.json:
        document = {
            "files": {role: str(path) for role, path in files.items() if path is not None},
            "size": [width, height],
            "grayscale": GRAY_CONVERSION,
            "sources": reference,
            "ms_ssim_scales": ms_ssim_max_scales(height, width),
            # JSON has no NaN/inf: metrics undefined for these images (or PSNR of identical ones) are null.
            "metrics": {name: value if math.isfinite(value) else None for name, value in scores.items()},
            "higher_is_better": {name: METRICS[name].higher_is_better for name in scores},
        }
        print(json.dumps(document, indent=2))
        return 0
    print(f"fused: {files['fused']} ({width}x{height}); source metrics against the {reference}")
    print(f"grey conversion: {GRAY_CONVERSION}")
    name_width = max(len(name) for name in scores)
    for name, value in scores.items():
        info = METRICS[name]
        print(f"  {name:<{name_width}} {info.arrow} {_format_value(value):>10}   {info.description}")
    scales = ms_ssim_max_scales(height, width)
    if "MS-SSIM" in scores and 0 < scales < 5:
        print(f"note: MS-SSIM used {scales} scales (5 need a smaller side of at least 176 px)")
    return 0
