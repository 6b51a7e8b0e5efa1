"""Detection metrics (ROS-free): COCO-style average precision, mAP50, mAP50-95, recall and precision.

The one implementation behind every detection score of the project: ``bag eval --detector`` (the
detector on fused, thermal-only and RGB-only frames of a bag) and ``detect eval`` (detector inputs
``ir``, ``vi`` and fusers under degradation presets).

Boxes are corners ``(x0, y0, x1, y1)`` in pixels; a frame is any hashable key (a header stamp, an
image name). Detections match labels by class name. Average precision is computed the way
ultralytics' ``val`` computes it (``ultralytics.utils.metrics``), so that the numbers of
``detect eval`` and of a YOLO's own validation can be compared: per class, detections are ranked
by descending score and each one is matched greedily to the unclaimed label of the same class and
frame with the highest IoU, counting as a true positive when that IoU reaches the threshold (COCO's
matching); the precision/recall curve, extended to (0, 1) and dropping to 0 after the highest
recall, is made monotone, interpolated at 101 recall points (COCO) and integrated with the
trapezoidal rule (where pycocotools averages the 101 samples instead: up to about 0.007 higher on
the random sets of ``test_detection_metrics.py``). mAP50 is the mean over the labelled classes at
IoU 0.5, mAP50-95 the mean over the thresholds 0.50:0.05:0.95 as well. A labelled class without
any detection scores 0; classes without labels are left out (COCO and ultralytics do the same).
A perfect detector scores ``PERFECT_AP`` = 0.995, not 1, as in ultralytics.

Recall and precision are reported at an operating confidence (``operating_conf``: what a deployed
detector keeps, e.g. the detector node's ``conf``), at IoU 0.5: the fraction of labelled objects
found by a detection scoring at least that much, and the fraction of those detections that found
one. AP itself uses every detection given (run the detector with a low threshold, 0.001 as
ultralytics' ``val`` does, for AP comparable with published numbers).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

IOU_THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.50, 0.951, 0.05), 2))
#: 101 recall samples of the precision envelope (COCO).
RECALL_SAMPLES = np.linspace(0.0, 1.0, 101)
#: AP of a perfect ranking (every object found before any false box): the curve drops to 0 at
#: recall 1, so the last of the 100 trapezoids counts half. ultralytics reports 0.995 there too.
PERFECT_AP = 0.995


@dataclass(frozen=True)
class LabeledBox:
    """A ground-truth object: class name and corners in pixels."""

    label: str
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class ScoredBox:
    """A detection in ``frame`` (the key its labels are stored under): class name, score, corners."""

    frame: Hashable
    label: str
    score: float
    box: tuple[float, float, float, float]


def iou(box: Sequence[float], boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``(x0, y0, x1, y1)`` box with each row of ``boxes`` ``(N, 4)``."""
    if len(boxes) == 0:
        return np.zeros(0)
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclass(frozen=True)
class _Ranking:
    """One class: the detections ranked by score, whether each matched a label at each IoU threshold."""

    hits: np.ndarray  # (detections, thresholds): 1.0 where the detection of that rank matched a label
    scores: np.ndarray  # descending
    labels: int


def _rank(
    detections: Iterable[ScoredBox],
    truths: Mapping[Hashable, Sequence[LabeledBox]],
    label: str,
    thresholds: Sequence[float] = IOU_THRESHOLDS,
) -> _Ranking:
    truth_boxes = {
        frame: np.array([b.box for b in boxes if b.label == label], dtype=np.float64).reshape(-1, 4)
        for frame, boxes in truths.items()
    }
    total = sum(len(boxes) for boxes in truth_boxes.values())
    levels = np.asarray(thresholds, dtype=np.float64)
    # Stable sort: equal scores keep the order they were given in (ultralytics' argsort does too).
    ranked = sorted((d for d in detections if d.label == label and d.frame in truths), key=lambda d: -d.score)
    # used[frame][label index, threshold]: each label matches one detection at most, per threshold.
    used = {frame: np.zeros((len(boxes), len(levels)), dtype=bool) for frame, boxes in truth_boxes.items()}
    hits = np.zeros((len(ranked), len(levels)))
    columns = np.arange(len(levels))
    for index, detection in enumerate(ranked):
        overlaps = iou(detection.box, truth_boxes[detection.frame])
        if overlaps.size == 0:
            continue
        available = np.where(used[detection.frame], -1.0, overlaps[:, None])
        best = available.argmax(axis=0)  # the unclaimed label with the highest IoU, per threshold
        matched = available[best, columns] >= levels
        used[detection.frame][best[matched], columns[matched]] = True
        hits[index] = matched
    return _Ranking(hits, np.array([d.score for d in ranked], dtype=np.float64), total)


