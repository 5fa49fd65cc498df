#!/usr/bin/env bash
# GPU machine (carry [".device", ".prev"], .prev made here by `DEST=.prev bash tools/make_base.sh
# ffbbf31` with its PTX xz-packed): what sessions 14 and 15's changes wait for, in two parts that
# each fit one device call, each step only while time is left (DEADLINE seconds, default 560).
#   PART=first DEADLINE=540 bash tools/pending_gpu_checks.sh
#     GPU tests of the kernels that changed: attention (qkvRope writing the cache before
#     programmatic decodes, the fused partition reduce and decode_reduce), kv_fp8 (the fp8 cache
#     codes qkvRope writes), awq (the interleaved 4-bit codes), linear_sm90 (the wgmma
#     idle-warpgroup skip and stream-K); then the batch-1 step against .prev (bf16: the two
#     launches fewer a layer), DENALI_DECODE_REDUCE=kernel against fused in this tree (batch 1
#     and 16), and the AWQ batch-1 step against .prev.
#   PART=second DEADLINE=540 bash tools/pending_gpu_checks.sh
#     fp8 (the W8A8 GEMM on the shared main loop) and elementwise tests, the offline run with
#     stream-K never and timed (if timed wins, STREAM_K_DEFAULT in ops/gpu/linear.ts becomes
#     "timed"), nsys traces of the offline run and of the batch-1 step where nsys exists (per
#     kernel: where a serving step's time goes on this GPU), the 4-bit GEMV bench.
#   PART=fold DEADLINE=560 bash tools/pending_gpu_checks.sh      (carry .device and .prev = 9d88af0)
#     session 16: the GEMVs with SiLU-and-multiply in their epilogue (linear_silu test, then the
#     batch-1 and 8 steps with DENALI_SILU_EPILOGUE=0 and 1, bf16, FP8 and AWQ), the quantized
#     steps at batch 32 and 64 against .prev (the GEMV over 16-row chunks), then the tests of the
#     kernels 59d6756 folded onto kernels/src/last_arrival.h (attention's fused reduce,
#     linear_sm90's split-K and stream-K).
#   PART=h200 DEADLINE=560 bash tools/pending_gpu_checks.sh
#     sessions 17-18 (carry .device and .prev): the linear_sm90 test (split-K partials that skip
#     idle warpgroups, the swapped-operand tiles, wgmma no longer serialized), the decode step
#     with DENALI_SWAP_AB 0 and 1 at 32 and 64 rows, batches 64 and 256 against .prev, the GEMMs
#     at M = 32, 64 and 128, the batch-1 decode targets (bf16, FP8, AWQ) on an H200, a step per
#     operator at batch 1 and 64, the three other presets' batch-1 lines, the GEMV
#     configurations swept, the SiLU epilogue on and off, the FP8 GEMV (default and K
#     split 4: the 16-row grids' last wave) and 4-bit GEMV benches, a batch-1 step per kernel
#     (nsys), then the awq and fp8 tests with what time is left.
#   PART=fold2 DEADLINE=560 bash tools/pending_gpu_checks.sh
#     the offline run on this tree and on .prev (wgmma serialized there), the fp8 test (the W8A8
#     GEMM on the shared main loop and on the swapped-operand tiles), the awq test (the chunked
#     GEMVs against the CPU), then the four presets' decode TARGET lines with what time is left.
#   PART=qwen DEADLINE=400 bash tools/pending_gpu_checks.sh      (carry .device)
#     session 19's lead on the batch-1 gap of Qwen2.5-7B (1.217 of its floor on an H100, Llama
#     1.176): a step per operator for both presets at batch 1, then the bf16 GEMVs on Qwen2.5's
#     shapes under every forced configuration. K = 3584 is 28 steps of 128 k, which 8 warps split
#     as 4, 4, 4, 4, 3, 3, 3, 3; K = 4096 splits evenly.
#   PART=fp8mid DEADLINE=480 bash tools/pending_gpu_checks.sh    (carry .device)
#     session 19's lead on issue 13's offline line: on the H200 (session 13) FP8 weights with an
#     FP8 cache left the decode steps as long as bf16's (13,391 against 13,177 ms; only the mixed
#     steps gained), and at batch 64 on an H100 the FP8 step took 0.974x bf16's. Every FP8 path
#     past the GEMV at the decode batches (with the swapped W8A8 tiles off and on), the FP8 decode
#     step there with DENALI_SWAP_AB 0 and timed, a step per operator, FP8 against bf16, and ncu
#     on the W8A8 wgmma GEMM at 64 rows (what bounds it).
#   PART=ragged DEADLINE=560 bash tools/pending_gpu_checks.sh    (carry .device)
#     session 20's lead on issue 11 (decode steps at batch 128+ are 2.2x their bound on the H200,
#     where a uniform-context batch-256 step is about 1.3x): every decode-attention bench so far
#     gave all rows one context, but a ShareGPT-shaped batch is ragged, and at large batches one
#     block takes a sequence's whole context, so a long one that starts last leaves a tail.
#     bench/kernels/ragged_decode_bench.ts (arrival, longest-first and shortest-first row orders,
#     smaller partitions, the same tokens uniform, the read-only floor), then the offline run with
#     DENALI_DECODE_ORDER=arrival, longest-first, and longest-first with DENALI_DECODE_PER_SM=8,
#     alternated, while time is left (two rounds).
#   PART=partitions DEADLINE=500 bash tools/pending_gpu_checks.sh    (carry .device)
#     session 20's open decisions: DENALI_DECODE_PER_SM 4 against 8 on uniform-context decode
#     steps of 1-64 rows (8 won 1.009x on the ragged offline run but re-partitions these batches),
#     then DENALI_SWAP_AB 0 against timed on the FP8 step at 32 and 64 rows, each alternated in
#     two rounds, then the ragged bench with seed 2 (another draw of contexts).
#   PART=ragged2 DEADLINE=560 bash tools/pending_gpu_checks.sh    (carry .device)
#     session 21's ragged split (the decode kernel sizes the partitions of a full batch from its
#     contexts): the attention and kv_fp8 GPU tests, the ragged bench with the split's slack 0
#     (off), 1.5 and 2 (default), uniform decode steps of 32-128 rows with DENALI_DECODE_RAGGED=0
#     and 2 (the grid's empty partitions cost), then the offline run with 0 and 2, alternated.
#   PART=ragged3 DEADLINE=560 bash tools/pending_gpu_checks.sh    (carry .device)
#     session 21's open question: the ragged split past twice the block target (batches of
#     132-263 rows for Llama, most of the offline run's decode steps): the attention GPU test,
#     the ragged bench at 128-256 rows with the split reaching 4 targets at slack 0 (off), 1.5 and
#     1.25, then the offline run with reach:slack 2:2 (the default), 4:1.5 and 4:1.25, alternated.
#   PART=stages DEADLINE=500 bash tools/pending_gpu_checks.sh    (carry .device and .prev =
#   b2157f2)
#     session 22's GEMV rule (one step in flight where the two-step grid spills past one wave and
#     the one-step grid fits one: Qwen2.5's q/k/v, Llama's q/k/v): the batch-1 and 4 steps of
#     both presets against .prev, alternated, then the linear GPU test and the GEMV bench on those
#     shapes (which kernel auto picks, and each forced configuration).
#   PART=split16 DEADLINE=500 bash tools/pending_gpu_checks.sh    (carry .device and .prev =
#   b2157f2)
#     the same rule by wave fill for 9-16 tokens (K split 4 where it fills the waves as fully as
#     8): the linear GPU test (with one step forced), the steps of 1, 12 and 16 rows of three
#     presets against .prev alternated, then the GEMV sweep with 16 tokens on four shapes.
#   PART=quantize DEADLINE=560 bash tools/pending_gpu_checks.sh  (carry .device and .prev = the
#   commit before the change)
#     run in session 23 on the then uncommitted activation quantizer and wgmma main loop (the next
#     copies issued after the tile's wgmmas, FP8 tiles starting their sums by scale-d), now
#     committed (bench/results/2026-12-07-s23-*): the fp8 GPU test (it needs about 400 s, so the
#     240 s here cut it; the rest ran in parallel --filter processes), the linear_sm90 one, the
#     W8A8 products at 64 and 256 rows on both trees, the FP8 decode step at 64 and 256 rows
#     against .prev (two rounds), the offline FP8 run on both trees, and the bf16 offline run with
#     DENALI_STREAM_K=0 and timed.
#   PART=fp8attn DEADLINE=480 bash tools/pending_gpu_checks.sh   (carry .device)
#     the FP8-cache decode attention before changing it (the plan written in session 23): the
#     SASS opcode counts of the d128_g4 decode kernels (bf16 and FP8 cache, fma and mma), their
#     times at batch 64 and 256 and contexts 512 and 2048, and the Llama-3-8B step at batch 64
#     and 256 on the FP8 cache (bf16 and FP8 weights) with each kernel family.
#   PART=mma24 DEADLINE=560 bash tools/pending_gpu_checks.sh    (carry .device and .prev =
#   875f19c)
#     session 24's decode changes, measured there only as pinned families on one tree: the f16
#     FP8 mma kernels, decodeKernel auto (mma on an FP8 cache; on bf16 up to a quarter of the
#     block target's rows and from twice it) and the mma kernels' fused reduce. The attention and
#     kv_fp8 GPU tests, TARGET attn_fp8kv_16k (both caches on mma at batch 8 now), the
#     Llama-3-8B steps of 1-256 rows against .prev (bf16, then FP8 weights with an FP8 cache), the
#     mma fused reduce against decode_reduce at 1 and 8 rows, fma against mma at 32 and 64 rows of
#     bf16 (auto's window), then the offline runs (bf16 and FP8 + FP8 KV) on both trees.
#   PART=b26 DEADLINE=560 bash tools/pending_gpu_checks.sh  (carry .device and .prev = 875f19c)
#     session 26: tools/batch1_op_bounds.sh (what each per-layer operator costs the batch-1
#     step: bf16 twice, FP8 and 4-bit weights with only the GEMVs), DENALI_SILU_EPILOGUE 0 and 1
#     at batch 1 and 8, then PART=mma24 without its GPU tests (session 25 ran them).
#   PART=norm27 DEADLINE=560 bash tools/pending_gpu_checks.sh  (carry .device)
#     session 27's norm-prologue GEMVs (linearRmsNorm, DENALI_NORM_GEMV, off by default; bf16 and
#     FP8 weights): their GPU test, the HF parity test with them on, the Llama step at batch 1 and 8 with them off, on,
#     and on for the q/k/v product only (DENALI_NORM_GEMV_BLOCKS=1000; three rounds alternated),
#     the FP8 step at batch 1 off and on (two rounds), the Qwen presets' batch-1 lines with them on, and the batch-1 operator bounds once (their
#     `norms` line is what the prologue could buy at most).
#   PART=h200b1 DEADLINE=400 bash tools/pending_gpu_checks.sh  (carry .device, .base)
#     a short H200 lease: the batch-1 TARGET lines (four presets, FP8, AWQ), attn_fp8kv_16k, the
#     batch-1 operator bounds once, the offline run on .base and this tree (bf16, FP8 + FP8 KV).
#   PART=knobs25 DEADLINE=560 bash tools/pending_gpu_checks.sh  (carry .device)
#     session 25's two decode variants (both the default since; run there, the results in
#     bench/results/2026-12-07-s25-decode-variants-h100.md), each setting on one tree:
#     DENALI_DECODE_MMA_BLOCKS=4 (FP8-cache d128 mma kernels at four blocks an SM) on TARGET
#     attn_fp8kv_16k and on the FP8-weights, FP8-cache step at 32-256 rows;
#     DENALI_DECODE_RAGGED_MMA=1 (the ragged split on the mma kernels) on the ragged bench with
#     mma pinned.
#   PART=knobs25off DEADLINE=560 bash tools/pending_gpu_checks.sh  (carry .device)
#     the offline FP8 + FP8 KV run under the default, each of those two variants and both, two
#     rounds alternated.
source tools/device_env.sh
export OUT
DEADLINE="${DEADLINE:-560}"
PART="${PART:-first}"
left() { [ "$SECONDS" -lt "$((DEADLINE - $1))" ]; }
# Everything also goes to a file under $OUT: the device tool returns only the last 12,000
# characters of stdout, but files whole (session 18 lost the first half of PART=h200's lines).
exec > >(tee -a "$OUT/pending_${PART}.log") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "tree: $(cat .device/commit), .prev: $(cat .prev/commit 2>/dev/null), part $PART, deadline ${DEADLINE}s"

