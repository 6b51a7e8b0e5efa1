"""``mex-fusion bag make``: a rosbag2 bag from the synthetic scene or a paired image dataset."""

from __future__ import annotations

import argparse
import math

from mex_fusion_ros.bag.make import THERMAL_ENCODINGS, BagTiming, DatasetSource, SceneSource, make_bag
from mex_fusion_ros.bag.scene import SceneConfig
from mex_fusion_ros.bag.timeline import DEMO_PRESETS
from mex_fusion_ros.bag.writer import STORAGE_PLUGINS

DATASET_SIZE = (640, 512)
SCENE_SIZE = (320, 256)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        metavar="DIR",
        default=None,
        help="paired dataset root (ir/ and vi/ folders, e.g. ../shared/data/roadscene/val); "
        "without it the synthetic demo scene is used",
    )
    parser.add_argument(
        "--preset",
        action="append",
        default=None,
        metavar="P",
        help="degradation preset of one timeline segment, repeat for more segments in order "
        f"(default: {' '.join(DEMO_PRESETS)})",
    )
    parser.add_argument(
        "--out", required=True, metavar="BAG", help="bag directory to create (must not exist)"
    )
    parser.add_argument("--storage", choices=sorted(STORAGE_PLUGINS), default="mcap", help="storage plugin")
    parser.add_argument("--fps-thermal", type=float, default=9.0, help="thermal camera rate, Hz")
    parser.add_argument(
        "--fps-rgb", type=float, default=30.0, help="RGB camera rate (= source frame rate), Hz"
    )
    parser.add_argument(
        "--jitter-ms", type=float, default=2.0, help="standard deviation of the stamp jitter, ms"
    )
    parser.add_argument(
        "--offset-ms",
        type=float,
        default=0.0,
        help="constant offset of the thermal stamps against the RGB camera, ms",
    )
    parser.add_argument(
        "--with-clean",
        action="store_true",
        help="also write the clean frames on /reference/thermal and /reference/rgb",
    )
    parser.add_argument(
        "--thermal-encoding",
        choices=THERMAL_ENCODINGS,
        default="mono8",
        help="mono16 simulates a radiometric camera (raw counts; the pipeline's AGC applies)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, metavar="N", help="use only the first N dataset pairs"
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=300,
        metavar="N",
        help="number of RGB frames of the synthetic scene (ignored with --data)",
    )
    parser.add_argument(
        "--hold",
        type=int,
        default=None,
        metavar="K",
        help="RGB frames each dataset pair is shown for (default: enough for one thermal frame)",
    )
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=None,
        metavar=("W", "H"),
        help=f"frame size (default {DATASET_SIZE[0]} {DATASET_SIZE[1]} for datasets, "
        f"{SCENE_SIZE[0]} {SCENE_SIZE[1]} for the scene)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the scene, the jitter and the degradations"
    )


def run(args: argparse.Namespace) -> int:
    timing = BagTiming(
        fps_thermal=args.fps_thermal, fps_rgb=args.fps_rgb, jitter_ms=args.jitter_ms, offset_ms=args.offset_ms
    )
    if args.limit is not None and args.limit < 1:
        raise SystemExit(f"--limit must be >= 1, got {args.limit}")
    if args.data:
        hold = args.hold or math.ceil(args.fps_rgb / args.fps_thermal)
        source = DatasetSource(args.data, tuple(args.size or DATASET_SIZE), hold=hold, limit=args.limit)
    else:
        frames = min(args.frames, args.limit) if args.limit else args.frames
        width, height = args.size or SCENE_SIZE
        source = SceneSource(
            SceneConfig(width=width, height=height, num_frames=frames, fps=args.fps_rgb, seed=args.seed)
        )
    summary = make_bag(
        source,
        args.preset or DEMO_PRESETS,
        args.out,
        timing=timing,
        storage=args.storage,
        thermal_encoding=args.thermal_encoding,
        with_clean=args.with_clean,
        seed=args.seed,
    )
    print(
        f"wrote {summary.path} ({summary.storage}): {summary.rgb_frames} RGB + "
        f"{summary.thermal_frames} thermal frames over {summary.duration_s:.2f} s"
    )
    for segment in summary.segments:
        print(f"  frames {segment.start_frame:>5}-{segment.end_frame - 1:<5} {segment.preset}")
    return 0
