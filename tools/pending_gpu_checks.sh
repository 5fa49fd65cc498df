#!/usr/bin/env bash
# GPU machine, one device call (carry [".device", ".prev"], .prev made here by
# `DEST=.prev bash tools/make_base.sh ffbbf31` with its PTX xz-packed): what session 14's changes
# wait for, each part only while time is left (DEADLINE seconds, default 560): GPU tests of the
# wgmma idle-warpgroup skip and stream-K (linear_sm90), the interleaved 4-bit codes (awq) and the
# W8A8 GEMM on the shared main loop (fp8); offline throughput with stream-K never and timed (if
# timed wins, STREAM_K_DEFAULT in ops/gpu/linear.ts becomes "timed"); the AWQ batch-1 step against
# .prev; the 4-bit GEMV bench; linear_bench at decode batch sizes.
#   DEADLINE=540 bash tools/pending_gpu_checks.sh
source tools/device_env.sh
export OUT
DEADLINE="${DEADLINE:-560}"
left() { [ "$SECONDS" -lt "$((DEADLINE - $1))" ]; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "tree: $(cat .device/commit), .prev: $(cat .prev/commit), deadline ${DEADLINE}s"
ls .prev/kernels/ptx/*.xz >/dev/null 2>&1 && xz -d .prev/kernels/ptx/*.xz
for t in linear_sm90 awq fp8; do
  left 60 || break
  echo "=== gpu test $t $(date +%T)"
  DENALI_GPU_TESTS=1 timeout 100 bash .device/gpu.sh deno test -A --no-check tests/gpu/${t}_gpu_test.ts 2>&1 | grep -E "^(gpu|ok|FAILED|error)|passed|failed|Error|assert" | tail -14
done
for sk in 0 timed; do
  left 70 || break
  echo "=== offline DENALI_STREAM_K=$sk $(date +%T)"
  DENALI_STREAM_K=$sk timeout 80 bash .device/gpu.sh deno run -A --no-check bench/engine_bench.ts --requests 1000 --offline --profile 2>&1 | grep -E "completion tok/s|PROFILE (kind|steps)|^engine:" | cut -c1-160
done
if left 100; then
  echo "=== decode A/B awq $(date +%T)"
  ROUNDS=1 STEP_TIMEOUT=45 bash tools/decode_ab.sh --presets llama3-8b --batches 1 --steps 32 --quantization awq
fi
if left 50; then
  echo "=== awq gemv $(date +%T)"
  timeout 45 bash .device/gpu.sh deno run -A --no-check bench/kernels/linear_awq_bench.ts --gemv-only 2>&1 | grep -E "^(BENCH|TARGET)" | cut -c1-150
fi
if left 60; then
  echo "=== linear_bench $(date +%T)"
  timeout $((DEADLINE - SECONDS)) bash .device/gpu.sh deno run -A --no-check bench/kernels/linear_bench.ts --ms 192,400 --shapes 28672x4096,6144x4096 2>&1 | grep -v "^BENCH linear_gemv_plain" > $OUT/linear.txt
  grep -E "^BENCH (linear_gemm|accel)|ratio|kernel=|^# device|^BENCH read_only" $OUT/linear.txt | cut -c1-120
fi
echo "=== end $(date +%T) ($SECONDS s)"
