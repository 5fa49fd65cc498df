#!/usr/bin/env bash
# GPU machine, ONE device call (carry [".device", ".base"]): every run the throughput issue's
# targets need, in one call, then the TARGET lines. .base/ holds the baseline checkout (made by
# `bash tools/make_base.sh`); write `git rev-parse --short HEAD > .device/commit` before the call.
#   1. engine-only (bench/engine_bench.ts, no HTTP): offline 1000 requests, new tree (step profile
#      on) and baseline; the new tree again with FP8 weights and an FP8 KV cache (the quantization
#      issue's serve_offline_fp8; FP8=0 skips it); concurrency 1, 16 requests, new tree (profile
#      on); with ENGINE_C256=1 also
#      concurrency 256, new tree (against the HTTP run below it tells the server's cost apart);
#   2. HTTP (tools/serve_session.sh): 1000 requests at concurrency 256 through each tree's server,
#      and HF transformers' continuous batching on the first HF_REQUESTS requests of the seed-1
#      workload beside the new tree's run of the same requests;
#   3. bench/throughput_targets.ts over the logs.
# $OUT gets targets.txt and throughput.tgz (every log; the device tool brings back 8 files).
# Knobs: HF_REQUESTS (100; empty skips HF), BUDGET_S (560 in all).
source "$(dirname "$0")/device_env.sh"
root="$PWD"
final="$OUT"
work="$OUT/work"
mkdir -p "$work"
started=$SECONDS
fp8_run=("new_offline_fp8:.:--offline --quantization fp8 --kv-cache-dtype fp8")
[ "${FP8:-1}" = 0 ] && fp8_run=()
OUT="$work" RUN_S=150 bash tools/throughput_session.sh "new_offline:.:--offline" \
  "base_offline:.base:--offline" "${fp8_run[@]}" "new_c1:.:--concurrency 1 --requests 16" \
  ${ENGINE_C256:+"new_c256_engine:.:--concurrency 256"}
echo "(engine runs done after $((SECONDS - started)) s)"
hf="${HF_REQUESTS-100}"
OUT="$work/http_new" HF="${hf:+$hf:256}" BUDGET_S=$((${BUDGET_S:-560} - 60 - (SECONDS - started))) \
  bash tools/serve_session.sh 1000:256
cp "$work/http_new/serve_bench.log" "$work/new_c256.log"
OUT="$work/http_base" HF="" TREE=.base BUDGET_S=$((${BUDGET_S:-560} - (SECONDS - started))) \
  bash tools/serve_session.sh 1000:256
cp "$work/http_base/serve_bench.log" "$work/base_c256.log"
echo "(all runs done after $((SECONDS - started)) s)"
bash "$root/.device/gpu.sh" deno run -A bench/throughput_targets.ts "$work" | tee "$final/targets.txt"
tar czf "$final/throughput.tgz" -C "$work" .
rm -rf "$work" # the device tool brings back 8 files: the tarball holds them all
