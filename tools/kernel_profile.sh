#!/usr/bin/env bash
# GPU machine, one device call (carry [".device"]): Nsight Compute's view of the kernels a bench
# launches, for finding what bounds one (memory, latency, issue, occupancy) before changing it.
#   bash tools/kernel_profile.sh <kernel-name regex> <bench file> [bench flags...]
#   e.g. bash tools/kernel_profile.sh 'linear_awq_gemv|linear_gemv_' bench/kernels/linear_awq_bench.ts
# Writes $OUT/profile.txt (speed of light, occupancy, memory and warp-stall sections of the first
# 6 matching launches). Falls back to nsys's per-kernel time table where ncu is missing.
source "$(dirname "$0")/device_env.sh"
regex="${1:?kernel-name regex}"
bench="${2:?bench file}"
shift 2
log="$OUT/profile.txt"
ncu_bin="$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || true)"
if [ -n "$ncu_bin" ]; then
  "$ncu_bin" --target-processes all --kernel-name "regex:$regex" --launch-count 6 \
    --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section MemoryWorkloadAnalysis --section WarpStateStats \
    bash .device/gpu.sh deno run -A --no-check "$bench" "$@" >"$log" 2>&1
  echo "ncu rc=$? ($ncu_bin)" | tee -a "$log"
else
  nsys_bin="$(command -v nsys || true)"
  if [ -z "$nsys_bin" ]; then
    echo "neither ncu nor nsys on this machine" | tee "$log"
    exit 1
  fi
  "$nsys_bin" profile -o "$OUT/trace" --force-overwrite true \
    bash .device/gpu.sh deno run -A --no-check "$bench" "$@" >"$log" 2>&1
  "$nsys_bin" stats --report cuda_gpu_kern_sum "$OUT/trace.nsys-rep" >>"$log" 2>&1
  rm -f "$OUT/trace.nsys-rep" "$OUT/trace.sqlite"
  echo "nsys only ($nsys_bin): per-kernel times, no stall reasons" | tee -a "$log"
fi
grep -E "==PROF==|Duration|Memory Throughput|Achieved Occupancy|Registers Per|Stall|rc=" "$log" | head -80
