#!/usr/bin/env bash
# GPU machine (carry .device): what each per-layer operator costs inside the batch-1 decode graph,
# measured by leaving it out. Each variant edits the Llama forward pass of this copy of the tree
# (the device tool's copy; models/llama.ts is put back at the end) so that the layer loop skips one
# operator, then runs bench/decode_bench.ts at batch 1. The skipped operator's output is stale, so
# the tokens are wrong: only the step time means anything. The step's time without an operator,
# over the step with it, bounds what fusing that operator away could buy (a fused kernel still
# does the operator's work, only without its own launch and grid boundary).
#   ROUNDS=2 bash tools/batch1_op_bounds.sh [--presets llama3-8b] [--steps 32]
# Variants: all (unchanged), norms (both RMSNorms of each layer), rope (qkvRope, which also writes
# the KV cache), attn (decode attention), silu (siluMul), gemvs (all four: the layer's GEMVs
# alone, whose time over the floor is then their own ramps and tails). VARIANTS picks some.
# DRY=1 (any machine) edits a temporary copy of MODEL (default models/llama.ts) and prints each
# variant's count of skipped calls, running nothing: tests/batch1_op_bounds_test.ts checks that
# the patterns still match the forward pass. A variant that skips nothing is an error.
source_file="${MODEL:-models/llama.ts}"
if [ "${DRY:-0}" = 1 ]; then
  cd "$(dirname "$0")/.."
  model="$(mktemp)"
  cp "$source_file" "$model"
  trap 'rm -f "$model" "$orig"' EXIT
else
  source "$(dirname "$0")/device_env.sh"
  model="$source_file"
  trap 'cp "$orig" "$model"; rm -f "$orig"' EXIT
fi
orig="$(mktemp)"
cp "$model" "$orig"
# The calls each variant leaves out, as sed patterns after `ops.`.
norms=('rmsNorm(normed, [a-z]*, [a-zA-Z]*, ')
rope=('qkvRope(qkv')
attn=('decodeAttention(decode')
silu=('siluMul(this')
skip() { # skip PATTERN...: prefix each matching call in the layer loop with `false &&`
  cp "$orig" "$model"
  local pattern
  for pattern in "$@"; do sed -i "s/\bops\.$pattern/false \&\& ops.$pattern/" "$model"; done
}
for round in $(seq "${ROUNDS:-2}"); do
  for variant in ${VARIANTS:-all norms rope attn silu gemvs}; do
    case "$variant" in
    all) skip ;;
    norms) skip "${norms[@]}" ;;
    rope) skip "${rope[@]}" ;;
    attn) skip "${attn[@]}" ;;
    silu) skip "${silu[@]}" ;;
    gemvs) skip "${norms[@]}" "${rope[@]}" "${attn[@]}" "${silu[@]}" ;;
    *)
      echo "error: unknown variant $variant; use all, norms, rope, attn, silu or gemvs" >&2
      exit 1
      ;;
    esac
    skipped="$(grep -c 'false && ops\.' "$model")"
    if [ "$variant" != all ] && [ "$skipped" = 0 ]; then
      echo "error: variant $variant matched no call in $source_file: its operator" \
        "calls were renamed; update the patterns in $0" >&2
      exit 1
    fi
    echo "=== round $round variant $variant: $skipped calls skipped"
    [ "${DRY:-0}" = 1 ] && continue
    timeout "${STEP_TIMEOUT:-60}" bash .device/gpu.sh deno run -A --no-check bench/decode_bench.ts \
      --presets llama3-8b --batches 1 --steps 32 "$@" 2>&1 | grep -E '^DECODE denali'
  done
done
