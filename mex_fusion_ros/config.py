"""The pipeline's one configuration schema, and the loader that validates ``config/fusion.yaml``.

``config/fusion.yaml`` is a ROS 2 parameters file (``--ros-args --params-file``): top-level keys
are node names (or ``/**`` for every node), each holding ``ros__parameters``. This module is the
single place that knows every parameter: its type (from the default), range, choices,
description and whether it may change at run time. Nodes declare their ROS parameters from
these specs; ``mex-fusion run`` and the rosbag replay read the same file through ``load_config``.

Merge order, as in ultralytics: schema defaults < YAML file < explicit overrides.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import yaml

from mex_fusion_ros import PACKAGE_NAME

ParamValue = Union[bool, int, float, str, list]

#: Parameters every rclpy node already has; allowed in the file for any node.
BUILTIN_PARAMETERS = ("use_sim_time",)
WILDCARD_NODE = "/**"


class ConfigError(ValueError):
    """A configuration file or override is invalid; ``key_path`` names the offending key."""

    def __init__(self, key_path: str, reason: str) -> None:
        self.key_path = key_path
        self.reason = reason
        super().__init__(f"{key_path}: {reason}")


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter. ``name`` is dotted (``agc.low_percentile``), as ROS 2 flattens YAML."""

    name: str
    default: ParamValue
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    #: May be changed while the node runs (``ros2 param set``); others need a restart.
    dynamic: bool = False
    #: Element type for list parameters whose default is empty: "int", "float" or "str".
    element_type: str | None = None

    @property
    def type_name(self) -> str:
        """``bool``, ``int``, ``float``, ``str`` or ``<element>_array``."""
        if isinstance(self.default, list):
            if self.element_type:
                return f"{self.element_type}_array"
            if not self.default:
                raise ValueError(f"parameter {self.name}: empty list default needs element_type")
            return f"{_scalar_type_name(self.default[0])}_array"
        return _scalar_type_name(self.default)

    def validate(self, value: Any, key_path: str) -> ParamValue:
        """Return ``value`` normalised to this parameter's type, or raise ``ConfigError``."""
        type_name = self.type_name
        if type_name.endswith("_array"):
            if not isinstance(value, (list, tuple)):
                raise ConfigError(key_path, f"expected a list of {type_name[:-6]}, got {_describe(value)}")
            element = type_name[:-6]
            value = [_check_scalar(element, v, f"{key_path}[{i}]") for i, v in enumerate(value)]
            for i, v in enumerate(value):
                self._check_bounds(v, f"{key_path}[{i}]")
            return value
        value = _check_scalar(type_name, value, key_path)
        self._check_bounds(value, key_path)
        return value

    def _check_bounds(self, value: ParamValue, key_path: str) -> None:
        if self.choices is not None and value not in self.choices:
            raise ConfigError(key_path, f"{value!r} is not one of {list(self.choices)}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                raise ConfigError(key_path, f"{value} is below the minimum {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                raise ConfigError(key_path, f"{value} is above the maximum {self.maximum}")


def _scalar_type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    raise TypeError(f"unsupported parameter default {value!r}")


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _check_scalar(type_name: str, value: Any, key_path: str) -> ParamValue:
    # YAML/ROS semantics: an integer is acceptable where a float is expected, a bool never is a number.
    if type_name == "bool" and isinstance(value, bool):
        return value
    if type_name == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if type_name == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if type_name == "str" and isinstance(value, str):
        return value
    raise ConfigError(key_path, f"expected {type_name}, got {_describe(value)}")


# --------------------------------------------------------------------------------------------
# The schema. Topic names are not parameters: they are remapped (ROS convention).
# --------------------------------------------------------------------------------------------
FUSION_NODE_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("method", "nano", "Fusion method: a model configuration (nano, small, paper) with "
                  "`weights`, or a classical baseline (average, max, laplacian, gff, cascade)."),
    ParameterSpec("weights", "", "Path to the network weights; empty = the shipped weights for `method`."),
    ParameterSpec("device", "auto", "Inference device: auto (CUDA when available, else CPU), cpu, cuda, "
                  "cuda:N."),
    ParameterSpec("fp16", False, "Half-precision inference (CUDA only; ignored on CPU).", dynamic=True),
    ParameterSpec("backend", "torch", "Network runtime: torch, onnxruntime (exports the weights to ONNX on "
                  "first use, or set `weights` to a .onnx from `mex-fusion export`) or tensorrt (an engine "
                  "built with trtexec next to the .onnx; docs/deployment.md).",
                  choices=("torch", "onnxruntime", "tensorrt")),
    ParameterSpec("compile", False, "torch backend: torch.compile the network for fixed input sizes "
                  "(first frame of each size compiles)."),
    ParameterSpec("cuda_graphs", False, "torch backend on CUDA: capture the forward in a CUDA graph per "
                  "input size and replay it (fixed camera resolution)."),
    ParameterSpec("sync.mode", "latest", "Pairing policy: latest (live: newest pair, stale pairs dropped) "
                  "or approximate (every pair, like message_filters).", choices=("latest", "approximate")),
    ParameterSpec("sync.slop", 0.05, "Largest stamp difference of a thermal/RGB pair, seconds.",
                  minimum=0.0, maximum=5.0, dynamic=True),
    ParameterSpec("sync.queue_size", 10, "Frames kept per camera while waiting for a partner.",
                  minimum=1, maximum=1000),
    ParameterSpec("sync.thermal_offset", 0.0, "Known clock offset added to thermal stamps, seconds.",
                  minimum=-5.0, maximum=5.0, dynamic=True),
    ParameterSpec("input.compressed", False, "Subscribe sensor_msgs/CompressedImage (`<topic>/compressed`) "
                  "instead of sensor_msgs/Image."),
    ParameterSpec("input.reliable", False, "Reliable QoS for the inputs (bag replay); default best-effort "
                  "sensor-data QoS (REP-2003)."),
    ParameterSpec("registration.homography", [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                  "Row-major 3x3 homography mapping thermal pixels onto the RGB image."),
    ParameterSpec("output.width", 0, "Fused image width; 0 = the RGB image's width.",
                  minimum=0, maximum=8192),
    ParameterSpec("output.height", 0, "Fused image height; 0 = the RGB image's height.",
                  minimum=0, maximum=8192),
    ParameterSpec("output.color", True, "Publish rgb8 fused images (false: mono8)."),
    ParameterSpec("output.publish_restored", False, "Also publish restored/thermal and restored/rgb."),
    # Disjoint ranges so that every accepted pair satisfies ThermalAGC's low < high.
    ParameterSpec("agc.low_percentile", 1.0, "Thermal AGC: lower clipping percentile for 16-bit input.",
                  minimum=0.0, maximum=49.0, dynamic=True),
    ParameterSpec("agc.high_percentile", 99.0, "Thermal AGC: upper clipping percentile for 16-bit input.",
                  minimum=51.0, maximum=100.0, dynamic=True),
    ParameterSpec("agc.smoothing", 0.9, "Thermal AGC: temporal smoothing of the limits (0 = none).",
                  minimum=0.0, maximum=0.999, dynamic=True),
    ParameterSpec("camera_timeout", 1.0, "Seconds without frames before a camera is reported stale.",
                  minimum=0.1, maximum=60.0, dynamic=True),
    ParameterSpec("single_modality_fallback", False, "When one camera stops, publish the other one "
                  "restored alone.", dynamic=True),
    ParameterSpec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.",
                  minimum=0.1, maximum=60.0),
)

DETECTOR_NODE_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("model", "yolov8n.pt", "Ultralytics model: a .pt/.onnx path or a name ultralytics can "
                  "fetch (needs internet), or a .yaml to build an untrained model."),
    ParameterSpec("device", "auto", "Inference device: auto, cpu, cuda, cuda:N."),
    ParameterSpec("half", False, "Half-precision inference (CUDA only)."),
    ParameterSpec("conf", 0.25, "Confidence threshold.", minimum=0.0, maximum=1.0, dynamic=True),
    ParameterSpec("iou", 0.45, "IoU threshold of non-maximum suppression.", minimum=0.0, maximum=1.0,
                  dynamic=True),
    ParameterSpec("classes", [], "Class ids to keep; empty = all.", element_type="int", dynamic=True),
    ParameterSpec("image_size", 640, "Inference image size (pixels, multiple of 32).",
                  minimum=32, maximum=4096),
    ParameterSpec("publish_annotated", True, "Publish the annotated image topic."),
    ParameterSpec("input.reliable", True, "Reliable QoS for fused/image (default: a 640x512 rgb8 fused "
                  "image is ~1 MB, and Fast DDS drops best-effort samples over its 0.5 MB shared-memory "
                  "segment between processes, docs/deployment.md); false: best-effort sensor-data QoS."),
    ParameterSpec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.",
                  minimum=0.1, maximum=60.0),
)

