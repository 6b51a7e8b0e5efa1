"""``mex-fusion detect train``: see ``detect.train``."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import yaml


def yolo_argument(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE parsed as YAML (``close_mosaic=2``, ``lr0=0.005``, ``cos_lr=true``)."""
    key, separator, value = text.partition("=")
    if not separator or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), yaml.safe_load(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path,
                        help="labelled paired dataset: ir/, vi/ and labels/ (YOLO txt + classes.txt) "
                             "or labels.json (COCO)")
    parser.add_argument("--labels", type=Path, default=None, help="labels of --data elsewhere (folder or COCO JSON)")
    parser.add_argument("--val-data", type=Path, default=None,
                        help="validation dataset, same layout (default: --val-fraction of --data, by name hash)")
    parser.add_argument("--val-labels", type=Path, default=None, help="labels of --val-data elsewhere")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of --data kept for validation (0.2)")
    parser.add_argument("--input", action="append", required=True, metavar="INPUT", dest="inputs",
                        help="what the detector is trained on, repeatable: ir, vi or a fuser (nano, laplacian, "
                             "nano:weights.pt, ...); several = each pair once per input")
    parser.add_argument("--model", default="yolov8n.yaml",
                        help="ultralytics model: an architecture .yaml (from scratch) or a .pt to start from")
    parser.add_argument("--out", required=True, type=Path, help="output folder: dataset/, train/, results.json")
    parser.add_argument("--degrade", default="none",
                        help="degrade each pair before the inputs are made: none, training (a random preset per "
                             "pair, the fusion network's training sampler) or a preset name (default none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the degradations and of training (0)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--imgsz", type=int, default=640, help="training image size (default 640)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="cpu, 0 (first CUDA device), ... (default cpu)")
    parser.add_argument("--workers", type=int, default=0, help="data loader worker processes (default 0)")
    parser.add_argument("--patience", type=int, default=100, help="stop after this many epochs without improvement")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="use only the first N pairs of each dataset")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from train/weights/last.pt")
    parser.add_argument("--yolo-arg", action="append", type=yolo_argument, default=[], metavar="KEY=VALUE",
                        help="further ultralytics train argument, repeatable (close_mosaic=2, lr0=0.005, ...)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def command_line(args: argparse.Namespace) -> str:
    """The command as it could be typed again (recorded in results.json)."""
    parts = ["mex-fusion", "detect", "train", "--data", str(args.data)]
    for flag in ("labels", "val_data", "val_labels"):
        if getattr(args, flag) is not None:
            parts += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    parts += [item for name in args.inputs for item in ("--input", name)]
    parts += ["--model", args.model, "--out", str(args.out), "--degrade", args.degrade, "--seed", str(args.seed),
              "--epochs", str(args.epochs), "--imgsz", str(args.imgsz), "--batch", str(args.batch),
              "--device", args.device]
    if args.val_data is None:
        parts += ["--val-fraction", str(args.val_fraction)]
    if args.limit is not None:
        parts += ["--limit", str(args.limit)]
    parts += [item for key, value in args.yolo_arg for item in ("--yolo-arg", f"{key}={value}")]
    return shlex.join(parts + (["--resume"] if args.resume else []))


def run(args: argparse.Namespace) -> int:
    from mex_fusion_ros.detect.train import TrainError, TrainSettings, train_detector

    settings = TrainSettings(
        data=args.data, out=args.out, inputs=tuple(args.inputs), model=args.model, val_data=args.val_data,
        val_fraction=args.val_fraction, degrade=args.degrade, seed=args.seed, epochs=args.epochs,
        imgsz=args.imgsz, batch=args.batch, device=args.device, workers=args.workers, patience=args.patience,
        resume=args.resume, limit=args.limit, labels=args.labels, val_labels=args.val_labels,
        extra=dict(args.yolo_arg), command=command_line(args),
    )
    try:
        results = train_detector(settings, progress=not args.no_progress)
    except TrainError as exc:
        print(f"mex-fusion detect train: {exc}", file=sys.stderr)
        return 1
    val = results["val"]
    print(f"validation: mAP50 {val['mAP50']:.3f}, mAP50-95 {val['mAP50-95']:.3f}, precision {val['precision']:.3f}, "
          f"recall {val['recall']:.3f}")
    print(f"weights: {results['weights']['best'] or results['weights']['last']}")
    print(f"results: {Path(args.out) / 'results.json'}")
    return 0
