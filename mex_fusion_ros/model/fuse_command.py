"""``mex-fusion fuse``: fuse every registered pair of a folder with the network and write PNGs.

Output: ``OUT/<pair name>.png`` (8-bit; RGB where the visible image is colour, else grey),
``OUT/degradation.csv`` (the estimated presence probability of each degradation type per pair),
and with ``--save-restored`` ``OUT/restored_ir/<name>.png`` and ``OUT/restored_vi/<name>.png``.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path,
                        help="folder of registered pairs (ir|infrared/ and vi|vis|visible/, same file names)")
    parser.add_argument("--out", required=True, type=Path, help="output folder for the PNGs")
    parser.add_argument("--weights", default="nano",
                        help="weights file (.pt) or a model configuration name for its shipped weights")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--half", action="store_true", help="fp16 inference (CUDA only)")
    parser.add_argument("--save-restored", action="store_true", help="also write the restored IR and visible")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a float [0, 1] image ``(H, W)`` or RGB ``(H, W, 3)`` as an 8-bit PNG."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    eight_bit = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    if eight_bit.ndim == 3:
        eight_bit = cv2.cvtColor(eight_bit, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), eight_bit):
        raise OSError(f"cannot write {path}")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mex_fusion_ros.data.paired import DatasetError, find_pairs, read_pair
    from mex_fusion_ros.model.config import MODEL_CONFIGS
    from mex_fusion_ros.model.fuser import Fuser
    from mex_fusion_ros.model.weights import WeightsError, shipped_weights_path

    try:
        path = shipped_weights_path(args.weights) if args.weights in MODEL_CONFIGS else Path(args.weights)
        fuser = Fuser.from_weights(path, device=args.device, half=args.half)
        listing = find_pairs(args.data)
    except (WeightsError, DatasetError, ValueError) as error:
        print(f"mex-fusion fuse: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    types = fuser.config.degradation_types
    with (args.out / "degradation.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["pair", *types, "forward_s"])
        for pair in tqdm(listing.pairs, desc="fuse", unit="pair", disable=args.no_progress, file=sys.stderr):
            try:
                ir, vi = read_pair(pair)
            except DatasetError as error:
                print(f"mex-fusion fuse: skipping {pair.name}: {error}", file=sys.stderr)
                continue
            result = fuser.fuse(ir, vi)
            write_png(args.out / f"{pair.name}.png", result.fused)
            if args.save_restored:
                assert result.restored_ir is not None and result.restored_vi is not None
                write_png(args.out / "restored_ir" / f"{pair.name}.png", result.restored_ir)
                write_png(args.out / "restored_vi" / f"{pair.name}.png", result.restored_vi)
            assert result.degradation is not None
            writer.writerow([pair.name, *(f"{result.degradation.probabilities[t]:.3f}" for t in types),
                             f"{result.timings.get('forward', 0.0):.4f}"])
    print(f"fused {len(listing.pairs)} pairs into {args.out} with {path}")
    return 0
