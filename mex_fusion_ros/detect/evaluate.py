"""``mex-fusion detect eval``: one detector, several inputs (``ir``, ``vi``, fusers), degradation presets.

For every labelled pair and every preset, the clean pair is degraded once exactly as
``mex-fusion eval`` degrades it (``eval.runner.degradation_seed`` + ``data.degradations.apply_preset``,
so both commands see bit-identical inputs for the same seed, image and preset); each input turns
the degraded pair into the detector's image (``detect.inputs``), the detector runs on it
(``nodes.yolo.YoloDetector``, the detector node's model wrapper), and the detections are scored
against the pair's labels with ``eval.detection_metrics`` per preset and input: mAP50, mAP50-95,
and recall/precision at the operating confidence, per class and over classes.

The detector runs with ultralytics ``val``'s settings by default (confidence 0.001, NMS IoU 0.7,
at most 300 boxes) so AP ranks the whole list, as published numbers do; recall and precision count
only boxes at ``operating_conf`` or above (0.25, the detector node's default ``conf``). Classes the
labels have but the detector does not know are listed and left out of the scores. ROS-free;
torch and ultralytics are imported when the detector is built.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mex_fusion_ros.data.degradations import PRESETS, apply_preset
from mex_fusion_ros.data.paired import DatasetError, read_pair
from mex_fusion_ros.detect.dataset import load_labelled_dataset
from mex_fusion_ros.detect.inputs import build_inputs
from mex_fusion_ros.eval.detection_metrics import LabeledBox, ScoredBox, mean_average_precision
from mex_fusion_ros.eval.runner import EvalError, degradation_seed, resolve_presets, software_versions

#: Inputs ``detect eval`` compares when none is given.
DEFAULT_INPUTS = ("ir", "vi", "laplacian")
#: ultralytics ``val`` defaults: rank every plausible box.
VAL_CONF, VAL_IOU = 0.001, 0.7


class DetectEvalError(ValueError):
    """The evaluation cannot run (data, detector, input, preset or option); the message says why."""


@dataclass(frozen=True)
class DetectEvalSettings:
    data: Path | None  # None with ``bag_frames.run_bag_detection_eval``
    detector: str
    inputs: tuple[str, ...] = DEFAULT_INPUTS
    presets: tuple[str, ...] = ("clean",)
    labels: Path | None = None
    seed: int = 0
    limit: int | None = None
    device: str = "auto"
    conf: float = VAL_CONF
    iou: float = VAL_IOU
    #: Detector input size; None = the size the model was trained at (else 640).
    imgsz: int | None = None
    operating_conf: float = 0.25
    grid_images: int = 2
    command: str = ""


@dataclass
class DetectSample:
    """One frame for the report grid: each input's uint8 image and its boxes."""

    image: str
    truths: list[LabeledBox]
    images: dict[str, np.ndarray] = field(default_factory=dict)
    detections: dict[str, list[ScoredBox]] = field(default_factory=dict)


@dataclass
class DetectEvalOutcome:
    """``results``: the JSON document (``docs/detection.md``); ``samples``: preset -> grid rows;
    ``detections`` (preset -> input -> boxes) and ``truths`` (preset -> frame -> labels): what was scored."""

    results: dict
    samples: dict[str, list[DetectSample]]
    detections: dict[str, dict[str, list[ScoredBox]]] = field(default_factory=dict)
    truths: dict[str, dict[str, list[LabeledBox]]] = field(default_factory=dict)


@dataclass
class LabelledFrame:
    """What the detector is scored on once: a frame under one preset (or timeline segment), its labels
    and the uint8 image of every input; ``sample``: show it in the report grid."""

    name: str
    preset: str
    truths: list[LabeledBox]
    images: dict[str, np.ndarray]
    fuse_s: dict[str, float] = field(default_factory=dict)
    sample: bool = False