gpu_test() {
  left 50 || return 1
  local limit="${2:-9999}" rest="$((DEADLINE - SECONDS - 10))"
  [ "$limit" -gt "$rest" ] && limit="$rest"
  echo "=== gpu test $1 $(date +%T) (limit ${limit}s)"
  DENALI_GPU_TESTS=1 timeout "$limit" bash .device/gpu.sh deno test -A \
    --no-check "tests/gpu/$1_gpu_test.ts" >"$OUT/test_$1.txt" 2>&1
  echo "rc=$?" >>"$OUT/test_$1.txt"
  grep -E "FAILED|failed|passed|Error|assert|rc=" "$OUT/test_$1.txt" | grep -v "^\s*at " | tail -12
}
decode_line() {
  timeout "${LINE_TIMEOUT:-45}" bash .device/gpu.sh deno run -A --no-check bench/decode_bench.ts --presets llama3-8b \
    --steps 32 "$@" 2>&1 | grep -E "^(DECODE|TARGET)"
}
# decode_lines_with VAR BATCHES VALUE...: llama3-8b's decode lines at BATCHES with VAR set to each
# VALUE in turn, while time is left.
decode_lines_with() {
  local var="$1" batches="$2" value
  shift 2
  for value in "$@"; do
    left 45 || break
    echo "=== $var=$value $(date +%T)"
    (export "$var=$value"; decode_line --batches "$batches")
  done
}
# preset_lines BATCHES PRESET...: each preset's decode lines at BATCHES, while time is left.
preset_lines() {
  local batches="$1" preset
  shift
  for preset in "$@"; do
    left 45 || break
    echo "=== decode $preset $(date +%T)"
    timeout 45 bash .device/gpu.sh deno run -A --no-check bench/decode_bench.ts --presets "$preset" \
      --batches "$batches" --steps 32 2>&1 | grep -E "^(DECODE|TARGET)"
  done
}
# step_ops_lines LIMIT ARGS...: bench/step_ops.ts with ARGS (a step's time per operator), its OPS
# lines, at most LIMIT seconds, if time is left: returns 1 only where it was not (a failed run
# still returns 0, so the caller goes on to the next).
step_ops_lines() {
  local limit="$1"
  shift
  left $((limit + 5)) || return 1
  echo "=== step_ops $* $(date +%T)"
  timeout "$limit" bash .device/gpu.sh deno run -A --no-check bench/step_ops.ts "$@" 2>&1 |
    grep -E "^OPS" | cut -c1-170
  return 0
}
# offline_alternated "VAR=value ..."...: the offline run (1000 requests, step profile, then
# OFFLINE_FLAGS) under each setting of environment variables in turn, two rounds alternated,
# while time is left.
offline_alternated() {
  local round setting
  for round in 1 2; do
    for setting in "$@"; do
      left 85 || return 0
      echo "=== offline $setting round $round $(date +%T)"
      # shellcheck disable=SC2086 # each setting is words VAR=value for env
      # shellcheck disable=SC2086 # OFFLINE_FLAGS: extra bench flags, split on purpose
      env $setting timeout 80 bash .device/gpu.sh deno run -A --no-check bench/engine_bench.ts \
        --requests 1000 --offline --profile ${OFFLINE_FLAGS:-} 2>&1 |
        grep -E "completion tok/s|PROFILE (kind|steps)|^engine:|^limits|TARGET" | cut -c1-160
    done
  done
}
# kernel_benches LIMIT "BENCH FLAGS"...: each bench/kernels file with its flags, its BENCH, TARGET
# and comment lines, at most LIMIT seconds each, while time is left.
FUSED_SHAPES=6144x4096,4096x4096,28672x4096,4096x14336
kernel_benches() {
  local limit="$1" bench
  shift
  for bench in "$@"; do
    left $((limit / 2 + 20)) || break
    echo "=== $bench $(date +%T)"
    # shellcheck disable=SC2086 # the bench and its flags, split on purpose
    timeout "$limit" bash .device/gpu.sh deno run -A --no-check bench/kernels/$bench 2>&1 |
      grep -E "^(BENCH|TARGET|#)" | cut -c1-160
  done
}

