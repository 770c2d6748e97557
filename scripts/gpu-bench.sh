#!/usr/bin/env bash
# Measures the service with CUDA on a GPU machine that cannot fetch
# anything and takes at most 64 MiB a call: the detector's parity and
# batching tests on the GPU (ORT_PROVIDER=cuda), then bench -provider cuda:
# the bare CUDA floor, the detector path with batching, and redis-server,
# bin/api and bin/worker with the worker on the GPU. The CUDA provider
# alone is 230 MB, so everything is packed here into one xz archive and
# split into parts under .gpu/1, .gpu/2, ...; each call to the machine
# carries one part, which stays in /tmp there while the machine is held,
# and the last call joins them and runs.
#
#   scripts/gpu-bench.sh stage     here: build, pack and split; prints the calls
#   scripts/gpu-bench.sh receive   there: keep the carried part (every call but the last)
#   scripts/gpu-bench.sh run       there: keep the last part, join, unpack and run
#
# The calls must follow each other closely: the machine, and /tmp with it,
# goes back when idle. The CUDA libraries (cuBLAS, cuDNN, ...) are looked
# for on the machine, as ../shared/tools/gpu/README.md describes; Redis
# and the decoders are carried from this machine.
set -euo pipefail
cd "$(dirname "$0")/.."

stage=.gpu
dest=${GPU_BENCH_DIR:-/tmp/yoloserve-gpu}
part_size=${GPU_PART_SIZE:-60M}

