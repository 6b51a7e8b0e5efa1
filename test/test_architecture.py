"""The ROS-free core really is ROS-free: importing it never loads rclpy (it must run without ROS)."""
import pkgutil
import subprocess
import sys
from pathlib import Path

import mex_fusion_ros

PACKAGE_DIR = Path(mex_fusion_ros.__file__).parent
#: Modules that are ROS processes by nature (docs/architecture.md).
ROS_MODULES = ("mex_fusion_ros.nodes.", "mex_fusion_ros.bag.live")
ROS_FREE_EXCEPTIONS = ("mex_fusion_ros.nodes.pipeline", "mex_fusion_ros.nodes.stats", "mex_fusion_ros.nodes.yolo")


def ros_free_modules() -> list[str]:
    names = [info.name for info in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="mex_fusion_ros.")]
    return sorted(name for name in names
                  if not name.startswith(ROS_MODULES) or name in ROS_FREE_EXCEPTIONS)


def test_ros_free_modules_do_not_import_rclpy():
    modules = ros_free_modules()
    assert "mex_fusion_ros.model.network" in modules and "mex_fusion_ros.sync.synchronizer" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    if 'rclpy' in sys.modules:\n"
        "        raise SystemExit(f'{name} imported rclpy')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
