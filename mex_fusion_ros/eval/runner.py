"""Evaluation runner behind ``mex-fusion eval``: degrade real pairs, fuse, score, time.

For every image pair of a dataset folder and every degradation preset, the clean pair is degraded
once (seeded by the run seed, the image name and the preset, so every method sees bit-identical
inputs and ``--limit`` does not change the inputs of the images kept), every method fuses it, and
``eval.metrics.fusion_metrics`` scores the result against the clean sources. The outcome holds
per-image results, means per preset and over presets, median time per image per method, the
network's degradation estimates when it emits them, and a few sample images for the report grid.

ROS-free. torch is imported only when a model method is evaluated (through ``fusion.registry``).
"""
from __future__ import annotations

import json
import math
import platform
import statistics
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from mex_fusion_ros import __version__
from mex_fusion_ros.data.degradations import DEGRADATION_TYPES, PRESETS, apply_preset, quantize
from mex_fusion_ros.data.paired import (
    DatasetError,
    ImagePair,
    find_pairs,
    read_pair,
    read_pair_names,
    select_pairs,
)
from mex_fusion_ros.eval.external import (
    ExternalError,
    Reference,
    load_reference,
    parse_external,
    save_degraded_inputs,
    write_inputs_manifest,
)
from mex_fusion_ros.eval.metrics import METRICS, fusion_metrics
from mex_fusion_ros.fusion.base import FusionResult, ImageFuser
from mex_fusion_ros.fusion.registry import CLASSICAL_METHODS, create_fuser

#: What ``--preset all`` means: the TG-ECNet (DeMMI-RF) evaluation set, degradation-free last.
DEFAULT_PRESETS: tuple[str, ...] = (
    "noise15", "noise25", "noise50", "haze", "defocus", "stripe", "mixed", "clean",
)
#: What ``--method baselines`` means.
BASELINES = CLASSICAL_METHODS
#: Metrics the report plots (those that ``eval.metrics`` provides).
KEY_METRICS: tuple[str, ...] = ("PSNR", "MS-SSIM", "CC", "N_abf", "Q_abf", "VIF")
#: Smallest ``--max-side``: the degradations and the pyramids need a few pixels to work on.
MIN_SIDE = 16


class EvalError(ValueError):
    """The evaluation cannot run (bad data folder, preset, method or option); the message says why."""


@dataclass(frozen=True)
class EvalSettings:
    """Everything one evaluation run depends on."""

    data: Path
    presets: tuple[str, ...]
    methods: tuple[str, ...]
    limit: int | None = None
    max_side: int | None = None
    seed: int = 0
    device: str = "auto"
    half: bool = False
    #: Images per preset shown in the report grid (the first ones, by name).
    grid_images: int = 2
    #: The command line, recorded in results.json.
    command: str = ""
    #: Text file of pair names: evaluate only these pairs (a held-out split of a folder).
    pairs: Path | None = None
    #: Degraded inputs are rounded to this many bits (8 or 16) as a camera or an image file delivers
    #: them, so files written with ``save_inputs`` hold exactly what the methods fused; 0 = float.
    input_bits: int = 8
    #: Write the degraded inputs here (``<preset>/ir|vi/<name>.png``) for other tools to fuse.
    save_inputs: Path | None = None
    #: ``NAME=DIR`` specs of fused images written by other tools for the saved inputs.
    externals: tuple[str, ...] = ()
    #: Files of reference figures (``{preset: {method: {metric: mean}}}``) shown beside the runs.
    references: tuple[Path, ...] = ()
    #: One presence threshold for every degradation type instead of each network's calibrated ones
    #: (``mex-fusion calibrate``); None = calibrated (0.5 for uncalibrated weights).
    presence_threshold: float | None = None


@dataclass
class GridSample:
    """Images of one pair under one preset, for the report grid; all float32 in [0, 1]."""

    image: str
    degraded_ir: np.ndarray
    degraded_vi: np.ndarray
    clean_ir: np.ndarray
    clean_vi: np.ndarray
    fused: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class EvalOutcome:
    """``results``: the JSON document (see ``docs/evaluation.md``); ``samples``: preset -> grid images."""

    results: dict
    samples: dict[str, list[GridSample]]


