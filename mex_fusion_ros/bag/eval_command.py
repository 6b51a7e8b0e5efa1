"""``mex-fusion bag eval BAG``: fuse a bag offline with the node's synchroniser and pipeline, report."""

from __future__ import annotations

import argparse
from pathlib import Path

from mex_fusion_ros.bag import RGB_TOPIC, THERMAL_TOPIC
from mex_fusion_ros.sync.synchronizer import SYNC_MODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", help="bag directory (MCAP or sqlite3) or a bare .mcap / .db3 file")
    parser.add_argument(
        "--method",
        action="append",
        default=None,
        metavar="M",
        help="fuser spec as for create_fuser (laplacian, nano, nano:w.pt, ...); repeat to compare (default: laplacian)",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output folder (default: <bag>_eval next to the bag); must not hold an earlier run's bags",
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="YAML",
        help="parameters file whose fusion_node section sets registration, AGC, output size and "
        "sync slop/queue/offset (default: the installed config/fusion.yaml)",
    )
    parser.add_argument(
        "--sync-mode",
        choices=SYNC_MODES,
        default="approximate",
        help="synchroniser policy (approximate: every thermal frame once; latest: the node's default)",
    )
    parser.add_argument("--slop", type=float, default=None, help="sync slop in seconds (default: from the config)")
    parser.add_argument(
        "--thermal-offset",
        type=float,
        default=None,
        help="seconds added to thermal stamps before pairing (default: from the config)",
    )
    parser.add_argument("--thermal-topic", default=THERMAL_TOPIC)
    parser.add_argument("--rgb-topic", default=RGB_TOPIC)
    parser.add_argument("--device", default="cpu", help="device for network fusers (cpu, cuda, auto)")
    parser.add_argument("--backend", choices=("torch", "onnxruntime", "tensorrt"), default="torch",
                        help="runtime of the network fusers (see docs/deployment.md)")
    parser.add_argument(
        "--metrics-every",
        type=int,
        default=0,
        metavar="N",
        help="score every N-th pair (0: automatic, about 100 pairs scored)",
    )
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="stop after N pairs")
    parser.add_argument("--no-video", action="store_true", help="do not write side_by_side.mp4")
    parser.add_argument("--no-bags", action="store_true", help="do not write the fused output bags")
    parser.add_argument(
        "--detector",
        default=None,
        metavar="MODEL",
        help="ultralytics model (.pt/.onnx, or .yaml for an untrained net) to count detections on "
        "fused, thermal-only and RGB-only frames; with labels also mAP50 / mAP50-95",
    )
    parser.add_argument("--detector-conf", type=float, default=0.25, help="detection confidence threshold")
    parser.add_argument(
        "--labels",
        default=None,
        metavar="PATH",
        help="ground truth keyed by RGB header stamp (ns), in the RGB/fused image: a JSON file "
        '{"frames": {"<stamp>": [["class", x0, y0, x1, y1], ...]}} (pixel corners); a directory of YOLO txt '
        "files <stamp>.txt ('class_id cx cy w h', fractions of the image; names from classes.txt or "
        "data.yaml there, else the ids); or a COCO JSON whose images carry stamp_ns, stamp {sec, nanosec} "
        "or a file_name <stamp>.png. Classes match the detector's names (default: the bag's "
        "scene_objects.json if present)",
    )


def run(args: argparse.Namespace) -> int:
    from mex_fusion_ros.bag.evaluate import BagEvalSettings, evaluate_bag
    from mex_fusion_ros.bag.report import summarise, write_report
    from mex_fusion_ros.config import load_config

    # The command-line values go through the same validator as the file (range, finite numbers).
    overrides = {name: value for name, value in (("sync.thermal_offset", args.thermal_offset),
                                                 ("sync.slop", args.slop)) if value is not None}
    node_params = dict(load_config(args.config, overrides={"fusion_node": overrides})["fusion_node"])
    bag = Path(args.bag)
    out = Path(args.out) if args.out else bag.parent / f"{bag.name}_eval"
    settings = BagEvalSettings(
        bag=bag,
        methods=tuple(args.method or ("laplacian",)),
        out=out,
        node_params=node_params,
        sync_mode=args.sync_mode,
        slop=node_params["sync.slop"] if args.slop is not None else None,
        thermal_topic=args.thermal_topic,
        rgb_topic=args.rgb_topic,
        device=args.device,
        backend=args.backend,
        metrics_every=args.metrics_every,
        limit=args.limit,
        write_bags=not args.no_bags,
        write_video=not args.no_video,
        detector=args.detector,
        detector_conf=args.detector_conf,
        labels=Path(args.labels) if args.labels else None,
    )
    outcome = evaluate_bag(settings)
    paths = write_report(outcome, out)
    print_outcome(outcome, summarise(outcome))
    print(f"report: {paths['html']}\nnumbers: {paths['json']}")
    return 0 if outcome.pairs_processed else 1


def print_outcome(outcome, summary: dict) -> None:
    """A few lines on the console: pairs, problems, timing and the headline metrics per method."""
    from mex_fusion_ros.bag.report import bag_problem_text

    sync = outcome.sync
    print(
        f"{outcome.pairs_processed} pairs processed ({sync['thermal']['received']} thermal, "
        f"{sync['rgb']['received']} RGB frames read; sync {sync['mode']}, slop {sync['slop_s'] * 1e3:.0f} ms)"
    )
    if outcome.stopped_early:
        print(f"WARNING: {bag_problem_text(outcome.stopped_early, outcome.pairs_processed)}")
    for problem, count in outcome.problems.items():
        print(f"WARNING: {problem}: {count}")
    for failure, count in outcome.failures.items():
        print(f"WARNING: fusion failed {count}x: {failure}")
    for method, s in summary.items():
        timing = s["timing_ms"]["total"]
        headline = ", ".join(
            f"{k} {v:.3f}" for k, v in list(s["reference_metrics"].items() or s["metrics"].items())[:4] if v is not None
        )
        if timing:
            print(
                f"  {method:<12} {s['pairs']} pairs, {timing['p50']:.1f} ms p50 / {timing['p99']:.1f} ms p99 "
                f"per pair{'; ' + headline if headline else ''}"
            )