# ab_rounds NEED STEP_LIMIT ARGS...: tools/decode_ab.sh with ARGS (this tree against .prev) in two
# rounds, each only while NEED seconds are left, each tree's run at most STEP_LIMIT seconds.
ab_rounds() {
  local need="$1" limit="$2" round
  shift 2
  for round in 1 2; do
    left "$need" || break
    echo "=== decode A/B round $round $(date +%T)"
    ROUNDS=1 STEP_TIMEOUT="$limit" bash tools/decode_ab.sh "$@"
  done
}

# offline_tree TREE LIMIT FLAGS...: the offline run (1000 requests) on checkout TREE with FLAGS,
# its completion tok/s line, at most LIMIT seconds.
offline_tree() {
  local tree="$1" limit="$2"
  shift 2
  echo "=== offline $tree ${*:-bf16} $(date +%T)"
  (cd "$tree" && timeout "$limit" bash "$OLDPWD/.device/gpu.sh" deno run -A --no-check \
    bench/engine_bench.ts --requests 1000 --offline "$@" 2>&1 | grep -E "completion tok/s")
}

# offline_stream_k LIMIT: the bf16 offline run (1000 requests) with DENALI_STREAM_K=0, then timed,
# each at most LIMIT seconds and only while 80 are left.
offline_stream_k() {
  local limit="$1" sk
  for sk in 0 timed; do
    left 80 || break
    echo "=== offline DENALI_STREAM_K=$sk $(date +%T)"
    DENALI_STREAM_K=$sk timeout "$limit" bash .device/gpu.sh deno run -A --no-check bench/engine_bench.ts \
      --requests 1000 --offline --profile 2>&1 |
      grep -E "completion tok/s|PROFILE (kind|steps)|^engine:|TARGET" | cut -c1-160
  done
}