def resolve_presets(names: Iterable[str]) -> tuple[str, ...]:
    """Expand ``all`` to ``DEFAULT_PRESETS``, drop repeats, check every name is in ``PRESETS``."""
    resolved: list[str] = []
    for name in names:
        expanded = DEFAULT_PRESETS if name == "all" else (name,)
        for preset in expanded:
            if preset not in PRESETS:
                raise EvalError(f"unknown preset {preset!r}; valid: all, {', '.join(PRESETS)}")
            if preset not in resolved:
                resolved.append(preset)
    if not resolved:
        raise EvalError("no preset given; use --preset NAME (or all)")
    return tuple(resolved)


def resolve_methods(names: Iterable[str]) -> tuple[str, ...]:
    """Expand ``baselines`` to the classical methods and drop repeats (specs are checked later)."""
    resolved: list[str] = []
    for name in names:
        for method in BASELINES if name == "baselines" else (name,):
            if method not in resolved:
                resolved.append(method)
    return tuple(resolved)


def create_fusers(methods: Sequence[str], device: str = "auto", half: bool = False) -> dict[str, ImageFuser]:
    """Build every method up front, so a bad spec fails before any work; keys are report labels."""
    fusers: dict[str, ImageFuser] = {}
    for spec in methods:
        try:
            fuser = create_fuser(spec, device=device, half=half)
        # Unknown spec (ValueError), unusable weights (model.weights.WeightsError is a RuntimeError),
        # unreadable file (OSError), no torch (ImportError): all mean this method cannot run.
        except (ValueError, RuntimeError, OSError, ImportError) as error:
            raise EvalError(f"method {spec!r}: {error}") from error
        label = getattr(fuser, "name", "") or spec
        # Two specs can build fusers of the same name (e.g. two weight files of one configuration).
        fusers[spec if label in fusers else label] = fuser
    return fusers


def list_pairs(data: Path, limit: int | None = None, names_file: Path | None = None) -> tuple[ImagePair, ...]:
    """The pairs of ``data`` (sorted by name; only those named in ``names_file`` when given; first
    ``limit``); unpaired files are an error."""
    try:
        listing = find_pairs(data)
    except DatasetError as error:
        raise EvalError(str(error)) from error
    unpaired = [f"{name} (no infrared)" for name in listing.missing_ir]
    unpaired += [f"{name} (no visible)" for name in listing.missing_vi]
    if unpaired:
        shown = ", ".join(unpaired[:5]) + (f" and {len(unpaired) - 5} more" if len(unpaired) > 5 else "")
        raise EvalError(f"{data}: unpaired image files: {shown}; "
                        "every image needs a partner of the same name")
    pairs = listing.pairs
    if names_file is not None:
        try:
            pairs = select_pairs(pairs, keep=read_pair_names(names_file))
        except DatasetError as error:
            raise EvalError(f"--pairs {names_file}: {error}") from error
    if limit is not None:
        if limit < 1:
            raise EvalError(f"--limit must be >= 1, got {limit}")
        return pairs[:limit]
    return pairs


