"""The pipeline's one configuration schema, and the loader that validates ``config/fusion.yaml``.

``config/fusion.yaml`` is a ROS 2 parameters file (``--ros-args --params-file``): top-level keys
are node names (or ``/**`` for every node), each holding ``ros__parameters``. This module is the
single place that knows every parameter: its type (from the default), range, choices,
description and whether it may change at run time. Nodes declare their ROS parameters from
these specs; ``mex-fusion run`` and the rosbag replay read the same file through ``load_config``.

Merge order, as in ultralytics: schema defaults < YAML file < explicit overrides.

This module is also the one validator of parameter values, wherever they come from: ``mex-fusion
config``, ``mex-fusion run``, ``mex-fusion bag eval`` and the launch file (``load_config``), and the
nodes' start-up (``check_parameters_files`` before rcl parses ``--params-file``;
``validate_start_up`` on what rcl then hands the node). Every refusal is one :class:`ConfigError`
line naming the file, the key path and the reason. A file is read the way rcl reads it (plain
scalars typed by rcl's rules: ``y`` is a bool, ``1e3`` a float, ``2024-01-01`` a string; no
aliases; one type per list), so a file this module accepts is one the nodes accept.
An integer is accepted for a float everywhere (``sync.slop: 1``): here it becomes ``1.0``, and at
start-up the node turns rcl's INTEGER into the DOUBLE it declared (rclpy alone would refuse it).
"""
from __future__ import annotations

import array
import difflib
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from mex_fusion_ros import PACKAGE_NAME

ParamValue = Union[bool, int, float, str, list]

#: Parameters every rclpy node already has (bools); allowed in the file for any node.
#: ``start_type_description_service``: rclpy declares it on Jazzy and later.
BUILTIN_PARAMETERS = ("use_sim_time", "start_type_description_service")
WILDCARD_NODE = "/**"
ROS_PARAMETERS = "ros__parameters"
#: rcl's parameters are 64-bit: an integer outside this range cannot be a parameter.
INT64_RANGE = (-(2**63), 2**63 - 1)


class ConfigError(ValueError):
    """A configuration file or override is invalid; one line: ``[source: ]key_path: reason``.

    ``key_path`` names the offending key (or the file, for a file that cannot be read at all),
    ``source`` the file the key is in ("" for overrides given in code or on the command line).
    """

    def __init__(self, key_path: str, reason: str, source: str = "") -> None:
        self.key_path = key_path
        self.reason = reason
        self.source = source
        # One line whatever the reason quotes (a YAML snippet, a path with a newline).
        text = f"{key_path}: {reason}" if not source or source == key_path else f"{source}: {key_path}: {reason}"
        super().__init__(" ".join(text.split("\n")))

    def in_file(self, source: str | Path) -> ConfigError:
        """The same error, naming the file it was found in."""
        return ConfigError(self.key_path, self.reason, str(source))


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
    #: A check of the (typed, in-range) value beyond type and range: returns the reason it is
    #: refused, or None. Runs wherever the spec validates (files, start-up, ``ros2 param set``).
    check: Callable[[Any], str | None] | None = field(default=None, compare=False, repr=False)

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
        else:
            value = _check_scalar(type_name, value, key_path)
            self._check_bounds(value, key_path)
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ConfigError(key_path, problem)
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
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _check_scalar(type_name: str, value: Any, key_path: str) -> ParamValue:
    # An integer is accepted where a float is expected (users write `slop: 1`), a bool never is a number.
    if type_name == "bool" and isinstance(value, bool):
        return value
    if type_name == "int" and isinstance(value, int) and not isinstance(value, bool):
        if not INT64_RANGE[0] <= value <= INT64_RANGE[1]:
            raise ConfigError(key_path, f"{value} does not fit a 64-bit integer parameter")
        return value
    if type_name == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond the float range
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(key_path, f"expected a finite number, got {value!r}")
        return number
    if type_name == "str" and isinstance(value, str):
        return value
    raise ConfigError(key_path, f"expected {type_name}, got {_describe(value)}")