class FrameScorer:
    """Runs the detector on every input of each frame and scores per preset and input: the one scoring
    path of ``detect eval`` on a dataset and on a bag evaluation."""

    def __init__(self, detector, classes: list[str], inputs: list[str], presets: list[str],
                 operating_conf: float) -> None:
        self.detector = detector
        self.classes = classes
        self.inputs = inputs
        self.presets = presets
        self.operating_conf = operating_conf
        self.truths: dict[str, dict[str, list[LabeledBox]]] = {p: {} for p in presets}
        self.detections: dict[str, dict[str, list[ScoredBox]]] = {p: {i: [] for i in inputs} for p in presets}
        self.objects: dict[str, dict[str, int]] = {}  # frame -> class -> count (frames shared by presets once)
        self.fuse_times: dict[str, list[float]] = {i: [] for i in inputs}
        self.detect_times: list[float] = []
        self.samples: dict[str, list[DetectSample]] = {p: [] for p in presets}

    def add(self, frame: LabelledFrame) -> None:
        truths = [b for b in frame.truths if b.label in self.classes]
        self.truths[frame.preset][frame.name] = truths
        self.objects[frame.name] = {c: sum(b.label == c for b in truths) for c in self.classes}
        sample = DetectSample(frame.name, truths) if frame.sample else None
        for name in self.inputs:
            image = frame.images[name]
            self.fuse_times[name].append(frame.fuse_s.get(name, 0.0))
            found = self.detector.detect(image)
            self.detect_times.append(found.inference_ms / 1e3)
            boxes = [ScoredBox(frame.name, b.class_name, b.score, (b.x1, b.y1, b.x2, b.y2))
                     for b in found.boxes if b.class_name in self.classes]
            self.detections[frame.preset][name] += boxes
            if sample is not None:
                sample.images[name] = image
                sample.detections[name] = boxes
        if sample is not None:
            self.samples[frame.preset].append(sample)

    def results(self) -> dict:
        """``summary`` (preset -> input -> scores), ``overall`` (mean over presets), objects, timing."""
        summary = {
            preset: {
                name: mean_average_precision(found, self.truths[preset], classes=self.classes,
                                             operating_conf=self.operating_conf)
                for name, found in by_input.items()
            }
            for preset, by_input in self.detections.items()
        }

        def mean_over_presets(name: str, key: str) -> float | None:
            values = [summary[p][name][key] for p in self.presets if summary[p][name][key] is not None]
            return float(np.mean(values)) if values else None

        return {
            "objects": {c: sum(counts[c] for counts in self.objects.values()) for c in self.classes},
            "frames_per_preset": {p: len(self.truths[p]) for p in self.presets},
            "timing": {
                "median_fuse_s": {n: float(np.median(t)) if t else 0.0 for n, t in self.fuse_times.items()},
                "median_detect_s": float(np.median(self.detect_times)) if self.detect_times else None,
            },
            "summary": summary,
            "overall": {
                name: {key: mean_over_presets(name, key) for key in ("mAP50", "mAP50-95", "recall", "precision")}
                for name in self.inputs
            },
        }


def detector_record(settings: DetectEvalSettings, detector) -> dict:
    return {
        "model": settings.detector,
        "names": {str(k): v for k, v in detector.names.items()},
        "imgsz": detector.image_size,
        "conf": settings.conf,
        "iou": settings.iou,
        "device": detector.device,
    }


def model_image_size(model) -> int | None:
    """The image size an ultralytics model was trained at, when its checkpoint records it."""
    args = getattr(getattr(model, "model", None), "args", None) or getattr(model, "overrides", {})
    size = args.get("imgsz") if isinstance(args, dict) else None
    if isinstance(size, (list, tuple)) and size:
        size = max(size)
    return int(size) if isinstance(size, (int, float)) and size > 0 else None


def build_detector(settings: DetectEvalSettings):
    """The detector node's ``YoloDetector`` with ``settings``' thresholds and image size."""
    from mex_fusion_ros.nodes.yolo import DetectorError, YoloDetector

    try:
        detector = YoloDetector(settings.detector, device=settings.device, conf=settings.conf, iou=settings.iou)
    except DetectorError as exc:
        raise DetectEvalError(f"detector: {exc}") from exc
    detector.image_size = settings.imgsz or model_image_size(detector.model) or 640
    return detector


