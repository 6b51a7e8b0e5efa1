"""``mex-fusion train``: two-stage training of the MoE fusion network from a YAML configuration."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from mex_fusion_ros.model.training import TrainConfigError, load_train_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path,
                        help="training YAML (e.g. config/train_nano.yaml; keys in model/training.py)")
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder for logs, checkpoints and weights (default: runs/<config name>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.add_argument("--from-stage1", type=Path, default=None, metavar="STAGE1_PT",
                        help="start from the stage1.pt of an earlier run and train only stage 2 (fusion)")
    parser.add_argument("--init", type=Path, default=None, metavar="WEIGHTS_PT",
                        help="start both stages from this weights file (same configuration): fine-tuning")
    parser.add_argument("--device", default=None, help="device override (auto, cpu, cuda, cuda:N)")
    parser.add_argument("--threads", type=int, default=None, help="override the config's torch threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from mex_fusion_ros.model.training import train
    from mex_fusion_ros.model.weights import WeightsError

    try:
        config = load_train_config(args.config)
    except TrainConfigError as error:
        print(f"mex-fusion train: {error}", file=sys.stderr)
        return 2
    overrides = {}
    if args.device is not None:
        overrides["device"] = args.device
    if args.threads is not None:
        overrides["threads"] = args.threads
    config = dataclasses.replace(config, **overrides)
    out = args.out if args.out is not None else Path("runs") / args.config.stem
    command = "mex-fusion train " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    try:
        final = train(config, out, resume=args.resume, progress=not args.no_progress, command=command,
                      from_stage1=args.from_stage1, init=args.init)
    except (FileExistsError, FileNotFoundError, ValueError, WeightsError) as error:
        print(f"mex-fusion train: {error}", file=sys.stderr)
        return 2
    from mex_fusion_ros.model.weights import read_weights_file

    thresholds = read_weights_file(final)["metadata"].get("presence_thresholds")
    if thresholds:
        print("presence thresholds calibrated on the training pairs: "
              + ", ".join(f"{kind} {value:.3f}" for kind, value in thresholds.items()))
    print(f"weights written to {final}")
    return 0
