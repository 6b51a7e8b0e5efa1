"""Automatic gain control for raw thermal frames: percentile clipping with temporally smoothed limits.

Raw radiometric counts (``mono16``/``16UC1``) use a few hundred of the 65536 levels and drift with
the scene and the camera's flat-field corrections. Each frame, the AGC takes the ``low``/``high``
percentiles of the frame as its black/white limits, smooths them over time with an exponential
moving average (so a hot object entering the view does not make the whole image flicker), and maps
the frame linearly to float32 [0, 1], clipping outside the limits.

Parameters match the node's configuration keys ``agc.low_percentile``, ``agc.high_percentile`` and
``agc.smoothing`` (``mex_fusion_ros.config``).
"""
from __future__ import annotations

import math
from numbers import Real

import numpy as np

# Below this span (in input units) the limits are widened symmetrically, so a constant frame maps to
# mid-grey instead of dividing by zero. One count for integer data; relative for float data.
_MIN_INTEGER_SPAN = 1.0
_MIN_RELATIVE_FLOAT_SPAN = 1e-6


def _check_real(name: str, value: object, low: float, high: float, *, high_inclusive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if value < low or value > high or (not high_inclusive and value == high):
        bracket = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must be in [{low:g}, {high:g}{bracket}, got {value:g}")
    return value


def _histogram_percentiles(values: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """``np.percentile(values, percentiles)`` (linear interpolation) for unsigned 8/16-bit data, from a
    histogram: O(n) instead of a partition per percentile, and exact."""
    counts = np.bincount(values.ravel(), minlength=1)
    cumulative = np.cumsum(counts)
    n = int(cumulative[-1])
    result = []
    for p in percentiles:
        position = p / 100.0 * (n - 1)
        below = math.floor(position)
        # The k-th smallest value (0-based) is the first level whose cumulative count exceeds k.
        lower = int(np.searchsorted(cumulative, below, side="right"))
        upper = int(np.searchsorted(cumulative, min(below + 1, n - 1), side="right"))
        result.append(lower + (position - below) * (upper - lower))
    return result[0], result[1]


class ThermalAGC:
    """Percentile-clipping gain control with exponentially smoothed limits.

    ``low_percentile`` in [0, 50] and ``high_percentile`` in [50, 100] (low < high) pick the frame
    values mapped to 0 and 1; ``smoothing`` in [0, 1) is the weight of the previous limits in the
    moving average (0 = every frame uses only its own percentiles). Not thread-safe: one instance per
    thermal stream, called from one thread.
    """

    def __init__(self, low_percentile: float = 1.0, high_percentile: float = 99.0,
                 smoothing: float = 0.9) -> None:
        self.low_percentile = _check_real("agc.low_percentile", low_percentile, 0.0, 50.0)
        self.high_percentile = _check_real("agc.high_percentile", high_percentile, 50.0, 100.0)
        if self.low_percentile >= self.high_percentile:
            raise ValueError(f"agc.low_percentile ({self.low_percentile:g}) must be below "
                             f"agc.high_percentile ({self.high_percentile:g})")
        self.smoothing = _check_real("agc.smoothing", smoothing, 0.0, 1.0, high_inclusive=False)
        self._limits: tuple[float, float] | None = None

    def __repr__(self) -> str:
        return (f"ThermalAGC(low_percentile={self.low_percentile:g}, "
                f"high_percentile={self.high_percentile:g}, smoothing={self.smoothing:g})")

    @property
    def limits(self) -> tuple[float, float] | None:
        """The smoothed (low, high) limits after the last frame, in input units; ``None`` before the first."""
        return self._limits

    def reset(self) -> None:
        """Forget the smoothed limits (e.g. after a camera gain change); the next frame starts afresh."""
        self._limits = None

    def frame_limits(self, raw: np.ndarray) -> tuple[float, float] | None:
        """The (low, high) percentiles of ``raw``'s finite values alone; ``None`` if it has none."""
        raw = self._check_frame(raw)
        if raw.dtype.kind == "u" and raw.dtype.itemsize <= 2:
            return _histogram_percentiles(raw, (self.low_percentile, self.high_percentile))
        values = raw
        if raw.dtype.kind == "f":
            finite = np.isfinite(raw)
            if not finite.all():
                values = raw[finite]
            if values.size == 0:
                return None
        low, high = np.percentile(values, (self.low_percentile, self.high_percentile))
        return float(low), float(high)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Raw frame (any real dtype and shape, typically uint16 ``(H, W)``) -> float32 [0, 1], same shape.

        Updates the smoothed limits with this frame's percentiles, then maps linearly; non-finite
        input pixels map to 0. A frame without any finite value leaves the limits unchanged.
        """
        raw = self._check_frame(raw)
        frame = self.frame_limits(raw)
        if frame is not None:
            if self._limits is None:
                self._limits = frame
            else:
                keep = self.smoothing
                self._limits = (keep * self._limits[0] + (1.0 - keep) * frame[0],
                                keep * self._limits[1] + (1.0 - keep) * frame[1])
        if self._limits is None:
            return np.zeros(raw.shape, dtype=np.float32)
        low, high = self._limits
        # Halves first: low + high (or high - low) of values near the float64 limit would overflow to
        # inf, and inf - inf is NaN.
        centre = low / 2.0 + high / 2.0
        min_span = (_MIN_INTEGER_SPAN if raw.dtype.kind in "iu"
                    else max(_MIN_RELATIVE_FLOAT_SPAN, _MIN_RELATIVE_FLOAT_SPAN * abs(centre)))
        if high / 2.0 - low / 2.0 < min_span / 2.0:
            low, high = centre - min_span / 2.0, centre + min_span / 2.0
        # float64 for the subtraction when the input is float64 or huge; float32 is exact for 16-bit counts.
        work_dtype = np.float32 if raw.dtype.itemsize <= 2 else np.float64
        unit = raw.astype(work_dtype)
        # (x/2 - low/2) / (high/2 - low/2) equals (x - low) / (high - low) exactly for normal floats
        # (halving is exact) and cannot overflow; float32 work data (<= 16-bit input) never comes near.
        half = work_dtype(0.5) if work_dtype is np.float64 else work_dtype(1.0)
        unit *= half
        unit -= work_dtype(low) * half
        # Divide by the span as rounded in the working precision, so a pixel at the high limit is exactly 1.
        unit /= work_dtype(high) * half - work_dtype(low) * half
        np.clip(unit, 0.0, 1.0, out=unit)
        if raw.dtype.kind == "f":
            unit[~np.isfinite(raw)] = 0.0  # NaN survives clip; +-inf would clip to 0/1 but are not data
        return unit.astype(np.float32, copy=False)

    def apply_uint8(self, raw: np.ndarray) -> np.ndarray:
        """``apply`` scaled to uint8 [0, 255] (rounded), for display or an 8-bit ``mono8`` message."""
        return (self.apply(raw) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)

    @staticmethod
    def _check_frame(raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw)
        if raw.dtype.kind not in "iuf":
            raise ValueError(f"thermal AGC needs a real-valued integer or float frame, got dtype {raw.dtype}")
        if raw.size == 0:
            raise ValueError(f"thermal AGC got an empty frame of shape {raw.shape}")
        return raw
