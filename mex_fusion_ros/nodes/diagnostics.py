"""``diagnostic_msgs`` helpers: statistics (``nodes.stats``, ROS-free) -> ``DiagnosticStatus``.

Values are formatted once here so every node reports the same way: rates with two decimals in
Hz, durations in milliseconds with two decimals, counters as integers. ``parse_values`` is the
inverse that tests and tools use to read a status back.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from mex_fusion_ros.nodes.stats import Percentiles

# Levels as ints; the message field is a one-byte ``bytes`` in rclpy (``level_of`` converts back).
OK = DiagnosticStatus.OK[0]
WARN = DiagnosticStatus.WARN[0]
ERROR = DiagnosticStatus.ERROR[0]
STALE = DiagnosticStatus.STALE[0]

DiagnosticValue = str | int | float | bool


def format_value(value: DiagnosticValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def percentile_values(prefix: str, summary: Percentiles) -> dict[str, float]:
    """``{prefix}_p50_ms``, ``_p90_ms``, ``_p99_ms``, ``_max_ms`` of a duration window."""
    return {f"{prefix}_p50_ms": summary.p50, f"{prefix}_p90_ms": summary.p90,
            f"{prefix}_p99_ms": summary.p99, f"{prefix}_max_ms": summary.max}


def make_status(name: str, hardware_id: str, level: int, message: str,
                values: Mapping[str, DiagnosticValue]) -> DiagnosticStatus:
    return DiagnosticStatus(
        level=bytes([level]), name=name, message=message, hardware_id=hardware_id,
        values=[KeyValue(key=key, value=format_value(value)) for key, value in values.items()])


def level_of(status: DiagnosticStatus) -> int:
    """The level as an int (``DiagnosticStatus.level`` is a ``bytes`` of length 1 in rclpy)."""
    level = status.level
    return level[0] if isinstance(level, (bytes, bytearray)) else int(level)


def parse_values(status: DiagnosticStatus) -> dict[str, str]:
    return {pair.key: pair.value for pair in status.values}