if [ "$PART" = first ]; then
  gpu_test attention 120
  gpu_test kv_fp8 60
  gpu_test awq 220
  gpu_test linear_sm90 90
  if left 80; then
    echo "=== decode A/B bf16 batch 1 $(date +%T)"
    ROUNDS=1 STEP_TIMEOUT=45 bash tools/decode_ab.sh --presets llama3-8b --batches 1 --steps 32
  fi
  decode_lines_with DENALI_DECODE_REDUCE 1,16 kernel fused
  if left 80; then
    echo "=== decode A/B awq batch 1 $(date +%T)"
    ROUNDS=1 STEP_TIMEOUT=45 bash tools/decode_ab.sh --presets llama3-8b --batches 1 --steps 32 --quantization awq
  fi
fi

if [ "$PART" = fold ]; then
  gpu_test linear_silu 90
  # SILU_QUANT="" times bf16 alone (a short call); by default FP8 and AWQ beside it.
  quant=()
  [ -n "${SILU_QUANT-fp8,awq}" ] && quant=(--quantization "${SILU_QUANT-fp8,awq}")
  for round in $(seq 1 "${ROUNDS:-1}"); do
    for silu in 0 1; do
      left 100 || break
      echo "=== DENALI_SILU_EPILOGUE=$silu round $round $(date +%T)"
      DENALI_SILU_EPILOGUE=$silu LINE_TIMEOUT=90 decode_line --batches 1,8 "${quant[@]}"
    done
  done
  if left 150; then
    echo "=== decode A/B fp8 and awq, batches 32 and 64 (gemvRows) $(date +%T)"
    ROUNDS=1 STEP_TIMEOUT=70 bash tools/decode_ab.sh --presets llama3-8b --batches 32,64 --steps 32 --quantization fp8,awq
  fi
  gpu_test attention 120
  gpu_test linear_sm90 90
