#!/usr/bin/env bash
# make model: export YOLOv8n to models/yolov8n.onnx with Ultralytics, in a
# throwaway virtual environment when the yolo command is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p models
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
yolo=$(command -v yolo || true)
if [ -z "$yolo" ]; then
  echo "model: yolo is not installed; installing Ultralytics in a throwaway virtual environment ($work/venv)"
  if ! python3 -m venv "$work/venv"; then
    echo "model: FAILED: python3 -m venv did not work (Debian: apt-get install python3-venv)." >&2
    exit 1
  fi
  if ! "$work/venv/bin/pip" install --quiet ultralytics onnx onnxslim; then
    echo "model: FAILED: pip could not install ultralytics (no access to the Python package index?)." >&2
    echo "model: export the model elsewhere with 'yolo export model=yolov8n.pt format=onnx' and copy it to models/yolov8n.onnx, or set MODEL_PATH." >&2
    exit 1
  fi
  yolo="$work/venv/bin/yolo"
fi
if ! (cd "$work" && "$yolo" export model=yolov8n.pt format=onnx); then
  echo "model: FAILED: 'yolo export model=yolov8n.pt format=onnx' did not work (it downloads yolov8n.pt on first use)." >&2
  exit 1
fi
mv "$work/yolov8n.onnx" models/yolov8n.onnx
echo "model: wrote models/yolov8n.onnx"
