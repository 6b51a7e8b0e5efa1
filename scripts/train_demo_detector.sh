#!/usr/bin/env bash
# Trains weights/demo_scene_yolo.pt, the demo-scene detector (weights/README.md): frames of the
# synthetic scene with seeds other than the demo's (training 2000-2059, validation 3000-3005),
# degraded by the fusion network's training sampler, each pair once as IR, RGB, nano-fused and
# laplacian-fused image, YOLOv8n from scratch at 320 px on the CPU (one torch thread, no workers).
# Usage: scripts/train_demo_detector.sh [OUT] [EPOCHS]     (about 70 min of one CPU core)
set -euo pipefail
OUT=${1:-/work/runs/demo_scene_yolo}
EPOCHS=${2:-12}
PY=${PY:-.venv/bin}
export YOLO_OFFLINE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MPLBACKEND=Agg
mkdir -p "$OUT"
[ -d "$OUT/scene_train" ] || "$PY/mex-fusion" detect scene --out "$OUT/scene_train" --seeds 2000-2059 --frames-per-seed 10
[ -d "$OUT/scene_val" ] || "$PY/mex-fusion" detect scene --out "$OUT/scene_val" --seeds 3000-3005 --frames-per-seed 10
RESUME=()
[ -f "$OUT/run/train/weights/last.pt" ] && RESUME=(--resume)
"$PY/mex-fusion" detect train --data "$OUT/scene_train" --val-data "$OUT/scene_val" \
    --input ir --input vi --input weights/mex_nano.pt --input laplacian --degrade training --seed 0 \
    --model yolov8n.yaml --imgsz 320 --batch 16 --epochs "$EPOCHS" --workers 0 --device cpu \
    --yolo-arg close_mosaic=3 --out "$OUT/run" "${RESUME[@]}"
