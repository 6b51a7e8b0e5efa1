"""``mex-fusion calibrate``: per-type presence thresholds of a weights file, from training pairs.

Run it after ``mex-fusion train`` on the pairs the network was trained on (never on the pairs you
evaluate with), or on pairs of your own camera. It writes the thresholds into the weights file's
metadata; every ``Fuser`` built from the file applies them (``model.calibration``).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, type=Path,
                        help="weights file to calibrate (e.g. runs/x/mex_nano.pt)")
    parser.add_argument("--data", required=True, action="append", type=Path, metavar="DIR",
                        help="folder of ir/ + vi/ pairs (repeatable; each folder counts equally, as a "
                             "camera)")
    parser.add_argument("--holdout", type=Path, metavar="FILE",
                        help="text file of pair names to leave out (the validation split, e.g. "
                             "config/splits/msrs_val.txt)")
    parser.add_argument("--every", type=int, default=1, metavar="N",
                        help="use every N-th pair of each folder (default 1: all)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the calibrated weights here (default: update --weights in place)")
    parser.add_argument("--seed", type=int, default=0, help="degradation seed (as mex-fusion eval --seed)")
    parser.add_argument("--input-bits", type=int, default=8, choices=(8, 16, 0),
                        help="round the degraded inputs as a camera delivers them (default 8; 0 = float)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0 = torch's default; 1 beside another busy job)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from mex_fusion_ros.data.paired import DatasetError
    from mex_fusion_ros.model.calibration import (
        CALIBRATION_PRESETS,
        CalibrationError,
        calibrate,
        calibration_pairs,
        calibration_table,
    )
    from mex_fusion_ros.model.fuser import Fuser
    from mex_fusion_ros.model.weights import WeightsError, update_weights_metadata

    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    if args.every < 1:
        print(f"mex-fusion calibrate: --every must be >= 1, got {args.every}", file=sys.stderr)
        return 2
    try:
        fuser = Fuser.from_weights(args.weights, device=args.device)
        groups = calibration_pairs(args.data, args.holdout, args.every)
        result = calibrate(fuser, groups, fuser.config.degradation_types, seed=args.seed,
                           input_bits=args.input_bits, progress=not args.no_progress,
                           holdout=str(args.holdout) if args.holdout else None,
                           command="mex-fusion calibrate " + " ".join(shlex.quote(a) for a in sys.argv[2:]))
        target = update_weights_metadata(
            args.weights, {"presence_thresholds": result.thresholds, "calibration": result.metadata}, out=args.out)
    except (WeightsError, DatasetError, CalibrationError) as error:
        print(f"mex-fusion calibrate: {error}", file=sys.stderr)
        return 2
    folders = ", ".join(f"{folder} {len(pairs)} pairs" for folder, pairs in groups.items())
    print(f"{result.estimates} estimates: {folders} x {len(CALIBRATION_PRESETS)} presets")
    print(calibration_table(result))
    print(f"thresholds written to {target}")
    return 0