NODE_PARAMETERS: dict[str, tuple[ParameterSpec, ...]] = {
    "fusion_node": FUSION_NODE_PARAMETERS,
    "detector_node": DETECTOR_NODE_PARAMETERS,
}


def parameter_specs(node: str) -> dict[str, ParameterSpec]:
    """The specs of ``node`` keyed by dotted name."""
    try:
        return {spec.name: spec for spec in NODE_PARAMETERS[node]}
    except KeyError:
        raise ConfigError(node, f"unknown node; known nodes: {sorted(NODE_PARAMETERS)}") from None


def default_parameters(node: str) -> dict[str, ParamValue]:
    """Schema defaults of ``node`` as a flat ``{dotted name: value}`` dict."""
    return {name: spec.default for name, spec in parameter_specs(node).items()}


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, as ROS 2 flattens parameter files."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        if not isinstance(key, str):
            raise ConfigError(f"{prefix}{key}", "keys must be strings")
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def validate_parameters(node: str, values: Mapping[str, Any], key_prefix: str = "") -> dict[str, ParamValue]:
    """Validate flat ``values`` for ``node``; return them normalised. Unknown keys are errors."""
    specs = parameter_specs(node)
    result: dict[str, ParamValue] = {}
    for name, value in values.items():
        key_path = f"{key_prefix}{name}"
        if name in BUILTIN_PARAMETERS:
            result[name] = _check_scalar("bool", value, key_path)
            continue
        spec = specs.get(name)
        if spec is None:
            raise ConfigError(key_path, f"unknown parameter of {node}; known: {sorted(specs)}")
        result[name] = spec.validate(value, key_path)
    return result