fi

if [ "$PART" = fold2 ]; then
  # Session 18: the offline run of 1000 requests on this tree (step profile on) and on .prev
  # (9d88af0, whose wgmma GEMMs ptxas serialized), against Denali's own previous tree; then the
  # FP8 test (W8A8 on the swapped-operand tiles among it; past 200 s on an H100), the awq test
  # and the presets' decode lines with what time is left.
  if left 300; then
    echo "=== offline 1000 requests, this tree and .prev $(date +%T)"
    mkdir -p "$OUT/offline"
    OUT="$OUT/offline" RUN_S=140 bash tools/throughput_session.sh "new_offline:.:--offline" \
      "prev_offline:.prev:--offline" 2>&1 | grep -E "^(===|RESULT|PROFILE kind|PROFILE steps)" |
      cut -c1-400
  fi
  gpu_test fp8 260
  gpu_test awq 220
  preset_lines 1,64 llama3-8b qwen2.5-7b qwen3-8b mistral-7b
fi

if [ "$PART" = h200 ]; then
  # Session 18: the wgmma test first (the swapped-operand tiles, and every wgmma GEMM now that
  # no wgmma sits under a warpgroup branch: ptxas had serialized them all since 9f3075f); the
  # decode step with the swapped tiles on and off at 32 and 64 rows; this tree against .prev
  # (9d88af0, serialized wgmma) at 64 and 256 rows; the GEMMs at M = 32, 64 and 128. Then
  # session 17's list: the batch-1 targets of issues 12 and 13 on an H200, where a step's time
  # goes at batch 1 and 64, the GEMV configurations swept on this GPU, the SiLU epilogue, the
  # quantized GEMV benches.
  gpu_test linear_sm90 150
  decode_lines_with DENALI_SWAP_AB 32,64 0 1
  if left 100; then
    echo "=== decode A/B bf16 batches 64, 256 (wgmma no longer serialized) $(date +%T)"
    ROUNDS=1 STEP_TIMEOUT=45 bash tools/decode_ab.sh --presets llama3-8b --batches 64,256 --steps 32
  fi
  kernel_benches 100 "linear_bench.ts --ms 32,64,128 --shapes $FUSED_SHAPES"
  if left 70; then
    echo "=== decode bf16/fp8/awq batch 1 $(date +%T)"
    LINE_TIMEOUT=70 decode_line --batches 1 --quantization fp8,awq
  fi
  step_ops_lines 65 --batches 1,64
  preset_lines 1 qwen2.5-7b qwen3-8b mistral-7b
  kernel_benches 100 "linear_bench.ts --gemv-sweep --shapes $FUSED_SHAPES"
  decode_lines_with DENALI_SILU_EPILOGUE 1,8 1 0
  kernel_benches 45 "linear_fp8_bench.ts --gemv-only" "linear_fp8_bench.ts --gemv-only --split 4" \
    "linear_awq_bench.ts --gemv-only"
  if left 90; then
    echo "=== nsys batch 1 $(date +%T)"
    timeout 80 bash tools/step_kernels.sh 1 --steps 32 2>&1 | cut -c1-200 | head -40
  fi
  gpu_test awq 220
  gpu_test fp8 260
fi

if [ "$PART" = second ]; then
  gpu_test fp8 200
  gpu_test elementwise 60
  offline_stream_k 80
  if left 130; then
    echo "=== nsys offline $(date +%T)"
    timeout 120 bash tools/step_kernels.sh offline --requests 1000 --profile 2>&1 | cut -c1-200 | head -40
  fi
  if left 90; then
    echo "=== nsys batch 1 $(date +%T)"
    timeout 80 bash tools/step_kernels.sh 1 --steps 32 2>&1 | cut -c1-200 | head -40
  fi
  if left 50; then
    echo "=== awq gemv $(date +%T)"
    timeout 45 bash .device/gpu.sh deno run -A --no-check bench/kernels/linear_awq_bench.ts --gemv-only 2>&1 | grep -E "^(BENCH|TARGET)" | cut -c1-150
  fi
