#!/usr/bin/env bash
# decode_bench.ts on this tree and on a baseline checkout (.prev, made by
# `DEST=.prev bash tools/make_base.sh <commit>` here, its PTX xz-packed), alternated ROUNDS times
# in one call on one machine, so their ratio is a same-run measurement.
#   ROUNDS=2 bash tools/decode_ab.sh --presets llama3-8b --batches 1,64 --steps 32
source "$(dirname "$0")/device_env.sh"
base="${BASE:-.prev}"
log="$OUT/decode_ab.log"
for round in $(seq "${ROUNDS:-2}"); do
  for tree in . "$base"; do
    echo "=== round $round tree $tree $(cat "$tree/commit" 2>/dev/null)" | tee -a "$log"
    (cd "$tree" && timeout "${STEP_TIMEOUT:-200}" bash "$OLDPWD/.device/gpu.sh" deno run -A --no-check \
      bench/decode_bench.ts "$@") 2>&1 | tee -a "$log" | grep -E '^(DECODE denali|TARGET)'
  done
done
