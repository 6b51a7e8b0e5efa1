"""``mex-fusion bag <make|info|eval|play|record>``: each sub-command is a module of this package."""
from __future__ import annotations

import argparse
import importlib
import sys

#: sub-command -> (module with add_arguments/run, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "make": ("mex_fusion_ros.bag.make_command", "write a bag from the demo scene or a paired dataset"),
    "info": ("mex_fusion_ros.bag.info_command", "list a bag's topics, types, counts and rates"),
    "eval": ("mex_fusion_ros.bag.eval_command", "fuse a bag offline with methods to compare, write a report"),
    "play": ("mex_fusion_ros.bag.play_command", "publish a bag over DDS at its recorded rate (rclpy)"),
    "record": ("mex_fusion_ros.bag.record_command", "record topics received over DDS into a bag (rclpy)"),
    "compare": ("mex_fusion_ros.bag.compare_command", "compare the image frames of two bags stamp by stamp"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    subparsers = parser.add_subparsers(dest="bag_command", metavar="SUBCOMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        # Imported here (not lazily) because argparse needs every sub-command's arguments up front;
        # the modules keep torch imports inside run() so this stays fast.
        importlib.import_module(module_name).add_arguments(sub)
        sub.set_defaults(_bag_module=module_name)


def run(args: argparse.Namespace) -> int:
    from mex_fusion_ros.bag.evaluate import EvalSetupError
    from mex_fusion_ros.bag.reader import BagError
    from mex_fusion_ros.bag.writer import BagWriteError
    from mex_fusion_ros.config import ConfigError

    try:
        return int(importlib.import_module(args._bag_module).run(args) or 0)
    except (BagError, BagWriteError, EvalSetupError, ConfigError) as exc:
        print(f"mex-fusion bag {args.bag_command}: {exc}", file=sys.stderr)
        return 1
