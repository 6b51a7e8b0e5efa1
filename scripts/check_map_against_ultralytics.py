#!/usr/bin/env python3
"""Compare the project's mAP with ultralytics' own ``val`` on one labelled set (detect/agreement.py).

Usage: .venv/bin/python scripts/check_map_against_ultralytics.py [--data DIR] [--detector MODEL]
Default: 60 frames of the demo scene (seed 0, the demo's) with the shipped demo-scene detector.
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mex_fusion_ros.detect.agreement import check_against_ultralytics  # noqa: E402
from mex_fusion_ros.detect.scene_dataset import write_scene_dataset  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="labelled paired dataset (default: the demo scene)")
    parser.add_argument("--detector", default=str(REPO / "weights" / "demo_scene_yolo.pt"))
    parser.add_argument("--input", default="vi", help="which input's images to validate (ir, vi or a fuser)")
    parser.add_argument("--frames", type=int, default=60, help="demo-scene frames when --data is not given")
    parser.add_argument("--imgsz", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        data = args.data
        if data is None:
            data = Path(temporary) / "scene"
            write_scene_dataset(data, [0], args.frames)
        result = check_against_ultralytics(data, args.detector, args.input, imgsz=args.imgsz)
    print(f"{result.images} images, input {args.input}, imgsz {result.imgsz}, detector {args.detector}")
    print(f"{'':36} mAP50    mAP50-95")
    for label, values in (("ultralytics val", result.ultralytics),
                          ("project metric on val's boxes", result.same_boxes),
                          ("  same, boxes clipped to the image", result.clipped),
                          ("detect eval (predict path)", result.detect_eval)):
        print(f"{label:36} {values['mAP50']:.4f}   {values['mAP50-95']:.4f}")
    for which, diff in result.differences().items():
        print(f"|difference| {which}: mAP50 {diff['mAP50']:.4f}, mAP50-95 {diff['mAP50-95']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