def load_config(path: str | Path | None = None,
                overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, ParamValue]]:
    """Load and validate a parameters file; return ``{node: {dotted name: value}}`` for every node.

    Each node gets schema defaults, then the ``/**`` section, then its own section, then
    ``overrides[node]``. ``path=None`` loads the installed default ``fusion.yaml``.
    """
    path = Path(path) if path is not None else default_config_path()
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found") from None
    except yaml.YAMLError as error:
        raise ConfigError(str(path), f"not valid YAML: {error}") from None
    if document is None:
        document = {}
    if not isinstance(document, Mapping):
        raise ConfigError(str(path), "top level must be a mapping of node names")
    sections: dict[str, dict[str, Any]] = {}
    for node, body in document.items():
        if node != WILDCARD_NODE and node not in NODE_PARAMETERS:
            raise ConfigError(str(node), f"unknown node; known nodes: {sorted(NODE_PARAMETERS)} or {WILDCARD_NODE}")
        if not isinstance(body, Mapping) or set(body) != {"ros__parameters"}:
            raise ConfigError(str(node), "must contain exactly one key, ros__parameters")
        params = body["ros__parameters"] or {}
        if not isinstance(params, Mapping):
            raise ConfigError(f"{node}.ros__parameters", "must be a mapping")
        sections[node] = flatten(params)
    result = {}
    for node in NODE_PARAMETERS:
        merged: dict[str, ParamValue] = default_parameters(node)
        wildcard = sections.get(WILDCARD_NODE, {})
        # Keys under /** apply to the nodes that have them (as rcl does).
        known = set(parameter_specs(node)) | set(BUILTIN_PARAMETERS)
        merged.update(validate_parameters(node, {k: v for k, v in wildcard.items() if k in known},
                                          f"{WILDCARD_NODE}.ros__parameters."))
        merged.update(validate_parameters(node, sections.get(node, {}), f"{node}.ros__parameters."))
        if overrides and node in overrides:
            merged.update(validate_parameters(node, overrides[node], f"override {node}."))
        result[node] = merged
    unknown_wildcard = set(sections.get(WILDCARD_NODE, {})) - set(BUILTIN_PARAMETERS) - {
        name for specs in NODE_PARAMETERS.values() for name in (s.name for s in specs)}
    if unknown_wildcard:
        key = sorted(unknown_wildcard)[0]
        raise ConfigError(f"{WILDCARD_NODE}.ros__parameters.{key}", "unknown parameter for every node")
    return result


