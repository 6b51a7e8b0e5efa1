"""Per-type decision thresholds for the degradation estimate, calibrated on training pairs.

The estimator outputs a presence probability per degradation type. Trained on a mix of cameras it
can be well *ordered* on a camera yet under-confident there: on MSRS the haze probability of hazy
pairs was 0.16-0.72 against at most 0.01 on clean ones, so "present at p >= 0.5" missed most of
them although a lower threshold separates them. Calibration runs the network on pairs it was
trained on (never the validation pairs), degraded with the evaluation presets and rounded as a
camera delivers them, and chooses each type's threshold by balanced accuracy, every data folder
(camera) counting equally. A type keeps 0.5 unless another threshold is clearly better, and a
moved threshold sits in the middle of the best range, away from the nearest examples.

The thresholds travel in the weights file (metadata ``presence_thresholds``); ``Fuser`` hands them
to every ``DegradationEstimate``, whose ``present()`` applies them, so the evaluation, bag reports
and nodes all decide alike. No ROS imports.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mex_fusion_ros.data.paired import ImagePair, find_pairs, read_pair_names, select_pairs
from mex_fusion_ros.fusion.base import DEFAULT_PRESENCE_THRESHOLD, ImageFuser

#: Presets the calibration degrades each pair with (the evaluation's single and mixed presets).
CALIBRATION_PRESETS = ("clean", "noise15", "noise25", "noise50", "haze", "defocus", "stripe", "mixed")
#: A threshold moves only if it gains more than this in balanced accuracy over the default.
MIN_GAIN = 0.01
#: Thresholds are kept inside these bounds: a presence called at p = 0.01 is noise, not a decision.
THRESHOLD_BOUNDS = (0.05, 0.95)


class CalibrationError(ValueError):
    """Calibration cannot be done or its result is invalid; the message says why."""


@dataclass(frozen=True)
class EstimateRecord:
    """One degraded pair's estimate: its data folder (``group``), true types and probabilities."""

    group: str
    present: frozenset[str]
    probabilities: Mapping[str, float]


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold chosen for one type and the balanced accuracy at it and at the default."""

    kind: str
    threshold: float
    #: None when the calibration pairs had no example with this type present.
    balanced_accuracy: float | None
    default_balanced_accuracy: float | None
    positives: int
    negatives: int

    def to_dict(self) -> dict[str, float | int | None]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {"threshold": round(self.threshold, 4), "balanced_accuracy": rounded(self.balanced_accuracy),
                "default_balanced_accuracy": rounded(self.default_balanced_accuracy),
                "positives": self.positives, "negatives": self.negatives}


def balanced_accuracies(records: Sequence[EstimateRecord], kind: str, thresholds: Sequence[float] | np.ndarray
                        ) -> np.ndarray | None:
    """Balanced accuracy of ``kind`` at each of ``thresholds`` (``p >= t`` is "present"): the mean over
    groups of their recall and specificity terms (a group contributes the terms it has examples
    for). None when no record has ``kind`` present.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    terms: list[np.ndarray] = []
    has_positive = False
    for group in sorted({record.group for record in records}):
        members = [record for record in records if record.group == group and kind in record.probabilities]
        positives = np.sort([r.probabilities[kind] for r in members if kind in r.present])
        negatives = np.sort([r.probabilities[kind] for r in members if kind not in r.present])
        if positives.size:
            has_positive = True
            terms.append(1.0 - np.searchsorted(positives, thresholds, side="left") / positives.size)
        if negatives.size:
            terms.append(np.searchsorted(negatives, thresholds, side="left") / negatives.size)
    if not has_positive:
        return None
    return np.mean(terms, axis=0)