def shrink_to_max_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Resize (area interpolation) so that neither side exceeds ``max_side``; never enlarges."""
    height, width = image.shape[:2]
    if max_side is None or max(height, width) <= max_side:
        return image
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.clip(cv2.resize(image, size, interpolation=cv2.INTER_AREA), 0.0, 1.0)


def degradation_seed(seed: int, image: str, preset: str) -> int:
    """Seed of one (image, preset): stable across runs, methods, ``--limit`` and Python versions."""
    return zlib.crc32(f"{seed}/{image}/{preset}".encode()) & 0x7FFFFFFF


def software_versions() -> dict[str, str]:
    """Versions of the packages the numbers depend on (read from metadata; nothing is imported)."""
    versions = {"python": platform.python_version(), "mex_fusion_ros": __version__}
    for package in ("numpy", "opencv-python-headless", "opencv-python", "scipy", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def metric_names() -> tuple[str, ...]:
    return tuple(METRICS)


def higher_is_better(metric: str) -> bool:
    """Direction of a metric in ``eval.metrics.METRICS`` (a (bool, description) pair or an object)."""
    info = METRICS[metric]
    value = getattr(info, "higher_is_better", None)
    return bool(info[0] if value is None else value)


def metric_description(metric: str) -> str:
    info = METRICS[metric]
    value = getattr(info, "description", None)
    return str(info[1] if value is None else value)


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _degradation_record(result: FusionResult, truth: tuple[str, ...], threshold: float | None = None
                        ) -> dict | None:
    estimate = result.degradation
    if estimate is None:
        return None
    predicted = estimate.present(threshold)
    return {
        "probabilities": {k: float(v) for k, v in estimate.probabilities.items()},
        "thresholds": {k: estimate.threshold(k, threshold) for k in estimate.probabilities},
        "severities": {k: float(v) for k, v in estimate.severities.items()},
        "predicted": list(predicted),
        "label": list(truth),
    }


def _detection_accuracy(records: list[dict]) -> dict[str, float | None]:
    """Per-type accuracy (each of ``DEGRADATION_TYPES`` judged present/absent), exact-set matches,
    recall (present types detected / present types; None for clean inputs) and false alarms
    (fraction of images with a detected type that is absent)."""
    decisions = correct = exact = present = found = false_alarms = 0
    for record in records:
        predicted, truth = set(record["predicted"]), set(record["label"])
        for kind in DEGRADATION_TYPES:
            decisions += 1
            correct += (kind in predicted) == (kind in truth)
        exact += predicted == truth
        present += len(truth)
        found += len(predicted & truth)
        false_alarms += bool(predicted - truth)
    return {"type_accuracy": correct / decisions, "exact_match": exact / len(records),
            "recall": found / present if present else None, "false_alarm": false_alarms / len(records),
            "images": len(records)}


def _timed_fuse(label: str, fuser: ImageFuser, ir: np.ndarray, vi: np.ndarray, pair: ImagePair,
                preset: str, warm_up: bool = False) -> tuple[FusionResult, float]:
    """One ``fuse`` call on copies of the inputs (so no method can alter what the next one sees),
    its wall time, and a check of the output; failures name the method, image and preset.

    ``warm_up``: run once untimed first (the network's first call allocates memory and picks
    kernels; that one-off cost is not the per-image time).
    """
    try:
        if warm_up:
            fuser.fuse(ir.copy(), vi.copy())
        ir, vi = ir.copy(), vi.copy()
        tic = time.perf_counter()
        result = fuser.fuse(ir, vi)
    except Exception as error:  # whatever went wrong inside the method, say where
        raise EvalError(f"method {label!r} failed on {pair.ir_path.name} ({preset}): {error}") from error
    elapsed = time.perf_counter() - tic
    fused = getattr(result, "fused", None)
    if not isinstance(fused, np.ndarray) or fused.shape != vi.shape:
        shape = getattr(fused, "shape", type(fused).__name__)
        raise EvalError(f"method {label!r} returned a fused image of shape {shape} for {pair.ir_path.name} "
                        f"({preset}); expected {vi.shape}")
    return result, elapsed


def run_evaluation(settings: EvalSettings, *, progress: bool = True) -> EvalOutcome:
    """Run one evaluation (see the module docstring). Raises ``EvalError`` naming the bad input."""
    presets = resolve_presets(settings.presets)
    methods = resolve_methods(settings.methods)
    if settings.max_side is not None and settings.max_side < MIN_SIDE:
        raise EvalError(f"--max-side must be >= {MIN_SIDE}, got {settings.max_side}")
    if not methods and not settings.externals:
        raise EvalError("no method given; use --method NAME (or baselines) or --external NAME=DIR")
    if settings.input_bits not in (0, 8, 16):
        raise EvalError(f"--input-bits must be 8, 16 or 0 (float), got {settings.input_bits}")
    if settings.presence_threshold is not None and not 0.0 < settings.presence_threshold < 1.0:
        raise EvalError(f"--presence-threshold must lie in (0, 1), got {settings.presence_threshold}")
    if settings.save_inputs is not None and settings.input_bits == 0:
        raise EvalError("--save-inputs writes 8- or 16-bit files: use --input-bits 8 or 16")
    metrics = metric_names()
    try:
        externals = [parse_external(spec) for spec in settings.externals]
        references = [load_reference(Path(path), presets, metrics, tuple(PRESETS))
                      for path in settings.references]
    except ExternalError as error:
        raise EvalError(str(error)) from error
    fusers = create_fusers(methods, settings.device, settings.half)
    pairs = list_pairs(Path(settings.data), settings.limit, settings.pairs)
    for external in externals:
        if external.name in fusers:
            raise EvalError(f"--external {external.name}: the name is taken by a method; choose another")
        try:
            external.check(presets, [pair.name for pair in pairs])
        except ExternalError as error:
            raise EvalError(str(error)) from error
    labels = [*fusers, *(external.name for external in externals)]

    per_image: dict[str, dict[str, dict]] = {preset: {} for preset in presets}
    call_times: dict[str, list[float]] = {label: [] for label in fusers}
    preset_times: dict[str, dict[str, list[float]]] = {p: {label: [] for label in fusers} for p in presets}
    estimates: dict[str, dict[str, list[dict]]] = {label: {p: [] for p in presets} for label in fusers}
    if settings.save_inputs is not None:
        Path(settings.save_inputs).mkdir(parents=True, exist_ok=True)
    samples: dict[str, list[GridSample]] = {preset: [] for preset in presets}
    started = time.perf_counter()

    bar = tqdm(total=len(pairs) * len(presets), desc="mex-fusion eval", unit="pair", disable=not progress)
    with bar:
        for index, pair in enumerate(pairs):
            try:
                clean_ir, clean_vi = read_pair(pair)
            except DatasetError as error:
                raise EvalError(str(error)) from error
            clean_ir = shrink_to_max_side(clean_ir, settings.max_side)
            clean_vi = shrink_to_max_side(clean_vi, settings.max_side)
            for preset in presets:
                bar.set_postfix_str(f"{pair.name} {preset}", refresh=False)
                seed = degradation_seed(settings.seed, pair.name, preset)
                degraded = apply_preset(preset, clean_ir, clean_vi, seed=seed)
                truth = degraded.label.present()
                ir_in = quantize(degraded.ir, settings.input_bits)
                vi_in = quantize(degraded.vi, settings.input_bits)
                if settings.save_inputs is not None:
                    save_degraded_inputs(Path(settings.save_inputs), preset, pair.name, ir_in, vi_in,
                                         settings.input_bits)
                entry: dict = {"label": dict(degraded.label.severities), "methods": {}}
                sample = None
                if index < settings.grid_images:
                    sample = GridSample(pair.name, ir_in, vi_in, clean_ir, clean_vi)
                    samples[preset].append(sample)
                outputs: list[tuple[str, FusionResult, float | None]] = []
                for label, fuser in fusers.items():
                    first_call = index == 0 and preset == presets[0]
                    result, elapsed = _timed_fuse(label, fuser, ir_in, vi_in, pair, preset, warm_up=first_call)
                    call_times[label].append(elapsed)
                    preset_times[preset][label].append(elapsed)
                    outputs.append((label, result, elapsed))
                for external in externals:
                    try:
                        outputs.append((external.name, FusionResult(external.load(preset, pair.name, vi_in)), None))
                    except ExternalError as error:
                        raise EvalError(str(error)) from error
                for label, result, elapsed in outputs:
                    scores = fusion_metrics(ir_in, vi_in, result.fused,
                                            clean_ir=clean_ir, clean_vi=clean_vi, names=metrics)
                    record = {"metrics": {m: _finite_or_none(scores[m]) for m in metrics}, "time_s": elapsed}
                    degradation = _degradation_record(result, truth, settings.presence_threshold)
                    if degradation is not None:
                        record["degradation"] = degradation
                        estimates[label][preset].append(degradation)
                    entry["methods"][label] = record
                    if sample is not None:
                        sample.fused[label] = result.fused
                per_image[preset][pair.name] = entry
                bar.update(1)

    summary = {
        preset: {
            label: {m: _mean(entry["methods"][label]["metrics"][m] for entry in per_image[preset].values())
                    for m in metrics}
            for label in labels
        }
        for preset in presets
    }
    overall = {label: {m: _mean(summary[p][label][m] for p in presets) for m in metrics} for label in labels}
    timing = {
        label: {
            "median_s_per_image": statistics.median(call_times[label]),
            "calls": len(call_times[label]),
            "median_s_per_preset": {p: statistics.median(preset_times[p][label]) for p in presets},
        }
        for label in fusers
    }
    degradation_accuracy = {
        label: {p: _detection_accuracy(records) for p, records in by_preset.items() if records}
        for label, by_preset in estimates.items()
        if any(by_preset.values())
    }
    results = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": settings.command,
        "dataset": str(Path(settings.data).resolve()),
        "images": [pair.name for pair in pairs],
        "presets": list(presets),
        "preset_descriptions": {p: PRESETS[p].description for p in presets},
        "methods": labels,
        "method_specs": {**dict(zip(fusers, methods)),
                         **{external.name: f"external:{external.root}" for external in externals}},
        "external_methods": [external.name for external in externals],
        "references": {str(reference.path): _reference_record(reference, presets, metrics)
                       for reference in references},
        "metrics": {m: {"higher_is_better": higher_is_better(m), "description": metric_description(m)}
                    for m in metrics},
        "settings": {"seed": settings.seed, "limit": settings.limit, "max_side": settings.max_side,
                     "device": settings.device, "half": settings.half, "input_bits": settings.input_bits,
                     "pairs": str(settings.pairs) if settings.pairs else None,
                     "save_inputs": str(settings.save_inputs) if settings.save_inputs else None,
                     "presence_threshold": settings.presence_threshold},
        "versions": software_versions(),
        "wall_time_s": time.perf_counter() - started,
        "timing": timing,
        "summary": summary,
        "overall": overall,
        "degradation_accuracy": degradation_accuracy,
        "per_image": per_image,
    }
    if settings.save_inputs is not None:
        write_inputs_manifest(Path(settings.save_inputs), command=settings.command, seed=settings.seed,
                              bits=settings.input_bits, presets=list(presets), images=results["images"])
    return EvalOutcome(results=results, samples=samples)


def _reference_record(reference: Reference, presets: Sequence[str], metrics: Sequence[str]) -> dict:
    """A reference file's figures as stored in results.json: per preset and method, each metric's
    mean (None where the file has none), the pair counts and the file's own description."""
    summary = {
        preset: {method: {m: reference.summary[preset][method].get(m) for m in metrics}
                 for method in reference.summary[preset]}
        for preset in presets if preset in reference.summary
    }
    return {"about": reference.about, "summary": summary, "counts": reference.counts}


def reference_rows(results: dict) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{preset: {label: {metric: value}}}`` of every reference figure in ``results``; labels are
    ``"<method> (ref)"`` so they can never be mistaken for a run."""
    rows: dict[str, dict[str, dict[str, float | None]]] = {}
    for record in results.get("references", {}).values():
        for preset, by_method in record["summary"].items():
            for method, values in by_method.items():
                rows.setdefault(preset, {})[f"{method} (ref)"] = values
    return rows


def save_results_json(results: dict, path: Path) -> None:
    """Write ``results`` as strict JSON (non-finite numbers were stored as null)."""
    path.write_text(json.dumps(results, indent=1, allow_nan=False) + "\n", encoding="utf-8")
