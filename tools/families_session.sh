#!/usr/bin/env bash
# Issue 12 (Qwen2, Qwen3, Mistral beside Llama) on the GPU machine in one device call
# (device tool, carry [".device"]):   bash tools/families_session.sh [fixtures] [tests] [decode]
#   fixtures  the three families' HF fixtures (tools/make_fixtures.py --only ...) written into
#             tests/fixtures/models/, and the elementwise fixture with the qkNorm/qkvBias cases,
#             packed as $OUT/family_fixtures.tgz to bring back and commit;
#   tests     with those fixtures in place: the GPU tests of the new kernels (elementwise), the
#             attention kernels, parity on CUDA for every family (plus the head_dim load error),
#             and the same parity and elementwise tests on the CPU backend;
#   decode    bench/decode_bench.ts: Llama-3-8B, Qwen2.5-7B, Qwen3-8B and Mistral-7B at batch 1
#             and 64, ending in the TARGET decode_b1_<preset> lines.
# Each step's output goes to $OUT/families_<step>.log; the summary is printed last.
source "$(dirname "$0")/device_env.sh"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(fixtures tests decode)
summary=()
for step in "${steps[@]}"; do
  log="$OUT/families_$step.log"
  echo "=== $step ($(date -u +%H:%M:%S))" | tee "$log"
  case "$step" in
    fixtures)
      PYTHONUNBUFFERED=1 python3 tools/make_fixtures.py --only qwen2-bias,qwen3-qknorm,mistral \
        >>"$log" 2>&1 || summary+=("FAILED: make_fixtures")
      PYTHONUNBUFFERED=1 python3 tools/fixtures/elementwise.py >>"$log" 2>&1 ||
        summary+=("FAILED: tools/fixtures/elementwise.py")
      tar czf "$OUT/family_fixtures.tgz" tests/fixtures/models/qwen2-bias \
        tests/fixtures/models/qwen3-qknorm tests/fixtures/models/mistral \
        tests/fixtures/ops/elementwise.json 2>>"$log"
      ;;
    tests)
      for test in tests/gpu/elementwise_gpu_test.ts tests/gpu/attention_gpu_test.ts \
        tests/gpu/parity_gpu_test.ts; do
        echo "--- $test" >>"$log"
        DENALI_GPU_TESTS=1 timeout 400 bash .device/gpu.sh deno test -A "$test" >>"$log" 2>&1
        summary+=("$test: $(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^(ok|FAILED) \|' | tail -1)")
      done
      echo "--- CPU parity and elementwise" >>"$log"
      timeout 400 bash .device/gpu.sh deno test -A tests/engine/parity_test.ts \
        tests/ops/elementwise_test.ts tests/models/families_test.ts >>"$log" 2>&1
      summary+=("CPU parity: $(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^(ok|FAILED) \|' | tail -1)")
      ;;
    decode)
      timeout 540 bash .device/gpu.sh deno run -A bench/decode_bench.ts >>"$log" 2>&1 ||
        summary+=("FAILED: bench/decode_bench.ts")
      summary+=("$(grep -E '^TARGET' "$log")")
      ;;
  esac
done
echo "=== summary"
printf '%s\n' "${summary[@]}"
for step in "${steps[@]}"; do grep -h "FAILED\|SKIPPED" "$OUT/families_$step.log" 2>/dev/null | head -20; done
