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
import contextlib
import os
import sys
from collections.abc import Mapping, Sequence

from mex_fusion_ros.config import NODE_PARAMETERS, ConfigError
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


def spin_graph(nodes: Sequence, duration: float = 0.0) -> None:
    """Spin each node on its own executor thread until shutdown, Ctrl-C or ``duration`` seconds."""
    from mex_fusion_ros.nodes.spinning import IsolatedExecutors

    # Leaving the block detaches the nodes first, so no callback runs against a destroyed node.
    with IsolatedExecutors(nodes) as executors, contextlib.suppress(KeyboardInterrupt):
        executors.wait(duration)


def run_graph(arguments: Mapping[str, str], ros_args: Sequence[str] = (), duration: float = 0.0) -> int:
    """Resolve, build and spin the graph in this process; 0 on a clean stop, 1 if it cannot start."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    try:
        resolved = resolve_graph(arguments)
    except ConfigError as error:
        print(f"mex-fusion run: {error}", file=sys.stderr)
        return 1
    import rclpy

    from mex_fusion_ros.nodes.detector_node import DetectorError
    from mex_fusion_ros.nodes.fusion_node import FusionNodeError

    rclpy.init(args=["mex-fusion-run", *ros_args])
    nodes: list = []
    try:
        nodes = build_nodes(resolved)
        spin_graph(nodes, duration)
    except (FusionNodeError, DetectorError, ConfigError) as error:
        print(f"mex-fusion run: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def run(args: argparse.Namespace) -> int:
    ros_args = ["--ros-args", *args.ros_args] if args.ros_args is not None else []
    return run_graph(launch_arguments(args), ros_args, args.duration)
