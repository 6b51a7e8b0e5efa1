"""Degradation timelines: which preset degrades which frames of a bag, and how that is stored.

A timeline splits a sequence of frames into consecutive segments, one degradation preset each
(``mex_fusion_ros.data.degradations.PRESETS``). ``bag make`` writes it twice: as a JSON sidecar in
the bag directory (``degradation_timeline.json``) and as ``std_msgs/String`` messages on
``/mex_fusion/degradation_timeline`` (one JSON segment per message, sent when the segment starts),
so a bag copied without its sidecar still carries it. ``bag eval`` reads it back to compare the
fuser's degradation estimate with the truth.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from mex_fusion_ros.data.degradations import DEGRADATION_TYPES, get_preset

#: The demo's story: clean, then each degradation alone, then all of them together.
DEMO_PRESETS = ("clean", "haze", "noise25", "stripe", "mixed")
TIMELINE_FORMAT_VERSION = 1


class TimelineError(ValueError):
    """A timeline that cannot be built or parsed; the message says why."""


@dataclass(frozen=True)
class TimelineSegment:
    """Frames ``[start_frame, end_frame)`` degraded by ``preset``; times are header stamps (ns)."""

    preset: str
    start_frame: int
    end_frame: int
    start_ns: int = 0
    end_ns: int = 0
    #: Severity per degradation type in [0, 1] (types absent from the preset are 0).
    severity: dict[str, float] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def even_segments(presets: Sequence[str], num_frames: int) -> list[TimelineSegment]:
    """Split ``num_frames`` into ``len(presets)`` consecutive, nearly equal segments (in that order).

    Every preset name is checked against ``PRESETS`` (``UnknownPresetError`` names the bad one).
    """
    if not presets:
        raise TimelineError("at least one degradation preset is needed")
    if num_frames < len(presets):
        raise TimelineError(f"{num_frames} frames cannot hold {len(presets)} preset segments")
    segments = []
    for index, name in enumerate(presets):
        preset = get_preset(name)
        start = index * num_frames // len(presets)
        end = (index + 1) * num_frames // len(presets)
        label = preset.label()
        segments.append(
            TimelineSegment(
                preset.name, start, end, severity={t: float(label.severity(t)) for t in DEGRADATION_TYPES}
            )
        )
    return segments


def segment_index_for_frame(segments: Sequence[TimelineSegment], frame: int) -> int:
    """Index of the segment holding ``frame``; ``TimelineError`` when no segment does."""
    for index, segment in enumerate(segments):
        if segment.start_frame <= frame < segment.end_frame:
            return index
    raise TimelineError(
        f"frame {frame} is outside the timeline (frames {segments[0].start_frame}.."
        f"{segments[-1].end_frame - 1})"
    )


def segment_at(segments: Sequence[TimelineSegment], stamp_ns: int) -> TimelineSegment | None:
    """The segment whose stamp range holds ``stamp_ns`` (the last one started, if between segments)."""
    current = None
    for segment in segments:
        if segment.start_ns <= stamp_ns:
            current = segment
        else:
            break
    return current


def timeline_document(segments: Sequence[TimelineSegment], **details: object) -> dict:
    """The JSON sidecar's content: format version, type order, segments and free-form details."""
    return {
        "version": TIMELINE_FORMAT_VERSION,
        "degradation_types": list(DEGRADATION_TYPES),
        "segments": [asdict(segment) for segment in segments],
        **details,
    }


def parse_segment(data: dict | str, where: str) -> TimelineSegment:
    """One segment from its JSON (object or text); ``TimelineError`` naming ``where`` when malformed."""
    try:
        values = json.loads(data) if isinstance(data, str) else data
        return TimelineSegment(
            preset=str(values["preset"]),
            start_frame=int(values["start_frame"]),
            end_frame=int(values["end_frame"]),
            start_ns=int(values["start_ns"]),
            end_ns=int(values["end_ns"]),
            severity={str(k): float(v) for k, v in (values.get("severity") or {}).items()},
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise TimelineError(f"malformed timeline segment in {where}: {exc}") from exc


def parse_document(document: dict, where: str) -> list[TimelineSegment]:
    """Segments of a sidecar document, sorted by start; ``TimelineError`` naming ``where``."""
    if not isinstance(document, dict) or "segments" not in document:
        raise TimelineError(f"{where} has no 'segments' list")
    if document.get("version") != TIMELINE_FORMAT_VERSION:
        raise TimelineError(
            f"{where}: timeline format version {document.get('version')!r} is not {TIMELINE_FORMAT_VERSION}"
        )
    return sorted((parse_segment(item, where) for item in document["segments"]), key=lambda s: s.start_ns)
