"""``mex-fusion detect scene``: the synthetic demo scene as a labelled paired dataset (``detect.scene_dataset``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def seed_list(text: str) -> list[int]:
    """``0``, ``2000-2039`` or ``1,5,9`` -> list of seeds."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            low, separator, high = part.strip().partition("-")
            seeds += list(range(int(low), int(high) + 1)) if separator else [int(low)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like 0, 2000-2039 or 1,5,9; got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"no seed in {text!r}")
    return seeds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path,
                        help="new folder: ir/, vi/, labels/ (YOLO txt + classes.txt)")
    parser.add_argument("--seeds", type=seed_list, default=[0],
                        help="scene seeds: 0 (the demo's scene), 2000-2039, or 1,5,9 (default 0)")
    parser.add_argument("--frames-per-seed", type=int, default=30, metavar="N",
                        help="frames taken from each scene, spread from day to dusk (default 30)")
    parser.add_argument("--scene-frames", type=int, default=300, metavar="N",
                        help="length of each scene's sequence, as the demo's --frames (default 300)")
    parser.add_argument("--size", type=int, nargs=2, default=(320, 256), metavar=("W", "H"),
                        help="frame size (default 320 256, the demo's)")


def run(args: argparse.Namespace) -> int:
    from mex_fusion_ros.detect.scene_dataset import write_scene_dataset

    try:
        summary = write_scene_dataset(args.out, args.seeds, args.frames_per_seed, tuple(args.size), args.scene_frames)
    except (ValueError, FileExistsError) as exc:
        print(f"mex-fusion detect scene: {exc}", file=sys.stderr)
        return 1
    objects = ", ".join(f"{count} {name}" for name, count in summary.objects.items())
    print(f"{summary.root}: {summary.frames} labelled pairs from {len(summary.seeds)} scene(s); objects: {objects}")
    return 0
