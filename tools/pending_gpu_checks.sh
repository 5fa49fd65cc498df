#!/usr/bin/env bash
# GPU machine (carry [".device", ".prev"], .prev made here by `DEST=.prev bash tools/make_base.sh
# ffbbf31` with its PTX xz-packed): what sessions 14 and 15's changes wait for, in two parts that
# each fit one device call, each step only while time is left (DEADLINE seconds, default 560).
#   PART=tests DEADLINE=540 bash tools/pending_gpu_checks.sh
#     GPU tests of the kernels that changed: the wgmma idle-warpgroup skip and stream-K
#     (linear_sm90), the interleaved 4-bit codes (awq), the W8A8 GEMM on the shared main loop
#     (fp8), qkvRope writing the KV cache, bf16 and fp8, before programmatic decodes (attention,
#     kv_fp8), and the elementwise file (qkvRope without a cache).
#   PART=perf DEADLINE=540 bash tools/pending_gpu_checks.sh
#     batch-1 decode against .prev (bf16: the qkvRope cache write replaces kv_write and the
#     decode kernel combines its own partitions; AWQ: the interleaved codes), the fused decode
#     reduce against decode_reduce in this tree (DENALI_DECODE_REDUCE=kernel), the offline run with stream-K never and timed (if timed wins,
#     STREAM_K_DEFAULT in ops/gpu/linear.ts becomes "timed"), an nsys trace of the batch-1 step
#     (where nsys exists), the 4-bit GEMV bench.
source tools/device_env.sh
export OUT
DEADLINE="${DEADLINE:-560}"
PART="${PART:-tests}"
left() { [ "$SECONDS" -lt "$((DEADLINE - $1))" ]; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "tree: $(cat .device/commit), .prev: $(cat .prev/commit 2>/dev/null), part $PART, deadline ${DEADLINE}s"
ls .prev/kernels/ptx/*.xz >/dev/null 2>&1 && xz -d .prev/kernels/ptx/*.xz

if [ "$PART" = tests ]; then
  for t in attention linear_sm90 awq kv_fp8 fp8 elementwise; do
    left 50 || break
    echo "=== gpu test $t $(date +%T)"
    DENALI_GPU_TESTS=1 timeout $((DEADLINE - SECONDS - 10)) bash .device/gpu.sh deno test -A --no-check \
      tests/gpu/${t}_gpu_test.ts >"$OUT/test_$t.txt" 2>&1
    echo "rc=$?" >>"$OUT/test_$t.txt"
    grep -E "FAILED|failed|passed|Error|assert|rc=" "$OUT/test_$t.txt" | grep -v "^\s*at " | tail -12
  done
fi

if [ "$PART" = perf ]; then
  if left 200; then
    echo "=== decode A/B bf16 + awq, batch 1 $(date +%T)"
    ROUNDS=2 STEP_TIMEOUT=45 bash tools/decode_ab.sh --presets llama3-8b --batches 1 --steps 32
    ROUNDS=1 STEP_TIMEOUT=45 bash tools/decode_ab.sh --presets llama3-8b --batches 1 --steps 32 --quantization awq
    for reduce in kernel fused kernel fused; do
      echo "--- DENALI_DECODE_REDUCE=$reduce"
      DENALI_DECODE_REDUCE=$reduce timeout 45 bash .device/gpu.sh deno run -A --no-check bench/decode_bench.ts --presets llama3-8b --batches 1,16 --steps 32 2>&1 | grep -E "^DECODE denali"
    done
  fi
  for sk in 0 timed; do
    left 80 || break
    echo "=== offline DENALI_STREAM_K=$sk $(date +%T)"
    DENALI_STREAM_K=$sk timeout 80 bash .device/gpu.sh deno run -A --no-check bench/engine_bench.ts --requests 1000 --offline --profile 2>&1 | grep -E "completion tok/s|PROFILE (kind|steps)|^engine:|TARGET" | cut -c1-160
  done
  if left 90; then
    echo "=== nsys batch 1 $(date +%T)"
    timeout 80 bash tools/step_kernels.sh 1 --steps 32 2>&1 | cut -c1-200 | head -40
  fi
  if left 50; then
    echo "=== awq gemv $(date +%T)"
    timeout 45 bash .device/gpu.sh deno run -A --no-check bench/kernels/linear_awq_bench.ts --gemv-only 2>&1 | grep -E "^(BENCH|TARGET)" | cut -c1-150
  fi
fi
echo "=== end $(date +%T) ($SECONDS s)"
