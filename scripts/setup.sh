#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment at .venv/.
#
# Two modes:
#   * no ROS 2 sourced (default): ROS 2 Kilted comes from PyPI wheels pinned in requirements.txt;
#   * a ROS 2 distribution sourced (ROS_DISTRO set, rclpy importable): the venv is created with
#     --system-site-packages and the ros-* wheels are skipped, so the distribution's rclpy,
#     messages, cv_bridge, message_filters and launch are used.
# Re-running is fast: a stamp records a hash of everything the environment is built from.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.setup-stamp"

use_system_ros=0
if [ -n "${ROS_DISTRO:-}" ] && "$PYTHON" -c "import rclpy" >/dev/null 2>&1; then
  use_system_ros=1
fi

inputs_hash=$(cat requirements.txt setup.py setup.cfg package.xml scripts/setup.sh scripts/build_interfaces.sh \
  $(find mex_fusion_msgs -type f \( -name '*.msg' -o -name 'CMakeLists.txt' -o -name 'package.xml' \) 2>/dev/null | sort) \
  | sha256sum | cut -d' ' -f1)
inputs_hash="$inputs_hash-ros$use_system_ros"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$inputs_hash" ] && [ -x "$VENV/bin/python" ]; then
  # Cheap, and picks up launch/config/weights files added since the last set-up.
  "$VENV/bin/python" -m mex_fusion_ros.tools.ros_prefix --prefix "$VENV" >/dev/null
  echo "setup: .venv is up to date"
  exit 0
fi

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is required")'
if [ ! -x "$VENV/bin/python" ]; then
  if [ "$use_system_ros" = 1 ]; then
    echo "setup: ROS 2 $ROS_DISTRO is sourced: venv sees its packages (--system-site-packages)"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
if [ "$use_system_ros" = 1 ]; then
  grep -v '^ros-\|^catkin-pkg' requirements.txt > "$VENV/requirements-no-ros.txt"
  "$VENV/bin/python" -m pip install --quiet -r "$VENV/requirements-no-ros.txt"
else
  "$VENV/bin/python" -m pip install --quiet -r requirements.txt
fi
"$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
# pip puts console scripts in .venv/bin; ros2 run / ros2 launch look in <prefix>/lib/<package>.
"$VENV/bin/python" -m mex_fusion_ros.tools.ros_prefix --prefix "$VENV"
if [ -x scripts/build_interfaces.sh ] && [ "$use_system_ros" = 0 ]; then
  scripts/build_interfaces.sh "$VENV"
fi
echo "$inputs_hash" > "$STAMP"
echo "setup: done ($VENV)"
