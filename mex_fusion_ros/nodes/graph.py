"""The one description of the fusion graph, shared by ``launch/fusion.launch.py`` and ``mex-fusion run``.

Both front ends do the same three things with it:

1. take the launch arguments (``LAUNCH_ARGUMENTS``: name, default, description, choices);
2. ``resolve_graph(arguments)``: load and validate the parameters file (``config``) with the
   argument overrides through ``mex_fusion_ros.config.load_config``, and produce one
   ``ResolvedNode`` per node: package, executable, node class, name, namespace, remappings and the
   node's complete, validated parameter dict;
3. start them: the launch file as ``launch_ros.actions.Node(executable=..., parameters=[dict],
   remappings=...)`` processes, ``mex-fusion run`` as instances of the node classes, each on its
   own single-threaded executor thread (``nodes.spinning.IsolatedExecutors``).

Parameters are handed over as the node's validated dict rather than the file path, so a
namespaced node still gets them (a params file's ``fusion_node:`` key would not match
``/robot1/fusion_node``) and a bad value fails before anything starts, naming the key.
Topics are relative names, so ``namespace`` moves the whole graph; topic arguments are remaps.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mex_fusion_ros import PACKAGE_NAME
from mex_fusion_ros.config import ConfigError, ParamValue, default_config_path, load_config

# Topic names as the nodes create them (relative: they follow the namespace).
THERMAL_IMAGE = "thermal/image_raw"
RGB_IMAGE = "rgb/image_raw"
THERMAL_INFO = "thermal/camera_info"
RGB_INFO = "rgb/camera_info"
FUSED_IMAGE = "fused/image"
RESTORED_THERMAL = "restored/thermal"
RESTORED_RGB = "restored/rgb"
FUSION_STATUS = "fusion/status"
DETECTIONS = "detections"
DETECTIONS_2D = "detections_2d"
DETECTIONS_IMAGE = "detections/image"
DIAGNOSTICS = "/diagnostics"  # absolute: diagnostic aggregators listen on the global topic
COMPRESSED_SUFFIX = "/compressed"  # image_transport's convention for sensor_msgs/CompressedImage


@dataclass(frozen=True)
class LaunchArgument:
    """One launch argument; ``""`` as default means "keep the parameters file's value"."""

    name: str
    default: str
    description: str
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class NodeDescription:
    """A node of the graph: how to start it as a process and as an in-process object."""

    name: str
    executable: str
    #: ``module:Class``; the class takes ``Node``'s keyword arguments (``parameter_overrides`` ...).
    node_class: str
    #: Launch argument -> the parameter it sets on this node.
    parameter_arguments: dict[str, str] = field(default_factory=dict)
    #: Launch argument -> the topic name (as the node creates it) that it remaps.
    topic_arguments: dict[str, str] = field(default_factory=dict)

    def load_class(self) -> type:
        module, _, name = self.node_class.partition(":")
        return getattr(importlib.import_module(module), name)


# ROS 2 tutorials and parent launch files commonly pass ``use_sim_time:=True``; launch's own
# conditions accept both spellings, and DeclareLaunchArgument compares choices exactly.
BOOL_CHOICES = ("true", "false", "True", "False")

LAUNCH_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument("config", "", "ROS 2 parameters file; empty = the installed config/fusion.yaml."),
    LaunchArgument("namespace", "", "Namespace of both nodes (all topics are relative and follow it)."),
    LaunchArgument("use_sim_time", "false", "Use /clock (true when replaying a bag with --clock).",
                   BOOL_CHOICES),
    LaunchArgument("thermal_topic", THERMAL_IMAGE, "Thermal sensor_msgs/Image topic (compressed: "
                   "<topic>/compressed)."),
    LaunchArgument("rgb_topic", RGB_IMAGE, "RGB sensor_msgs/Image topic (compressed: <topic>/compressed)."),
    LaunchArgument("thermal_info_topic", THERMAL_INFO, "Thermal sensor_msgs/CameraInfo topic."),
    LaunchArgument("rgb_info_topic", RGB_INFO, "RGB sensor_msgs/CameraInfo topic."),
    LaunchArgument("fused_topic", FUSED_IMAGE,
                   "Fused image topic (fusion_node output, detector_node input)."),
    LaunchArgument("method", "", "Fusion method: nano, small, paper (network) or average, max, laplacian, "
                   "gff, cascade (classical); empty = the parameters file's."),
    LaunchArgument("weights", "", "Network weights (.pt); empty = the parameters file's (empty there: the "
                   "shipped weights of `method`)."),
    LaunchArgument("model", "", "Detector model (ultralytics .pt/.onnx/.yaml); empty = the parameters "
                   "file's. Without a usable model the detector stays up and reports ERROR on /diagnostics."),
    LaunchArgument("device", "", "Device of both nodes: auto, cpu, cuda, cuda:N; empty = the parameters "
                   "file's."),
    LaunchArgument("compressed", "", "Subscribe CompressedImage inputs; empty = the parameters file's.",
                   ("", *BOOL_CHOICES)),
    LaunchArgument("reliable", "", "Reliable input QoS for bag replay; empty = the parameters file's.",
                   ("", *BOOL_CHOICES)),
)

GRAPH: tuple[NodeDescription, ...] = (
    NodeDescription(
        name="fusion_node",
        executable="fusion_node",
        node_class="mex_fusion_ros.nodes.fusion_node:FusionNode",
        parameter_arguments={"use_sim_time": "use_sim_time", "method": "method", "weights": "weights",
                             "device": "device", "compressed": "input.compressed",
                             "reliable": "input.reliable"},
        topic_arguments={"thermal_topic": THERMAL_IMAGE, "rgb_topic": RGB_IMAGE,
                         "thermal_info_topic": THERMAL_INFO, "rgb_info_topic": RGB_INFO,
                         "fused_topic": FUSED_IMAGE},
    ),
    NodeDescription(
        name="detector_node",
        executable="detector_node",
        node_class="mex_fusion_ros.nodes.detector_node:DetectorNode",
        parameter_arguments={"use_sim_time": "use_sim_time", "model": "model", "device": "device"},
        topic_arguments={"fused_topic": FUSED_IMAGE},
    ),
)


@dataclass(frozen=True)
class ResolvedNode:
    """A node ready to start: everything ``launch_ros.actions.Node`` or the node class needs."""

    package: str
    executable: str
    node_class: str
    name: str
    namespace: str
    #: (from, to) pairs, ROS remapping rules.
    remappings: tuple[tuple[str, str], ...]
    #: The node's complete validated parameters (schema defaults < file < arguments).
    parameters: dict[str, ParamValue]
    config_path: str


def _parse_bool(argument: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ConfigError(argument, f"expected true or false, got {text!r}")


def _argument_value(argument: str, parameter: str, text: str) -> Any:
    """A launch argument's text -> the typed parameter value (launch arguments are strings)."""
    if parameter in ("use_sim_time", "input.compressed", "input.reliable"):
        return _parse_bool(argument, text)
    return text