def _check_fuser_method(method: str) -> str | None:
    """``method`` must name a fuser (``fusion.registry.parse_fuser_spec``, imported only here)."""
    from mex_fusion_ros.fusion.registry import parse_fuser_spec

    try:
        parse_fuser_spec(method)
    except ValueError as error:
        return str(error)
    return None


#: What a ``device`` parameter may say (whether this machine has that device is the node's check).
DEVICE_SYNTAX = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def _check_device(device: str) -> str | None:
    return None if DEVICE_SYNTAX.fullmatch(device) else f"{device!r} is not a device; use auto, cpu, cuda or cuda:N"


def _check_homography(values: list[float]) -> str | None:
    """Nine finite values of an invertible 3x3 matrix (``nodes.pipeline.parse_homography``)."""
    from mex_fusion_ros.nodes.pipeline import parse_homography

    try:
        parse_homography(values, name="homography")
    except ValueError as error:
        return str(error).removeprefix("homography: ")
    return None


# --------------------------------------------------------------------------------------------
# The schema. Topic names are not parameters: they are remapped (ROS convention).
# --------------------------------------------------------------------------------------------
FUSION_NODE_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("method", "nano", "Fusion method: a model configuration (nano, small, paper) with "
                  "`weights`, or a classical baseline (average, max, laplacian, gff, cascade).",
                  check=_check_fuser_method),
    ParameterSpec("weights", "", "Path to the network weights; empty = the shipped weights for `method`."),
    ParameterSpec("device", "auto", "Inference device: auto (CUDA when available, else CPU), cpu, cuda, "
                  "cuda:N.", check=_check_device),
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
    ParameterSpec("input.reliable", False, "Reliable QoS for the inputs, always (bag replay). false: match the "
                  "cameras' publishers, reliable while every one of them is reliable (frames over 0.5 MB "
                  "between processes need it with Fast DDS), else best effort (sensor-data QoS, REP-2003)."),
    ParameterSpec("input.max_pixels", 4096 * 2160, "Largest input image in pixels (width x height); larger "
                  "raw or compressed frames are refused before decoding (a small PNG can state a huge "
                  "image). Default: 4096x2160 (4K).", minimum=1, maximum=100_000_000, dynamic=True),
    ParameterSpec("registration.homography", [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                  "Row-major 3x3 homography mapping thermal pixels onto the RGB image.",
                  check=_check_homography),
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
                  "fetch (needs internet), or a .yaml to build an untrained model. Without a usable model "
                  "the node stays up and reports ERROR on /diagnostics; setting `model` loads it.",
                  dynamic=True),
    ParameterSpec("device", "auto", "Inference device: auto, cpu, cuda, cuda:N.", check=_check_device),
    ParameterSpec("half", False, "Half-precision inference (CUDA only)."),
    ParameterSpec("conf", 0.25, "Confidence threshold.", minimum=0.0, maximum=1.0, dynamic=True),
    ParameterSpec("iou", 0.45, "IoU threshold of non-maximum suppression.", minimum=0.0, maximum=1.0,
                  dynamic=True),
    ParameterSpec("classes", [], "Class ids to keep; empty or [-1] = all (`ros2 param set` cannot send an "
                  "empty integer list: use [-1]).", element_type="int", dynamic=True),
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
            raise ConfigError(f"{prefix}{key!r}", "keys must be strings")
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def unknown_parameter_reason(node: str, name: str, known: Sequence[str]) -> str:
    """"unknown parameter of NODE", with the nearest known names (a misspelling, usually)."""
    close = difflib.get_close_matches(name, list(known), n=2, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}?" if close else f"known: {', '.join(sorted(known))}"
    return f"unknown parameter of {node}; {hint}"


