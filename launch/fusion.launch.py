"""Launch the thermal/RGB fusion node and the YOLO detector node with config/fusion.yaml.

    ros2 launch mex_fusion_ros fusion.launch.py thermal_topic:=/boson/image_raw \
        rgb_topic:=/camera/color/image_raw method:=nano device:=cuda
    ros2 launch mex_fusion_ros fusion.launch.py --show-args

The graph (nodes, executables, remappings, parameters) comes from mex_fusion_ros.nodes.graph,
which `mex-fusion run` uses too: both start the same nodes with the same parameters. Arguments
left empty keep the parameters file's value; the file and the arguments are validated against the
schema before any node starts.

Without a detector model (an offline robot where the default yolov8n.pt was never downloaded)
detector_node stays up, publishes ERROR "no detector model: ..." on /diagnostics and loads one as
soon as `model` is set (model:=/path/yolov8n.pt here, or `ros2 param set /detector_node model ...`);
fusion runs regardless. Ctrl-C (SIGINT from the terminal and from launch) stops each node within
2 s with status 0.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from mex_fusion_ros import PACKAGE_NAME
from mex_fusion_ros.nodes.dds_env import LARGE_IMAGES_PROFILE, large_image_environment
from mex_fusion_ros.nodes.graph import LAUNCH_ARGUMENTS, launch_parameters, resolve_graph


def launch_nodes(context, *args, **kwargs):
    """Resolve the arguments (known only at launch time) into one launch_ros Node per graph node."""
    arguments = {argument.name: LaunchConfiguration(argument.name).perform(context)
                 for argument in LAUNCH_ARGUMENTS}
    # Fast DDS's shared-memory segment for camera-sized best-effort images (docs/deployment.md, 5).
    environment = large_image_environment(
        os.path.join(get_package_share_directory(PACKAGE_NAME), "config", LARGE_IMAGES_PROFILE))
    return [
        Node(package=node.package, executable=node.executable, name=node.name, namespace=node.namespace,
             parameters=[launch_parameters(node)], remappings=list(node.remappings), output="screen",
             additional_env=environment)
        for node in resolve_graph(arguments)
    ]


def generate_launch_description():
    installed_config = os.path.join(get_package_share_directory(PACKAGE_NAME), "config", "fusion.yaml")
    declared = []
    for argument in LAUNCH_ARGUMENTS:
        default = installed_config if argument.name == "config" else argument.default
        options = {"choices": list(argument.choices)} if argument.choices else {}
        declared.append(DeclareLaunchArgument(argument.name, default_value=default,
                                              description=argument.description, **options))
    return LaunchDescription([*declared, OpaqueFunction(function=launch_nodes)])