def _remaps(topic: str, target: str) -> list[tuple[str, str]]:
    """Remap an image topic and its compressed sibling together, as image_transport users expect."""
    if topic == target:
        return []
    rules = [(topic, target)]
    if topic in (THERMAL_IMAGE, RGB_IMAGE):
        rules.append((topic + COMPRESSED_SUFFIX, target + COMPRESSED_SUFFIX))
    return rules


def resolve_graph(arguments: Mapping[str, str] | None = None) -> list[ResolvedNode]:
    """Resolve the launch arguments (strings, as launch hands them over) into startable nodes.

    Unknown argument names and bad values raise ``ConfigError`` naming the argument or key.
    """
    given = dict(arguments or {})
    known = {argument.name: argument for argument in LAUNCH_ARGUMENTS}
    for name, text in given.items():
        if name not in known:
            raise ConfigError(name, f"unknown launch argument; known: {sorted(known)}")
        choices = known[name].choices
        if choices is not None and text not in choices:
            raise ConfigError(name, f"{text!r} is not one of {list(choices)}")
    values = {name: given.get(name, argument.default) for name, argument in known.items()}
    config_path = Path(values["config"]) if values["config"] else default_config_path()
    namespace = values["namespace"].strip("/")

    overrides: dict[str, dict[str, Any]] = {}
    for node in GRAPH:
        node_overrides = overrides.setdefault(node.name, {})
        for argument, parameter in node.parameter_arguments.items():
            if values[argument] != "":
                node_overrides[parameter] = _argument_value(argument, parameter, values[argument])
    config = load_config(config_path, overrides=overrides)

    resolved = []
    for node in GRAPH:
        remappings: list[tuple[str, str]] = []
        for argument, topic in node.topic_arguments.items():
            remappings += _remaps(topic, values[argument])
        resolved.append(ResolvedNode(
            package=PACKAGE_NAME, executable=node.executable, node_class=node.node_class, name=node.name,
            namespace=namespace, remappings=tuple(remappings), parameters=dict(config[node.name]),
            config_path=str(config_path)))
    return resolved


def remap_arguments(remappings: tuple[tuple[str, str], ...]) -> list[str]:
    """``--ros-args -r from:=to ...`` for ``Node(cli_args=...)``; empty when nothing is remapped."""
    if not remappings:
        return []
    args = ["--ros-args"]
    for source, target in remappings:
        args += ["-r", f"{source}:={target}"]
    return args


def launch_parameters(node: ResolvedNode) -> dict[str, ParamValue]:
    """The node's parameters as ``launch_ros.actions.Node(parameters=[...])`` takes them.

    launch_ros writes the dict to a temporary parameters file, and rcl's YAML parser cannot type an
    empty list; an empty list that equals the schema default is left out, which gives the node the
    same value (its declared default). Everything else is passed as resolved.
    """
    from mex_fusion_ros.config import parameter_specs

    specs = parameter_specs(node.name)
    return {name: value for name, value in node.parameters.items()
            if not (value == [] and name in specs and specs[name].default == [])}