def validate_parameters(node: str, values: Mapping[str, Any], key_prefix: str = "") -> dict[str, ParamValue]:
    """Validate flat ``values`` for ``node``; return them normalised. Unknown keys are errors."""
    specs = parameter_specs(node)
    if not isinstance(values, Mapping):
        raise ConfigError(key_prefix.rstrip(".") or node, f"expected a mapping of parameters, got {_describe(values)}")
    result: dict[str, ParamValue] = {}
    for name, value in values.items():
        key_path = f"{key_prefix}{name}"
        if not isinstance(name, str):
            raise ConfigError(key_path, "parameter names must be strings")
        if name in BUILTIN_PARAMETERS:
            result[name] = _check_scalar("bool", value, key_path)
            continue
        spec = specs.get(name)
        if spec is None:
            raise ConfigError(key_path, unknown_parameter_reason(node, name, list(specs)))
        result[name] = spec.validate(value, key_path)
    return result


def _check_node_combination(node: str, values: Mapping[str, ParamValue], key_prefix: str) -> None:
    """Checks of several parameters together, on a node's merged values: what the node builds from
    ``method`` + ``weights`` (``nano`` + ``w.pt`` -> ``nano:w.pt``) must be a fuser spec too."""
    if node != "fusion_node":
        return
    method, weights = str(values.get("method", "")), str(values.get("weights", ""))
    from mex_fusion_ros.fusion.registry import MODEL_CONFIGS

    if weights and method in MODEL_CONFIGS:
        problem = _check_fuser_method(f"{method}:{weights}")
        if problem:
            raise ConfigError(f"{key_prefix}weights", f"with method {method!r}: {problem}")


