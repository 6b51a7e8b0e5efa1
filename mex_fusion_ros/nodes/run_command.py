"""``mex-fusion run``: the launch file's graph in one process, with rclpy only (no ``launch`` needed).

Both nodes are built from the same classes the ``fusion_node``/``detector_node`` executables run,
with the parameters and remappings ``nodes.graph.resolve_graph`` derives from the parameters file
and the arguments — the same function ``launch/fusion.launch.py`` calls — and each spun on its
own single-threaded executor thread (``nodes.spinning``), as ``ros2 launch`` runs each in its own
process: the detector's YOLO forward in its callback never slows the fusion node.

    mex-fusion run --config config/fusion.yaml --method laplacian --device cpu
    mex-fusion run --config config/fusion.yaml --namespace robot1 --ros-args --log-level debug
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from mex_fusion_ros.config import NODE_PARAMETERS, ConfigError, check_parameters_files, package_config_file
from mex_fusion_ros.nodes.dds_env import LARGE_IMAGES_PROFILE, large_image_environment
from mex_fusion_ros.nodes.graph import GRAPH, LAUNCH_ARGUMENTS, ResolvedNode, remap_arguments, resolve_graph


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Every launch argument is an option here too (``thermal_topic`` -> ``--thermal-topic``).
    for argument in LAUNCH_ARGUMENTS:
        default_text = f" (default: {argument.default})" if argument.default else ""
        parser.add_argument(f"--{argument.name.replace('_', '-')}", dest=argument.name, default=None,
                            choices=[c for c in argument.choices if c] if argument.choices else None,
                            help=argument.description + default_text)
    parser.add_argument("--duration", type=float, default=0.0,
                        help="stop after this many seconds (0: run until Ctrl-C)")
    parser.add_argument("--ros-args", dest="ros_args", nargs=argparse.REMAINDER, default=None,
                        help="the rest goes to rclpy.init as ROS arguments (e.g. --log-level debug)")


def launch_arguments(args: argparse.Namespace) -> dict[str, str]:
    """The ``--option`` values given on the command line, as launch-argument strings."""
    return {argument.name: getattr(args, argument.name) for argument in LAUNCH_ARGUMENTS
            if getattr(args, argument.name) is not None}


def build_nodes(resolved: Sequence[ResolvedNode], context: object | None = None) -> list:
    """Instantiate every resolved node (rclpy must be initialised); the first failure destroys the rest."""
    from mex_fusion_ros.nodes.params import overrides_to_parameters

    nodes = []
    try:
        for entry in resolved:
            description = next(node for node in GRAPH if node.name == entry.name)
            node_class = description.load_class()
            nodes.append(node_class(
                entry.name, namespace=entry.namespace or None, context=context,
                parameter_overrides=overrides_to_parameters(entry.parameters, NODE_PARAMETERS[entry.name]),
                cli_args=remap_arguments(entry.remappings)))
    except BaseException:
        for node in nodes:
            node.destroy_node()
        raise
    return nodes


def run_graph(arguments: Mapping[str, str], ros_args: Sequence[str] = (), duration: float = 0.0) -> int:
    """Resolve, build and spin the graph in this process; 0 on a clean stop, 1 if it cannot start."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    # As the launch file gives its node processes: Fast DDS's shared memory for camera-sized images
    # (docs/deployment.md, section 5), unless the user chose a profile or another RMW. Put back
    # afterwards, so a caller in the same process (tests) sees its own environment again.
    profile = large_image_environment(package_config_file(LARGE_IMAGES_PROFILE))
    os.environ.update(profile)
    try:
        return _run_resolved_graph(arguments, ros_args, duration)
    finally:
        for name in profile:
            os.environ.pop(name, None)


def _run_resolved_graph(arguments: Mapping[str, str], ros_args: Sequence[str], duration: float) -> int:
    try:
        resolved = resolve_graph(arguments)
        for node in resolved:  # --ros-args --params-file: global, so checked for every node of the graph
            check_parameters_files(node.name, ros_args)
    except ConfigError as error:
        print(f"mex-fusion run: {error}", file=sys.stderr)
        return 1
    from mex_fusion_ros.nodes.detector_node import DetectorError
    from mex_fusion_ros.nodes.fusion_node import FusionNodeError
    from mex_fusion_ros.nodes.spinning import end_process, run_until_stopped

    try:  # SIGINT/SIGTERM (also twice): executors, then nodes, then the context stop; exit 0
        stopped_by = run_until_stopped(lambda context: build_nodes(resolved, context=context),
                                       ["mex-fusion-run", *ros_args], duration)
    except (FusionNodeError, DetectorError, ConfigError) as error:
        print(f"mex-fusion run: {error}", file=sys.stderr)
        return 1
    if stopped_by:
        end_process(0)  # stopped by a signal: skip the interpreter's slow teardown
    return 0


def run(args: argparse.Namespace) -> int:
    ros_args = ["--ros-args", *args.ros_args] if args.ros_args is not None else []
    return run_graph(launch_arguments(args), ros_args, args.duration)
