"""Pairs thermal and RGB camera frames by header stamp (ROS-free).

Shared by the live ``fusion_node`` and the offline rosbag replay, so both pair frames the same way.
Stamps are integer nanoseconds (``sec * 10**9 + nanosec`` of a ``std_msgs/Header``); the pair's stamp
is the RGB frame's stamp because the fused image is published in the RGB camera's frame.

Two policies, chosen by ``mode``:

``"approximate"``
    Like ``message_filters.ApproximateTimeSynchronizer`` for two topics: each frame is paired at most
    once, only if ``|thermal + offset - rgb| <= slop``, and pairs come out in stamp order. Working
    from the oldest queued frame, a pair is emitted when the two frames are each other's nearest
    partner and no frame that can still arrive (in stamp order) could be nearer; that needs at most
    the next frame of one camera. message_filters' Python version instead pairs each arriving
    message with the nearest one queued at that moment, which picks a worse partner whenever the
    better one is still on its way (the C++ ApproximateTime policy also waits for later messages).
    Frames that cannot be paired are dropped and counted.

``"latest"`` (live use)
    Emits, as soon as it exists, the pair with the newest RGB stamp among the queued frames
    (partner: the nearest thermal within slop). Older queued frames are dropped as superseded, and
    frames older than the last emitted pair are dropped as stale, so a pair never comes out older
    than one already emitted. Latency first: a slightly closer partner arriving later is not waited for.

A fixed, known offset between the two cameras' clocks (``thermal_offset``, seconds) is added to
thermal stamps before matching; the frames keep their original stamps.

Clock jumps. Pairs never go back in time, so after a camera's clock jumps back (a driver or
simulator restart, a bag played in a loop) or after one bogus stamp far in the future, every later
frame would be stale for good. By default the synchroniser starts afresh instead (``reset`` keeping
its counters; the frames it held count as ``RESET``): when a frame is older than the newest frame
seen from its camera by more than ``max_backward_jump`` (1 s), or when ``STALE_RUN_RESET`` frames
of one camera in a row are stale (a jump back shorter than that, e.g. a short bag in a loop). Each
such restart is a ``ClockJump`` in ``stats``. A jump forward needs nothing: newer frames pair as
usual, and older queued frames age out. Until a jump back shorter than ``max_backward_jump`` is
recognised, a new-clock frame may pair with an old-clock frame of the other camera whose stamp
happens to lie within ``slop`` (stamps are all the synchroniser sees); the threshold is not lower
because a camera's frames delivered out of order must not restart the pairing each time.
"""
from __future__ import annotations

import math
import numbers
import threading
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

THERMAL = "thermal"
RGB = "rgb"
CAMERAS = (THERMAL, RGB)

SyncMode = Literal["approximate", "latest"]
SYNC_MODES: tuple[str, ...] = ("approximate", "latest")

#: Default ``max_backward_jump``, seconds: far beyond the jitter and reordering of one camera's
#: stamps, and short enough that a restart costs at most this much of the new stream.
DEFAULT_MAX_BACKWARD_JUMP_S = 1.0
#: Stale frames of one camera in a row that mean its clock went back by less than
#: ``max_backward_jump`` (a camera's own frames come in stamp order, so they are never stale).
STALE_RUN_RESET = 5


class DropReason(str, Enum):
    """Why a frame left the synchroniser without being paired."""

    #: The camera's queue held ``queue_size`` frames; the oldest one made room.
    QUEUE_OVERFLOW = "queue_overflow"
    #: No frame of the other camera within slop can still arrive, or the only one in reach was
    #: nearer to another frame of this camera.
    NO_PARTNER = "no_partner"
    #: Stamp not newer than this camera's frame in the last emitted pair (late, out-of-order arrival).
    STALE = "stale"
    #: A frame with the same stamp is already queued for this camera.
    DUPLICATE = "duplicate"
    #: Latest mode: a newer pair was emitted, so this older frame can never be used.
    SUPERSEDED = "superseded"
    #: Still queued when the synchroniser was reset (``reset(keep_stats=True)`` or a clock jump back).
    RESET = "reset"


