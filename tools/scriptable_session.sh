#!/usr/bin/env bash
# The scriptable engine's GPU run (issue 15), one device call (carry [".device"]):
#   bash tools/scriptable_session.sh [tests] [examples] [bench]
# Each step's output goes to $OUT/scriptable_<step>.log; the TARGET lines and failures come last.
# NVRTC: $DENALI_LIBNVRTC if set, else the toolkit's libnvrtc.so.N under /usr/local/cuda; its
# folder joins LD_LIBRARY_PATH so NVRTC finds its libnvrtc-builtins beside it.
source "$(dirname "$0")/device_env.sh"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(tests examples bench)
if [ -z "${DENALI_LIBNVRTC:-}" ]; then
  DENALI_LIBNVRTC="$(ls /usr/local/cuda/lib64/libnvrtc.so.[0-9]* 2>/dev/null | grep -v builtins | sort -V | tail -1)"
  export DENALI_LIBNVRTC
fi
[ -n "${DENALI_LIBNVRTC:-}" ] && export LD_LIBRARY_PATH="$(dirname "$DENALI_LIBNVRTC"):${LD_LIBRARY_PATH:-}"
echo "NVRTC: ${DENALI_LIBNVRTC:-(not found: compileKernels will say so)}"
export DENALI_KERNEL_CACHE="$OUT/kernel_cache"

for step in "${steps[@]}"; do
  log="$OUT/scriptable_$step.log"
  echo "=== $step ($(date -u +%H:%M:%S))" | tee "$log"
  case "$step" in
    tests)
      for test in tests/gpu/scriptable_gpu_test.ts tests/gpu/sampling_gpu_test.ts; do
        echo "--- $test" >>"$log"
        DENALI_GPU_TESTS=1 timeout 300 bash .device/gpu.sh deno test -A "$test" >>"$log" 2>&1 ||
          echo "FAILED: $test" | tee -a "$log"
      done
      ;;
    examples)
      for example in examples/custom_kernel.ts examples/logits_processor.ts; do
        echo "--- $example" >>"$log"
        timeout 240 bash .device/gpu.sh deno run -A "$example" >>"$log" 2>&1 ||
          echo "FAILED: $example" | tee -a "$log"
      done
      ;;
    bench)
      timeout 540 bash .device/gpu.sh deno run -A bench/scriptable_bench.ts >>"$log" 2>&1 ||
        echo "FAILED: bench/scriptable_bench.ts" | tee -a "$log"
      ;;
  esac
done
echo "=== summary"
for step in "${steps[@]}"; do
  sed 's/\x1b\[[0-9;]*m//g' "$OUT/scriptable_$step.log" | grep -E '^(ok|FAILED) \||^TARGET|^RESULT|^OK|FAILED'
done
