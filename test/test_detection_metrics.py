"""The one mAP implementation (eval/detection_metrics.py) equals ultralytics' on the same boxes.

ultralytics' own pieces (``DetectionValidator.match_predictions``, ``metrics.ap_per_class``) score
random sets of labels and detections; the project's ``mean_average_precision`` must give the same
mAP50 and mAP50-95. (The previous implementation averaged 101 recall samples as pycocotools does:
up to 0.007 apart on these sets.) The end-to-end check against ``val`` itself is in test_detect.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mex_fusion_ros.eval.detection_metrics import (
    IOU_THRESHOLDS,
    PERFECT_AP,
    LabeledBox,
    ScoredBox,
    average_precision,
    mean_average_precision,
)

CLASSES = ("person", "car")


def ultralytics_map(detections: list[ScoredBox], truths: dict, classes=CLASSES) -> tuple[float, float]:
    """mAP50 and mAP50-95 as ultralytics' validator computes them, image by image."""
    import torch
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.utils.metrics import ap_per_class, box_iou

    validator = DetectionValidator.__new__(DetectionValidator)  # only match_predictions is used
    validator.iouv = torch.tensor(IOU_THRESHOLDS)
    correct, scores, predicted, targets = [], [], [], []
    for frame, boxes in truths.items():
        # The validator sees each image's boxes by descending confidence (NMS output order).
        found = sorted((d for d in detections if d.frame == frame), key=lambda d: -d.score)
        true_classes = torch.tensor([classes.index(b.label) for b in boxes], dtype=torch.float32)
        pred_classes = torch.tensor([classes.index(d.label) for d in found], dtype=torch.float32)
        targets.append(true_classes.numpy())
        predicted.append(pred_classes.numpy())
        scores.append(np.array([d.score for d in found]))
        if not boxes or not found:
            correct.append(np.zeros((len(found), len(IOU_THRESHOLDS)), dtype=bool))
            continue
        iou = box_iou(torch.tensor([b.box for b in boxes]), torch.tensor([d.box for d in found]))
        correct.append(validator.match_predictions(pred_classes, true_classes, iou).numpy())
    ap = ap_per_class(np.concatenate(correct), np.concatenate(scores), np.concatenate(predicted),
                      np.concatenate(targets))[5]
    return float(ap[:, 0].mean()), float(ap.mean())


def random_set(rng: np.random.Generator, frames: int, miss: float, confuse: float, clutter: int):
    truths, detections = {}, []
    for frame in range(frames):
        boxes = []
        for _ in range(int(rng.integers(0, 6))):
            x, y = rng.uniform(0, 280, 2)
            w, h = rng.uniform(8, 60, 2)
            boxes.append(LabeledBox(CLASSES[int(rng.integers(2))], (float(x), float(y), float(x + w), float(y + h))))
        truths[frame] = boxes
        for box in boxes:
            if rng.random() < miss:
                continue
            jitter = rng.normal(0.0, 0.08 * (box.box[2] - box.box[0]), 4)
            label = box.label if rng.random() >= confuse else CLASSES[1 - CLASSES.index(box.label)]
            detections.append(ScoredBox(frame, label, float(rng.uniform(0.2, 1.0)),
                                        tuple(float(v) for v in np.array(box.box) + jitter)))
        for _ in range(int(rng.integers(0, clutter + 1))):
            x, y = rng.uniform(0, 280, 2)
            w, h = rng.uniform(8, 60, 2)
            detections.append(ScoredBox(frame, CLASSES[int(rng.integers(2))], float(rng.uniform(0.0, 0.8)),
                                        (float(x), float(y), float(x + w), float(y + h))))
    if not any(truths.values()):  # ultralytics needs at least one label
        truths[0] = [LabeledBox("car", (0.0, 0.0, 10.0, 10.0))]
    return detections, truths


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), frames=st.integers(1, 25), miss=st.floats(0.0, 0.6),
       confuse=st.floats(0.0, 0.3), clutter=st.integers(0, 6))
def test_map_equals_ultralytics_on_the_same_boxes(seed, frames, miss, confuse, clutter):
    detections, truths = random_set(np.random.default_rng(seed), frames, miss, confuse, clutter)
    ours = mean_average_precision(detections, truths)
    map50, map50_95 = ultralytics_map(detections, truths)
    assert ours["mAP50"] == pytest.approx(map50, abs=1e-9)
    assert ours["mAP50-95"] == pytest.approx(map50_95, abs=1e-9)


def test_a_perfect_detector_scores_what_ultralytics_reports():
    truths = {0: [LabeledBox("car", (0, 0, 10, 10)), LabeledBox("person", (20, 20, 30, 40))]}
    perfect = [ScoredBox(0, b.label, 0.9, b.box) for b in truths[0]]
    assert mean_average_precision(perfect, truths)["mAP50-95"] == pytest.approx(PERFECT_AP)
    assert ultralytics_map(perfect, truths) == pytest.approx((PERFECT_AP, PERFECT_AP))
    assert average_precision([], truths, "car", 0.5) == 0.0
    assert average_precision(perfect, truths, "bicycle", 0.5) is None


def test_recall_and_precision_count_only_confident_boxes():
    truths = {0: [LabeledBox("car", (0, 0, 10, 10)), LabeledBox("car", (20, 0, 30, 10))], 1: []}
    detections = [
        ScoredBox(0, "car", 0.9, (0, 0, 10, 10)),  # found, confident
        ScoredBox(0, "car", 0.1, (20, 0, 30, 10)),  # found, below the operating confidence
        ScoredBox(1, "car", 0.5, (0, 0, 5, 5)),  # confident, on a frame without cars: false
    ]
    result = mean_average_precision(detections, truths, operating_conf=0.25)
    car = result["per_class"]["car"]
    assert car["recall"] == 0.5 and car["precision"] == 0.5 and car["detections"] == 2 and car["labels"] == 2
    assert result["recall"] == 0.5 and result["operating_conf"] == 0.25
    low = mean_average_precision(detections, truths, operating_conf=0.05)["per_class"]["car"]
    assert low["recall"] == 1.0 and low["precision"] == pytest.approx(2 / 3)
    none = mean_average_precision([], truths)["per_class"]["car"]
    assert none["recall"] == 0.0 and none["precision"] is None and none["AP50"] == 0.0