def _as_stamp_ns(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be an integer number of nanoseconds, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0 ns, got {value}")
    return int(value)


def _seconds_to_ns(value: Any, what: str, *, minimum: float | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{what} must be >= {minimum} s, got {value}")
    return round(float(value) * 1e9)


@dataclass(frozen=True, eq=False)
class StampedFrame:
    """One camera frame: its header stamp in ns and whatever the caller carries along (message, array).

    Frames compare by identity, so one frame is never mistaken for another with the same stamp.
    """

    stamp_ns: int
    data: Any

    def __post_init__(self) -> None:
        object.__setattr__(self, "stamp_ns", _as_stamp_ns(self.stamp_ns, "StampedFrame.stamp_ns"))


@dataclass(frozen=True)
class FramePair:
    """A thermal and an RGB frame taken at (nearly) the same time.

    ``thermal_offset_ns`` is the clock offset the synchroniser added to the thermal stamp when it
    matched the pair (0 when built by hand).
    """

    thermal: StampedFrame
    rgb: StampedFrame
    thermal_offset_ns: int = 0

    @property
    def stamp_ns(self) -> int:
        """The pair's stamp: the RGB frame's (the fused output lies in the RGB camera's frame)."""
        return self.rgb.stamp_ns

    @property
    def skew_ns(self) -> int:
        """Thermal stamp + offset - RGB stamp; ``abs(skew_ns) <= slop`` for every emitted pair."""
        return self.thermal.stamp_ns + self.thermal_offset_ns - self.rgb.stamp_ns


@dataclass(frozen=True)
class ClockJump:
    """One automatic restart of the synchroniser: a frame of ``camera`` went back in time."""

    camera: str
    #: Newest stamp seen from ``camera`` before the jump (a bogus future stamp, or the old clock).
    newest_ns: int
    #: Stamp of the frame that went back.
    stamp_ns: int
    #: Queued frames (both cameras) dropped by the restart (counted as ``DropReason.RESET``).
    dropped: int

    @property
    def seconds(self) -> float:
        """How far back, seconds (negative)."""
        return (self.stamp_ns - self.newest_ns) / 1e9


@dataclass(frozen=True)
class CameraCounts:
    """Frame counters of one camera; ``received == matched + dropped_total + queued`` always holds."""

    received: int
    matched: int
    queued: int
    dropped: dict[DropReason, int] = field(default_factory=dict)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


@dataclass(frozen=True)
class SyncStats:
    """Snapshot of a synchroniser's counters since construction (or the last ``reset()``)."""

    thermal: CameraCounts
    rgb: CameraCounts
    #: Pairs emitted (each pair uses one thermal and one RGB frame).
    pairs: int
    #: Stamp of the last emitted pair, None before the first.
    last_pair_stamp_ns: int | None
    #: Automatic resets after a clock jump back (see ``PairSynchronizer``'s ``max_backward_jump``).
    clock_jumps: int
    #: The latest of them, None before the first.
    last_clock_jump: ClockJump | None = None

    def camera(self, name: str) -> CameraCounts:
        """Counts of ``"thermal"`` or ``"rgb"``."""
        if name not in CAMERAS:
            raise ValueError(f"unknown camera {name!r}; expected one of {CAMERAS}")
        return self.thermal if name == THERMAL else self.rgb


def _stamp(frame: StampedFrame) -> int:
    return frame.stamp_ns


class PairSynchronizer:
    """Pairs thermal and RGB frames by stamp; see the module docstring for the two policies.

    Args:
        mode: ``"approximate"`` (every frame used at most once, best partner) or ``"latest"``
            (newest pair immediately, stale frames dropped).
        slop: largest allowed ``|thermal stamp + thermal_offset - rgb stamp|`` in seconds (>= 0).
        queue_size: most frames queued per camera (>= 1); the oldest is dropped beyond it.
        thermal_offset: seconds added to every thermal stamp before matching (known clock offset,
            e.g. +0.02 when the thermal camera stamps 20 ms early).
        max_backward_jump: a frame older than the newest frame seen from its camera by more than
            this many seconds (default 1 s) means the clock jumped back (a bag played in a loop, a
            restarted simulation, or a bogus future stamp before it), as do ``STALE_RUN_RESET``
            stale frames of one camera in a row: the synchroniser resets itself (queued frames
            count as ``RESET``, the jump is recorded in ``stats``) and goes on from that frame.
            None (as message_filters): such frames are dropped as stale until ``reset()`` is called.

    Thread-safe: the ``add_*`` methods may be called from different callback threads.
    """

    def __init__(self, mode: SyncMode, slop: float, queue_size: int, thermal_offset: float = 0.0,
                 max_backward_jump: float | None = DEFAULT_MAX_BACKWARD_JUMP_S) -> None:
        if mode not in SYNC_MODES:
            raise ValueError(f"unknown synchroniser mode {mode!r}; expected one of {SYNC_MODES}")
        if isinstance(queue_size, bool) or not isinstance(queue_size, numbers.Integral) or queue_size < 1:
            raise ValueError(f"queue_size must be an integer >= 1, got {queue_size!r}")
        self._mode: str = mode
        self._queue_size = int(queue_size)
        self._slop_ns = _seconds_to_ns(slop, "slop", minimum=0.0)
        self._offset_ns = _seconds_to_ns(thermal_offset, "thermal_offset")
        self._max_backward_jump_ns = (None if max_backward_jump is None else
                                      _seconds_to_ns(max_backward_jump, "max_backward_jump", minimum=0.0))
        self._lock = threading.Lock()
        self._clear(keep_stats=False)

    # --- configuration -------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self._mode

    @property
    def queue_size(self) -> int:
        return self._queue_size

    @property
    def slop(self) -> float:
        """Matching tolerance in seconds; may be changed at run time (>= 0, finite)."""
        return self._slop_ns / 1e9

    @slop.setter
    def slop(self, seconds: float) -> None:
        slop_ns = _seconds_to_ns(seconds, "slop", minimum=0.0)
        with self._lock:
            self._slop_ns = slop_ns

    @property
    def thermal_offset(self) -> float:
        """Seconds added to thermal stamps before matching; may be changed at run time (finite)."""
        return self._offset_ns / 1e9

    @thermal_offset.setter
    def thermal_offset(self, seconds: float) -> None:
        offset_ns = _seconds_to_ns(seconds, "thermal_offset")
        with self._lock:
            self._offset_ns = offset_ns

    # --- input ---------------------------------------------------------------------------------
    def add_thermal(self, frame: StampedFrame) -> list[FramePair]:
        """Queue a thermal frame; returns the pairs this completes (oldest first, often empty)."""
        return self.add(THERMAL, frame)

    def add_rgb(self, frame: StampedFrame) -> list[FramePair]:
        """Queue an RGB frame; returns the pairs this completes (oldest first, often empty)."""
        return self.add(RGB, frame)

    def add(self, camera: str, frame: StampedFrame) -> list[FramePair]:
        """Queue a frame of ``camera`` (``"thermal"`` or ``"rgb"``); returns the pairs it completes."""
        if camera not in CAMERAS:
            raise ValueError(f"unknown camera {camera!r}; expected one of {CAMERAS}")
        if not isinstance(frame, StampedFrame):
            raise TypeError(f"expected a StampedFrame, got {type(frame).__name__}")
        with self._lock:
            stamp = frame.stamp_ns
            previous = self._latest_seen[camera]
            if self._went_back(camera, stamp):
                assert previous is not None
                dropped = sum(len(queue) for queue in self._queues.values())
                self._clear(keep_stats=True)
                self._clock_jumps += 1
                self._last_clock_jump = ClockJump(camera, previous, stamp, dropped)
                previous = None
            self._received[camera] += 1
            self._latest_seen[camera] = stamp if previous is None else max(previous, stamp)
            last = self._last_emitted[camera]
            if last is not None and stamp <= last:
                self._dropped[camera][DropReason.STALE] += 1
                self._stale_run[camera] += 1
                return []
            self._stale_run[camera] = 0
            queue = self._queues[camera]
            index = bisect_left(queue, stamp, key=_stamp)
            if index < len(queue) and queue[index].stamp_ns == stamp:
                self._dropped[camera][DropReason.DUPLICATE] += 1
                return []
            queue.insert(index, frame)
            pairs = self._match(end_of_stream=False)
            # Bound the queue after matching: a queue of one must still be able to wait for the
            # next frame to decide a pair. Dropping the head can unblock a decision, so match again.
            if len(queue) > self._queue_size:
                queue.pop(0)
                self._dropped[camera][DropReason.QUEUE_OVERFLOW] += 1
                pairs += self._match(end_of_stream=False)
            return pairs

    def flush(self) -> list[FramePair]:
        """End of stream (e.g. the end of a bag): decide every pending pair with the frames at hand,
        return those pairs and drop the frames left over (counted as ``NO_PARTNER``)."""
        with self._lock:
            pairs = self._match(end_of_stream=True)
            for camera in CAMERAS:
                self._dropped[camera][DropReason.NO_PARTNER] += len(self._queues[camera])
                self._queues[camera].clear()
            return pairs

    def reset(self, *, keep_stats: bool = False) -> None:
        """Forget queued frames and pairing history (e.g. after the clock jumped back on a bag loop).

        With ``keep_stats`` the counters continue and the queued frames count as dropped (``RESET``).
        """
        with self._lock:
            self._clear(keep_stats=keep_stats)

    @property
    def clock_jumps(self) -> int:
        """Automatic restarts so far (cheaper than ``stats`` for a per-frame check)."""
        return self._clock_jumps

    @property
    def last_clock_jump(self) -> ClockJump | None:
        return self._last_clock_jump

    @property
    def stats(self) -> SyncStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            counts = {
                camera: CameraCounts(
                    received=self._received[camera],
                    matched=self._pairs,
                    queued=len(self._queues[camera]),
                    dropped={reason: n for reason, n in self._dropped[camera].items() if n},
                )
                for camera in CAMERAS
            }
            return SyncStats(thermal=counts[THERMAL], rgb=counts[RGB], pairs=self._pairs,
                             last_pair_stamp_ns=self._last_emitted[RGB], clock_jumps=self._clock_jumps,
                             last_clock_jump=self._last_clock_jump)

    # --- internals (called with the lock held) -------------------------------------------------
    def _clear(self, *, keep_stats: bool) -> None:
        if keep_stats:
            for camera in CAMERAS:
                self._dropped[camera][DropReason.RESET] += len(self._queues[camera])
        else:
            self._received: Counter[str] = Counter()
            self._dropped: dict[str, Counter[DropReason]] = {camera: Counter() for camera in CAMERAS}
            self._pairs = 0
            self._clock_jumps = 0
            self._last_clock_jump: ClockJump | None = None
        # Per camera, sorted by stamp (original stamps; the offset is the same for all frames of
        # one camera, so the order of effective stamps is the same).
        self._queues: dict[str, list[StampedFrame]] = {camera: [] for camera in CAMERAS}
        self._latest_seen: dict[str, int | None] = {camera: None for camera in CAMERAS}
        self._last_emitted: dict[str, int | None] = {camera: None for camera in CAMERAS}
        self._stale_run: dict[str, int] = dict.fromkeys(CAMERAS, 0)

    def _went_back(self, camera: str, stamp: int) -> bool:
        """Whether ``camera``'s clock jumped back at this frame (see ``max_backward_jump``)."""
        previous = self._latest_seen[camera]
        if self._max_backward_jump_ns is None or previous is None:
            return False
        if previous - stamp > self._max_backward_jump_ns:
            return True
        last = self._last_emitted[camera]
        return last is not None and stamp <= last and self._stale_run[camera] + 1 >= STALE_RUN_RESET

    def _effective(self, camera: str, stamp_ns: int) -> int:
        return stamp_ns + self._offset_ns if camera == THERMAL else stamp_ns

    def _drop(self, camera: str, index: int, reason: DropReason) -> None:
        del self._queues[camera][index]
        self._dropped[camera][reason] += 1

    def _emit(self, thermal: StampedFrame, rgb: StampedFrame) -> FramePair:
        self._queues[THERMAL].remove(thermal)
        self._queues[RGB].remove(rgb)
        self._last_emitted[THERMAL] = thermal.stamp_ns
        self._last_emitted[RGB] = rgb.stamp_ns
        self._pairs += 1
        return FramePair(thermal=thermal, rgb=rgb, thermal_offset_ns=self._offset_ns)

    def _match(self, *, end_of_stream: bool) -> list[FramePair]:
        if self._mode == "approximate":
            return self._match_approximate(end_of_stream)
        return self._match_latest()

    def _match_approximate(self, end_of_stream: bool) -> list[FramePair]:
        """Decide the earliest queued frame until a decision needs a frame that has not arrived.

        ``a`` is the earliest queued frame (camera X); every queued frame of the other camera Y is
        at or after it, so its nearest possible partner is Y's earliest frame ``b``, and frames
        arriving later (in stamp order) are farther from ``a``. ``a`` and ``b`` are paired when
        ``b`` is within slop and no other X frame is, or can still become, nearer to ``b``;
        otherwise ``a`` can never be paired without crossing a better pair, and is dropped.
        """
        pairs: list[FramePair] = []
        queues = self._queues
        while queues[THERMAL] or queues[RGB]:
            if queues[THERMAL] and (
                not queues[RGB]
                or self._effective(THERMAL, queues[THERMAL][0].stamp_ns) <= queues[RGB][0].stamp_ns
            ):
                x_camera, y_camera = THERMAL, RGB
            else:
                x_camera, y_camera = RGB, THERMAL
            a = queues[x_camera][0]
            a_eff = self._effective(x_camera, a.stamp_ns)
            if not queues[y_camera]:
                y_seen = self._latest_seen[y_camera]
                y_passed = y_seen is not None and self._effective(y_camera, y_seen) > a_eff + self._slop_ns
                if end_of_stream or y_passed:
                    self._drop(x_camera, 0, DropReason.NO_PARTNER)
                    continue
                break
            b = queues[y_camera][0]
            distance = self._effective(y_camera, b.stamp_ns) - a_eff
            if distance > self._slop_ns:
                self._drop(x_camera, 0, DropReason.NO_PARTNER)
                continue
            b_eff = a_eff + distance
            if len(queues[x_camera]) > 1:
                if abs(self._effective(x_camera, queues[x_camera][1].stamp_ns) - b_eff) < distance:
                    self._drop(x_camera, 0, DropReason.NO_PARTNER)
                    continue
            else:
                # Later X frames arrive at or after the newest X stamp seen; wait until none of them
                # can be nearer to b than a is.
                x_seen_raw = self._latest_seen[x_camera]
                assert x_seen_raw is not None  # a is queued, so X has been seen
                x_seen = self._effective(x_camera, x_seen_raw)
                if not end_of_stream and x_seen - b_eff < distance:
                    break
            thermal, rgb = (a, b) if x_camera == THERMAL else (b, a)
            pairs.append(self._emit(thermal, rgb))
        return pairs

    def _match_latest(self) -> list[FramePair]:
        pairs = self._emit_newest_pair()
        # What is left has no partner among the queued frames of the other camera. Frames that only
        # a late (out-of-order) frame of the other camera could still reach are dropped now rather
        # than when the queue overflows, so the counts say why.
        queues = self._queues
        for camera, other in ((THERMAL, RGB), (RGB, THERMAL)):
            other_seen = self._latest_seen[other]
            if other_seen is None:
                continue
            oldest_usable = self._effective(other, other_seen) - self._slop_ns
            while queues[camera] and self._effective(camera, queues[camera][0].stamp_ns) < oldest_usable:
                self._drop(camera, 0, DropReason.NO_PARTNER)
        return pairs

    def _emit_newest_pair(self) -> list[FramePair]:
        """Emit the newest RGB frame that has a thermal frame within slop, with its nearest one, and
        drop every older queued frame (they could only form older pairs)."""
        queues = self._queues
        thermal_queue = queues[THERMAL]
        if not thermal_queue:
            return []
        thermal_effective = [self._effective(THERMAL, frame.stamp_ns) for frame in thermal_queue]
        for rgb in reversed(queues[RGB]):
            index = bisect_left(thermal_effective, rgb.stamp_ns)
            # Nearest thermal: at index or just before it; on a tie the newer one.
            candidates = [i for i in (index, index - 1) if 0 <= i < len(thermal_queue)]
            best = min(candidates, key=lambda i: (abs(thermal_effective[i] - rgb.stamp_ns), -i))
            if abs(thermal_effective[best] - rgb.stamp_ns) > self._slop_ns:
                continue
            thermal = thermal_queue[best]
            for camera, frame in ((THERMAL, thermal), (RGB, rgb)):
                while queues[camera][0] is not frame:
                    self._drop(camera, 0, DropReason.SUPERSEDED)
            return [self._emit(thermal, rgb)]
        return []


class LatestPairMailbox:
    """Single-slot, thread-safe hand-over from the synchroniser to the inference worker.

    ``put`` replaces a pair the worker has not taken yet (counted in ``dropped``), so when inference
    is slower than the cameras stale pairs are dropped, never queued, and latency does not grow.
    ``put_count == taken + dropped + (1 if a pair is waiting)`` always holds.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._pair: FramePair | None = None
        self._closed = False
        self._put_count = 0
        self._taken = 0
        self._dropped = 0

    def put(self, pair: FramePair) -> bool:
        """Offer the newest pair; returns False (and keeps nothing) once the mailbox is closed."""
        with self._condition:
            if self._closed:
                return False
            self._put_count += 1
            if self._pair is not None:
                self._dropped += 1
            self._pair = pair
            self._condition.notify()
            return True

    def take(self, timeout: float | None = None) -> FramePair | None:
        """Wait up to ``timeout`` seconds (None: until a pair comes or the mailbox is closed) and
        return the newest pair, or None on timeout or when closed."""
        if timeout is not None and (not math.isfinite(timeout) or timeout < 0):
            raise ValueError(f"timeout must be None or a finite number of seconds >= 0, got {timeout}")
        with self._condition:
            self._condition.wait_for(lambda: self._pair is not None or self._closed, timeout)
            pair, self._pair = self._pair, None
            if pair is not None:
                self._taken += 1
            return pair

    def close(self) -> None:
        """Wake every waiting ``take`` (they return None); a pair still waiting counts as dropped."""
        with self._condition:
            if self._pair is not None:
                self._dropped += 1
                self._pair = None
            self._closed = True
            self._condition.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def put_count(self) -> int:
        return self._put_count

    @property
    def taken(self) -> int:
        return self._taken

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def pending(self) -> bool:
        """True when a pair is waiting to be taken."""
        with self._condition:
            return self._pair is not None
