#!/usr/bin/env bash
# GPU machine, one device call (carry [".device"]): where a decode step's device time goes, kernel
# by kernel, from an Nsight Systems trace of bench/decode_bench.ts (graph replays traced per node).
#   bash tools/step_kernels.sh <batch> [decode_bench flags...]
#   e.g. bash tools/step_kernels.sh 256 --context 512 --steps 32
#   TAG=awq bash tools/step_kernels.sh 1 --quantization awq   # files named kernels_b1_awq.*
#   bash tools/step_kernels.sh offline --requests 1000         # the offline engine run instead
#     (bench/engine_bench.ts --offline: every kernel of the serving workload, mixed steps too)
# Prints nsys's per-kernel time table ($OUT/kernels_b<batch>.txt); the warm-up and capture
# launches are in it too, so read it for shares, not for absolute step times (decode_bench's own
# DECODE line gives those).
source "$(dirname "$0")/device_env.sh"
batch="${1:?batch}"
shift
name="b$batch${TAG:+_$TAG}"
[ "$batch" = offline ] && name="offline${TAG:+_$TAG}"
log="$OUT/kernels_$name.txt"
nsys_bin="$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1 || true)"
if [ -z "$nsys_bin" ]; then
  echo "no nsys on this machine" | tee "$log"
  exit 1
fi
if [ "$batch" = offline ]; then
  bench=(bench/engine_bench.ts --offline "$@")
else
  bench=(bench/decode_bench.ts --presets llama3-8b --batches "$batch" "$@")
fi
"$nsys_bin" profile --trace cuda --cuda-graph-trace node -o "$OUT/trace_$name" --force-overwrite true \
  bash .device/gpu.sh deno run -A --no-check "${bench[@]}" >"$log" 2>&1
echo "nsys rc=$?" >>"$log"
"$nsys_bin" stats --report cuda_gpu_kern_sum --format csv "$OUT/trace_$name.nsys-rep" >>"$log" 2>&1
rm -f "$OUT/trace_$name.nsys-rep" "$OUT/trace_$name.sqlite"
grep -E "DECODE|TARGET|PROFILE kind|completion tok/s|nsys rc" "$log"
grep -A 45 "Time (%)" "$log" | cut -c1-220
