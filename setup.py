"""ament_python / pip set-up for mex_fusion_ros.

colcon honours setup.cfg's ``install_scripts`` (executables in ``lib/mex_fusion_ros``);
pip ignores it, so ``scripts/setup.sh`` links the console scripts there afterwards
(``python -m mex_fusion_ros.tools.ros_prefix``).
"""
import sys
from pathlib import Path

from setuptools import find_packages, setup

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mex_fusion_ros.tools.ros_prefix import share_layout  # noqa: E402  (one list of data files)

PACKAGE = "mex_fusion_ros"

# Every node executable and the CLI. ros_prefix.py reads this list back from the installed
# distribution's entry points, so there is exactly one place to add an executable.
CONSOLE_SCRIPTS = [
    "mex-fusion = mex_fusion_ros.cli:main",
    "fusion_node = mex_fusion_ros.nodes.fusion_node:main",
    "detector_node = mex_fusion_ros.nodes.detector_node:main",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=share_layout(),
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="mex_fusion_ros developers",
    maintainer_email="mex-fusion-ros@users.noreply.github.com",
    description="Degradation-gated mixture-of-experts thermal/RGB fusion for ROS 2, with a YOLO detector node.",
    license="Apache-2.0",
    python_requires=">=3.10",
    tests_require=["pytest"],
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
