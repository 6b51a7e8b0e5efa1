"""``mex-fusion detect <eval|train|scene>``: each sub-command is a module of this package."""
from __future__ import annotations

import argparse
import importlib
import sys

#: sub-command -> (module with add_arguments/run, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "eval": ("mex_fusion_ros.detect.eval_command",
             "score a detector on ir, vi and fused images of a labelled paired dataset under degradations"),
    "train": ("mex_fusion_ros.detect.train_command",
              "fuse a labelled paired dataset, write an ultralytics dataset and train a YOLO on it"),
    "scene": ("mex_fusion_ros.detect.scene_command",
              "write frames of the synthetic demo scene as a labelled paired dataset"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    subparsers = parser.add_subparsers(dest="detect_command", metavar="SUBCOMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        # Imported here because argparse needs every sub-command's arguments up front; the modules
        # keep torch and ultralytics imports inside run() so this stays fast.
        importlib.import_module(module_name).add_arguments(sub)
        sub.set_defaults(_detect_module=module_name)


def run(args: argparse.Namespace) -> int:
    from mex_fusion_ros.detect.dataset import DetectDatasetError
    from mex_fusion_ros.detect.inputs import InputError

    try:
        return int(importlib.import_module(args._detect_module).run(args) or 0)
    except (DetectDatasetError, InputError) as exc:
        print(f"mex-fusion detect {args.detect_command}: {exc}", file=sys.stderr)
        return 1
