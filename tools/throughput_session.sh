#!/usr/bin/env bash
# GPU machine, ONE device call (carry [".device", ".base"]): the throughput issue's engine-only
# runs for the new tree and for a baseline checkout in .base/ (made here with
# `bash tools/make_base.sh`, which also points this tree's bench/engine_bench.ts at the
# baseline's layout), in one process each, the
# step profile on for the new tree. Each argument is "label:tree:engine_bench flags", e.g.
#   bash tools/throughput_session.sh "new:.:--offline" "base:.base:--offline"
# Logs: $OUT/<label>.log (and $OUT/<label>_steps.json, every profiled step's columns).
# Knobs: RUN_S (240: limit of each run), REQUESTS (1000).
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "tree: $(cat .device/commit 2>/dev/null || echo unknown) (written by the caller: git rev-parse --short HEAD > .device/commit)"
root="$PWD"
for item in "$@"; do
  IFS=: read -r label tree flags <<<"$item"
  profile=()
  [ "$tree" = "." ] && profile=(--profile --profile-out "$OUT/${label}_steps.json")
  echo "=== $label ($tree): engine_bench.ts --requests ${REQUESTS:-1000} $flags"
  # shellcheck disable=SC2086 # flags is a list
  (cd "$tree" && timeout -k 5 "${RUN_S:-240}" bash "$root/.device/gpu.sh" deno run -A \
    bench/engine_bench.ts --requests "${REQUESTS:-1000}" --label "$label" $flags "${profile[@]}") \
    2>&1 | grep -v "graph captured" | tee "$OUT/$label.log"
done