def scored_classes(labelled: Sequence[str], detector_names: dict[int, str]) -> tuple[list[str], list[str]]:
    """The label classes the detector knows (scored) and those it does not; an error when none is shared."""
    known = set(detector_names.values())
    labelled = list(labelled)
    scored = [name for name in labelled if name in known]
    if not scored:
        raise DetectEvalError(
            f"the detector's classes ({', '.join(sorted(known)[:12])}{', ...' if len(known) > 12 else ''}) share no "
            f"name with the labels' classes ({', '.join(labelled)}); detections are matched to labels by class name"
        )
    return scored, [name for name in labelled if name not in known]


def run_detection_eval(settings: DetectEvalSettings, *, progress: bool = True) -> DetectEvalOutcome:
    """Run one evaluation (module docstring); ``DetectEvalError`` naming the bad input."""
    from mex_fusion_ros.detect.dataset import DetectDatasetError
    from mex_fusion_ros.detect.inputs import InputError

    try:
        presets = resolve_presets(settings.presets)
    except EvalError as exc:
        raise DetectEvalError(str(exc)) from exc
    if not 0.0 <= settings.operating_conf <= 1.0 or not 0.0 <= settings.conf <= 1.0:
        raise DetectEvalError("confidences must be in [0, 1]")
    try:
        dataset = load_labelled_dataset(settings.data, settings.labels, settings.limit)
        inputs = build_inputs(settings.inputs, device=settings.device)
    except (DetectDatasetError, InputError) as exc:
        raise DetectEvalError(str(exc)) from exc
    detector = build_detector(settings)
    scored, unknown = scored_classes(dataset.classes, detector.names)
    started = time.perf_counter()
    scorer = FrameScorer(detector, scored, [i.name for i in inputs], list(presets), settings.operating_conf)
    bar = tqdm(total=len(dataset.pairs) * len(presets), desc="detect eval", unit="pair", disable=not progress)
    with bar:
        for index, pair in enumerate(dataset.pairs):
            try:
                clean_ir, clean_vi = read_pair(pair)
            except DatasetError as exc:
                raise DetectEvalError(str(exc)) from exc
            height, width = clean_vi.shape[:2]
            boxes = dataset.boxes(pair.name, (width, height))
            for preset in presets:
                bar.set_postfix_str(f"{pair.name} {preset}", refresh=False)
                seed = degradation_seed(settings.seed, pair.name, preset)
                degraded = apply_preset(preset, clean_ir, clean_vi, seed=seed)
                frame = LabelledFrame(pair.name, preset, boxes, {}, sample=index < settings.grid_images)
                for item in inputs:
                    try:
                        frame.images[item.name], frame.fuse_s[item.name] = item.image(degraded.ir, degraded.vi)
                    except Exception as exc:  # whatever went wrong inside the fuser, say where
                        raise DetectEvalError(f"input {item.name!r} failed on {pair.name} ({preset}): {exc}") from exc
                scorer.add(frame)
                bar.update(1)

    results = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": settings.command,
        "dataset": str(Path(settings.data).resolve()),
        "labels": str(dataset.labels.path),
        "images": [pair.name for pair in dataset.pairs],
        "classes": scored,
        "classes_not_scored": unknown,
        "detector": detector_record(settings, detector),
        "operating_conf": settings.operating_conf,
        "presets": list(presets),
        "preset_descriptions": {p: PRESETS[p].description for p in presets},
        "inputs": [item.name for item in inputs],
        "input_specs": {item.name: item.spec for item in inputs},
        "settings": {"seed": settings.seed, "limit": settings.limit},
        "versions": software_versions(),
        **scorer.results(),
        "wall_time_s": time.perf_counter() - started,
    }
    return DetectEvalOutcome(results, scorer.samples, scorer.detections, scorer.truths)