def source_config_dir() -> Path:
    """``config/`` of the source tree this module was imported from."""
    return Path(__file__).resolve().parent.parent / "config"


def default_config_path() -> Path:
    """The installed ``share/mex_fusion_ros/config/fusion.yaml``, else the source tree's copy."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        try:
            installed = Path(get_package_share_directory(PACKAGE_NAME)) / "config" / "fusion.yaml"
            if installed.is_file():
                return installed
        except (PackageNotFoundError, OSError):  # OSError: AMENT_PREFIX_PATH unset
            pass
    except ImportError:
        pass
    return source_config_dir() / "fusion.yaml"


def render_defaults_yaml() -> str:
    """The defaults file as ``config/fusion.yaml`` holds it, with each key's type and meaning."""
    lines = ["# mex_fusion_ros pipeline configuration: a ROS 2 parameters file",
             "# (ros2 run ... --ros-args --params-file config/fusion.yaml; mex-fusion run --config ...).",
             "# Generated from mex_fusion_ros/config.py (the schema); test_config.py checks they agree.",
             "# Each key: type, meaning, [range or choices], (dynamic) = may change at run time.", ""]
    for node, specs in NODE_PARAMETERS.items():
        lines += [f"{node}:", "  ros__parameters:"]
        emitted_groups: set[str] = set()
        for spec in specs:
            *groups, leaf = spec.name.split(".")
            indent = "    "
            for depth, group in enumerate(groups):
                path = ".".join(groups[: depth + 1])
                if path not in emitted_groups:
                    lines.append(f"{indent}{group}:")
                    emitted_groups.add(path)
                indent += "  "
            bounds = ""
            if spec.choices:
                bounds = f" [{' | '.join(spec.choices)}]"
            elif spec.minimum is not None or spec.maximum is not None:
                bounds = f" [{spec.minimum} .. {spec.maximum}]"
            dynamic = " (dynamic)" if spec.dynamic else ""
            lines.append(f"{indent}# {spec.type_name}: {spec.description}{bounds}{dynamic}")
            # JSON is a subset of YAML and keeps 1.0 a float and "auto" a string.
            lines.append(f"{indent}{leaf}: {json.dumps(spec.default)}")
        lines.append("")
    return "\n".join(lines)


def render_markdown_reference() -> str:
    """The parameters of every node as Markdown tables (the README's configuration reference)."""
    lines = []
    for node, specs in NODE_PARAMETERS.items():
        lines += [f"#### `{node}`", "", "| parameter | type | default | range / choices | run-time | meaning |",
                  "|---|---|---|---|---|---|"]
        for spec in specs:
            if spec.choices:
                bounds = " \\| ".join(spec.choices)
            elif spec.minimum is not None or spec.maximum is not None:
                bounds = f"{spec.minimum:g} .. {spec.maximum:g}"
            else:
                bounds = ""
            lines.append(f"| `{spec.name}` | {spec.type_name} | `{json.dumps(spec.default)}` | {bounds} | "
                         f"{'yes' if spec.dynamic else ''} | {spec.description} |")
        lines.append("")
    return "\n".join(lines)
