#!/usr/bin/env bash
# The correctness pass on the GPU machine within one device call (carry [".device"]):
#   BUDGET_S=540 bash tools/gpu_check.sh
# ONLY="kv_fp8 awq" runs just those tests/gpu files; SKIP_FIXTURES=1 keeps the committed fixtures
# (the fixtures step takes about a minute).
# 1. the HF fixtures that only torch can build (Qwen2/Qwen3/Mistral/FP8/AWQ checkpoints and the
#    elementwise op cases), packed as $OUT/fixtures.tgz to bring back and commit;
# 2. every tests/gpu file, most important first, each under its own timeout, until BUDGET_S is
#    spent; a file not reached is listed as such, never counted as passed.
# Logs: $OUT/fixtures.log and $OUT/tests.log; the summary is printed last.
source "$(dirname "$0")/device_env.sh"
budget="${BUDGET_S:-540}"
start=$SECONDS
summary=()
strip() { sed 's/\x1b\[[0-9;]*m//g' "$@"; }

if [ -z "${SKIP_FIXTURES:-}" ]; then
  log="$OUT/fixtures.log"
  echo "=== fixtures ($(date -u +%H:%M:%S))" | tee "$log"
  PYTHONUNBUFFERED=1 python3 tools/make_fixtures.py --only qwen2-bias,qwen3-qknorm,mistral,llama3-gqa-fp8,llama3-gqa-awq \
    >>"$log" 2>&1 || summary+=("FAILED: make_fixtures")
  PYTHONUNBUFFERED=1 python3 tools/fixtures/elementwise.py >>"$log" 2>&1 ||
    summary+=("FAILED: tools/fixtures/elementwise.py")
  tar czf "$OUT/fixtures.tgz" tests/fixtures/models tests/fixtures/ops/elementwise.json 2>>"$log"
  summary+=("fixtures: $((SECONDS - start)) s")
fi

log="$OUT/tests.log"
echo "=== tests ($(date -u +%H:%M:%S))" | tee "$log"
order=(parity elementwise fp8 kv_fp8 awq sampling scriptable openai_surface structured linear attention runtime
  cublaslt linear_sm90)
# shellcheck disable=SC2206 # ONLY is a space-separated list of names on purpose
[ -n "${ONLY:-}" ] && order=(${ONLY})
for name in "${order[@]}"; do
  test="tests/gpu/${name}_gpu_test.ts"
  left=$((budget - (SECONDS - start)))
  if [ "$left" -lt 30 ]; then
    summary+=("$test: NOT RUN (budget spent)")
    continue
  fi
  echo "--- $test" >>"$log"
  t0=$SECONDS
  DENALI_GPU_TESTS=1 timeout "$left" bash .device/gpu.sh deno test -A --no-check "$test" >"$OUT/t.log" 2>&1
  rc=$?
  cat "$OUT/t.log" >>"$log"
  line="$(strip "$OUT/t.log" | grep -E '^(ok|FAILED) \|' | tail -1)"
  [ "$rc" -eq 124 ] && line="TIMED OUT after ${left} s"
  summary+=("$test ($((SECONDS - t0)) s): ${line:-rc=$rc, no summary line}")
done
rm -f "$OUT/t.log"
echo "=== summary"
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
strip "$log" | grep -E '=> |FAILED|error:' | head -60
