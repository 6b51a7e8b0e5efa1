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


@dataclass(frozen=True)
class StreamLoss:
    """Frames of one camera that never reached the node, estimated from the stamps of those that did.

    ``loss`` is NaN (unknown) until the window holds ``min_intervals`` stamp intervals.
    """

    received: int
    expected: int
    loss: float
    #: The camera's own frame rate as its stamps tell it, Hz (NaN when unknown).
    camera_rate_hz: float


#: An interval between received stamps is at least this many periods: two stamps jittered by up to
#: 15 % of a period each are still 0.7 periods apart, a candidate twice too long sees them at 0.65.
_SHORTEST_INTERVAL_PERIODS = 0.675


class StampLossMeter:
    """Input loss visible from header stamps: a camera stamps frames at a steady period, so a gap
    of ``k`` periods between two received frames means ``k - 1`` frames were lost on the way
    (DDS, a full subscription queue), even while the received rate looks steady.

    The period is found from the intervals between consecutive stamps received in the last
    ``window`` seconds (``_period``: whole multiples of it, give or take jitter); the frames the
    camera made are the span of the received stamps over that period, so jittery stamps are not
    read as loss. A stamp that goes back (clock jump) starts afresh.
    A camera whose rate changes within the window (auto exposure) reads as loss until the window
    has passed.
    """

    def __init__(self, window: float = 5.0, min_intervals: int = 10, max_frames: int = 2048,
                 period_percentile: float = 10.0) -> None:
        if window <= 0:
            raise ValueError(f"window must be positive, got {window}")
        self.window = window
        self.min_intervals = min_intervals
        self.period_percentile = period_percentile
        self._frames: deque[tuple[float, int]] = deque(maxlen=max_frames)  # (arrival, stamp_ns)
        self._lock = threading.Lock()

    def add(self, stamp_ns: int, now: float) -> None:
        with self._lock:
            if self._frames and stamp_ns < self._frames[-1][1]:
                self._frames.clear()
            self._frames.append((now, stamp_ns))

    def estimate(self, now: float) -> StreamLoss:
        with self._lock:
            while self._frames and self._frames[0][0] < now - self.window:
                self._frames.popleft()
            stamps = np.fromiter((stamp for _, stamp in self._frames), dtype=np.int64)
        stamps = np.unique(stamps)  # sorted; a repeated stamp is no frame
        intervals = np.diff(stamps)
        if intervals.size < self.min_intervals:
            return StreamLoss(int(stamps.size), int(stamps.size), float("nan"), float("nan"))
        period = self._period(intervals)
        # Frames the camera made over the span of the stamps received: jitter does not add up.
        expected = max(int(stamps.size), int(np.rint((stamps[-1] - stamps[0]) / period)) + 1)
        loss = 1.0 - stamps.size / expected
        return StreamLoss(int(stamps.size), expected, loss, 1e9 / period)


    def _period(self, intervals: np.ndarray) -> float:
        """The camera's frame period from the intervals between received stamps.

        Every interval is a whole number of periods give or take the stamps' jitter. Candidates are
        the median interval divided by 1..4 (the median spans one period at low loss, a few at high
        loss), each refined as the median of interval / periods spanned, since a median interval of
        several periods carries their summed jitter. The longest candidate that leaves intervals
        within 0.12 periods of a whole number on average, and none shorter than two thirds of a
        period, wins, refined once more. (Without the last rule, stamps received mostly two periods
        apart read as a camera at half its rate: the one interval of a single period averaged away.)
        Stamps too irregular for any candidate fall back to a low percentile of the intervals.
        """
        median = float(np.percentile(intervals, 50, method="lower"))  # an interval, not between two
        shortest = float(intervals.min())
        for divisor in (1, 2, 3, 4):
            candidate = median / divisor
            if shortest < _SHORTEST_INTERVAL_PERIODS * candidate:
                continue
            candidate = float(np.median(intervals / np.maximum(1.0, np.rint(intervals / candidate))))
            spans = np.maximum(1.0, np.rint(intervals / candidate))
            if float(np.mean(np.abs(intervals / candidate - spans))) < 0.12:
                return float(np.median(intervals / spans))
        return float(np.percentile(intervals, self.period_percentile))


class RecentEvents:
    """Counts events and remembers when the last one happened, so a status can stay raised for a while."""

    def __init__(self) -> None:
        self._total = 0
        self._last: float | None = None
        self._lock = threading.Lock()

    def add(self, now: float, count: int = 1) -> None:
        with self._lock:
            self._total += count
            self._last = now

    @property
    def total(self) -> int:
        return self._total

    def within(self, now: float, seconds: float) -> bool:
        """True when an event happened in the last ``seconds``."""
        with self._lock:
            return self._last is not None and now - self._last <= seconds