def _ap_of(hits: np.ndarray, labels: int) -> float | None:
    """AP of one ranking at one threshold (``hits``: 1.0 per matched rank); None without labels."""
    if labels == 0:
        return None
    count = len(hits)
    if count == 0:
        return 0.0
    true_positives = np.cumsum(hits)
    recall = true_positives / labels
    precision = true_positives / np.arange(1, count + 1)
    # The curve runs from (recall 0, precision 1) and drops to precision 0 after the highest recall
    # reached; its monotone envelope, interpolated at 101 recall points and integrated with the
    # trapezoidal rule, is the AP (ultralytics' definition, so the two agree on the same boxes).
    curve_recall = np.concatenate(([0.0], recall, [recall[-1], 1.0]))
    curve_precision = np.concatenate(([1.0], precision, [0.0, 0.0]))
    envelope = np.maximum.accumulate(curve_precision[::-1])[::-1]
    return float(np.trapezoid(np.interp(RECALL_SAMPLES, curve_recall, envelope), RECALL_SAMPLES))


def average_precision(
    detections: Iterable[ScoredBox], truths: Mapping[Hashable, Sequence[LabeledBox]], label: str, threshold: float
) -> float | None:
    """COCO-style AP of ``label`` at one IoU threshold; None when the class has no label at all."""
    ranking = _rank(detections, truths, label, (threshold,))
    return _ap_of(ranking.hits[:, 0], ranking.labels)


def _operating_point(ranking: _Ranking, conf: float) -> tuple[float, float | None]:
    """Recall and precision at IoU 0.5 of the detections scoring at least ``conf`` (precision None without any)."""
    kept = ranking.scores >= conf
    found = float(ranking.hits[kept, 0].sum())
    recall = found / ranking.labels if ranking.labels else 0.0
    return recall, (found / int(kept.sum()) if kept.any() else None)


def mean_average_precision(
    detections: Sequence[ScoredBox],
    truths: Mapping[Hashable, Sequence[LabeledBox]],
    classes: Iterable[str] | None = None,
    operating_conf: float = 0.25,
) -> dict:
    """Scores over the labelled classes (all of them, or those of ``classes`` that have labels).

    ``{"mAP50", "mAP50-95", "recall", "precision", "per_class": {class: {"AP50", "AP50-95", "recall",
    "precision", "labels", "detections"}}, "frames", "operating_conf"}``: ``recall``/``precision``
    at IoU 0.5 for detections scoring at least ``operating_conf`` (means over classes at the top;
    a class without such detections has precision None and is left out of the mean); every mean is
    None when no class has a label.
    """
    detections = list(detections)
    names = sorted({b.label for boxes in truths.values() for b in boxes} if classes is None else set(classes))
    per_class: dict[str, dict] = {}
    for name in names:
        ranking = _rank(detections, truths, name)
        if ranking.labels == 0:
            continue
        at = [_ap_of(ranking.hits[:, t], ranking.labels) for t in range(len(IOU_THRESHOLDS))]
        recall, precision = _operating_point(ranking, operating_conf)
        per_class[name] = {
            "AP50": at[0],
            "AP50-95": float(np.mean(at)),
            "recall": recall,
            "precision": precision,
            "labels": ranking.labels,
            "detections": int((ranking.scores >= operating_conf).sum()),
        }

    def mean(key: str) -> float | None:
        values = [v[key] for v in per_class.values() if v[key] is not None]
        return float(np.mean(values)) if values else None

    return {
        "mAP50": mean("AP50"),
        "mAP50-95": mean("AP50-95"),
        "recall": mean("recall"),
        "precision": mean("precision"),
        "per_class": per_class,
        "frames": len(truths),
        "operating_conf": operating_conf,
    }


def count_by_class(labels: Iterable[str]) -> dict[str, int]:
    """How many times each class name occurs."""
    counts: dict[str, int] = defaultdict(int)
    for label in labels:
        counts[label] += 1
    return dict(counts)
