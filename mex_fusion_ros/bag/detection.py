"""Detection scoring for the offline bag evaluation (ROS-free): labels per stamp, counts, mAP.

Labels come as JSON keyed by header stamp, the format ``bag make`` writes for the synthetic scene
(``scene_objects.json`` in the bag directory; any bag can be given one with ``--labels``)::

    {"classes": ["person", "car"], "frames": {"<rgb stamp ns>": [["person", x0, y0, x1, y1], ...]}}

Boxes are pixel corners in the RGB camera's image (the fused frame's geometry). Detections match
labels by class name. Average precision follows COCO: greedy matching by descending score at one
IoU threshold, precision made monotone, sampled at 101 recall points; mAP50 is the mean over
classes at IoU 0.5, mAP50-95 the mean over the thresholds 0.50:0.05:0.95 as well.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IOU_THRESHOLDS = tuple(np.round(np.arange(0.50, 0.951, 0.05), 2))


class LabelError(ValueError):
    """A labels file that cannot be read; the message names the file and the entry."""


@dataclass(frozen=True)
class LabeledBox:
    label: str
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class ScoredBox:
    frame: int
    label: str
    score: float
    box: tuple[float, float, float, float]


def load_labels(path: str | Path) -> dict[int, list[LabeledBox]]:
    """Stamp (ns) -> boxes from a labels JSON (see the module docstring); ``LabelError`` if malformed."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
        frames = document["frames"]
        labels: dict[int, list[LabeledBox]] = {}
        for stamp, boxes in frames.items():
            labels[int(stamp)] = [
                LabeledBox(str(label), (float(x0), float(y0), float(x1), float(y1))) for label, x0, y0, x1, y1 in boxes
            ]
    except FileNotFoundError:
        raise LabelError(f"labels file {path} does not exist") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise LabelError(
            f"labels file {path} is malformed ({type(exc).__name__}: {exc}); expected "
            '{"frames": {"<stamp ns>": [["class", x0, y0, x1, y1], ...]}}'
        ) from exc
    return labels


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


def average_precision(
    detections: Iterable[ScoredBox], truths: Mapping[int, Sequence[LabeledBox]], label: str, threshold: float
) -> float | None:
    """COCO-style AP of ``label`` at one IoU threshold; None when the class has no label at all."""
    truth_boxes = {
        frame: np.array([b.box for b in boxes if b.label == label], dtype=np.float64).reshape(-1, 4)
        for frame, boxes in truths.items()
    }
    total = sum(len(boxes) for boxes in truth_boxes.values())
    if total == 0:
        return None
    ranked = sorted((d for d in detections if d.label == label and d.frame in truths), key=lambda d: -d.score)
    used = {frame: np.zeros(len(boxes), dtype=bool) for frame, boxes in truth_boxes.items()}
    hits = np.zeros(len(ranked))
    for index, detection in enumerate(ranked):
        overlaps = iou(detection.box, truth_boxes[detection.frame])
        if overlaps.size == 0:
            continue
        overlaps[used[detection.frame]] = -1.0  # each label matches one detection at most
        best = int(np.argmax(overlaps))
        if overlaps[best] >= threshold:
            used[detection.frame][best] = True
            hits[index] = 1.0
    true_positives = np.cumsum(hits)
    recall = true_positives / total
    precision = true_positives / np.arange(1, len(ranked) + 1) if len(ranked) else np.zeros(0)
    # Monotone precision envelope, then 101 recall samples (COCO).
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    samples = []
    for r in np.linspace(0.0, 1.0, 101):
        reached = np.searchsorted(recall, r, side="left")
        samples.append(envelope[reached] if reached < len(envelope) else 0.0)
    return float(np.mean(samples))


def mean_average_precision(
    detections: Sequence[ScoredBox], truths: Mapping[int, Sequence[LabeledBox]], classes: Iterable[str] | None = None
) -> dict:
    """``{"mAP50", "mAP50-95", "per_class": {class: {"AP50", "AP50-95"}}, "frames"}`` over labelled classes."""
    names = sorted({b.label for boxes in truths.values() for b in boxes} if classes is None else set(classes))
    per_class: dict[str, dict[str, float]] = {}
    for name in names:
        at = [average_precision(detections, truths, name, t) for t in IOU_THRESHOLDS]
        if at[0] is None:
            continue
        per_class[name] = {"AP50": at[0], "AP50-95": float(np.mean(at))}
    if not per_class:
        return {"mAP50": None, "mAP50-95": None, "per_class": {}, "frames": len(truths)}
    return {
        "mAP50": float(np.mean([v["AP50"] for v in per_class.values()])),
        "mAP50-95": float(np.mean([v["AP50-95"] for v in per_class.values()])),
        "per_class": per_class,
        "frames": len(truths),
    }


def count_by_class(labels: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for label in labels:
        counts[label] += 1
    return dict(counts)