def choose_threshold(records: Sequence[EstimateRecord], kind: str, *, default: float = DEFAULT_PRESENCE_THRESHOLD,
                     min_gain: float = MIN_GAIN, bounds: tuple[float, float] = THRESHOLD_BOUNDS) -> ThresholdChoice:
    """The decision threshold of ``kind``: ``default`` unless a threshold within ``bounds`` gains more
    than ``min_gain`` balanced accuracy, then the middle candidate of the best ones.

    Candidates are the midpoints between neighbouring distinct probabilities (and the bounds), so
    a chosen threshold never sits on an example.
    """
    values = np.array(sorted({float(r.probabilities[kind]) for r in records if kind in r.probabilities}))
    positives = sum(kind in r.present and kind in r.probabilities for r in records)
    negatives = sum(kind not in r.present and kind in r.probabilities for r in records)
    scored = balanced_accuracies(records, kind, [default])
    at_default = None if scored is None else float(scored[0])
    if at_default is None or negatives == 0:
        # Nothing to calibrate against: keep the default.
        return ThresholdChoice(kind, default, at_default, at_default, positives, negatives)
    low, high = bounds
    candidates = np.concatenate(([low, high], (values[1:] + values[:-1]) / 2.0)) if values.size > 1 else \
        np.array([low, high])
    candidates = np.unique(candidates[(candidates >= low) & (candidates <= high)])
    scores = balanced_accuracies(records, kind, candidates)
    assert scores is not None
    best = float(scores.max())
    if best - at_default <= min_gain:
        return ThresholdChoice(kind, default, at_default, at_default, positives, negatives)
    optimal = candidates[scores >= best - 1e-12]
    threshold = float(optimal[len(optimal) // 2])
    return ThresholdChoice(kind, threshold, best, at_default, positives, negatives)


def choose_thresholds(records: Sequence[EstimateRecord], kinds: Iterable[str], **options: float
                      ) -> dict[str, ThresholdChoice]:
    """:func:`choose_threshold` for each of ``kinds``; raises ``CalibrationError`` without records."""
    if not records:
        raise CalibrationError("no estimates to calibrate on")
    return {kind: choose_threshold(records, kind, **options) for kind in kinds}  # type: ignore[arg-type]


def collect_estimates(fuser: ImageFuser, groups: Mapping[str, Sequence[ImagePair]], *,
                      presets: Sequence[str] = CALIBRATION_PRESETS, seed: int = 0, input_bits: int = 8,
                      progress: bool = True) -> list[EstimateRecord]:
    """Run ``fuser`` on every pair of every group degraded with every preset, as ``mex-fusion eval``
    degrades and rounds them (same seeds), and keep its degradation estimates.

    ``groups``: name (e.g. the data folder) -> pairs. ``CalibrationError`` when the fuser gives no
    estimate (a classical method) or a pair cannot be read.
    """
    from tqdm import tqdm

    from mex_fusion_ros.data.degradations import apply_preset, quantize
    from mex_fusion_ros.data.paired import DatasetError, read_pair
    from mex_fusion_ros.eval.runner import degradation_seed

    records: list[EstimateRecord] = []
    total = sum(len(pairs) for pairs in groups.values()) * len(presets)
    with tqdm(total=total, desc="calibrate", unit="pair", disable=not progress) as bar:
        for group, pairs in groups.items():
            for pair in pairs:
                try:
                    ir, vi = read_pair(pair)
                except DatasetError as error:
                    raise CalibrationError(str(error)) from error
                for preset in presets:
                    degraded = apply_preset(preset, ir, vi, seed=degradation_seed(seed, pair.name, preset))
                    result = fuser.fuse(quantize(degraded.ir, input_bits), quantize(degraded.vi, input_bits))
                    if result.degradation is None:
                        raise CalibrationError(f"{fuser.name} gives no degradation estimate to calibrate")
                    records.append(EstimateRecord(group, frozenset(degraded.label.present()),
                                                  dict(result.degradation.probabilities)))
                    bar.update()
    return records


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` chose: thresholds per type, the choices behind them, and the metadata
    (data, presets, balanced accuracies) stored next to the thresholds in the weights file."""

    thresholds: dict[str, float]
    choices: dict[str, ThresholdChoice]
    metadata: dict[str, object]
    estimates: int


def calibrate(fuser: ImageFuser, groups: Mapping[str, Sequence[ImagePair]], kinds: Sequence[str], *,
              seed: int = 0, input_bits: int = 8, progress: bool = True, holdout: str | None = None,
              command: str = "") -> Calibration:
    """Collect ``fuser``'s estimates on ``groups`` (:func:`collect_estimates`) and choose every type's
    threshold (:func:`choose_thresholds`). ``CalibrationError`` when a group is empty."""
    empty = [name for name, pairs in groups.items() if not pairs]
    if empty or not groups:
        raise CalibrationError(f"no pairs left to calibrate on in {', '.join(empty) or 'the given folders'}")
    records = collect_estimates(fuser, groups, seed=seed, input_bits=input_bits, progress=progress)
    choices = choose_thresholds(records, kinds)
    metadata: dict[str, object] = {
        "command": command, "data": {name: len(pairs) for name, pairs in groups.items()}, "holdout": holdout,
        "presets": list(CALIBRATION_PRESETS), "seed": seed, "input_bits": input_bits, "estimates": len(records),
        "types": {kind: choice.to_dict() for kind, choice in choices.items()},
    }
    return Calibration({kind: choice.threshold for kind, choice in choices.items()}, choices, metadata,
                       len(records))


def calibration_table(calibration: Calibration) -> str:
    """The chosen thresholds as a text table (one row per type)."""
    def percent(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    lines = [f"{'type':<16} {'threshold':>9} {'bal. acc.':>9} {'at 0.5':>8} {'present':>8} {'absent':>7}"]
    for kind, choice in calibration.choices.items():
        lines.append(f"{kind:<16} {choice.threshold:>9.3f} {percent(choice.balanced_accuracy):>9} "
                     f"{percent(choice.default_balanced_accuracy):>8} {choice.positives:>8} {choice.negatives:>7}")
    return "\n".join(lines)


def calibration_pairs(folders: Sequence[str | os.PathLike[str]], holdout: str | os.PathLike[str] | None = None,
                      every: int = 1) -> dict[str, tuple[ImagePair, ...]]:
    """Per folder (its name as given), every ``every``-th pair not named in the ``holdout`` file.
    ``DatasetError`` for a missing folder or holdout file."""
    held_out = read_pair_names(holdout) if holdout else ()
    return {str(folder): select_pairs(find_pairs(folder).pairs, drop=held_out)[::every] for folder in folders}


def validate_thresholds(values: object, kinds: Sequence[str]) -> dict[str, float]:
    """Check a ``presence_thresholds`` mapping (type -> threshold in (0, 1)); ``CalibrationError`` if not."""
    if not isinstance(values, Mapping):
        raise CalibrationError(f"presence_thresholds must be a mapping of type -> threshold, got "
                               f"{type(values).__name__}")
    thresholds: dict[str, float] = {}
    for kind, value in values.items():
        if kind not in kinds:
            raise CalibrationError(f"presence_thresholds: unknown degradation type {kind!r}; known: {list(kinds)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0.0 < float(value) < 1.0:
            raise CalibrationError(f"presence_thresholds[{kind!r}] = {value!r}; expected a number in (0, 1)")
        thresholds[kind] = float(value)
    return thresholds


__all__ = ["CALIBRATION_PRESETS", "MIN_GAIN", "THRESHOLD_BOUNDS", "Calibration",
           "CalibrationError", "EstimateRecord", "ThresholdChoice", "balanced_accuracies", "calibrate",
           "calibration_pairs", "calibration_table", "choose_threshold", "choose_thresholds", "collect_estimates",
           "validate_thresholds"]