fi
if [ "$PART" = qwen ]; then
  for preset in qwen2.5-7b llama3-8b; do
    step_ops_lines 65 --preset "$preset" --batches 1 || break
  done
  kernel_benches 200 "linear_bench.ts --gemv-sweep --shapes 4608x3584,3584x3584,37888x3584,3584x18944,152064x3584"
  preset_lines 1 qwen2.5-7b llama3-8b
fi

if [ "$PART" = fp8mid ]; then
  for swap in 0 1; do
    echo "=== DENALI_SWAP_AB=$swap"
    (export DENALI_SWAP_AB=$swap; kernel_benches 150 "linear_fp8_bench.ts --ms 32,64,128,256")
  done
  for swap in 0 timed; do
    left 130 || break
    echo "=== decode fp8 DENALI_SWAP_AB=$swap $(date +%T)"
    (export DENALI_SWAP_AB=$swap; LINE_TIMEOUT=120 decode_line --batches 32,64,128,256 --quantization fp8)
  done
  step_ops_lines 75 --batches 64,256 &&
    step_ops_lines 75 --batches 64,256 --quantization fp8 --kv-cache-dtype fp8
  if left 150; then
    # What bounds Denali's W8A8 GEMM at 64 rows (its bf16 twin reads 0.71 of the read-only
    # bandwidth there): ncu's memory, occupancy and stall sections, into $OUT/profile.txt.
    echo "=== ncu linear_wgmma_fp8 at 64 rows $(date +%T)"
    timeout 140 bash tools/kernel_profile.sh 'linear_wgmma_fp8' bench/kernels/linear_fp8_bench.ts \
      --ms 64 2>&1 | cut -c1-200 | head -60
  fi
fi

if [ "$PART" = ragged ]; then
  kernel_benches 170 "ragged_decode_bench.ts --batches 64,128,256 --per-sm 8,16,32"
  # Row order and decode blocks per SM (the partition target; 8 makes partitions of ~512 at
  # 64-128 rows of a 2048 context bucket).
  offline_alternated "DENALI_DECODE_ORDER=arrival DENALI_DECODE_PER_SM=4" \
    "DENALI_DECODE_ORDER=longest-first DENALI_DECODE_PER_SM=4" \
    "DENALI_DECODE_ORDER=longest-first DENALI_DECODE_PER_SM=8"
fi

if [ "$PART" = partitions ]; then
  for round in 1 2; do
    (LINE_TIMEOUT=70 decode_lines_with DENALI_DECODE_PER_SM 1,8,32,64 4 8)
  done
  for round in 1 2; do
    for swap in 0 timed; do
      left 75 || break 2
      echo "=== fp8 DENALI_SWAP_AB=$swap round $round $(date +%T)"
      (export DENALI_SWAP_AB=$swap; LINE_TIMEOUT=70 decode_line --batches 32,64 --quantization fp8)
    done
  done
  kernel_benches 120 "ragged_decode_bench.ts --batches 64,128,256 --per-sm 8 --seed 2"
fi

if [ "$PART" = ragged2 ]; then
  gpu_test attention 150
  gpu_test kv_fp8 80
  kernel_benches 100 "ragged_decode_bench.ts --batches 48,64,96,128 --per-sm 8 --slack 0,1.5"
  for round in 1 2; do
    (LINE_TIMEOUT=60 decode_lines_with DENALI_DECODE_RAGGED 32,64,128 0 2)
  done
  offline_alternated DENALI_DECODE_RAGGED=0 DENALI_DECODE_RAGGED=2
fi

if [ "$PART" = ragged3 ]; then
  gpu_test attention 150
  kernel_benches 100 \
    "ragged_decode_bench.ts --batches 128,160,192,256 --per-sm 8 --slack 0,1.5,1.25 --ragged-rows 4"
  offline_alternated "DENALI_DECODE_RAGGED_ROWS=2 DENALI_DECODE_RAGGED=2" \
    "DENALI_DECODE_RAGGED_ROWS=4 DENALI_DECODE_RAGGED=1.5" \
    "DENALI_DECODE_RAGGED_ROWS=4 DENALI_DECODE_RAGGED=1.25"
fi

if [ "$PART" = stages ]; then
  ab_rounds 200 90 --presets qwen2.5-7b,llama3-8b --batches 1,4 --steps 32
  gpu_test linear 120
  kernel_benches 80 "linear_bench.ts --gemv-sweep --shapes 4608x3584,6144x4096"
fi

