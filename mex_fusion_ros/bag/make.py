"""Turn clean image pairs (the synthetic scene or a paired dataset) into a realistic rosbag2 bag.

Timing model (what a real two-camera rig records):

- the source is a sequence of frames at the RGB camera rate: RGB frame ``j`` is captured at
  ``t_j = j / fps_rgb``; the thermal camera runs at its own, lower rate and captures at
  ``t_k = k / fps_thermal``, showing source frame ``round(t_k * fps_rgb)`` (the RGB frame nearest
  in time, so the synchroniser's best match is the frame with the same content);
- header stamps are capture times plus Gaussian jitter (``jitter_ms``, standard deviation), and the
  thermal stamps carry a constant clock offset (``offset_ms``) against the RGB camera, which the
  synchroniser's ``thermal_offset`` can take out again; the bag's receive time equals the stamp;
- degradations follow a timeline over the RGB frame index (``timeline.even_segments``); frame ``j``
  is degraded once (both cameras see the same degraded pair) with seed ``seed * 1_000_003 + j``;
- with ``with_clean`` the clean frames go on ``/reference/*`` topics with the same stamps.

A dataset of still pairs becomes a slide show: each pair is held for ``hold`` RGB frames (by
default long enough for the thermal camera to capture it at least once).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from mex_fusion_ros.bag import (
    REFERENCE_RGB_TOPIC,
    REFERENCE_THERMAL_TOPIC,
    RGB_TOPIC,
    THERMAL_TOPIC,
    TIMELINE_SIDECAR,
    TIMELINE_TOPIC,
)
from mex_fusion_ros.bag.scene import DemoScene, SceneConfig, SceneObject
from mex_fusion_ros.bag.timeline import even_segments, segment_index_for_frame, timeline_document
from mex_fusion_ros.bag.writer import BagWriter
from mex_fusion_ros.data.degradations import apply_preset

THERMAL_ENCODINGS = ("mono8", "mono16")
#: Raw counts of the simulated 16-bit thermal camera: [0, 1] maps to this range (14-bit-like
#: radiometric counts with an offset), so the 16-bit path needs the AGC like a real camera does.
MONO16_OFFSET, MONO16_SPAN = 8000, 4000
#: Sidecar with the scene's object boxes per RGB stamp (only for the synthetic scene).
OBJECTS_SIDECAR = "scene_objects.json"
DEFAULT_START_NS = 1_700_000_000_000_000_000


class FrameSource:
    """Clean frames by index: ``ir float32 (H, W)``, ``vi float32 (H, W, 3)`` in [0, 1]."""

    description: str = ""

    def __len__(self) -> int:
        raise NotImplementedError

    def frame(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def objects(self, index: int) -> tuple[SceneObject, ...]:
        return ()


class SceneSource(FrameSource):
    """The synthetic demo scene (``scene.DemoScene``)."""

    def __init__(self, config: SceneConfig) -> None:
        self.scene = DemoScene(config)
        self.description = (
            f"synthetic demo scene {config.width}x{config.height}, {config.num_frames} frames, "
            f"seed {config.seed}"
        )
        self._last: tuple[int, object] | None = None

    def __len__(self) -> int:
        return self.scene.config.num_frames

    def _render(self, index: int):
        if self._last is None or self._last[0] != index:
            self._last = (index, self.scene.render(index))
        return self._last[1]

    def frame(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rendered = self._render(index)
        return rendered.ir, rendered.vi

    def objects(self, index: int) -> tuple[SceneObject, ...]:
        return self._render(index).objects


class DatasetSource(FrameSource):
    """Pairs of a dataset (``data.paired.find_pairs``) resized to ``size``, each held ``hold`` frames."""

    def __init__(
        self, root: str | Path, size: tuple[int, int], hold: int = 1, limit: int | None = None
    ) -> None:
        from mex_fusion_ros.data.paired import DatasetError, find_pairs

        if hold < 1:
            raise ValueError(f"hold must be >= 1, got {hold}")
        pairs = list(find_pairs(root).pairs)
        if limit is not None:
            pairs = pairs[:limit]
        if not pairs:
            raise DatasetError(f"no infrared/visible pairs found under {root}")
        self.pairs, self.size, self.hold = pairs, size, hold
        self.description = (
            f"{len(pairs)} pairs of {root}, resized to {size[0]}x{size[1]}, each held {hold} frames"
        )
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.pairs) * self.hold

    def frame(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        from mex_fusion_ros.data.paired import read_pair

        pair_index = index // self.hold
        if pair_index not in self._cache:
            ir, vi = read_pair(self.pairs[pair_index], resize=True)
            width, height = self.size
            ir = cv2.resize(ir, (width, height), interpolation=cv2.INTER_AREA)
            vi = cv2.resize(vi, (width, height), interpolation=cv2.INTER_AREA)
            if vi.ndim == 2:  # a grey visible image still goes out as rgb8
                vi = np.repeat(vi[:, :, None], 3, axis=2)
            self._cache[pair_index] = (ir.astype(np.float32), vi.astype(np.float32))
            while len(self._cache) > 4:
                self._cache.popitem(last=False)
        return self._cache[pair_index]


@dataclass(frozen=True)
class BagTiming:
    fps_thermal: float = 9.0
    fps_rgb: float = 30.0
    #: Standard deviation of the Gaussian stamp jitter, milliseconds.
    jitter_ms: float = 2.0
    #: Constant offset added to every thermal stamp (thermal clock minus RGB clock), milliseconds.
    offset_ms: float = 0.0
    start_ns: int = DEFAULT_START_NS

    def __post_init__(self) -> None:
        if self.fps_thermal <= 0 or self.fps_rgb <= 0:
            raise ValueError(f"frame rates must be > 0, got thermal {self.fps_thermal}, rgb {self.fps_rgb}")
        if self.jitter_ms < 0:
            raise ValueError(f"jitter_ms must be >= 0, got {self.jitter_ms}")
        period_ms = 1e3 / max(self.fps_rgb, self.fps_thermal)
        if 3 * self.jitter_ms >= period_ms / 2:
            # Larger jitter would reorder frames of one camera, which no real driver does.
            raise ValueError(
                f"jitter_ms={self.jitter_ms} is too large for {period_ms:.1f} ms frame periods "
                f"(keep 3 sigma under half a period)"
            )


@dataclass
class MakeBagSummary:
    path: Path
    storage: str
    rgb_frames: int
    thermal_frames: int
    duration_s: float
    segments: list = field(default_factory=list)


def schedule(num_frames: int, timing: BagTiming, seed: int) -> list[tuple[int, str, int, int]]:
    """Every message to write as ``(stamp_ns, camera, message_index, source_frame)``, in stamp order.

    ``camera`` is ``"rgb"`` or ``"thermal"``; the jitter is drawn from ``seed``.
    """
    rng = np.random.default_rng(seed)
    duration_s = (num_frames - 1) / timing.fps_rgb
    num_thermal = int(math.floor(duration_s * timing.fps_thermal + 1e-9)) + 1
    jitter_ns = timing.jitter_ms * 1e6
    events = []
    for j in range(num_frames):
        noise = rng.normal(0.0, jitter_ns) if jitter_ns else 0.0
        events.append((timing.start_ns + round(j * 1e9 / timing.fps_rgb + noise), "rgb", j, j))
    for k in range(num_thermal):
        capture_s = k / timing.fps_thermal
        source = min(num_frames - 1, round(capture_s * timing.fps_rgb))
        noise = rng.normal(0.0, jitter_ns) if jitter_ns else 0.0
        stamp = timing.start_ns + round(capture_s * 1e9 + timing.offset_ms * 1e6 + noise)
        events.append((stamp, "thermal", k, source))
    events.sort(key=lambda e: (e[0], e[1]))
    return events


def to_thermal_message(ir: np.ndarray, encoding: str) -> np.ndarray:
    """float32 [0, 1] infrared -> the uint8/uint16 array a camera driver would publish."""
    if encoding == "mono8":
        return (np.clip(ir, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if encoding == "mono16":
        return (MONO16_OFFSET + np.clip(ir, 0.0, 1.0) * MONO16_SPAN + 0.5).astype(np.uint16)
    raise ValueError(f"thermal encoding must be one of {THERMAL_ENCODINGS}, got {encoding!r}")


def to_rgb8(vi: np.ndarray) -> np.ndarray:
    return (np.clip(vi, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def make_bag(
    source: FrameSource,
    presets: Sequence[str],
    out: str | Path,
    *,
    timing: BagTiming | None = None,
    storage: str = "mcap",
    thermal_encoding: str = "mono8",
    with_clean: bool = True,
    seed: int = 0,
    progress: bool = True,
    on_frame: Callable[[int], None] | None = None,
) -> MakeBagSummary:
    """Write ``source`` as a bag at ``out`` (a new directory) and return what was written."""
    timing = timing or BagTiming()
    if thermal_encoding not in THERMAL_ENCODINGS:
        raise ValueError(f"thermal encoding must be one of {THERMAL_ENCODINGS}, got {thermal_encoding!r}")
    num_frames = len(source)
    segments = even_segments(presets, num_frames)
    events = schedule(num_frames, timing, seed)
    rgb_stamps = {index: stamp for stamp, camera, index, _ in events if camera == "rgb"}
    # Segment times: from the stamp of its first RGB frame to that of the next segment's first frame.
    timed = []
    for i, segment in enumerate(segments):
        end_ns = (
            rgb_stamps[segments[i + 1].start_frame]
            if i + 1 < len(segments)
            else rgb_stamps[num_frames - 1] + 1
        )
        timed.append(
            type(segment)(
                segment.preset,
                segment.start_frame,
                segment.end_frame,
                rgb_stamps[segment.start_frame],
                end_ns,
                segment.severity,
            )
        )
    segments = timed

    degraded_cache: OrderedDict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()

    def frames_of(j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(clean ir, clean vi, degraded ir, degraded vi) of source frame j, computed once."""
        if j not in degraded_cache:
            ir, vi = source.frame(j)
            preset = segments[segment_index_for_frame(segments, j)].preset
            degraded = apply_preset(preset, ir, vi, seed=seed * 1_000_003 + j)
            degraded_cache[j] = (ir, vi, degraded.ir, degraded.vi)
            while len(degraded_cache) > 6:  # thermal frames lag RGB by at most a few frames
                degraded_cache.popitem(last=False)
        return degraded_cache[j]

    out = Path(out)
    objects: dict[str, list] = {}
    segment_starts = {segment.start_frame: segment for segment in segments}
    with BagWriter(out, storage=storage) as writer:
        writer.set_custom_data("mex_fusion.source", source.description)
        writer.set_custom_data("mex_fusion.timeline", ",".join(s.preset for s in segments))
        for stamp, camera, index, j in tqdm(
            events, desc=f"bag make {out.name}", unit="msg", disable=not progress
        ):
            clean_ir, clean_vi, ir, vi = frames_of(j)
            if camera == "rgb":
                if index in segment_starts:
                    writer.write_string(TIMELINE_TOPIC, stamp, segment_starts[index].to_json())
                writer.write_image(RGB_TOPIC, stamp, to_rgb8(vi), "rgb8", frame_id="rgb_camera")
                if with_clean:
                    writer.write_image(
                        REFERENCE_RGB_TOPIC, stamp, to_rgb8(clean_vi), "rgb8", frame_id="rgb_camera"
                    )
                boxes = source.objects(j)
                if boxes:
                    objects[str(stamp)] = [[obj.label, *obj.box] for obj in boxes]
                if on_frame is not None:
                    on_frame(j)
            else:
                writer.write_image(
                    THERMAL_TOPIC,
                    stamp,
                    to_thermal_message(ir, thermal_encoding),
                    thermal_encoding,
                    frame_id="thermal_camera",
                )
                if with_clean:
                    writer.write_image(
                        REFERENCE_THERMAL_TOPIC,
                        stamp,
                        to_thermal_message(clean_ir, "mono8"),
                        "mono8",
                        frame_id="thermal_camera",
                    )
    num_thermal = sum(1 for e in events if e[1] == "thermal")
    details = {
        "source": source.description,
        "fps_rgb": timing.fps_rgb,
        "fps_thermal": timing.fps_thermal,
        "jitter_ms": timing.jitter_ms,
        "offset_ms": timing.offset_ms,
        "seed": seed,
        "thermal_encoding": thermal_encoding,
        "rgb_frames": num_frames,
        "thermal_frames": num_thermal,
    }
    (out / TIMELINE_SIDECAR).write_text(json.dumps(timeline_document(segments, **details), indent=1))
    if objects:
        (out / OBJECTS_SIDECAR).write_text(json.dumps({"classes": ["person", "car"], "frames": objects}))
    duration_s = (events[-1][0] - events[0][0]) / 1e9 if events else 0.0
    return MakeBagSummary(out, storage, num_frames, num_thermal, duration_s, segments)