case "${1:-}" in
stage)
  shared=${SHARED:-../shared}
  make --no-print-directory build ORT_FLAVOR=cuda
  go build -o bin/bench ./cmd/bench
  rm -rf "$stage"
  mkdir -p "$stage/root/lib/onnxruntime" "$stage/root/bin" "$stage/root/redis" "$stage/root/pkg" \
    "$stage/root/shared/models" "$stage/root/shared/images" "$stage/root/shared/reference"
  cp lib/onnxruntime/libonnxruntime.so.1 lib/onnxruntime/libonnxruntime_providers_cuda.so \
    lib/onnxruntime/libonnxruntime_providers_shared.so "$stage/root/lib/onnxruntime/"
  # The decoders the bench's stages use, from this machine (the GPU machine
  # has none); cp -L follows the links to the libraries themselves.
  for l in libturbojpeg.so.0 libpng16.so.16 libdeflate.so.0; do
    p=$(ldconfig -p | awk -v l="$l" '$1 == l && /x86-64/ {print $NF; exit}')
    [ -n "$p" ] || { echo "gpu-bench: $l not found here (apt-get install libturbojpeg0 libpng16-16 libdeflate0)" >&2; exit 1; }
    cp -L "$p" "$stage/root/lib/$l"
  done
  cp bin/bench bin/api bin/worker "$stage/root/bin/"
  # The detector's tests, run there from pkg/ so that they find ../shared.
  go test -c -o "$stage/root/pkg/yolo.test" ./internal/yolo
  # redis-server and the libraries it links beyond the C library, used by
  # it alone (a wrapper on the PATH): the machine's own libraries stay
  # first for everything else.
  r=$(readlink -f "$(command -v redis-server)")
  cp "$r" "$stage/root/redis/redis-server"
  ldd "$r" | awk '$3 ~ /^\// {print $3}' | grep -Ev '/(libc|libm|libpthread|libdl|librt)\.so' |
    xargs -r cp -L -t "$stage/root/redis/"
  printf '#!/bin/sh\nd=$(dirname "$(readlink -f "$0")")/../redis\nLD_LIBRARY_PATH=$d exec "$d/redis-server" "$@"\n' \
    > "$stage/root/bin/redis-server"
  chmod +x "$stage/root/bin/redis-server"
  # Only the dynamic-batch model, which at batch 1 is the static one: a
  # second 12 MB model would take another call.
  cp "$shared/models/yolov8n-dynamic.onnx" "$stage/root/shared/models/"
  cp "$shared"/images/* "$stage/root/shared/images/"
  cp "$shared"/reference/* "$stage/root/shared/reference/"
  tar -C "$stage/root" -cf - . | xz -T0 -6 > "$stage/all.tar.xz"
  sum=$(sha256sum < "$stage/all.tar.xz" | cut -d' ' -f1)
  split -b "$part_size" -d -a 2 "$stage/all.tar.xz" "$stage/part."
  parts=("$stage"/part.*)
  for i in "${!parts[@]}"; do
    n=$((i + 1))
    mkdir -p "$stage/$n"
    mv "${parts[$i]}" "$stage/$n/"
    printf 'parts=%d\nsha256=%s\n' "${#parts[@]}" "$sum" > "$stage/$n/manifest"
  done
  rm -rf "$stage/root" "$stage/all.tar.xz"
  echo "gpu-bench: ${#parts[@]} parts under $stage/ ($(du -sh "$stage" | cut -f1)); the calls, back to back:"
  for n in $(seq 1 "${#parts[@]}"); do
    if [ "$n" -lt "${#parts[@]}" ]; then cmd=receive; else cmd=run; fi
    echo "  run command='scripts/gpu-bench.sh $cmd' carry=['$stage/$n']"
  done
  ;;
receive | run)
  # Parts of an earlier staging, still there from a call before, go.
  for m in "$stage"/*/manifest; do
    if [ -f "$m" ] && [ -f "$dest/manifest" ] && ! cmp -s "$m" "$dest/manifest"; then rm -rf "$dest"; fi
  done
  mkdir -p "$dest"
  for d in "$stage"/*/; do
    if [ -f "$d/manifest" ]; then cp "$d"/part.* "$d/manifest" "$dest/"; fi
  done
  [ -f "$dest/manifest" ] || { echo "gpu-bench: no part carried (carry one of $stage/N)" >&2; exit 1; }
  # shellcheck disable=SC1091
  . "$dest/manifest"
  have=$(find "$dest" -maxdepth 1 -name 'part.*' | wc -l)
  echo "gpu-bench: $have of $parts parts in $dest"
  [ "$1" = run ] || exit 0
  [ "$have" = "$parts" ] || { echo "gpu-bench: parts missing; was the machine given back between the calls?" >&2; exit 1; }
  got=$(cat "$dest"/part.* | sha256sum | cut -d' ' -f1)
  [ "$got" = "$sha256" ] || { echo "gpu-bench: the joined archive's sha256 is $got, want $sha256" >&2; exit 1; }
  rm -rf "$dest/root" && mkdir -p "$dest/root"
  cat "$dest"/part.* | xz -d | tar -C "$dest/root" -xf -
  libs=$(find / \( -path /proc -o -path /sys -o -path "$dest" \) -prune -o \( -name 'libcublas.so.13*' \
    -o -name 'libcudnn.so.9*' -o -name 'libcurand.so.10*' -o -name 'libcudart.so.13*' -o -name 'libcufft.so.12*' \) \
    -print 2>/dev/null | xargs -r -n1 dirname | sort -u | tr '\n' ':')
  echo "gpu-bench: CUDA libraries in ${libs:-(none found)}"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  out=${OUT:-$dest}
  cd "$dest/root"
  provider=${GPU_BENCH_PROVIDER:-cuda}
  # The tests and the bench find ONNX Runtime in lib/onnxruntime beside
  # their folders, as in a checkout; the decoders are in lib.
  export LD_LIBRARY_PATH="$PWD/lib/onnxruntime:$PWD/lib:$libs${LD_LIBRARY_PATH:-}" PATH="$PWD/bin:$PATH"
  # The parity and batching tests on the provider: the same detections as
  # Ultralytics, and batched as unbatched.
  tests=0
  for run in '^TestParity$/^yolov8n-dynamic\.onnx$' '^TestBatchingGivesUnbatchedResults$'; do
    (cd pkg && ORT_PROVIDER=$provider timeout 180 ./yolo.test -test.v -test.count=1 -test.run "$run") 2>&1 |
      tee -a "$out/parity.log" || tests=$?
  done
  rc=0
  timeout "${GPU_BENCH_TIMEOUT:-420}" bin/bench -provider "$provider" ${GPU_BENCH_FLAGS:-} \
    -model shared/models/yolov8n-dynamic.onnx -dynamic shared/models/yolov8n-dynamic.onnx -images shared/images \
    -out "$out/results.json" -logs "$out" 2>&1 | tee "$out/bench.log" || rc=$?
  echo "gpu-bench: tests exit $tests, bench exit $rc"
  [ "$rc" = 0 ] && [ "$tests" = 0 ]
  ;;
*)
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
  ;;
esac