# --------------------------------------------------------------------------------------------
# Reading a parameters file the way rcl reads it
# --------------------------------------------------------------------------------------------
_PLAIN = "mex_fusion_ros:plain"
_STR_TAG = "tag:yaml.org,2002:str"
_RCL_TRUE = frozenset(("Y", "y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"))
_RCL_FALSE = frozenset(("N", "n", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"))
_RCL_INT = re.compile(r"[+-]?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_RCL_FLOAT = re.compile(r"[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?)")
_RCL_HEX_FLOAT = re.compile(r"[+-]?0[xX]([0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)([pP][+-]?[0-9]+)?")
_RCL_SPECIAL_FLOAT = re.compile(r"[+-]?(inf|infinity|nan(\([0-9A-Za-z_]*\))?)", re.IGNORECASE)
_YAML_SPECIAL_FLOAT = {".nan", ".NaN", ".NAN"} | {f"{sign}{word}" for sign in ("", "+", "-")
                                                  for word in (".inf", ".Inf", ".INF")}
_MAX_NESTING = 64


def rcl_scalar(text: str) -> bool | int | float | str:
    """A plain (unquoted, untagged) YAML scalar typed as rcl's parameter parser types it.

    rcl (``rcl_yaml_param_parser``) does not use YAML 1.1 typing: ``y``/``n``/``on``/``off`` are
    bools, a number is what C's ``strtoll(…, 0)`` (``010`` is octal 8, ``0x10`` is 16) or
    ``strtod`` read whole (``1e3``, ``nan``, ``inf``, ``.nan``), and everything else (``1_000``,
    ``2024-01-01``, ``1:30``, ``~``, ``null``) is a string. An integer beyond 64 bits reads as a float.
    """
    if text in _RCL_TRUE:
        return True
    if text in _RCL_FALSE:
        return False
    if _RCL_INT.fullmatch(text):
        sign = -1 if text.startswith("-") else 1
        digits = text.lstrip("+-")
        base = 16 if digits[:2] in ("0x", "0X") else 8 if len(digits) > 1 and digits[0] == "0" else 10
        value = sign * int(digits[2:] if base == 16 else digits, base)
        if INT64_RANGE[0] <= value <= INT64_RANGE[1]:
            return value
    if text in _YAML_SPECIAL_FLOAT:
        word = text.lstrip("+-.").lower()
        return float(("-" if text.startswith("-") else "") + word)
    if _RCL_SPECIAL_FLOAT.fullmatch(text):
        return float(text.split("(")[0])
    if _RCL_FLOAT.fullmatch(text) or _RCL_HEX_FLOAT.fullmatch(text):
        try:
            number = float(text) if _RCL_FLOAT.fullmatch(text) else float.fromhex(text)
        except (OverflowError, ValueError):
            return text
        if math.isinf(number):  # strtod's ERANGE: rcl keeps such a value as a string
            return text
        return number
    return text


class _RosParametersLoader(yaml.SafeLoader):
    """Composes a YAML document, marking plain scalars so that rcl's typing can be applied to them."""

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode and implicit[0]:
            return _PLAIN
        return super().resolve(kind, value, implicit)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise _FileProblemError(f"line {mark.line + 1}: YAML aliases (*name) are not allowed in ROS 2 "
                               "parameter files (rcl refuses them)")
        return super().compose_node(parent, index)


class _FileProblemError(Exception):
    """A problem of the whole file (not one key); becomes a ``ConfigError`` naming the file."""


def _where(node: yaml.Node) -> str:
    return f"line {node.start_mark.line + 1}"


def _scalar_value(node: yaml.ScalarNode) -> bool | int | float | str:
    if node.style in ("'", '"') or node.tag == _STR_TAG:
        return node.value
    return rcl_scalar(node.value)


def _list_value(node: yaml.SequenceNode, key_path: str) -> list:
    """A parameter list: plain values of one type (rcl refuses a mix, even of integers and floats)."""
    values = []
    for item in node.value:
        if not isinstance(item, yaml.ScalarNode):
            raise ConfigError(key_path, f"{_where(item)}: a list parameter holds plain values, not lists or "
                              "mappings")
        if item.tag == _PLAIN and item.value == "":
            raise ConfigError(key_path, f"{_where(item)}: a list element has no value")
        values.append(_scalar_value(item))
    kinds = {type(value) for value in values}
    if len(kinds) > 1:
        names = " and ".join(sorted(kind.__name__ for kind in kinds))
        fix = "; write 0.0 for 0" if kinds == {int, float} else ""
        raise ConfigError(key_path, f"{_where(node)}: the list mixes {names} values; a ROS 2 parameter list "
                          f"has one type{fix}")
    return values


def _parameters(node: yaml.Node, prefix: str, key_path: str, out: dict[str, Any], depth: int = 0) -> None:
    """Flatten the mapping under ``ros__parameters`` into ``out`` (``a: {b: 1}`` -> ``a.b``)."""
    if depth > _MAX_NESTING:
        raise ConfigError(key_path, f"{_where(node)}: parameters nested more than {_MAX_NESTING} deep")
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(key_path, f"{_where(node)}: expected a mapping of parameters")
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise ConfigError(key_path, f"{_where(key_node)}: keys must be plain names, not lists or mappings")
        name = f"{prefix}{key_node.value}"
        path = f"{key_path}.{key_node.value}"
        if name in out:
            raise ConfigError(path, f"{_where(key_node)}: given twice")
        if isinstance(value_node, yaml.MappingNode):
            _parameters(value_node, f"{name}.", path, out, depth + 1)
        elif isinstance(value_node, yaml.SequenceNode):
            out[name] = _list_value(value_node, path)
        elif value_node.tag == _PLAIN and value_node.value == "":
            raise ConfigError(path, f"{_where(value_node)}: no value (rcl refuses a key without one)")
        else:
            out[name] = _scalar_value(value_node)


def _read_document(path: Path) -> yaml.Node | None:
    """The composed YAML of ``path`` (None when empty); ``ConfigError`` naming the file otherwise."""
    source = str(path)
    try:
        if path.is_dir():
            raise ConfigError(source, "is a directory, not a parameters file")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(source, "file not found") from None
    except OSError as error:
        raise ConfigError(source, f"cannot be read: {error.strerror or error}") from None
    if b"\x00" in data:
        offset = data.index(b"\x00")
        raise ConfigError(source, f"a binary file (NUL byte at offset {offset}), not YAML text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(source, f"not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start})"
                          ) from None
    try:
        return yaml.compose(text, Loader=_RosParametersLoader)
    except _FileProblemError as problem:
        raise ConfigError(source, str(problem)) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(source, f"not valid YAML: {error.problem or error.context}{where}") from None
    except (yaml.YAMLError, RecursionError) as error:  # e.g. a reader error on a control character
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error).splitlines()[0]
        raise ConfigError(source, f"not valid YAML: {reason}") from None


