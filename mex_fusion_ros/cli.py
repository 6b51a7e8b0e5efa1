"""``mex-fusion``: one command, one subcommand per job.

Each subcommand lives in the sub-package that owns the work, as a module with
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
subcommand runs, so ``mex-fusion --help`` stays fast (no torch import).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from mex_fusion_ros import __version__

#: subcommand -> (module, one-line help). Add a line here to add a subcommand.
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("mex_fusion_ros.tools.config_command", "validate a configuration file or print the defaults"),
    "run": ("mex_fusion_ros.nodes.run_command", "run the fusion and detector nodes in one process"),
    "eval": ("mex_fusion_ros.eval.eval_command", "evaluate fusers on degraded real pairs and write a report"),
    "metrics": ("mex_fusion_ros.eval.metrics_command", "quality metrics of one ir / vi / fused triple"),
    "bag": ("mex_fusion_ros.bag.command", "rosbag2 tools: make, info, eval, compare, play, record"),
    "train": ("mex_fusion_ros.model.train_command", "two-stage training of the MoE fusion network"),
    "fuse": ("mex_fusion_ros.model.fuse_command", "fuse every pair of a folder with the network, write PNGs"),
    "calibrate": ("mex_fusion_ros.model.calibrate_command",
                  "per-type degradation presence thresholds of a weights file, from training pairs"),
    "bench": ("mex_fusion_ros.model.bench_command", "network speed, parameters and MACs vs YOLOv8n"),
    "export": ("mex_fusion_ros.deploy.export_command", "export the network to ONNX / TorchScript with a parity check"),
    "detect": ("mex_fusion_ros.detect.command", "detection with fused vs single-camera inputs: eval, train, scene"),
    "demo": ("mex_fusion_ros.demo_command", "synthesise a scene, make a bag, fuse it and write the report"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mex-fusion",
        description="Thermal/RGB fusion with a degradation-gated mixture of experts.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module)
        # Arguments are added lazily (see main) so --help of the top level imports nothing heavy.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] in COMMANDS:
        module = importlib.import_module(COMMANDS[argv[0]][0])
        sub = argparse.ArgumentParser(prog=f"mex-fusion {argv[0]}", description=COMMANDS[argv[0]][1])
        module.add_arguments(sub)
        args = sub.parse_args(argv[1:])
        if not getattr(args, "default_allocator", False):
            # Every command runs networks frame after frame; see deploy/allocator.py for why.
            from mex_fusion_ros.deploy.allocator import retain_freed_memory

            retain_freed_memory()
        return int(module.run(args) or 0)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
