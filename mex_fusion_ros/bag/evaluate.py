"""Offline replay of a bag: pair with the node's synchroniser, fuse with the node's pipeline, score.

No DDS: messages come straight out of the bag (``bag.reader``), in the order they were recorded.
The two pieces that decide what a fused frame looks like are the live node's own:

- pairing: ``sync.synchronizer.PairSynchronizer`` (approximate mode by default, so every thermal
  frame is used once with its nearest RGB frame; ``latest`` reproduces the node's default);
- inference: ``nodes.pipeline.FusionPipeline`` around ``fusion.registry.create_fuser(spec)``
  (decode -> thermal to [0, 1] with the AGC for 16-bit -> homography registration -> fuse ->
  uint8), built from the same ``fusion_node`` parameters (``config.load_config``).

So for the same bag and parameters, the fused frames written here are the ones the node publishes
(fp32, CPU). Each method gets its own pipeline (its own AGC state); a separate pipeline with the
same settings produces the registered inputs the metrics are computed against.

Problems do not end the run: undecodable messages, stamps out of order and a bag that ends early
(truncated) are counted and reported next to the number of pairs that were processed.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from mex_fusion_ros.bag import (
    FUSED_TOPIC,
    REFERENCE_RGB_TOPIC,
    REFERENCE_THERMAL_TOPIC,
    RGB_TOPIC,
    THERMAL_TOPIC,
    TIMELINE_SIDECAR,
    TIMELINE_TOPIC,
)
from mex_fusion_ros.bag.detection import LabelError, LabelSet, read_labels
from mex_fusion_ros.bag.make import OBJECTS_SIDECAR
from mex_fusion_ros.bag.reader import BagError, BagReader, ImageMessage, read_json_sidecar
from mex_fusion_ros.bag.timeline import (
    TimelineError,
    TimelineSegment,
    parse_document,
    parse_segment,
    segment_at,
)
from mex_fusion_ros.bag.writer import BagWriter
from mex_fusion_ros.codec.agc import ThermalAGC
from mex_fusion_ros.config import default_parameters
from mex_fusion_ros.data.degradations import DEGRADATION_TYPES
from mex_fusion_ros.eval.detection_metrics import ScoredBox, count_by_class, mean_average_precision
from mex_fusion_ros.fusion.base import FusionResult
from mex_fusion_ros.nodes.pipeline import FusionPipeline, to_uint8
from mex_fusion_ros.sync.synchronizer import SYNC_MODES, FramePair, PairSynchronizer, StampedFrame

#: No-reference metrics (fused against the degraded, registered inputs), as the issue lists them.
NO_REFERENCE_METRICS = ("EN", "SD", "SF", "AG", "MI", "VIF", "Q_abf", "SCD")
#: Metrics against the clean sources when the bag has reference topics.
REFERENCE_METRICS = ("PSNR", "SSIM", "CC", "MI", "VIF", "Q_abf", "SCD")
#: Pairs wait this long (bag time) for their reference frames before they are processed without.
REFERENCE_WAIT_NS = 500_000_000
VIDEO_PANEL_HEIGHT = 256
#: With automatic ``metrics_every``, about this many pairs are scored (the metrics cost more than
#: a classical fusion; the time series stays readable).
AUTO_SCORED_PAIRS = 100


class EvalSetupError(ValueError):
    """A method cannot be set up (unknown spec, missing or incompatible weights); names the method."""


@dataclass
class BagEvalSettings:
    """What one offline evaluation depends on (``fusion_node`` parameters come from ``node_params``)."""

    bag: Path
    methods: tuple[str, ...]
    out: Path
    #: ``fusion_node`` parameters (``config.load_config(...)['fusion_node']``); missing keys: schema defaults.
    node_params: dict = field(default_factory=dict)
    sync_mode: str = "approximate"
    slop: float | None = None
    thermal_topic: str = THERMAL_TOPIC
    rgb_topic: str = RGB_TOPIC
    device: str = "cpu"
    #: Runtime of the network fusers: torch, onnxruntime or tensorrt (``deploy.backends``).
    backend: str = "torch"
    #: Compute metrics on every n-th pair (1 = all, 0 = enough for about ``AUTO_SCORED_PAIRS``);
    #: fusion, timing and the output bags always cover every pair.
    metrics_every: int = 0
    limit: int | None = None
    write_bags: bool = True
    write_video: bool = True
    num_samples: int = 5
    #: Ultralytics model for detection counts and mAP (None: no detection); runs on every fused
    #: frame and on the thermal-only and RGB-only inputs.
    detector: str | None = None
    detector_conf: float = 0.25
    #: Labels keyed by RGB stamp: a JSON file, a YOLO txt directory or a COCO JSON
    #: (``detection.read_labels``); default: the bag's ``scene_objects.json`` when it has one.
    labels: Path | None = None

    def __post_init__(self) -> None:
        if not self.methods:
            raise EvalSetupError("at least one --method is needed")
        if self.sync_mode not in SYNC_MODES:
            raise EvalSetupError(f"sync mode must be one of {SYNC_MODES}, got {self.sync_mode!r}")
        if self.metrics_every < 0:
            raise EvalSetupError(f"metrics_every must be >= 0 (0 = automatic), got {self.metrics_every}")
        if self.limit is not None and self.limit < 1:
            raise EvalSetupError(f"limit must be >= 1, got {self.limit}")


@dataclass
class PairRecord:
    """What happened to one pair with one method."""

    index: int
    stamp_ns: int
    thermal_stamp_ns: int
    skew_ms: float
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float
    forward_ms: float
    total_ms: float
    truth_preset: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    reference_metrics: dict[str, float] = field(default_factory=dict)
    degradation: dict[str, dict[str, float]] | None = None
    routing: list[dict] = field(default_factory=list)
    #: Detections per class on the fused frame (with a detector).
    detections: dict[str, int] | None = None


@dataclass
class BagEvalOutcome:
    settings: dict
    bag_info: dict
    timeline: list[dict]
    sync: dict
    problems: dict[str, int]
    stopped_early: str | None
    pairs_processed: int
    records: dict[str, list[PairRecord]]
    failures: dict[str, int]
    elapsed_s: float
    samples: list[dict] = field(default_factory=list)
    video: str | None = None
    bags: dict[str, str] = field(default_factory=dict)
    #: With a detector: model, counts per source over time and, with labels, mAP per source.
    detection: dict | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        data["records"] = {method: [asdict(r) for r in records] for method, records in self.records.items()}
        return data


def load_timeline(reader: BagReader) -> list[TimelineSegment]:
    """The bag's degradation timeline: the JSON sidecar, else the timeline topic, else empty."""
    document = read_json_sidecar(reader.path, TIMELINE_SIDECAR)
    if document is not None:
        return parse_document(document, str(Path(reader.path) / TIMELINE_SIDECAR))
    if TIMELINE_TOPIC in reader.topics:
        segments = [
            parse_segment(msg.data, f"{reader.path} {TIMELINE_TOPIC}") for msg in reader.iter_strings(TIMELINE_TOPIC)
        ]
        return sorted(segments, key=lambda s: s.start_ns)
    return []


