#!/usr/bin/env bash
# Measures the detector path with CUDA (bench -provider cuda -detector-only)
# on a GPU machine that cannot fetch anything and takes at most 64 MiB a
# call: the CUDA provider alone is 230 MB. So everything the bench needs is
# packed here into one xz archive and split into parts under .gpu/1, .gpu/2,
# ...; each call to the machine carries one part, which stays in /tmp there
# while the machine is held, and the last call joins them and runs.
#
#   scripts/gpu-bench.sh stage     here: build, pack and split; prints the calls
#   scripts/gpu-bench.sh receive   there: keep the carried part (every call but the last)
#   scripts/gpu-bench.sh run       there: keep the last part, join, unpack and run
#
# The calls must follow each other closely: the machine, and /tmp with it,
# goes back when idle. The CUDA libraries (cuBLAS, cuDNN, ...) are looked
# for on the machine, as ../shared/tools/gpu/README.md describes.
set -euo pipefail
cd "$(dirname "$0")/.."

stage=.gpu
dest=${GPU_BENCH_DIR:-/tmp/yoloserve-gpu}
part_size=${GPU_PART_SIZE:-60M}

case "${1:-}" in
stage)
  shared=${SHARED:-../shared}
  make --no-print-directory ort ORT_FLAVOR=cuda
  go build -o bin/bench ./cmd/bench
  rm -rf "$stage"
  mkdir -p "$stage/root/lib" "$stage/root/bin" "$stage/root/models" "$stage/root/images"
  cp lib/onnxruntime/libonnxruntime.so.1 lib/onnxruntime/libonnxruntime_providers_cuda.so \
    lib/onnxruntime/libonnxruntime_providers_shared.so "$stage/root/lib/"
  # The decoders the bench's stages use, from this machine (the GPU machine
  # has none); cp -L follows the links to the libraries themselves.
  for l in libturbojpeg.so.0 libpng16.so.16; do
    p=$(ldconfig -p | awk -v l="$l" '$1 == l && /x86-64/ {print $NF; exit}')
    [ -n "$p" ] || { echo "gpu-bench: $l not found here (apt-get install libturbojpeg0 libpng16-16)" >&2; exit 1; }
    cp -L "$p" "$stage/root/lib/$l"
  done
  cp bin/bench "$stage/root/bin/"
  # Only the dynamic-batch model, which at batch 1 is the static one: a
  # second 12 MB model would take a fourth call.
  cp "$shared/models/yolov8n-dynamic.onnx" "$stage/root/models/"
  cp "$shared"/images/* "$stage/root/images/"
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
  LD_LIBRARY_PATH="$PWD/lib:$libs${LD_LIBRARY_PATH:-}" ORT_LIB="$PWD/lib/libonnxruntime.so.1" \
    timeout "${GPU_BENCH_TIMEOUT:-480}" bin/bench -provider "${GPU_BENCH_PROVIDER:-cuda}" -detector-only \
    -model models/yolov8n-dynamic.onnx -dynamic models/yolov8n-dynamic.onnx -images images \
    -out "$out/results.json" 2>&1 | tee "$out/bench.log"
  exit "${PIPESTATUS[0]}"
  ;;
*)
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
  ;;
esac
