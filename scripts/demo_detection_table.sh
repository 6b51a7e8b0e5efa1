#!/usr/bin/env bash
# The closing-note table of issue 16: `detect eval` of the shipped demo-scene detector on the demo's
# own scene (seed 0, never trained on), inputs ir, vi, nano and laplacian, presets clean, noise50,
# haze and mixed. Rerun it after new network weights land: NANO=nano (the shipped weights by name)
# or NANO=path/to/weights.pt.
# Usage: scripts/demo_detection_table.sh [OUT]    (about 2 min on one CPU core)
set -euo pipefail
OUT=${1:-outputs/demo_detection_table}
NANO=${NANO:-weights/mex_nano.pt}
FRAMES=${FRAMES:-100}
PY=${PY:-.venv/bin}
export YOLO_OFFLINE=1 MPLBACKEND=Agg
[ -d "$OUT/scene" ] || "$PY/mex-fusion" detect scene --out "$OUT/scene" --seeds 0 --frames-per-seed "$FRAMES"
"$PY/mex-fusion" detect eval --data "$OUT/scene" --detector weights/demo_scene_yolo.pt \
    --input ir --input vi --input "$NANO" --input laplacian \
    --preset clean --preset noise50 --preset haze --preset mixed --device cpu --out "$OUT/report" --no-progress
