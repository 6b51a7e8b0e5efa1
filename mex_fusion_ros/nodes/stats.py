"""Rate, latency and liveness statistics for the nodes' diagnostics (ROS-free, thread-safe).

Everything here takes explicit times in seconds (``time.monotonic()`` in the nodes), so the
same code is unit-testable with synthetic clocks and runs identically in the node, the
``mex-fusion run`` launcher and the latency benchmark.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


class RateMeter:
    """Events per second over a sliding window of arrival times.

    The rate is ``(n - 1) / (t_last - t_first)`` over the events of the last ``window`` seconds,
    i.e. the mean inter-arrival rate; it is 0 with fewer than two events in the window. Memory
    is bounded by ``max_events`` (a 1 kHz stream over a 5 s window fits the default).
    """

    def __init__(self, window: float = 5.0, max_events: int = 8192) -> None:
        if window <= 0:
            raise ValueError(f"window must be positive, got {window}")
        self.window = window
        self._times: deque[float] = deque(maxlen=max_events)
        self._total = 0
        self._lock = threading.Lock()

    def tick(self, now: float) -> None:
        with self._lock:
            self._times.append(now)
            self._total += 1

    @property
    def total(self) -> int:
        return self._total

    def last(self) -> float | None:
        """Time of the most recent event, or None before the first."""
        with self._lock:
            return self._times[-1] if self._times else None

    def rate(self, now: float) -> float:
        """Mean events per second over ``[now - window, now]``."""
        with self._lock:
            while self._times and self._times[0] < now - self.window:
                self._times.popleft()
            if len(self._times) < 2:
                return 0.0
            span = self._times[-1] - self._times[0]
            return (len(self._times) - 1) / span if span > 0 else 0.0


@dataclass(frozen=True)
class Percentiles:
    """Summary of a window of durations, milliseconds."""

    count: int
    p50: float
    p90: float
    p99: float
    mean: float
    max: float

    @staticmethod
    def of(values_ms: Iterable[float]) -> Percentiles:
        array = np.fromiter(values_ms, dtype=np.float64)
        if array.size == 0:
            return Percentiles(0, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"))
        p50, p90, p99 = np.percentile(array, [50, 90, 99])
        return Percentiles(int(array.size), float(p50), float(p90), float(p99), float(array.mean()),
                           float(array.max()))


class DurationWindow:
    """The last ``size`` durations (milliseconds) and their percentiles."""

    def __init__(self, size: int = 512) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value_ms: float) -> None:
        with self._lock:
            self._values.append(float(value_ms))

    def summary(self) -> Percentiles:
        with self._lock:
            values = list(self._values)
        return Percentiles.of(values)


class Counters:
    """Named monotonically increasing counters (decode errors, drops, ...)."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._counts: dict[str, int] = dict.fromkeys(names, 0)
        self._lock = threading.Lock()

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + amount

    def get(self, name: str) -> int:
        with self._lock:
            return self._counts.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class CameraWatchdog:
    """Tracks when each camera last delivered a frame and which ones have gone quiet.

    A camera is *stale* when it delivered at least one frame and then nothing for ``timeout``
    seconds, or delivered nothing ``timeout`` seconds after the watchdog started (a camera
    that never starts is as missing as one that stopped).
    """

    def __init__(self, cameras: Iterable[str], timeout: float, start: float) -> None:
        self.timeout = timeout
        self._start = start
        self._last: dict[str, float | None] = dict.fromkeys(cameras)
        self._lock = threading.Lock()

    def seen(self, camera: str, now: float) -> None:
        with self._lock:
            self._last[camera] = now

    def silence(self, camera: str, now: float) -> float:
        """Seconds since ``camera``'s last frame (since the start if it never sent one)."""
        with self._lock:
            last = self._last[camera]
        return now - (last if last is not None else self._start)

    def stale(self, now: float) -> tuple[str, ...]:
        """Cameras silent for longer than ``timeout``, in declaration order."""
        return tuple(camera for camera in self._last if self.silence(camera, now) > self.timeout)

    def ever_seen(self, camera: str) -> bool:
        with self._lock:
            return self._last[camera] is not None
