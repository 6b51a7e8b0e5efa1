"""The ``main`` every node executable shares: ``ros2 run mex_fusion_ros <node> [--ros-args ...]``.

Humble-compatible start-up (``rclpy.init(args=...)`` + ``try/finally rclpy.try_shutdown()``;
rolling's ``with rclpy.init()`` does not exist on Humble). ``--help`` prints the node's topics and
parameters without starting ROS. A node that cannot start (missing weights or model, invalid
parameter) prints one line naming the parameter and exits with status 1.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.utilities import remove_ros_args

from mex_fusion_ros.config import NODE_PARAMETERS, ConfigError
from mex_fusion_ros.deploy.allocator import retain_freed_memory


def usage(executable: str, description: str) -> argparse.ArgumentParser:
    parameters = "\n".join(f"  {spec.name} ({spec.type_name}, default {spec.default!r}): {spec.description}"
                           for spec in NODE_PARAMETERS[executable])
    return argparse.ArgumentParser(
        prog=f"ros2 run mex_fusion_ros {executable}", description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"ROS arguments follow --ros-args (-p name:=value, --params-file FILE, -r from:=to).\n\n"
               f"parameters:\n{parameters}")


def run_node(executable: str, description: str, factory: Callable[[], Node],
             startup_errors: tuple[type[BaseException], ...], args: Sequence[str] | None = None) -> int:
    """Parse ``--help``, start ROS, build the node with ``factory``, spin until shutdown."""
    argv = list(sys.argv if args is None else args)
    usage(executable, description).parse_args(remove_ros_args(argv)[1:])  # exits on --help / unknown flags
    retain_freed_memory()  # per-frame tensors reuse freed pages instead of faulting (deploy/allocator.py)
    rclpy.init(args=argv)
    node = None
    try:
        node = factory()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (*startup_errors, ConfigError) as error:
        print(f"{executable}: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
