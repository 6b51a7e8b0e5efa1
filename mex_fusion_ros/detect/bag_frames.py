"""``detect eval --bag-eval DIR``: the detector on the frames of a ``bag eval`` run, per timeline segment.

``bag eval`` (and ``mex-fusion demo``) replays a bag through the node's synchroniser and pipeline and
writes ``bag_eval.json`` (every processed pair: RGB stamp, thermal stamp, the timeline segment it
fell in) and one output bag of fused frames per method. This reads them back and gives the
detector, for every processed pair, exactly the images the ROS graph would give it:

- ``ir``: the pair's thermal frame from the source bag after the node's pre-processing (AGC for
  16-bit, homography registration, output size: ``nodes.pipeline.FusionPipeline.prepare`` with the
  run's ``fusion_node`` parameters), as grey uint8 (what ``bag eval --detector`` calls "thermal only");
- ``vi``: the pair's RGB frame, pre-processed the same way ("RGB only");
- one input per method: the fused frame the method published, from its output bag.

Labels are keyed by the RGB header stamp (the scene's ``scene_objects.json`` beside the bag by
default, or any labels file ``bag.detection.read_labels`` reads), and the scores are grouped by the
degradation segment of the bag's timeline, so the report compares the inputs per segment. The
detector runs at the size it was trained at, as in ``detect eval`` on a dataset.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

from mex_fusion_ros.bag import FUSED_TOPIC, RGB_TOPIC, THERMAL_TOPIC
from mex_fusion_ros.bag.detection import LabelError, read_labels
from mex_fusion_ros.codec.agc import ThermalAGC
from mex_fusion_ros.data.degradations import PRESETS
from mex_fusion_ros.detect.evaluate import (
    DetectEvalError,
    DetectEvalOutcome,
    DetectEvalSettings,
    FrameScorer,
    LabelledFrame,
    build_detector,
    detector_record,
    scored_classes,
)
from mex_fusion_ros.eval.detection_metrics import ScoredBox, count_by_class, mean_average_precision
from mex_fusion_ros.eval.runner import software_versions

BAG_EVAL_FILE = "bag_eval.json"
OBJECTS_SIDECAR = "scene_objects.json"  # bag.make.OBJECTS_SIDECAR, without importing the bag writer
#: Frames without a timeline segment are grouped under this name.
NO_SEGMENT = "all"


def _load_run(folder: Path) -> dict:
    path = folder / BAG_EVAL_FILE
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise DetectEvalError(f"{path} does not exist: give the output folder of `bag eval` or `demo` "
                              "(its report/ folder)") from None
    except ValueError as exc:
        raise DetectEvalError(f"{path} is not JSON: {exc}") from None
    if not isinstance(document, dict) or not {"settings", "records", "bags"} <= set(document):
        raise DetectEvalError(f"{path} is not a bag eval result (no settings/records/bags)")
    return document


def middle(items: list, count: int) -> list:
    """The ``count`` items around the middle of ``items``."""
    first = max(0, min(len(items) - count, len(items) // 2 - count // 2))
    return items[first:first + count]


def run_bag_detection_eval(bag_eval: str | Path, settings: DetectEvalSettings, labels: str | Path | None = None,
                           grid_images: int = 1) -> DetectEvalOutcome:
    """Score ``settings.detector`` on the ``ir``, ``vi`` and fused frames of a bag eval run (module docstring).

    ``settings.data``, ``inputs`` and ``presets`` are not used: the inputs are ``ir``, ``vi`` and the
    run's methods, the groups its timeline segments. ``grid_images``: sample frames per segment
    (those nearest the middle of the segment).
    """
    from mex_fusion_ros.bag.reader import BagError, BagReader
    from mex_fusion_ros.config import default_parameters
    from mex_fusion_ros.fusion.registry import create_fuser
    from mex_fusion_ros.nodes.pipeline import FusionPipeline, to_uint8

    folder = Path(bag_eval)
    run = _load_run(folder)
    bag = Path(run["settings"]["bag"])
    methods = [m for m in run["settings"]["methods"] if m in run["bags"]]
    if not methods:
        raise DetectEvalError(f"{folder / BAG_EVAL_FILE}: the run wrote no output bag of fused frames "
                              "(bag eval --no-bags); nothing to score")
    labels_path = Path(labels) if labels is not None else (bag if bag.is_dir() else bag.parent) / OBJECTS_SIDECAR
    try:
        label_set = read_labels(labels_path)
    except LabelError as exc:
        raise DetectEvalError(str(exc)) from exc
    # Pairs every method processed, in order; each carries the timeline segment it fell in.
    by_stamp = [{r["stamp_ns"]: r for r in run["records"].get(m, [])} for m in methods]
    stamps = sorted(set.intersection(*(set(s) for s in by_stamp)))
    if not stamps:
        raise DetectEvalError(f"{folder / BAG_EVAL_FILE}: no pair was processed by every method")
    records = [by_stamp[0][s] for s in stamps]
    segment_of = {r["stamp_ns"]: r.get("truth_preset") or NO_SEGMENT for r in records}
    segments = list(dict.fromkeys(segment_of[s] for s in stamps))
    members = defaultdict(list)
    for stamp in stamps:
        members[segment_of[stamp]].append(stamp)
    shown = {stamp for segment in members.values() for stamp in middle(segment, grid_images)}

    detector = build_detector(settings)
    classes = label_set.classes or tuple(sorted({b.label for boxes in label_set.frames.values() for b in boxes}))
    scored, unknown = scored_classes(classes, detector.names)
    inputs = ["ir", "vi", *methods]
    started = time.perf_counter()
    params = {**default_parameters("fusion_node"), **run["settings"].get("node_params", {})}
    pipeline = FusionPipeline(
        create_fuser("average"),  # only prepare() is used: the node's pre-processing, no fusion
        homography=params["registration.homography"],
        output_size=(int(params["output.width"]), int(params["output.height"])),
        color=bool(params["output.color"]),
        agc=ThermalAGC(float(params["agc.low_percentile"]), float(params["agc.high_percentile"]),
                       float(params["agc.smoothing"])),
    )
    wanted_thermal = {r["thermal_stamp_ns"] for r in records}
    wanted_rgb = set(stamps)
    thermal, rgb = {}, {}
    fused: dict[str, dict[int, object]] = {m: {} for m in methods}
    try:
        with BagReader(bag) as reader:
            for message in reader.iter_images([THERMAL_TOPIC, RGB_TOPIC]):
                if message.topic == THERMAL_TOPIC and message.stamp_ns in wanted_thermal:
                    thermal[message.stamp_ns] = message.image
                elif message.topic == RGB_TOPIC and message.stamp_ns in wanted_rgb:
                    rgb[message.stamp_ns] = message.image
        for method in methods:
            with BagReader(run["bags"][method]) as reader:
                for message in reader.iter_images([FUSED_TOPIC]):
                    if message.stamp_ns in wanted_rgb:
                        fused[method][message.stamp_ns] = message.image
    except BagError as exc:
        raise DetectEvalError(str(exc)) from exc

    scorer = FrameScorer(detector, scored, inputs, segments, settings.operating_conf)
    for record in records:
        stamp = record["stamp_ns"]
        pair = (thermal.get(record["thermal_stamp_ns"]), rgb.get(stamp))
        if pair[0] is None or pair[1] is None or any(stamp not in fused[m] for m in methods):
            continue  # a frame the bag no longer holds (truncated): nothing to score it on
        ir, vi = pipeline.prepare(*pair)  # in stamp order, so the AGC state evolves as in the run
        images = {"ir": to_uint8(ir, color=False), "vi": to_uint8(vi, color=True)}
        images.update({m: fused[m][stamp] for m in methods})
        size = (images["vi"].shape[1], images["vi"].shape[0])
        scorer.add(LabelledFrame(str(stamp), segment_of[stamp], label_set.boxes_at(stamp, size), images,
                                 sample=stamp in shown))
    descriptions = {s: PRESETS[s].description if s in PRESETS else "" for s in segments}
    results = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": settings.command,
        "dataset": f"{bag} (bag eval {folder})",
        "labels": str(labels_path),
        "images": [str(s) for s in stamps],
        "classes": scored,
        "classes_not_scored": unknown,
        "detector": detector_record(settings, detector),
        "operating_conf": settings.operating_conf,
        "presets": segments,
        "preset_descriptions": {s: f"timeline segment, {d}" if d else "timeline segment"
                                for s, d in descriptions.items()},
        "inputs": inputs,
        "input_specs": {"ir": "thermal only", "vi": "RGB only", **{m: f"fused by {m}" for m in methods}},
        "settings": {"seed": None, "limit": None, "bag_eval": str(folder)},
        "versions": software_versions(),
        **scorer.results(),
        "wall_time_s": time.perf_counter() - started,
    }
    return DetectEvalOutcome(results, scorer.samples, scorer.detections, scorer.truths)


#: ``bag eval``'s names of the single-camera inputs.
BAG_EVAL_SOURCES = {"ir": "thermal only", "vi": "RGB only"}


def bag_eval_detection(outcome: DetectEvalOutcome) -> dict:
    """The detection part of a bag evaluation (``BagEvalOutcome.detection``: counts per class per pair
    at the operating confidence, mAP per input over all pairs) from a ``run_bag_detection_eval``, so
    the bag report shows what ``bag eval --detector`` would have shown, at the model's image size."""
    results = outcome.results
    conf = results["operating_conf"]
    truths = {int(frame): boxes for by_frame in outcome.truths.values() for frame, boxes in by_frame.items()}
    counts, scores = {}, {}
    for name in results["inputs"]:
        found = [box for by_input in outcome.detections.values() for box in by_input[name]]
        by_frame = defaultdict(list)
        for box in found:
            if box.score >= conf:
                by_frame[int(box.frame)].append(box.label)
        source = BAG_EVAL_SOURCES.get(name, name)
        counts[source] = [{"stamp_ns": stamp, "counts": count_by_class(by_frame[stamp])} for stamp in sorted(truths)]
        as_stamps = [ScoredBox(int(box.frame), box.label, box.score, box.box) for box in found]
        scores[source] = mean_average_precision(as_stamps, truths, classes=results["classes"], operating_conf=conf)
    return {"model": results["detector"]["model"], "conf": conf, "labels": results["labels"], "counts": counts,
            "map": scores}
