#!/usr/bin/env bash
# make run: start Redis (unless REDIS_URL is set), a worker and the API in
# the foreground; Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."

# .env is read by the binaries too; read it here for REDIS_URL and MODEL_PATH.
if [ -f .env ]; then set -a; . ./.env; set +a; fi

# Stop in order: the API and the worker first (the worker finishes its
# running tasks and records them in Redis), then the private Redis. Ctrl-C
# in a terminal signals the whole foreground process group at once, so the
# private Redis runs in a session of its own and stops only here. A second
# Ctrl-C while the worker finishes stops it at once; its running tasks are
# then run again once their lease ends.
pids=()  # the worker and the API
redis=   # the private Redis, if this script started one
cleanup() {
  trap - EXIT
  trap 'kill -KILL "${pids[@]}" 2>/dev/null || true' INT TERM HUP
  if [ ${#pids[@]} -gt 0 ]; then
    kill "${pids[@]}" 2>/dev/null || true
    for p in "${pids[@]}"; do
      while kill -0 "$p" 2>/dev/null; do wait "$p" 2>/dev/null || true; done
    done
  fi
  if [ -n "$redis" ]; then
    kill "$redis" 2>/dev/null || true
    while kill -0 "$redis" 2>/dev/null; do wait "$redis" 2>/dev/null || true; done
  fi
}
trap cleanup EXIT INT TERM HUP  # HUP: the terminal closed
detach=()  # the private Redis's own session, where setsid exists
command -v setsid >/dev/null && detach=(setsid)

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [ -z "${REDIS_URL:-${BROKER_URL:-}}" ]; then
  port=6390
  while ! port_free "$port"; do port=$((port + 1)); done
  export REDIS_URL="redis://127.0.0.1:$port/0"
  if command -v redis-server >/dev/null; then
    mkdir -p .cache/redis
    echo "run: starting a private redis-server on 127.0.0.1:$port (data in .cache/redis)"
    "${detach[@]}" redis-server --port "$port" --bind 127.0.0.1 --dir .cache/redis --appendonly yes --save "" --loglevel warning &
    redis=$!
  else
    echo "run: WARNING: redis-server is not installed; starting an embedded in-memory Redis (miniredis) on 127.0.0.1:$port."
    echo "run: WARNING: nothing persists: queued tasks and results are lost when it stops. apt-get install redis-server for a real one."
    "${detach[@]}" bin/devredis -addr "127.0.0.1:$port" &
    redis=$!
  fi
  for _ in $(seq 100); do port_free "$port" || break; sleep 0.1; done
fi

if [ -z "${MODEL_PATH:-}" ]; then
  if [ -f models/yolov8n.onnx ]; then
    :
  elif [ -f ../shared/models/yolov8n.onnx ]; then
    echo "run: models/yolov8n.onnx is missing; using the development model ../shared/models/yolov8n.onnx"
    export MODEL_PATH=../shared/models/yolov8n.onnx
  else
    make model
  fi
fi

bin/worker &
pids+=($!)
bin/api &
pids+=($!)
echo "run: API on ${API_ADDR:-:5000}, worker health on ${WORKER_ADDR:-:9091}; Ctrl-C stops everything"
api_port=${API_ADDR:-:5000}
echo "run: try: curl -F image=@photo.jpg 'localhost:${api_port##*:}/predict?wait=30'"
# Stop everything as soon as one process exits.
wait -n
