#!/usr/bin/env bash
# Builds the mex_fusion_msgs interface package with plain CMake and installs it into a virtual
# environment that holds the ROS 2 PyPI wheels (no colcon, no sourced ROS 2 needed):
#
#   scripts/build_interfaces.sh .venv
#
# Afterwards `from mex_fusion_msgs.msg import FusionStatus` works with that venv's Python.
# On a robot with a ROS 2 distribution, build the package with colcon instead (docs/interfaces.md).
# Output goes to build/mex_fusion_msgs.log; on failure its tail is printed. Nothing is rebuilt
# while the installed package is newer than every file under mex_fusion_msgs/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [ $# -ne 1 ]; then
  echo "usage: $0 <venv>   (the venv with the ros-rosidl-* and ros-ament-* wheels)" >&2
  exit 2
fi
[ -d "$1" ] || { echo "build_interfaces: venv directory $1 does not exist" >&2; exit 1; }
VENV=$(cd "$1" && pwd)
PY="$VENV/bin/python"
SRC="$ROOT/mex_fusion_msgs"
BUILD="$ROOT/build/mex_fusion_msgs"
LOG="$ROOT/build/mex_fusion_msgs.log"
STAMP="$VENV/share/mex_fusion_msgs/.mex-build-stamp"

[ -x "$PY" ] || { echo "build_interfaces: $PY not found (is $1 a venv?)" >&2; exit 1; }
py_site=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
if [ -f "$STAMP" ] && [ -f "$py_site/mex_fusion_msgs/msg/__init__.py" ] \
   && [ -z "$(find "$SRC" -newer "$STAMP" -print -quit)" ]; then
  echo "build_interfaces: mex_fusion_msgs is up to date"
  exit 0
fi

command -v cmake >/dev/null || { echo "build_interfaces: cmake (>= 3.21) is required" >&2; exit 1; }
command -v c++ >/dev/null || { echo "build_interfaces: a C/C++ compiler (c++) is required" >&2; exit 1; }
for module in rosidl_generator_py ament_package catkin_pkg numpy; do
  "$PY" -c "import $module" 2>/dev/null \
    || { echo "build_interfaces: $PY cannot import $module (pip install -r requirements.txt)" >&2; exit 1; }
done

mkdir -p "$ROOT/build"
# A build directory configured for another venv (moved or recreated elsewhere) caches its paths.
if [ -f "$BUILD/CMakeCache.txt" ] && ! grep -qxF "CMAKE_INSTALL_PREFIX:PATH=$VENV" "$BUILD/CMakeCache.txt"; then
  rm -rf "$BUILD"
fi
# The typesupport lookup during generation reads the ament index through AMENT_PREFIX_PATH.
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export PATH="$VENV/bin:$PATH"
start=$(date +%s)
echo "build_interfaces: building mex_fusion_msgs into $VENV (log: $LOG)"
if ! {
  cmake -S "$SRC" -B "$BUILD" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$VENV" \
    -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DPython3_EXECUTABLE="$PY" \
    -DBUILD_TESTING=OFF \
    && cmake --build "$BUILD" --parallel "$(nproc)" \
    && cmake --install "$BUILD"
} >"$LOG" 2>&1; then
  echo "build_interfaces: FAILED; last lines of $LOG:" >&2
  tail -n 40 "$LOG" >&2
  exit 1
fi
if ! "$PY" -c "from mex_fusion_msgs.msg import FusionStatus, DetectionArray" >>"$LOG" 2>&1; then
  echo "build_interfaces: built, but $PY cannot import mex_fusion_msgs.msg; last lines of $LOG:" >&2
  tail -n 20 "$LOG" >&2
  exit 1
fi
touch "$STAMP"
echo "build_interfaces: done in $(( $(date +%s) - start )) s"
