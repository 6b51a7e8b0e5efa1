"""What every fuser returns and the interface it implements.

Conventions used across the project (ROS-free code):
- infrared images: ``float32`` arrays ``(H, W)`` with values in [0, 1];
- visible images: ``float32`` arrays ``(H, W, 3)``, RGB order, values in [0, 1]
  (a grayscale visible image is ``(H, W)``);
- the fused image is colour ``(H, W, 3)`` when the visible input is colour, else ``(H, W)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class GateRouting:
    """Experts a gate chose for one image: indices into the gate's experts and their weights."""

    gate: str
    experts: tuple[int, ...]
    weights: tuple[float, ...]


#: Presence threshold of a degradation type whose estimator has no calibrated one.
DEFAULT_PRESENCE_THRESHOLD = 0.5


@dataclass(frozen=True)
class DegradationEstimate:
    """Per degradation type (``mex_fusion_ros.data.degradations.DEGRADATION_TYPES``):
    probability that it is present and its estimated severity in [0, 1]."""

    probabilities: dict[str, float]
    severities: dict[str, float]
    #: Per-type decision thresholds calibrated for the network (``model.calibration``); types not
    #: listed use ``DEFAULT_PRESENCE_THRESHOLD``.
    thresholds: dict[str, float] = field(default_factory=dict)

    def threshold(self, name: str, override: float | None = None) -> float:
        """The presence threshold of type ``name``: ``override`` if given, else its calibrated one."""
        if override is not None:
            return override
        return self.thresholds.get(name, DEFAULT_PRESENCE_THRESHOLD)

    def present(self, threshold: float | None = None) -> tuple[str, ...]:
        """Types judged present: ``p >= threshold`` if given, else each type's calibrated threshold."""
        return tuple(name for name, p in self.probabilities.items() if p >= self.threshold(name, threshold))


@dataclass
class FusionResult:
    """One fused frame and what the fuser knows about it."""

    fused: np.ndarray
    restored_ir: np.ndarray | None = None
    restored_vi: np.ndarray | None = None
    degradation: DegradationEstimate | None = None
    routing: list[GateRouting] = field(default_factory=list)
    #: Seconds spent per stage, e.g. {"preprocess": ..., "forward": ..., "postprocess": ...}.
    timings: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class ImageFuser(Protocol):
    """Anything that fuses one registered infrared/visible pair (same height and width)."""

    #: Short name used in reports and diagnostics ("nano", "laplacian", ...).
    name: str

    def fuse(self, ir: np.ndarray, vi: np.ndarray) -> FusionResult:
        """Fuse ``ir`` ``(H, W)`` and ``vi`` ``(H, W, 3)`` or ``(H, W)``, float32 in [0, 1]."""
        ...


class FusionInputError(ValueError):
    """The images given to a fuser cannot be fused (shape, dtype, range); the message says why."""


def check_pair(ir: np.ndarray, vi: np.ndarray) -> None:
    """Raise ``FusionInputError`` unless ``ir``/``vi`` follow the conventions above."""
    if not isinstance(ir, np.ndarray) or not isinstance(vi, np.ndarray):
        raise FusionInputError(f"expected numpy arrays, got {type(ir).__name__} and {type(vi).__name__}")
    if ir.ndim != 2:
        raise FusionInputError(f"infrared must be (H, W), got shape {ir.shape}")
    if vi.ndim not in (2, 3) or (vi.ndim == 3 and vi.shape[2] != 3):
        raise FusionInputError(f"visible must be (H, W) or (H, W, 3), got shape {vi.shape}")
    if ir.shape[:2] != vi.shape[:2]:
        raise FusionInputError(f"infrared {ir.shape[:2]} and visible {vi.shape[:2]} sizes differ")
    if ir.shape[0] == 0 or ir.shape[1] == 0:
        raise FusionInputError(f"empty image of shape {ir.shape}")
    for name, image in (("infrared", ir), ("visible", vi)):
        if image.dtype != np.float32:
            raise FusionInputError(f"{name} must be float32 in [0, 1], got {image.dtype}")