if [ "$PART" = split16 ]; then
  gpu_test linear 120
  ab_rounds 120 90 --presets qwen2.5-7b,llama3-8b,qwen3-8b --batches 1,12,16 --steps 32
  kernel_benches 90 "linear_bench.ts --gemv-sweep --shapes 4608x3584,6144x4096,14336x4096,28672x4096"
fi

if [ "$PART" = quantize ]; then
  gpu_test fp8 420
  gpu_test linear_sm90 90
  # The W8A8 products (their time includes quantizing x) at 64 and 256 rows, this tree then .prev.
  for tree in . .prev; do
    left 150 || break
    echo "=== linear_fp8_bench --ms 64,256 tree $tree $(cat "$tree/commit" 2>/dev/null) $(date +%T)"
    (cd "$tree" && timeout 60 bash "$OLDPWD/.device/gpu.sh" deno run -A --no-check \
      bench/kernels/linear_fp8_bench.ts --ms 64,256) 2>&1 | grep -E "w8a8|^TARGET" | cut -c1-160
  done
  ab_rounds 90 40 --presets llama3-8b --batches 64,256 --steps 16 --quantization fp8
  # Issue 13's offline workload (FP8 weights and KV), this tree then .prev.
  for tree in . .prev; do
    left 90 || break
    echo "=== offline fp8 tree $tree $(cat "$tree/commit" 2>/dev/null) $(date +%T)"
    (cd "$tree" && timeout 80 bash "$OLDPWD/.device/gpu.sh" deno run -A --no-check bench/engine_bench.ts \
      --requests 1000 --offline --profile --quantization fp8 --kv-cache-dtype fp8) 2>&1 |
      grep -E "completion tok/s|PROFILE kind=(decode|mixed) |^engine:" | cut -c1-160
  done
  # bf16 stream-K on the serving workload: never (the default) against timed.
  offline_stream_k 75
fi

if [ "$PART" = fp8attn ]; then
  # What the decode kernels issue (bf16 and FP8 cache, fma and mma), then their times at decode
  # batches, then the step on the FP8 cache with each family (bf16 and FP8 weights).
  echo "=== sass $(date +%T)"
  timeout 60 bash tools/sass_stats.sh kernels/ptx/attention.sm_90.ptx \
    'decode_attn_(fp8_)?(mma_)?d128_g4$' sm_90 2>&1 | head -120
  kernel_benches 200 "attention_bench.ts --decode-kernels --batches 64,256 --contexts 512,2048"
  for kernel in fma mma; do
    left 100 || break
    echo "=== decode DENALI_DECODE_ATTN=$kernel, FP8 KV cache $(date +%T)"
    DENALI_DECODE_ATTN=$kernel timeout 90 bash .device/gpu.sh deno run -A --no-check \
      bench/decode_bench.ts --presets llama3-8b --batches 64,256 --steps 16 --quantization fp8 \
      --kv-cache-dtype fp8 2>&1 | grep -E "^(DECODE denali|# decode)"
  done
fi

if [ "$PART" = h200b1 ]; then
  # The H200 lines a short lease can give: issue 12's batch-1 TARGET lines (all four presets),
  # issue 13's decode_b1_fp8/awq and attn_fp8kv_16k, then the batch-1 operator bounds once, the
  # offline run against .base (bf16) and FP8 + FP8 KV.
  if left 80; then
    echo "=== decode bf16/fp8/awq batch 1 $(date +%T)"
    LINE_TIMEOUT=75 decode_line --batches 1 --quantization fp8,awq
  fi
  preset_lines 1 qwen2.5-7b qwen3-8b mistral-7b
  kernel_benches 40 "attention_bench.ts --fp8-kv"
  if left 80; then
    echo "=== batch-1 operator bounds $(date +%T)"
    ROUNDS=1 STEP_TIMEOUT=30 bash tools/batch1_op_bounds.sh
  fi
  left 50 && offline_tree .base 45
  left 50 && offline_tree . 45
  left 50 && offline_tree . 45 --quantization fp8 --kv-cache-dtype fp8
fi
if [ "$PART" = norm27 ]; then
  gpu_test linear_norm 90
  (export DENALI_NORM_GEMV=1; gpu_test parity 150)
  # Three arms, alternated: off, on, and on for grids up to 1000 blocks only (the q/k/v product,
  # not gate/up's 1792 blocks, each of which reads and normalises the whole input itself).
  for round in 1 2 3; do
    for arm in "0 0" "1 0" "1 1000"; do
      left 45 || break
      read -r on blocks <<<"$arm"
      echo "=== DENALI_NORM_GEMV=$on DENALI_NORM_GEMV_BLOCKS=$blocks $(date +%T)"
      (export DENALI_NORM_GEMV="$on" DENALI_NORM_GEMV_BLOCKS="$blocks"; decode_line --batches 1,8)
    done
  done
  # FP8 weights (their GEMVs have the prologue too; the 4-bit ones do not): off and on, twice.
  for round in 1 2; do
    for arm in 0 1; do
      left 60 || break
      echo "=== FP8 weights, DENALI_NORM_GEMV=$arm $(date +%T)"
      (export DENALI_NORM_GEMV="$arm"; LINE_TIMEOUT=60 decode_line --batches 1 --quantization fp8)
    done
  done
  (export DENALI_NORM_GEMV=1; preset_lines 1 qwen2.5-7b qwen3-8b)
  if left 80; then
    echo "=== batch-1 operator bounds $(date +%T)"
    ROUNDS=1 STEP_TIMEOUT=30 bash tools/batch1_op_bounds.sh
  fi
