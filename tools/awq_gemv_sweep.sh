#!/usr/bin/env bash
# The quantized GEMVs' variants and K splits on the GPU machine (bench/kernels/linear_awq_bench.ts
# and linear_fp8_bench.ts with --gemv-only), one process each; the log keeps every line, stdout
# the M = 1 and M = 8 ones.
#   bash tools/awq_gemv_sweep.sh                 # every 4-bit variant and FP8, default and forced splits
#   VARIANTS="s2 s2_p" SPLITS="default 2" FP8_SPLITS="" bash tools/awq_gemv_sweep.sh
source "$(dirname "$0")/device_env.sh"
log="$OUT/awq_gemv_sweep.log"
run() { # bench, args...
  local bench=$1
  shift
  echo "--- $bench $*" >>"$log"
  timeout 120 bash .device/gpu.sh deno run -A --no-check "bench/kernels/$bench" --gemv-only "$@" \
    >>"$log" 2>&1 || echo "FAILED: $bench $*" >>"$log"
}
for variant in ${VARIANTS-s2 s3 s2_p s3_p s2_ps}; do
  for split in ${SPLITS-default 1 2 4 8}; do
    if [ "$split" = default ]; then run linear_awq_bench.ts --variant "$variant"; else
      run linear_awq_bench.ts --variant "$variant" --split "$split"
    fi
  done
done
for split in ${FP8_SPLITS-default 1 2 4 8}; do
  if [ "$split" = default ]; then run linear_fp8_bench.ts; else run linear_fp8_bench.ts --split "$split"; fi
done
grep -E '^(---|FAILED|TARGET|# m1_|# m8_)' "$log"