def _sections(document: yaml.Node | None, namespaces: bool, node_path: str = "",
              depth: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(node name, flat parameters)`` of every ``ros__parameters`` block, as rcl finds them.

    rcl accepts namespaces as nested mappings (``robot1: {fusion_node: {ros__parameters: …}}``
    is ``robot1/fusion_node``), an empty mapping anywhere above ``ros__parameters``, and nothing
    else: a value beside or instead of ``ros__parameters`` is refused. ``namespaces=False``: only
    ``node: {ros__parameters: …}`` at the top level (this package's own files).
    """
    if document is None:
        return
    if depth > _MAX_NESTING:
        raise ConfigError(node_path, f"{_where(document)}: node names nested more than {_MAX_NESTING} deep")
    if not isinstance(document, yaml.MappingNode):
        what = "a list" if isinstance(document, yaml.SequenceNode) else f"the value {document.value!r}"
        raise ConfigError(node_path or "top level", f"{_where(document)}: expected node names mapping to "
                          f"{ROS_PARAMETERS}, got {what}")
    for key_node, body in document.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise ConfigError(node_path or "top level", f"{_where(key_node)}: node names must be plain names")
        name = key_node.value
        if name == ROS_PARAMETERS:
            if not node_path:
                raise ConfigError(name, f"{_where(key_node)}: {ROS_PARAMETERS} must be under a node name")
            if len(document.value) != 1:
                raise ConfigError(node_path, f"{_where(document)}: must contain exactly one key, {ROS_PARAMETERS}")
            key_path = f"{node_path}.{ROS_PARAMETERS}"
            if isinstance(body, yaml.ScalarNode) and body.tag == _PLAIN and body.value == "":
                raise ConfigError(key_path, f"{_where(key_node)}: is empty (rcl refuses the file); give it "
                                  "parameters or write {}")
            flat: dict[str, Any] = {}
            _parameters(body, "", key_path, flat)
            yield node_path, flat
            continue
        path = f"{node_path}/{name}" if node_path else name
        if isinstance(body, yaml.MappingNode) and (namespaces or not node_path):
            if not namespaces and [k.value for k, _ in body.value] != [ROS_PARAMETERS]:
                raise ConfigError(path, f"{_where(key_node)}: must contain exactly one key, {ROS_PARAMETERS}")
            yield from _sections(body, namespaces, path, depth + 1)
        else:
            raise ConfigError(path, f"{_where(key_node)}: must contain exactly one key, {ROS_PARAMETERS}")


def read_parameters_file(path: str | Path, namespaces: bool = True) -> dict[str, dict[str, Any]]:
    """``{node name: {dotted name: value}}`` of a ROS 2 parameters file, read as rcl reads it.

    Everything rcl would refuse (unreadable, not UTF-8, binary, YAML errors, aliases, a missing or
    empty ``ros__parameters``, keys without values, lists of mixed types) is a ``ConfigError``
    naming the file, the key and the reason. Values are not checked against the schema here.
    """
    path = Path(path)
    document = _read_document(path)
    sections: dict[str, dict[str, Any]] = {}
    try:
        for name, parameters in _sections(document, namespaces):
            # A node given twice: rcl merges the blocks, the later value winning.
            sections.setdefault(name, {}).update(parameters)
    except ConfigError as error:
        raise error.in_file(path) from None
    return sections


def load_config(path: str | Path | None = None,
                overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, ParamValue]]:
    """Load and validate a parameters file; return ``{node: {dotted name: value}}`` for every node.

    Each node gets schema defaults, then the ``/**`` section, then its own section, then
    ``overrides[node]``. ``path=None`` loads the installed default ``fusion.yaml``. Every problem is
    one ``ConfigError`` naming the file, the key path and the reason.
    """
    path = Path(path) if path is not None else default_config_path()
    sections = read_parameters_file(path, namespaces=False)
    try:
        for node in sections:
            if node != WILDCARD_NODE and node not in NODE_PARAMETERS:
                raise ConfigError(node, f"unknown node; known nodes: {sorted(NODE_PARAMETERS)} or {WILDCARD_NODE}")
        wildcard = sections.get(WILDCARD_NODE, {})
        every_parameter = set(BUILTIN_PARAMETERS) | {spec.name for specs in NODE_PARAMETERS.values()
                                                     for spec in specs}
        for key in wildcard:
            if key not in every_parameter:
                raise ConfigError(f"{WILDCARD_NODE}.{ROS_PARAMETERS}.{key}",
                                  unknown_parameter_reason("any node", key, sorted(every_parameter)))
        from_file = {}
        for node in NODE_PARAMETERS:
            merged: dict[str, ParamValue] = default_parameters(node)
            # Keys under /** apply to the nodes that have them (as rcl does).
            known = set(parameter_specs(node)) | set(BUILTIN_PARAMETERS)
            merged.update(validate_parameters(node, {k: v for k, v in wildcard.items() if k in known},
                                              f"{WILDCARD_NODE}.{ROS_PARAMETERS}."))
            merged.update(validate_parameters(node, sections.get(node, {}), f"{node}.{ROS_PARAMETERS}."))
            _check_node_combination(node, merged, f"{node}.{ROS_PARAMETERS}.")
            from_file[node] = merged
    except ConfigError as error:
        raise error.in_file(path) from None
    if not overrides:
        return from_file
    if not isinstance(overrides, Mapping):
        raise ConfigError("overrides", f"expected a mapping of node names, got {_describe(overrides)}")
    for node in overrides:
        if node not in NODE_PARAMETERS:
            raise ConfigError(f"override {node}", f"unknown node; known nodes: {sorted(NODE_PARAMETERS)}")
    result = {}
    for node, merged in from_file.items():
        if node in overrides:
            merged = {**merged, **validate_parameters(node, overrides[node], f"override {node}.")}
            _check_node_combination(node, merged, f"override {node}.")
        result[node] = merged
    return result


# --------------------------------------------------------------------------------------------
# The nodes' start-up
# --------------------------------------------------------------------------------------------
def params_files_in(arguments: Sequence[str]) -> list[str]:
    """The files of ``--params-file FILE`` in the ROS arguments (after ``--ros-args``) of ``arguments``."""
    files, in_ros_args = [], False
    items = list(arguments)
    for index, item in enumerate(items):
        if item == "--ros-args":
            in_ros_args = True
        elif item == "--":
            in_ros_args = False
        elif in_ros_args and item == "--params-file" and index + 1 < len(items):
            files.append(items[index + 1])
    return files


def _applies_to(section: str, node: str) -> bool:
    """Whether rcl may apply the ``section`` of a file to a node named ``node`` (namespace ignored)."""
    last = section.rstrip("/").rsplit("/", 1)[-1]
    return last in (node, "*", "**")


def check_parameters_files(node: str, arguments: Sequence[str]) -> None:
    """Before ``rclpy.init``: check every ``--params-file`` of ``arguments`` for schema node ``node``.

    Each file must be one rcl reads (else rcl fails with a traceback), and the sections that apply
    to ``node`` (its name in any namespace, or a wildcard) must be valid for it: unknown keys,
    types, ranges, finite numbers, ``method``, the homography. Keys of the package's other nodes
    are allowed in wildcard sections (``/**``), as ``load_config`` allows them. Sections of other
    nodes are left to those nodes. ``ConfigError`` names the file, the key path and the reason.
    """
    specs = parameter_specs(node)
    others = {spec.name for other, other_specs in NODE_PARAMETERS.items() if other != node for spec in other_specs}
    for file in params_files_in(arguments):
        sections = read_parameters_file(file)
        try:
            merged: dict[str, ParamValue] = default_parameters(node)
            for section, parameters in sections.items():
                if not _applies_to(section, node):
                    continue
                wildcard = section.rstrip("/").rsplit("/", 1)[-1] in ("*", "**")
                own = {k: v for k, v in parameters.items()
                       if not (wildcard and k in others and k not in specs)}
                merged.update(validate_parameters(node, own, f"{section}.{ROS_PARAMETERS}."))
            _check_node_combination(node, merged, f"{node}.{ROS_PARAMETERS}.")
        except ConfigError as error:
            raise error.in_file(file) from None


def schema_node_of(specs: Sequence[ParameterSpec]) -> str | None:
    """The schema node whose parameters ``specs`` are (None for a list of specs of no node)."""
    names = [spec.name for spec in specs]
    return next((node for node, node_specs in NODE_PARAMETERS.items()
                 if [spec.name for spec in node_specs] == names), None)


def validate_start_up(specs: Sequence[ParameterSpec], values: Mapping[str, Any], node_name: str,
                      ignore: Callable[[str], bool] = lambda name: False) -> dict[str, ParamValue]:
    """What a node checks when it starts: the parameter values rcl handed it (``values``, from
    parameter files, ``-p`` or ``parameter_overrides``), normalised (an integer given for a float
    parameter becomes the float); ``ConfigError`` naming ``node_name``'s key otherwise.

    Keys the node does not have are refused, except rclpy's own (``BUILTIN_PARAMETERS``), those of
    the package's other nodes (a ``/**`` file section or a ``-p`` meant for the whole graph reaches
    every node) and those ``ignore`` accepts. ``None`` (rcl's NOT_SET, from ``[]`` or ``{}``) is
    left to the node's default.
    """
    node = schema_node_of(specs)
    by_name = {spec.name: spec for spec in specs}
    others = {spec.name for other, other_specs in NODE_PARAMETERS.items() for spec in other_specs} - set(by_name)
    prefix = f"{node_name}.{ROS_PARAMETERS}."
    checked: dict[str, ParamValue] = {}
    for name, value in values.items():
        if value is None or ignore(name):
            continue
        if isinstance(value, (array.array, tuple)):
            value = list(value)  # rclpy hands some arrays over as array.array
        if name in BUILTIN_PARAMETERS:
            checked[name] = _check_scalar("bool", value, prefix + name)
        elif name in by_name:
            checked[name] = by_name[name].validate(value, prefix + name)
        elif name not in others:
            raise ConfigError(prefix + name, unknown_parameter_reason(node or node_name, name, list(by_name)))
    if node is not None:
        merged = {**{spec.name: spec.default for spec in specs}, **checked}
        _check_node_combination(node, merged, prefix)
    return checked


def source_config_dir() -> Path:
    """``config/`` of the source tree this module was imported from."""
    return Path(__file__).resolve().parent.parent / "config"


def package_config_file(name: str) -> Path:
    """``share/mex_fusion_ros/config/<name>`` of the installed package, else the source tree's copy."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        try:
            installed = Path(get_package_share_directory(PACKAGE_NAME)) / "config" / name
            if installed.is_file():
                return installed
        except (PackageNotFoundError, OSError):  # OSError: AMENT_PREFIX_PATH unset
            pass
    except ImportError:
        pass
    return source_config_dir() / name


def default_config_path() -> Path:
    """The installed ``share/mex_fusion_ros/config/fusion.yaml``, else the source tree's copy."""
    return package_config_file("fusion.yaml")


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