fi
if [ "$PART" = b26 ]; then
  # Each per-layer operator's cost inside the batch-1 graph, by leaving it out (bf16 twice, then
  # the FP8 and 4-bit steps with everything but the GEMVs left out), and the SiLU epilogue.
  echo "=== batch-1 operator bounds $(date +%T)"
  ROUNDS=2 STEP_TIMEOUT=40 bash tools/batch1_op_bounds.sh
  ROUNDS=1 STEP_TIMEOUT=60 VARIANTS="all gemvs" bash tools/batch1_op_bounds.sh \
    --quantization fp8,awq
  for round in 1 2; do decode_lines_with DENALI_SILU_EPILOGUE 1,8 0 1; done
fi
if [ "$PART" = mma24 ] || [ "$PART" = b26 ]; then
  if [ "$PART" = mma24 ]; then
    gpu_test attention 200
    gpu_test kv_fp8 90
  fi
  # TARGET attn_fp8kv_16k (batch 8, 16k: both caches now on the mma kernels).
  kernel_benches 60 "attention_bench.ts --fp8-kv"
  if left 150; then
    echo "=== decode A/B bf16 $(date +%T)"
    ROUNDS=1 STEP_TIMEOUT=70 bash tools/decode_ab.sh --presets llama3-8b --batches 1,8,32,64,128,256 --steps 16
  fi
  if left 130; then
    echo "=== decode A/B FP8 weights, FP8 KV cache $(date +%T)"
    ROUNDS=1 STEP_TIMEOUT=60 bash tools/decode_ab.sh --presets llama3-8b --batches 1,8,32,64,128,256 \
      --steps 16 --quantization fp8 --kv-cache-dtype fp8
  fi
  decode_lines_with DENALI_DECODE_REDUCE 1,8 kernel fused
  decode_lines_with DENALI_DECODE_ATTN 32,64 fma mma
  for quant in "" "--quantization fp8 --kv-cache-dtype fp8"; do
    for tree in .prev .; do
      left 60 || break
      # shellcheck disable=SC2086 # the flags, split on purpose
      offline_tree "$tree" 50 $quant
    done
  done
fi

if [ "$PART" = knobs25 ]; then
  for blocks in 3 4; do
    left 60 || break
    echo "=== DENALI_DECODE_MMA_BLOCKS=$blocks $(date +%T)"
    (export DENALI_DECODE_MMA_BLOCKS=$blocks; kernel_benches 60 "attention_bench.ts --fp8-kv")
  done
  for ragged in 0 1; do
    left 80 || break
    echo "=== ragged bench, mma pinned, DENALI_DECODE_RAGGED_MMA=$ragged $(date +%T)"
    (export DENALI_DECODE_ATTN=mma DENALI_DECODE_RAGGED_MMA=$ragged
      kernel_benches 70 "ragged_decode_bench.ts --batches 48,64,96 --slack 0,2")
  done
  # The FP8-cache step at 32-256 rows (bf16, then FP8 weights), each setting twice, alternated.
  for round in 1 2; do
    for blocks in 3 4; do
      left 100 || break
      echo "=== DENALI_DECODE_MMA_BLOCKS=$blocks round $round $(date +%T)"
      DENALI_DECODE_MMA_BLOCKS=$blocks LINE_TIMEOUT=95 decode_line --batches 32,64,128,256 \
        --quantization fp8 --kv-cache-dtype fp8
    done
  done
fi
if [ "$PART" = knobs25off ]; then
  OFFLINE_FLAGS="--quantization fp8 --kv-cache-dtype fp8" offline_alternated \
    "DENALI_DECODE_RAGGED_MMA=0 DENALI_DECODE_MMA_BLOCKS=3" \
    "DENALI_DECODE_RAGGED_MMA=1 DENALI_DECODE_MMA_BLOCKS=3" \
    "DENALI_DECODE_RAGGED_MMA=0 DENALI_DECODE_MMA_BLOCKS=4" \
    "DENALI_DECODE_RAGGED_MMA=1 DENALI_DECODE_MMA_BLOCKS=4"
fi

echo "=== end $(date +%T) ($SECONDS s)"
