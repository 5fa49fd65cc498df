#!/usr/bin/env bash
# One batched run on the GPU machine (device tool, carry [".device"]):
#   bash tools/gpu_session.sh [fixtures] [tests] [launch] [kernels] [decode-pdl]
# Each step's full output goes to $OUT/<step>.log; a short summary is printed last.
source "$(dirname "$0")/device_env.sh"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(fixtures tests launch kernels)
run() { bash .device/gpu.sh "$@"; }
summary=()

for step in "${steps[@]}"; do
  log="$OUT/$step.log"
  echo "=== $step ($(date -u +%H:%M:%S))" | tee "$log"
  case "$step" in
    fixtures)
      for script in tools/fixtures/*.py; do
        echo "--- $script" >>"$log"
        PYTHONUNBUFFERED=1 python3 "$script" >>"$log" 2>&1 || echo "FAILED: $script" | tee -a "$log"
      done
      echo "--- tools/make_fixtures.py" >>"$log"
      PYTHONUNBUFFERED=1 python3 tools/make_fixtures.py >>"$log" 2>&1 || echo "FAILED: make_fixtures" | tee -a "$log"
      # Fixtures come back to the developer machine as one archive.
      tar czf "$OUT/fixtures.tgz" tests/fixtures checkpoints/tiny-llama 2>>"$log"
      ;;
    tests)
      # One file at a time, so a broken file cannot stop the others from running.
      for test in tests/gpu/[a-z]*_test.ts; do
        echo "--- $test" >>"$log"
        DENALI_GPU_TESTS=1 timeout 300 bash .device/gpu.sh deno test -A "$test" >>"$log" 2>&1
        summary+=("$test: $(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^(ok|FAILED) \|' | tail -1)")
      done
      ;;
    launch)
      run bash bench/launch_compare.sh >/dev/null 2>&1
      cp "$OUT/launch_compare.log" "$log" 2>/dev/null
      ;;
    kernels)
      # Every family benchmark and its PyTorch baseline, then the tables and the kernel targets.
      timeout 540 bash .device/gpu.sh deno run -A bench/kernels_bench.ts >>"$log" 2>&1 ||
        echo "FAILED: bench/kernels_bench.ts" | tee -a "$log"
      ;;
    decode-pdl)
      # Llama-3-8B decode with programmatic dependent launch (the default) and without.
      for pdl in 1 0; do
        echo "--- DENALI_PDL=$pdl" >>"$log"
        DENALI_PDL=$pdl timeout 200 bash .device/gpu.sh deno run -A bench/decode_bench.ts --presets llama3-8b \
          --batches 1,8,64 >>"$log" 2>&1 || echo "FAILED: decode_bench DENALI_PDL=$pdl" | tee -a "$log"
      done
      ;;
  esac
done
echo "=== summary"
printf '%s\n' "${summary[@]}"
for step in "${steps[@]}"; do grep -h "FAILED" "$OUT/$step.log" 2>/dev/null | head -20; done
