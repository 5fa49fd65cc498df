#!/usr/bin/env bash
# The 4-bit GEMV's variants and K splits on the GPU machine (bench/kernels/linear_awq_bench.ts
# --gemv-only), one process each; the log keeps every line, stdout the M = 1 and M = 8 ones.
#   bash tools/awq_gemv_sweep.sh                 # every variant at the default and forced splits
#   VARIANTS="s2 s2_p" SPLITS="default 2" bash tools/awq_gemv_sweep.sh
source "$(dirname "$0")/device_env.sh"
log="$OUT/awq_gemv_sweep.log"
for variant in ${VARIANTS:-s2 s3 s2_p s3_p}; do
  for split in ${SPLITS:-default 1 2 4 8}; do
    args=(--gemv-only --variant "$variant")
    [ "$split" != default ] && args+=(--split "$split")
    echo "--- ${args[*]}" >>"$log"
    timeout 120 bash .device/gpu.sh deno run -A --no-check bench/kernels/linear_awq_bench.ts \
      "${args[@]}" >>"$log" 2>&1 || echo "FAILED: ${args[*]}" >>"$log"
  done
done
grep -E '^(---|FAILED|TARGET|# m1_|# m8_)' "$log"
