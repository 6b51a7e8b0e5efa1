"""The ``main`` every node executable shares: ``ros2 run mex_fusion_ros <node> [--ros-args ...]``.

Humble-compatible start-up and stop (``nodes.spinning.run_until_stopped``: ``rclpy.init`` without
rclpy's signal handlers, ``try/finally``; rolling's ``with rclpy.init()`` does not exist on Humble).
``--help`` prints the node's topics and parameters without starting ROS. A node that cannot start
(missing weights, invalid parameter) prints one line naming the parameter and exits with status 1.
SIGINT and SIGTERM — also twice, as a terminal plus ``ros2 launch`` send them — stop the node
cleanly with status 0: callbacks and worker threads end before the publishers and the context go.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from rclpy.node import Node
from rclpy.utilities import remove_ros_args

from mex_fusion_ros.config import NODE_PARAMETERS, ConfigError, check_parameters_files
from mex_fusion_ros.deploy.allocator import retain_freed_memory
from mex_fusion_ros.nodes.spinning import end_process, run_until_stopped


def usage(executable: str, description: str) -> argparse.ArgumentParser:
    parameters = "\n".join(f"  {spec.name} ({spec.type_name}, default {spec.default!r}): {spec.description}"
                           for spec in NODE_PARAMETERS[executable])
    return argparse.ArgumentParser(
        prog=f"ros2 run mex_fusion_ros {executable}", description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"ROS arguments follow --ros-args (-p name:=value, --params-file FILE, -r from:=to).\n\n"
               f"parameters:\n{parameters}")


def run_node(executable: str, description: str, factory: Callable[..., Node],
             startup_errors: tuple[type[BaseException], ...], args: Sequence[str] | None = None) -> int:
    """Parse ``--help``, start ROS, build the node with ``factory(context=...)``, spin until stopped."""
    argv = list(sys.argv if args is None else args)
    try:  # before rcl parses the files (remove_ros_args, init): one line where rcl's error is a traceback
        check_parameters_files(executable, argv)
    except ConfigError as error:
        print(f"{executable}: {error}", file=sys.stderr)
        return 1
    usage(executable, description).parse_args(remove_ros_args(argv)[1:])  # exits on --help / unknown flags
    retain_freed_memory()  # per-frame tensors reuse freed pages instead of faulting (deploy/allocator.py)
    try:
        stopped_by = run_until_stopped(lambda context: [factory(context=context)], argv)
    except (*startup_errors, ConfigError) as error:
        print(f"{executable}: {error}", file=sys.stderr)
        return 1
    if stopped_by:
        end_process(0)  # stopped by a signal: skip the interpreter's slow teardown
    return 0
