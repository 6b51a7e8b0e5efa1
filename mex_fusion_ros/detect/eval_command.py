"""``mex-fusion detect eval``: see ``detect.evaluate`` (scores) and ``detect.report`` (report)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from mex_fusion_ros.data.degradations import PRESETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path,
                        help="labelled paired dataset: ir/, vi/ and labels/ (YOLO txt + classes.txt) "
                             "or labels.json (COCO)")
    source.add_argument("--bag-eval", type=Path, metavar="DIR",
                        help="instead: the output folder of `bag eval` / `demo` (report/): score ir, vi and each "
                             "method's fused frames of that run per timeline segment, against the bag's labels")
    parser.add_argument("--labels", type=Path, default=None,
                        help="labels elsewhere: a YOLO txt folder or a COCO JSON (with --bag-eval: keyed by stamp; "
                             "default the bag's scene_objects.json)")
    parser.add_argument("--detector", required=True, metavar="MODEL",
                        help="ultralytics model: .pt, .onnx or anything else ultralytics loads (nothing is downloaded)")
    parser.add_argument("--input", action="append", default=None, metavar="INPUT", dest="inputs",
                        help="detector input, repeatable: ir, vi or a fuser spec (nano, laplacian, nano:weights.pt, "
                             "weights.pt, ...); default: ir, vi, laplacian")
    parser.add_argument("--preset", action="append", default=None, metavar="P", dest="presets",
                        help=f"degradation preset, repeatable ('all' = the mex-fusion eval set; default clean). "
                             f"Valid: {', '.join(PRESETS)}")
    parser.add_argument("--out", required=True, type=Path, help="output folder (results.json, report.md/.html)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the degradations, as mex-fusion eval's (0)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N pairs (by name)")
    parser.add_argument("--device", default="auto", help="detector and network device: auto, cpu, cuda, cuda:N")
    parser.add_argument("--imgsz", type=int, default=None,
                        help="detector input size (default: the size the model was trained at, else 640)")
    parser.add_argument("--conf", type=float, default=0.001,
                        help="detector confidence threshold for the AP ranking (default 0.001, as ultralytics val)")
    parser.add_argument("--iou", type=float, default=0.7, help="detector NMS IoU (default 0.7, as ultralytics val)")
    parser.add_argument("--operating-conf", type=float, default=0.25,
                        help="confidence at which recall and precision are counted (default 0.25, the detector node's)")
    parser.add_argument("--grid-images", type=int, default=2, metavar="N",
                        help="pairs per preset in the image grids (2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def command_line(args: argparse.Namespace) -> str:
    """The command as it could be typed again (recorded in results.json)."""
    source = ["--data", str(args.data)] if args.data is not None else ["--bag-eval", str(args.bag_eval)]
    parts = ["mex-fusion", "detect", "eval", *source, "--detector", args.detector]
    if args.labels is not None:
        parts += ["--labels", str(args.labels)]
    parts += [item for name in args.inputs or () for item in ("--input", name)]
    parts += [item for name in args.presets or () for item in ("--preset", name)]
    parts += ["--out", str(args.out)] + (["--seed", str(args.seed)] if args.data is not None else [])
    for flag, value in (("--limit", args.limit), ("--imgsz", args.imgsz)):
        if value is not None:
            parts += [flag, str(value)]
    if args.device != "auto":
        parts += ["--device", args.device]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    from mex_fusion_ros.detect.evaluate import DEFAULT_INPUTS, DetectEvalError, DetectEvalSettings, run_detection_eval
    from mex_fusion_ros.detect.report import markdown_table, write_report

    settings = DetectEvalSettings(
        data=args.data, detector=args.detector, inputs=tuple(args.inputs or DEFAULT_INPUTS),
        presets=tuple(args.presets or ("clean",)), labels=args.labels, seed=args.seed, limit=args.limit,
        device=args.device, conf=args.conf, iou=args.iou, imgsz=args.imgsz, operating_conf=args.operating_conf,
        grid_images=max(0, args.grid_images), command=command_line(args),
    )
    try:
        if args.bag_eval is not None:
            from mex_fusion_ros.detect.bag_frames import run_bag_detection_eval

            if args.inputs or args.presets:
                raise DetectEvalError("with --bag-eval the inputs are ir, vi and the run's methods, the groups "
                                      "its timeline segments: drop --input and --preset")
            outcome = run_bag_detection_eval(args.bag_eval, settings, args.labels, max(0, args.grid_images))
        else:
            outcome = run_detection_eval(settings, progress=not args.no_progress)
    except DetectEvalError as exc:
        print(f"mex-fusion detect eval: {exc}", file=sys.stderr)
        return 1
    paths = write_report(outcome, args.out)
    results = outcome.results
    print(f"{len(results['inputs'])} inputs x {len(results['presets'])} presets/segments x "
          f"{len(results['images'])} pairs "
          f"in {results['wall_time_s']:.1f} s; mAP50:")
    print(markdown_table(results, "mAP50"))
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0
