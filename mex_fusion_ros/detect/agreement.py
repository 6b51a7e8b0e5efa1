"""Check the project's mAP against ultralytics' own ``val`` on one labelled set (ROS-free).

Two comparisons on the same images (one input of a labelled paired dataset, clean):

1. **metric**: the boxes ultralytics ``val`` scores (recorded from its validator: predictions and
   labels as it matches them, in its letterboxed image) are scored again by the project's
   ``eval.detection_metrics``. Any difference is a difference of the two AP implementations.
2. **end to end**: ``detect eval`` (the detector node's ``YoloDetector``: ultralytics ``predict``
   on each image) against ``val``'s numbers. Besides the metric this includes two differences of
   the paths: ``predict`` clips boxes to the image where ``val`` scores them unclipped (a box that
   reaches past the border, into the letterbox padding, has a lower IoU with a label clipped at
   the border: objects entering or leaving the frame), and ``predict`` letterboxes each image to
   the smallest stride multiple (320x256 stays 320x256 at imgsz 320) where ``val`` pads batches to
   its rectangular shapes (288x352 there). To tell the two apart, ``val``'s boxes are also scored
   clipped to the image, as ``predict`` returns them (``clipped``): what remains between that and
   ``detect_eval`` is the letterbox.

``scripts/check_map_against_ultralytics.py`` runs this and prints both; ``test_detect.py`` runs it
on frames of the demo scene with the shipped demo detector.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2

from mex_fusion_ros.data.paired import read_pair
from mex_fusion_ros.detect.dataset import load_labelled_dataset
from mex_fusion_ros.detect.inputs import build_inputs
from mex_fusion_ros.eval.detection_metrics import LabeledBox, ScoredBox, mean_average_precision


@dataclass(frozen=True)
class Agreement:
    ultralytics: dict[str, float]  # val: mAP50, mAP50-95
    same_boxes: dict[str, float]  # the project's metric on val's own predictions
    clipped: dict[str, float]  # the project's metric on val's predictions clipped to the image
    detect_eval: dict[str, float]  # detect eval (predict path)
    images: int
    imgsz: int

    def differences(self) -> dict[str, dict[str, float]]:
        """|difference| from ultralytics' numbers, and (``letterbox``) between ``clipped`` and ``detect_eval``."""
        differences = {
            which: {k: abs(getattr(self, which)[k] - self.ultralytics[k]) for k in ("mAP50", "mAP50-95")}
            for which in ("same_boxes", "clipped", "detect_eval")
        }
        differences["letterbox"] = {k: abs(self.clipped[k] - self.detect_eval[k]) for k in ("mAP50", "mAP50-95")}
        return differences


def check_against_ultralytics(data: str | Path, detector: str, input_spec: str = "vi", imgsz: int | None = None,
                              limit: int | None = None, work: str | Path | None = None) -> Agreement:
    """Run both comparisons (module docstring) on ``input_spec`` images of ``data``, clean, on the CPU."""
    from ultralytics import YOLO
    from ultralytics.models.yolo.detect import DetectionValidator

    from mex_fusion_ros.detect.evaluate import DetectEvalSettings, build_detector, run_detection_eval

    dataset = load_labelled_dataset(data, limit=limit)
    settings = DetectEvalSettings(data=Path(data), detector=detector, inputs=(input_spec,), presets=("clean",),
                                  limit=limit, device="cpu", imgsz=imgsz, grid_images=0)
    detector_model = build_detector(settings)
    size = detector_model.image_size
    ids = {name: index for index, name in detector_model.names.items()}
    with tempfile.TemporaryDirectory(dir=work) as temporary:
        root = Path(temporary)
        for folder in ("images/val", "labels/val"):
            (root / folder).mkdir(parents=True)
        (item,) = build_inputs((input_spec,), device="cpu")
        truths = {}
        for pair in dataset.pairs:
            ir, vi = read_pair(pair)
            image, _ = item.image(ir, vi)
            height, width = image.shape[:2]
            boxes = [b for b in dataset.boxes(pair.name, (width, height)) if b.label in ids]
            truths[pair.name] = boxes
            cv2.imwrite(str(root / "images/val" / f"{pair.name}.png"), image[:, :, ::-1] if image.ndim == 3 else image)
            lines = [f"{ids[b.label]} {(b.box[0] + b.box[2]) / 2 / width} {(b.box[1] + b.box[3]) / 2 / height} "
                     f"{(b.box[2] - b.box[0]) / width} {(b.box[3] - b.box[1]) / height}\n" for b in boxes]
            (root / "labels/val" / f"{pair.name}.txt").write_text("".join(lines))
        listing = "".join(f"  {index}: {name}\n" for index, name in detector_model.names.items())
        (root / "data.yaml").write_text(f"path: {root}\ntrain: images/val\nval: images/val\nnames:\n{listing}")
        predictions: list[ScoredBox] = []
        clipped: list[ScoredBox] = []
        val_truths: dict[str, list[LabeledBox]] = {}
        image_truths: dict[str, list[LabeledBox]] = {}
        names = detector_model.names

        class RecordingValidator(DetectionValidator):
            """ultralytics' validator, recording the boxes it scores (in its letterboxed image)."""

            def update_metrics(self, preds, batch) -> None:
                super().update_metrics(preds, batch)
                for index, pred in enumerate(preds):
                    prepared = self._prepare_batch(index, batch)
                    name = Path(prepared["im_file"]).stem
                    val_truths[name] = [LabeledBox(names[int(c)], tuple(float(v) for v in box))
                                        for c, box in zip(prepared["cls"].tolist(), prepared["bboxes"].tolist())]
                    predictions.extend(ScoredBox(name, names[int(c)], float(score), tuple(float(v) for v in box))
                                       for box, score, c in zip(pred["bboxes"].tolist(), pred["conf"].tolist(),
                                                                pred["cls"].tolist()))
                    # The same boxes and labels in the original image, boxes clipped to it (predict's output).
                    in_image = self.scale_preds(pred, prepared)["bboxes"].tolist()
                    clipped.extend(ScoredBox(name, names[int(c)], float(score), tuple(float(v) for v in box))
                                   for box, score, c in zip(in_image, pred["conf"].tolist(), pred["cls"].tolist()))
                    labels = self.scale_preds({"bboxes": prepared["bboxes"]}, prepared)["bboxes"].tolist()
                    image_truths[name] = [LabeledBox(names[int(c)], tuple(float(v) for v in box))
                                          for c, box in zip(prepared["cls"].tolist(), labels)]

        metrics = YOLO(detector).val(validator=RecordingValidator, data=str(root / "data.yaml"), imgsz=size, batch=8,
                                     device="cpu", conf=0.001, iou=0.7, plots=False, verbose=False,
                                     project=str(root), name="val", workers=0)
    same = mean_average_precision(predictions, val_truths)
    in_image = mean_average_precision(clipped, image_truths)
    ours = run_detection_eval(settings, progress=False).results["summary"]["clean"][item.name]
    return Agreement(
        ultralytics={"mAP50": float(metrics.box.map50), "mAP50-95": float(metrics.box.map)},
        same_boxes={"mAP50": same["mAP50"], "mAP50-95": same["mAP50-95"]},
        clipped={"mAP50": in_image["mAP50"], "mAP50-95": in_image["mAP50-95"]},
        detect_eval={"mAP50": ours["mAP50"], "mAP50-95": ours["mAP50-95"]},
        images=len(dataset.pairs),
        imgsz=size,
    )