def _sync_stats_json(synchronizer: PairSynchronizer) -> dict:
    stats = synchronizer.stats
    return {
        "mode": synchronizer.mode,
        "slop_s": synchronizer.slop,
        "queue_size": synchronizer.queue_size,
        "thermal_offset_s": synchronizer.thermal_offset,
        "pairs": stats.pairs,
        **{
            camera: {
                "received": counts.received,
                "matched": counts.matched,
                "queued": counts.queued,
                "dropped": {reason.value: n for reason, n in counts.dropped.items()},
            }
            for camera, counts in (("thermal", stats.thermal), ("rgb", stats.rgb))
        },
    }


def _degradation_json(result: FusionResult) -> dict[str, dict[str, float]] | None:
    if result.degradation is None:
        return None
    return {
        "probabilities": {k: float(v) for k, v in result.degradation.probabilities.items()},
        "severities": {k: float(v) for k, v in result.degradation.severities.items()},
        "thresholds": {k: result.degradation.threshold(k) for k in result.degradation.probabilities},
    }


def _panel(image: np.ndarray, height: int) -> np.ndarray:
    """uint8 RGB panel of ``height`` rows from a float [0, 1] or uint8 grey/colour image."""
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _caption(panel: np.ndarray, text: str) -> np.ndarray:
    panel = panel.copy()
    cv2.rectangle(panel, (0, 0), (min(panel.shape[1], 8 + 7 * len(text)), 16), (0, 0, 0), -1)
    cv2.putText(panel, text, (4, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return panel


class _Evaluation:
    """State of one run; ``run()`` does the work (kept in a class so the helpers share it)."""

    def __init__(self, settings: BagEvalSettings, progress: bool) -> None:
        from mex_fusion_ros.fusion.registry import create_fuser

        self.settings = settings
        self.progress = progress
        # The node's schema defaults, then what the caller loaded from its parameters file.
        params = {**default_parameters("fusion_node"), **settings.node_params}
        slop = settings.slop if settings.slop is not None else float(params["sync.slop"])
        self.synchronizer = PairSynchronizer(
            mode=settings.sync_mode,
            slop=slop,
            queue_size=int(params["sync.queue_size"]),
            thermal_offset=float(params["sync.thermal_offset"]),
        )
        self.node_params = params

        def pipeline(fuser) -> FusionPipeline:
            # Built like FusionNode.load_fuser builds its pipeline, from the same parameters.
            agc = ThermalAGC(
                float(params["agc.low_percentile"]),
                float(params["agc.high_percentile"]),
                float(params["agc.smoothing"]),
            )
            return FusionPipeline(
                fuser,
                homography=params["registration.homography"],
                output_size=(int(params["output.width"]), int(params["output.height"])),
                color=bool(params["output.color"]),
                agc=agc,
            )

        self.pipelines: dict[str, FusionPipeline] = {}
        for spec in settings.methods:
            if spec in self.pipelines:
                raise EvalSetupError(f"method {spec!r} given twice")
            try:
                fuser = create_fuser(spec, device=settings.device, half=False, backend=settings.backend)
            except (ValueError, OSError, RuntimeError, ImportError) as exc:
                raise EvalSetupError(f"method {spec!r} cannot be set up: {exc}") from exc
            self.pipelines[spec] = pipeline(fuser)
        first = next(iter(self.pipelines.values())).fuser
        # Registered inputs and clean references for the metrics, through the same preprocessing.
        self.inputs = pipeline(first)
        self.references = pipeline(first)
        self.records: dict[str, list[PairRecord]] = {spec: [] for spec in settings.methods}
        self.failures: Counter[str] = Counter()
        self.pairs_processed = 0
        self.samples: list[dict] = []
        self.video: cv2.VideoWriter | None = None
        self.video_path: Path | None = None
        self.writers: dict[str, BagWriter] = {}
        self.detector = None
        if settings.detector:
            from mex_fusion_ros.nodes.yolo import DetectorError, YoloDetector

            try:
                self.detector = YoloDetector(settings.detector, device=settings.device, conf=settings.detector_conf)
            except DetectorError as exc:
                raise EvalSetupError(f"detector {settings.detector!r} cannot be set up: {exc}") from exc
        #: source ("thermal only", "RGB only", each method) -> every detection, keyed by pair stamp.
        self.detections: dict[str, list[ScoredBox]] = defaultdict(list)
        #: source -> [(pair stamp, counts per class)]
        self.detection_counts: dict[str, list[tuple[int, dict[str, int]]]] = defaultdict(list)
        #: pair stamp -> (width, height) of its fused frame, to convert YOLO label fractions to pixels.
        self.frame_sizes: dict[int, tuple[int, int]] = {}

    # ---------------------------------------------------------------------------------- helpers
    def _metrics(self, ir, vi, fused, clean_ir, clean_vi) -> tuple[dict, dict]:
        from mex_fusion_ros.eval.metrics import METRICS, fusion_metrics

        no_ref = [name for name in NO_REFERENCE_METRICS if name in METRICS]
        metrics = fusion_metrics(ir, vi, fused, names=no_ref)
        reference = {}
        if clean_ir is not None and clean_vi is not None:
            names = [name for name in REFERENCE_METRICS if name in METRICS]
            reference = fusion_metrics(ir, vi, fused, clean_ir=clean_ir, clean_vi=clean_vi, names=names)
        finite = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        finite_ref = {k: float(v) for k, v in reference.items() if v is not None and math.isfinite(float(v))}
        return finite, finite_ref

    def _sample_slots(self, timeline: list[TimelineSegment], expected_pairs: int) -> list[dict]:
        """Where to take sample frames: the middle of each timeline segment, else evenly spaced."""
        count = max(1, self.settings.num_samples)
        if timeline:
            return [{"target_ns": (s.start_ns + s.end_ns) // 2, "label": s.preset, "best": None} for s in timeline]
        return [
            {
                "target_index": int((i + 0.5) * expected_pairs / count),
                "label": f"pair {int((i + 0.5) * expected_pairs / count)}",
                "best": None,
            }
            for i in range(count)
        ]

    def _offer_sample(self, index: int, stamp: int, panels: list[tuple[str, np.ndarray]]) -> None:
        for slot in self.sample_slots:
            distance = abs(stamp - slot["target_ns"]) if "target_ns" in slot else abs(index - slot["target_index"])
            if slot["best"] is None or distance < slot["best"][0]:
                slot["best"] = (distance, index, stamp, panels)

    def _write_video_frame(self, panels: list[tuple[str, np.ndarray]], caption: str, fps: float) -> None:
        row = np.concatenate([_caption(_panel(image, VIDEO_PANEL_HEIGHT), name) for name, image in panels], axis=1)
        if caption:
            cv2.putText(
                row,
                caption,
                (4, row.shape[0] - 6),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.45,
                (255, 255, 0),
                1,
                cv2.LINE_AA,
            )
        if self.video is None:
            self.video_path = self.settings.out / "side_by_side.mp4"
            height, width = row.shape[:2]
            self.video = cv2.VideoWriter(str(self.video_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
            if not self.video.isOpened():
                raise BagError(f"cannot open an mp4v video writer at {self.video_path}")
            self.video_size = (width, height)
        if (row.shape[1], row.shape[0]) != self.video_size:  # input size changed mid-bag
            row = cv2.resize(row, self.video_size, interpolation=cv2.INTER_AREA)
        self.video.write(cv2.cvtColor(row, cv2.COLOR_RGB2BGR))

    # ---------------------------------------------------------------------------------- per pair
    def process(
        self,
        pair: FramePair,
        refs: dict[str, dict[int, np.ndarray]],
        timeline: list[TimelineSegment],
        video_fps: float,
    ) -> None:
        thermal: ImageMessage = pair.thermal.data
        rgb: ImageMessage = pair.rgb.data
        index = self.pairs_processed
        self.pairs_processed += 1
        truth = segment_at(timeline, pair.stamp_ns) if timeline else None
        ir, vi = self.inputs.prepare(thermal.image, rgb.image)
        clean_ir = clean_vi = None
        clean_thermal = refs[REFERENCE_THERMAL_TOPIC].get(thermal.stamp_ns)
        clean_rgb = refs[REFERENCE_RGB_TOPIC].get(rgb.stamp_ns)
        if clean_thermal is not None and clean_rgb is not None:
            clean_ir, clean_vi = self.references.prepare(clean_thermal, clean_rgb)
        score = index % self.metrics_every == 0
        panels: list[tuple[str, np.ndarray]] = [("thermal", ir), ("RGB", vi)]
        # Restorations of fusers that restore go into the sample frames only.
        restored: list[tuple[str, np.ndarray]] = []
        if self.detector is not None:
            self.frame_sizes[pair.stamp_ns] = (vi.shape[1], vi.shape[0])  # the fused frame's geometry
            self._detect("thermal only", to_uint8(ir, color=False), pair.stamp_ns)
            self._detect("RGB only", to_uint8(vi, color=True), pair.stamp_ns)
        for spec, pipeline in self.pipelines.items():
            try:
                frame = pipeline.process(thermal.image, rgb.image)
            except Exception as exc:  # noqa: BLE001 - one bad pair is counted, the run goes on (like the node)
                self.failures[f"{spec}: {type(exc).__name__}: {exc}"] += 1
                continue
            total = frame.preprocess_ms + frame.inference_ms + frame.postprocess_ms
            record = PairRecord(
                index=index,
                stamp_ns=pair.stamp_ns,
                thermal_stamp_ns=pair.thermal.stamp_ns,
                skew_ms=pair.skew_ns / 1e6,
                preprocess_ms=frame.preprocess_ms,
                inference_ms=frame.inference_ms,
                postprocess_ms=frame.postprocess_ms,
                forward_ms=frame.forward_ms,
                total_ms=total,
                truth_preset=truth.preset if truth else None,
            )
            if frame.result is not None:
                record.degradation = _degradation_json(frame.result)
                record.routing = [
                    {"gate": r.gate, "experts": list(r.experts), "weights": [float(w) for w in r.weights]}
                    for r in frame.result.routing
                ]
            if score:
                fused = frame.fused.astype(np.float32) * np.float32(1.0 / 255.0)
                if fused.ndim == 3 and vi.ndim == 2:
                    fused = fused.mean(axis=2)
                record.metrics, record.reference_metrics = self._metrics(ir, vi, fused, clean_ir, clean_vi)
            self.records[spec].append(record)
            if spec in self.writers:
                encoding = "rgb8" if frame.fused.ndim == 3 else "mono8"
                self.writers[spec].write_image(FUSED_TOPIC, pair.stamp_ns, frame.fused, encoding, frame_id=rgb.frame_id)
            shown = frame.fused
            if self.detector is not None:
                record.detections, shown = self._detect(spec, frame.fused, pair.stamp_ns)
            panels.append((spec, shown))
            if frame.restored_thermal is not None:
                restored.append((f"{spec} restored thermal", frame.restored_thermal))
            if frame.restored_rgb is not None:
                restored.append((f"{spec} restored RGB", frame.restored_rgb))
        panels += restored
        if clean_ir is not None:
            panels += [("clean thermal", clean_ir), ("clean RGB", clean_vi)]
        self._offer_sample(index, pair.stamp_ns, panels)
        if self.settings.write_video:
            self._write_video_frame(panels[: 2 + len(self.pipelines)], truth.preset if truth else "", video_fps)

    def _detect(self, source: str, image: np.ndarray, stamp: int) -> tuple[dict[str, int], np.ndarray]:
        """Run the detector on one uint8 image; returns counts per class and the image with boxes."""
        found = self.detector.detect(image)
        shown = image.copy() if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
        for box in found.boxes:
            self.detections[source].append(
                ScoredBox(stamp, box.class_name, box.score, (box.x1, box.y1, box.x2, box.y2))
            )
            corner0, corner1 = (int(box.x1), int(box.y1)), (int(box.x2), int(box.y2))
            cv2.rectangle(shown, corner0, corner1, (255, 64, 64), 1)
            cv2.putText(
                shown,
                box.class_name,
                (corner0[0], max(8, corner0[1] - 2)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.3,
                (255, 64, 64),
                1,
                cv2.LINE_AA,
            )
        counts = count_by_class(box.class_name for box in found.boxes)
        self.detection_counts[source].append((stamp, counts))
        return counts, shown

    def _load_labels(self) -> None:
        """Labels for mAP: ``settings.labels``, else the bag's ``scene_objects.json``; read before any work.

        Every format is read and validated here, so a malformed labels file or directory stops the
        run before anything is fused. YOLO txt boxes stay fractions of the image until scoring:
        each pair's boxes are converted with the size of that pair's fused frame (recorded in
        ``process``; the RGB size unless ``output.width/height`` set one), the geometry the
        detector saw. That size is only known once a frame is decoded, and converting per pair
        stays right even if the RGB size changes mid-bag.
        """
        self.labels_path: Path | None = self.settings.labels
        if self.labels_path is None:
            bag = Path(self.settings.bag)
            default = (bag if bag.is_dir() else bag.parent) / OBJECTS_SIDECAR
            self.labels_path = default if default.is_file() else None
        self.labels: LabelSet | None = None
        if self.detector is not None and self.labels_path is not None:
            try:
                self.labels = read_labels(self.labels_path)
            except LabelError as exc:
                raise EvalSetupError(str(exc)) from exc

    def _detection_summary(self, stamps: list[int]) -> dict | None:
        if self.detector is None:
            return None
        counts = {
            source: [{"stamp_ns": s, "counts": c} for s, c in rows] for source, rows in self.detection_counts.items()
        }
        summary: dict = {
            "model": self.settings.detector,
            "conf": self.settings.detector_conf,
            "labels": None,
            "counts": counts,
            "map": {},
        }
        if self.labels is not None:
            # Every processed pair is a labelled frame: absent from the file means no objects in it.
            truths = {stamp: self.labels.boxes_at(stamp, self.frame_sizes.get(stamp)) for stamp in stamps}
            summary["labels"] = str(self.labels_path)
            summary["map"] = {
                source: mean_average_precision(self.detections.get(source, []), truths)
                for source in self.detection_counts
            }
        return summary

    # ---------------------------------------------------------------------------------- main loop
    def run(self) -> BagEvalOutcome:
        settings = self.settings
        start = time.perf_counter()
        settings.out.mkdir(parents=True, exist_ok=True)
        self._load_labels()
        stopped_early = None
        with BagReader(settings.bag) as reader:
            info = reader.info()
            thermal_count = reader.check_topic(settings.thermal_topic).count
            rgb_count = reader.check_topic(settings.rgb_topic).count
            try:
                timeline = load_timeline(reader)
            except (TimelineError, BagError) as exc:
                reader.problems[f"timeline unreadable: {exc}"] += 1
                timeline = []
            reference_topics = [t for t in (REFERENCE_THERMAL_TOPIC, REFERENCE_RGB_TOPIC) if t in reader.topics]
            if len(reference_topics) == 1:
                reader.problems[f"only one reference topic ({reference_topics[0]}); reference metrics skipped"] += 1
                reference_topics = []
            topics = [settings.thermal_topic, settings.rgb_topic, *reference_topics]
            duration_s = max(info["duration_s"], 1e-9)
            video_fps = float(np.clip(thermal_count / duration_s, 1.0, 60.0))
            expected_pairs = min(thermal_count, rgb_count)
            self.metrics_every = settings.metrics_every or max(1, math.ceil(expected_pairs / AUTO_SCORED_PAIRS))
            self.sample_slots = self._sample_slots(timeline, expected_pairs)
            if settings.write_bags:
                for spec in settings.methods:
                    name = spec.replace("/", "_").replace(":", "_")
                    path = settings.out / "bags" / name
                    if path.exists():
                        raise BagError(f"output bag {path} already exists; choose another --out")
                    self.writers[spec] = BagWriter(path, storage=reader.storage)
                    self.writers[spec].open()
            refs: dict[str, dict[int, np.ndarray]] = {REFERENCE_THERMAL_TOPIC: {}, REFERENCE_RGB_TOPIC: {}}
            pending: list[FramePair] = []
            total = sum(reader.topics[t].count for t in topics)
            bar = tqdm(total=total, desc=f"bag eval {Path(settings.bag).name}", unit="msg", disable=not self.progress)

            def drain(now_ns: int | None) -> bool:
                """Process pending pairs whose references arrived or can no longer arrive."""
                while pending:
                    pair = pending[0]
                    have_refs = not reference_topics or (
                        pair.thermal.stamp_ns in refs[REFERENCE_THERMAL_TOPIC]
                        and pair.rgb.stamp_ns in refs[REFERENCE_RGB_TOPIC]
                    )
                    newest = max(pair.thermal.stamp_ns, pair.rgb.stamp_ns)
                    if not have_refs and now_ns is not None and now_ns < newest + REFERENCE_WAIT_NS:
                        return True
                    pending.pop(0)
                    self.process(pair, refs, timeline, video_fps)
                    if settings.limit is not None and self.pairs_processed >= settings.limit:
                        return False
                # References older than anything still to come are no longer needed.
                if now_ns is not None:
                    for table in refs.values():
                        for stamp in [s for s in table if s < now_ns - 2 * REFERENCE_WAIT_NS]:
                            del table[stamp]
                return True

            try:
                keep_going = True
                for message in reader.iter_images(topics):
                    bar.update(1)
                    if message.topic in refs:
                        refs[message.topic][message.stamp_ns] = message.image
                    else:
                        frame = StampedFrame(message.stamp_ns, message)
                        if message.topic == settings.thermal_topic:
                            pending.extend(self.synchronizer.add_thermal(frame))
                        else:
                            pending.extend(self.synchronizer.add_rgb(frame))
                    keep_going = drain(message.log_time_ns)
                    if not keep_going:
                        break
                if keep_going:
                    pending.extend(self.synchronizer.flush())
                    drain(None)
            except BagError as exc:
                # A truncated or corrupt bag: report what was processed up to here.
                stopped_early = str(exc)
                pending.extend(self.synchronizer.flush())
                drain(None)
            finally:
                bar.close()
                for writer in self.writers.values():
                    writer.close()
                if self.video is not None:
                    self.video.release()
            problems = dict(reader.problems)
            if reader.salvaged and stopped_early is None:
                stopped_early = reader.salvaged

        samples = self._save_samples()
        stamps = sorted({r.stamp_ns for records in self.records.values() for r in records})
        detection = self._detection_summary(stamps)
        return BagEvalOutcome(
            settings={
                "bag": str(settings.bag),
                "methods": list(settings.methods),
                "sync_mode": settings.sync_mode,
                "slop_s": self.synchronizer.slop,
                "device": settings.device,
                "backend": settings.backend,
                "metrics_every": self.metrics_every,
                "limit": settings.limit,
                "node_params": {
                    k: v
                    for k, v in self.node_params.items()
                    if k.startswith(("sync.", "agc.", "registration.", "output."))
                },
                "degradation_types": list(DEGRADATION_TYPES),
            },
            bag_info=info,
            timeline=[asdict(s) for s in timeline],
            sync=_sync_stats_json(self.synchronizer),
            problems=problems,
            stopped_early=stopped_early,
            pairs_processed=self.pairs_processed,
            records=self.records,
            failures=dict(self.failures),
            elapsed_s=time.perf_counter() - start,
            samples=samples,
            video=str(self.video_path) if self.video_path else None,
            bags={spec: str(w.path) for spec, w in self.writers.items()},
            detection=detection,
        )

    def _save_samples(self) -> list[dict]:
        folder = self.settings.out / "samples"
        saved = []
        for number, slot in enumerate(self.sample_slots):
            if slot["best"] is None:
                continue
            _, index, stamp, panels = slot["best"]
            if any(s["index"] == index for s in saved):
                continue
            folder.mkdir(parents=True, exist_ok=True)
            row = np.concatenate([_caption(_panel(image, VIDEO_PANEL_HEIGHT), name) for name, image in panels], axis=1)
            path = folder / f"sample_{number:02d}_{slot['label']}.png"
            cv2.imwrite(str(path), cv2.cvtColor(row, cv2.COLOR_RGB2BGR))
            saved.append(
                {
                    "index": index,
                    "stamp_ns": stamp,
                    "label": slot["label"],
                    "path": str(path),
                    "panels": [name for name, _ in panels],
                }
            )
        return saved


def evaluate_bag(settings: BagEvalSettings, *, progress: bool = True) -> BagEvalOutcome:
    """Run the offline evaluation; ``BagError`` only when nothing can be evaluated at all
    (not a bag, camera topic missing/wrong type/empty), otherwise an outcome that says what happened."""
    return _Evaluation(settings, progress).run()


def save_outcome_json(outcome: BagEvalOutcome, path: Path) -> None:
    path.write_text(json.dumps(outcome.to_json(), indent=1, default=str))


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """Mean, p50, p90, p99 and max of ``values`` (empty dict for no values)."""
    if not values:
        return {}
    array = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(array.mean()),
        "p50": float(np.percentile(array, 50)),
        "p90": float(np.percentile(array, 90)),
        "p99": float(np.percentile(array, 99)),
        "max": float(array.max()),
        "count": int(array.size),
    }
