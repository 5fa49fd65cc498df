/**
 * The operator contract: what a model's forward pass and the sampler call. It is implemented
 * for each backend, by generated launchers over the kernels in kernels/src on the GPUs
 * (ops/gpu/) and in TypeScript on the CPU (ops/cpu/, the reference); `loadOps` (ops/load.ts)
 * picks the one for a backend. Models and the runner see only this interface, so they never
 * know which device they run on.
 *
 * Conventions, the same for every implementation:
 * - Activations and weights are bf16, stored as raw 16-bit patterns; accumulation is fp32. A
 *   linear layer's weight may instead be FP8 E4M3 with per-row scales (ops/linear_weight.ts).
 *   Logits are f32. Token ids, positions, block tables, slot mappings and lengths are i32.
 * - Matrices are row-major. A linear layer's weight is [N, K] (HF's `[out, in]`), and
 *   `out[M, N] = x[M, K] · W[N, K]ᵀ`.
 * - The KV cache of one layer is two buffers, K and V, each [numBlocks, numKvHeads, blockSize,
 *   headDim] bf16, or FP8 E4M3 codes (one byte each) when the shape's `kvDtype` is "fp8".
 *   Token t of a sequence lives in block `blockTable[t / blockSize]` at offset `t % blockSize`;
 *   its "slot" is `block * blockSize + offset`.
 * - Every op is ordered on `stream` and allocates nothing; workspaces come from the caller.
 *
 * @module
 */

import type { DeviceBuffer, Stream } from "../backends/backend.ts";
import type { AwqWeight, Fp8Weight, LinearWeight } from "./linear_weight.ts";

export type { AwqWeight, Fp8Weight, LinearWeight } from "./linear_weight.ts";

/** The elementwise and normalisation family (kernels/src/elementwise.cu, ops/cpu/elementwise.ts). */
export type ElementwiseOps = Pick<
  ModelOps,
  | "embedding"
  | "rmsNorm"
  | "qkNorm"
  | "qkvBias"
  | "rope"
  | "qkvRope"
  | "siluMul"
  | "castF32ToBf16"
  | "castBf16ToF32"
  | "fillRandom"
>;
/** The matrix family (kernels/src/linear.cu, ops/cpu/linear.ts). */
export type LinearOps = Pick<
  ModelOps,
  "linear" | "linearSiluMul" | "linearRmsNorm" | "prepareLinear"
>;
/** FP8 weight quantization (kernels/src/linear_fp8.cu, ops/cpu/fp8.ts). */
export type Fp8Ops = Pick<ModelOps, "quantizeFp8" | "dequantizeFp8" | "fp8ScratchBytes">;
/** 4-bit (AWQ/GPTQ) weights (kernels/src/linear_awq.cu, ops/cpu/awq.ts). */
export type AwqOps = Pick<ModelOps, "dequantizeAwq" | "awqScratchBytes">;
/** The attention and KV-cache family (kernels/src/attention.cu, ops/cpu/attention.ts). */
export type AttentionOps = Pick<
  ModelOps,
  "kvWrite" | "decodeAttention" | "decodeWorkspaceBytes" | "prefillAttention"
>;
/** The sampling family (kernels/src/sampling.cu, ops/cpu/sampling.ts). */
export type SamplingOps = Pick<
  ModelOps,
  | "argmax"
  | "sample"
  | "sampleWorkspaceBytes"
  | "logSoftmax"
  | "applyPenalties"
  | "applyLogitEdits"
  | "applyTokenBitmask"
  | "logprobs"
>;

/**
 * Words of one row's allowed-token bitmask for `applyTokenBitmask` (xgrammar's layout: bit
 * t & 31 of word t >> 5 is token t).
 */
export function bitmaskWords(vocab: number): number {
  return Math.ceil(vocab / 32);
}

/** RoPE frequencies: the host computes `invFreq` once, including Llama 3.1 `llama3` scaling. */
export interface RopeTable {
  /** f32 [headDim / 2]: the inverse frequency of each rotated pair. */
  readonly invFreq: DeviceBuffer;
  /** The rotary dimension (the head dimension for Llama). */
  readonly headDim: number;
}

/**
 * How the KV cache stores keys and values: "bf16", or "fp8", E4M3 codes of value / scale with one
 * scale per layer for K and one for V (vLLM's `--kv-cache-dtype fp8`), half the bytes.
 */
export type KvCacheDtype = "bf16" | "fp8";

/** Bytes one cached K or V element takes in a cache of `dtype`. */
export function kvElementBytes(dtype: KvCacheDtype = "bf16"): number {
  return dtype === "fp8" ? 1 : 2;
}

/** Shapes of one paged-attention call. */
export interface AttentionShape {
  /** Query heads. */
  readonly numHeads: number;
  /** Key/value heads; numHeads must be a multiple (GQA ratio numHeads / numKvHeads). */
  readonly numKvHeads: number;
  /** Head dimension (64 or 128 for Llama). */
  readonly headDim: number;
  /** Tokens per KV-cache block (16 and 64 are tested). */
  readonly blockSize: number;
  /** Softmax scale, normally 1 / sqrt(headDim). */
  readonly scale: number;
  /** The KV cache's element type; "bf16" when absent. */
  readonly kvDtype?: KvCacheDtype;
  /**
   * "fp8" only: K is stored as e4m3(k / kScale) and read back as e4m3 · kScale (f32 product);
   * a positive finite number, 1 when absent (vLLM's default without checkpoint scales).
   */
  readonly kScale?: number;
  /** "fp8" only: V's scale, as `kScale` is K's. */
  readonly vScale?: number;
}

/**
 * The arguments of `decodeAttention`, as a record a caller allocates once and refills per call,
 * so the hot path passes one object instead of eleven positions. An op reads the record during
 * the call only (a graph keeps the values it was captured with), so the caller may refill it
 * for the next call at once.
 */
export interface DecodeAttentionArgs {
  /** bf16 [batch, numHeads, headDim]: the attention output. */
  out: DeviceBuffer;
  /** bf16 [batch, numHeads, headDim]: one query token per sequence. */
  q: DeviceBuffer;
  /** The layer's K cache. */
  kCache: DeviceBuffer;
  /** The layer's V cache. */
  vCache: DeviceBuffer;
  /** i32 [batch, maxBlocks]: each sequence's block table. */
  blockTables: DeviceBuffer;
  /** i32 [batch]: each sequence's context length, the new token included. */
  contextLens: DeviceBuffer;
  /** Sequences. */
  batch: number;
  /** The block tables' row stride. */
  maxBlocks: number;
  /** The longest context in the batch, or a bound on it (sizes the split). */
  maxContext: number;
  /** Head counts, head dimension, block size and scale. */
  shape: AttentionShape;
  /** Split-K partials, `decodeWorkspaceBytes` bytes. */
  workspace: DeviceBuffer;
}

/** The arguments of `prefillAttention`, a record allocated once and refilled per call. */
export interface PrefillAttentionArgs {
  /** bf16 [tokens, numHeads, headDim]: the attention output. */
  out: DeviceBuffer;
  /** bf16 [tokens, numHeads, headDim]: the new tokens' queries, sequence after sequence. */
  q: DeviceBuffer;
  /** The layer's K cache. */
  kCache: DeviceBuffer;
  /** The layer's V cache. */
  vCache: DeviceBuffer;
  /** i32 [seqs + 1]: prefix sums of the new tokens. */
  queryStarts: DeviceBuffer;
  /** i32 [seqs]: cached + new tokens of each sequence. */
  contextLens: DeviceBuffer;
  /** i32 [seqs, maxBlocks]: each sequence's block table. */
  blockTables: DeviceBuffer;
  /** Sequences. */
  seqs: number;
  /** New tokens in all. */
  tokens: number;
  /** The block tables' row stride. */
  maxBlocks: number;
  /** Head counts, head dimension, block size and scale. */
  shape: AttentionShape;
}

/** Sampling parameters per sequence, in device buffers of length `batch`. */
export interface SamplingBuffers {
  /** f32 [batch]: temperature; 0 means greedy. */
  readonly temperature: DeviceBuffer;
  /** i32 [batch]: top-k; 0 or less means off. */
  readonly topK: DeviceBuffer;
  /** f32 [batch]: top-p; 1 means off. */
  readonly topP: DeviceBuffer;
  /** f32 [batch]: min-p; 0 means off. */
  readonly minP: DeviceBuffer;
  /** u64 [batch]: RNG seed per sequence. */
  readonly seed: DeviceBuffer;
  /** i32 [batch]: RNG offset per sequence (the step), so a seeded run is reproducible. */
  readonly step: DeviceBuffer;
}

/**
 * Where `qkvRope` also scatters the finished k and v rows: a layer's paged cache, written as
 * `kvWrite` writes it (so a step needs no kvWrite launch).
 */
export interface KvCacheWrite {
  /** The layer's K cache (kvWrite's layout and dtype). */
  kCache: DeviceBuffer;
  /** The layer's V cache. */
  vCache: DeviceBuffer;
  /** i32 [tokens]: each token's cache slot; a negative one (padding) writes nothing. */
  slots: DeviceBuffer;
  /** The layer's attention shape: its numKvHeads and headDim must be the projection's. */
  shape: AttentionShape;
}

/**
 * The arguments of `qkvRope`: one record, allocated by the caller once and refilled per layer,
 * so the call allocates nothing.
 */
export interface QkvRopeArgs {
  /** Out: bf16 [tokens, numHeads, headDim], biased, normed and rotated as asked. */
  q: DeviceBuffer;
  /** Out: bf16 [tokens, numKvHeads, headDim], likewise. */
  k: DeviceBuffer;
  /** Out: bf16 [tokens, numKvHeads, headDim], biased as asked. */
  v: DeviceBuffer;
  /** In: the fused projection, bf16 [tokens, (numHeads + 2·numKvHeads)·headDim], q|k|v per row. */
  qkv: DeviceBuffer;
  /** i32 [tokens]: each token's position. */
  positions: DeviceBuffer;
  /** The inverse frequencies; its headDim is the head dimension. */
  table: RopeTable;
  /** The fused q|k|v bias, bf16 [(numHeads + 2·numKvHeads)·headDim] (Qwen2), or null. */
  bias: DeviceBuffer | null;
  /** q_norm's weight, bf16 [headDim] (Qwen3), or null; given with kNorm or not at all. */
  qNorm: DeviceBuffer | null;
  /** k_norm's weight, bf16 [headDim], or null. */
  kNorm: DeviceBuffer | null;
  /** The norms' epsilon (read only with qNorm and kNorm). */
  eps: number;
  /** Tokens (rows of qkv). */
  tokens: number;
  /** Query heads. */
  numHeads: number;
  /** Key/value heads. */
  numKvHeads: number;
  /**
   * Also write k and v into this cache, exactly as `kvWrite(kCache, vCache, k, v, slots,
   * tokens, shape)` after the call would; null or absent: only q, k and v.
   */
  cache?: KvCacheWrite | null;
}

/** The operators a decoder forward pass and its sampler need. */
export interface ModelOps {
  /** out[t, :] = table[ids[t], :]. out bf16 [tokens, hidden]; table bf16 [vocab, hidden]. */
  embedding(
    out: DeviceBuffer,
    table: DeviceBuffer,
    ids: DeviceBuffer,
    tokens: number,
    hidden: number,
    stream: Stream,
  ): void;

  /**
   * RMSNorm over rows of `hidden`. Without `residual`: out = norm(x) · weight. With it, the fused
   * pre-norm step: residual += x (in place, rounded to bf16), then out = norm(residual) · weight.
   */
  rmsNorm(
    out: DeviceBuffer,
    x: DeviceBuffer,
    weight: DeviceBuffer,
    residual: DeviceBuffer | null,
    tokens: number,
    hidden: number,
    eps: number,
    stream: Stream,
  ): void;

  /**
   * RMSNorm of every head, in place: each [headDim] row of q [tokens, numHeads, headDim] is
   * normalised with `qWeight` and each of k [tokens, numKvHeads, headDim] with `kWeight` (both
   * bf16 [headDim]), rounded as `rmsNorm` rounds (Qwen3's q_norm and k_norm, before RoPE).
   */
  qkNorm(
    q: DeviceBuffer,
    k: DeviceBuffer,
    qWeight: DeviceBuffer,
    kWeight: DeviceBuffer,
    tokens: number,
    numHeads: number,
    numKvHeads: number,
    headDim: number,
    eps: number,
    stream: Stream,
  ): void;

  /**
   * Adds the fused q/k/v bias in place, one launch for all three (Qwen2's biased projections):
   * q[t, i] += bias[i], k[t, j] += bias[qWidth + j], v[t, j] += bias[qWidth + kvWidth + j], each
   * sum rounded to bf16. q [tokens, qWidth], k and v [tokens, kvWidth], bias [qWidth + 2·kvWidth].
   */
  qkvBias(
    q: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    bias: DeviceBuffer,
    tokens: number,
    qWidth: number,
    kvWidth: number,
    stream: Stream,
  ): void;

  /**
   * Rotates q [tokens, numHeads, headDim] and k [tokens, numKvHeads, headDim] in place, the
   * HF "rotate_half" convention, at angle positions[t] · invFreq[i].
   */
  rope(
    q: DeviceBuffer,
    k: DeviceBuffer,
    positions: DeviceBuffer,
    table: RopeTable,
    tokens: number,
    numHeads: number,
    numKvHeads: number,
    stream: Stream,
  ): void;

  /**
   * Splits a fused q|k|v projection into contiguous q, k and v and prepares q and k for
   * attention, in one pass, rounding at the same steps as copying the three slices out and then
   * running `qkvBias` (with `bias`), `qkNorm` (with `qNorm` and `kNorm`) and `rope` on them, in
   * that order (the CPU reference does exactly that). One launch where the unfused steps take up to three, and it lets every step
   * run q, k and v as one `linear` over the fused weight.
   */
  qkvRope(args: QkvRopeArgs, stream: Stream): void;

  /**
   * out[M, N] = x[M, K] · W[N, K]ᵀ, bf16 in and out, fp32 accumulation. W is bf16, or FP8 with
   * per-row scales (an {@link Fp8Weight}): then out[m, n] = scales[n] · Σ x[m, k] · e4m3(W[n, k])
   * for M <= 16 (the W8A16 GEMV), and for larger M the bf16 GEMM over W dequantized into the
   * weight's scratch (each element bf16(scales[n] · e4m3(W[n, k])), as `dequantizeFp8`) — or,
   * on a shape prepareLinear timed faster that way (FP8 tensor cores, a vendor library with
   * per-row FP8 scales), W8A8: x quantized per token as `quantizeFp8` quantizes a weight's rows,
   * out[m, n] = bf16(xScale[m] · scales[n] · Σ e4m3(xq[m, k]) · e4m3(W[n, k])).
   */
  linear(
    out: DeviceBuffer,
    x: DeviceBuffer,
    weight: LinearWeight,
    m: number,
    n: number,
    k: number,
    stream: Stream,
  ): void;

  /**
   * out[m, n] = siluMul(x · Wᵀ) for a gate/up weight W of [2n, k], gate rows first (`weight` of
   * any format `linear` takes), with SiLU-and-multiply in the GEMV's epilogue: the [m, 2n]
   * gate/up product is never written. `out` holds what `linear` into [m, 2n] and then `siluMul`
   * write: bit for bit where that `linear` runs the 16-row GEMV (2n rows of at least 16 per SM),
   * else up to the order of the f32 sums. Returns true where a fused kernel ran; false, having done
   * nothing, where none takes the call (more than 16 rows, no tensor-core GEMV, the CPU, or
   * off: the default, since it made no step shorter on an H100; DENALI_SILU_EPILOGUE=1 turns it
   * on), and the caller then runs `linear` and `siluMul`.
   * Bad arguments throw as `linear`'s do, whichever way the call would have gone.
   */
  linearSiluMul(
    out: DeviceBuffer,
    x: DeviceBuffer,
    weight: LinearWeight,
    m: number,
    n: number,
    k: number,
    stream: Stream,
  ): boolean;

  /**
   * out[m, n] = rmsNorm(x) · Wᵀ with the pre-norm step in the GEMV's prologue, so no normalised
   * [m, k] is written: what `rmsNorm(normed, x, normWeight, residual, m, k, eps)` and then
   * `linear(out, normed, weight, m, n, k)` compute, up to the order of the f32 sum of squares (one
   * bf16 ulp of a normalised element, rarely). With a residual, the sum that is normalised,
   * bf16(residual + x), goes to `residualOut` (rmsNorm leaves it in `residual`; here `residual` is
   * left as it was, since every block reads it whole): the caller swaps the two. `residual` and
   * `residualOut` are both given or both null. Returns true where a fused kernel ran; false,
   * having done nothing, where none takes the call (more than 8 rows, 4-bit weights, no
   * tensor-core GEMV, the CPU, or off: the default until a GPU A/B shows it faster;
   * DENALI_NORM_GEMV=1 turns it on), and the caller then runs `rmsNorm` and `linear`. `out` and
   * `residualOut` may overlap no other buffer of the call. Bad arguments throw whichever way the
   * call would have gone.
   */
  linearRmsNorm(
    out: DeviceBuffer,
    x: DeviceBuffer,
    residual: DeviceBuffer | null,
    residualOut: DeviceBuffer | null,
    normWeight: DeviceBuffer,
    weight: LinearWeight,
    m: number,
    n: number,
    k: number,
    eps: number,
    stream: Stream,
  ): boolean;

  /**
   * Chooses, once per shape, the faster of Denali's own kernel and the backend's vendor library
   * (if any) by timing both on `stream`; for a shape marked `fp8` (its weight is an FP8 one) also
   * whether W8A8 on FP8 tensor cores beats dequantizing to bf16. Call it at start, before any
   * graph capture; shapes not prepared run on Denali's own kernel (FP8 weights dequantized). A
   * no-op where there is nothing to choose.
   */
  prepareLinear(
    shapes: readonly { m: number; n: number; k: number; fp8?: boolean }[],
    stream: Stream,
  ): void;

  /**
   * Quantizes a bf16 weight [n, k] to FP8 with one scale per row: scales[n] = f32(amax_n / 448)
   * (1 for an all-zero row), data[n, k] = e4m3(f32(W[n, k] / scales[n])), rounded to nearest
   * even and saturated to ±448 (backends/fp8.ts). Every backend writes the same bits.
   */
  quantizeFp8(out: Fp8Weight, weight: DeviceBuffer, n: number, k: number, stream: Stream): void;

  /** out[n, k] (bf16) = bf16(f32(scales[n] · e4m3(W[n, k]))): the FP8 weight as a bf16 one. */
  dequantizeFp8(out: DeviceBuffer, weight: Fp8Weight, n: number, k: number, stream: Stream): void;

  /**
   * Bytes of the bf16 scratch `linear` needs for an FP8 weight of [n, k] (0 where it needs
   * none, as on the CPU); one scratch of the largest such size serves every weight of a model.
   */
  fp8ScratchBytes(n: number, k: number): number;

  /**
   * out[n, k] (bf16) = bf16((q[n, k] - zeros[n, g]) · scales[n, g]), g = k / groupSize: the
   * 4-bit weight as a bf16 one (the f32 product is exact, so only the bf16 rounding differs from
   * the true value). `linear` on an {@link AwqWeight} runs the W4A16 GEMV for M <= 4 (sums of
   * x · that product, in f32) and otherwise the bf16 GEMM over this dequantization.
   */
  dequantizeAwq(out: DeviceBuffer, weight: AwqWeight, n: number, k: number, stream: Stream): void;

  /** Bytes of the bf16 scratch `linear` needs for a 4-bit weight of [n, k] (0 on the CPU). */
  awqScratchBytes(n: number, k: number): number;

  /** out[t, i] = silu(gateUp[t, i]) · gateUp[t, inter + i]; gateUp is [tokens, 2 · inter]. */
  siluMul(
    out: DeviceBuffer,
    gateUp: DeviceBuffer,
    tokens: number,
    inter: number,
    stream: Stream,
  ): void;

  /**
   * Scatters k and v ([tokens, numKvHeads, headDim] bf16) into the paged cache at `slots` (i32).
   * An "fp8" cache gets e4m3(f32(x / scale)), rounded to nearest even and saturated to ±448, NaN
   * kept (backends/fp8.ts); decode and prefill read each element back as f32(e4m3 · scale).
   */
  kvWrite(
    kCache: DeviceBuffer,
    vCache: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    slots: DeviceBuffer,
    tokens: number,
    shape: AttentionShape,
    stream: Stream,
  ): void;

  /**
   * Decode attention: one query token per sequence against its whole cached context.
   * q and out [batch, numHeads, headDim]; blockTables i32 [batch, maxBlocks]; contextLens i32
   * [batch]. `workspace` holds the split-K partials; size it with `decodeWorkspaceBytes`.
   *
   * On CUDA (sm_90+) its kernels launch programmatically and read contextLens, the block tables
   * and K rows before the previous kernel of the stream has finished. So, of what it reads, only
   * the K and V rows at position contextLens[b] - 1 may be written by the op enqueued right
   * before it (as kvWrite, or qkvRope with a cache, of the new tokens does), and that op must
   * not overlap earlier work (both wait before they release the next kernel); everything else
   * must be complete before that op starts.
   */
  decodeAttention(args: DecodeAttentionArgs, stream: Stream): void;

  /** Bytes of workspace `decodeAttention` needs for this batch and longest context. */
  decodeWorkspaceBytes(batch: number, maxContext: number, shape: AttentionShape): number;

  /**
   * Causal prefill attention over a variable-length batch whose K/V are already in the cache.
   * q and out [tokens, numHeads, headDim], packed sequence after sequence. queryStarts i32
   * [seqs + 1] (prefix sums of new tokens); contextLens i32 [seqs] (cached + new tokens);
   * blockTables i32 [seqs, maxBlocks]. New token j of sequence s sits at position
   * contextLens[s] - newTokens(s) + j and attends to positions up to and including itself.
   */
  prefillAttention(args: PrefillAttentionArgs, stream: Stream): void;

  /** Greedy: ids[b] = argmax(logits[b, :]) (lowest index on ties). logits f32 [batch, vocab]. */
  argmax(
    ids: DeviceBuffer,
    logits: DeviceBuffer,
    batch: number,
    vocab: number,
    stream: Stream,
  ): void;

  /**
   * Samples ids[b] from softmax(logits[b] / temperature) restricted by top-k, top-p and min-p,
   * with a counter-based RNG keyed by (seed, step), so the same inputs give the same ids.
   * `workspace` is sized by `sampleWorkspaceBytes`.
   */
  sample(
    ids: DeviceBuffer,
    logits: DeviceBuffer,
    params: SamplingBuffers,
    batch: number,
    vocab: number,
    workspace: DeviceBuffer,
    stream: Stream,
  ): void;

  /** Bytes of workspace `sample` needs. */
  sampleWorkspaceBytes(batch: number, vocab: number): number;

  /** out[b, :] = log_softmax(logits[b, :]), f32 in and out. */
  logSoftmax(
    out: DeviceBuffer,
    logits: DeviceBuffer,
    batch: number,
    vocab: number,
    stream: Stream,
  ): void;

  /**
   * Applies repetition, presence and frequency penalties in place, as vLLM does, before
   * temperature and sampling. `entries` is i32 [count, 3]: (row, token, outputCount), one entry
   * per distinct token of row's prompt and output (each (row, token) at most once; outputCount 0
   * for a token seen only in the prompt). `penalties` is f32 [batch, 3]: (repetition, presence,
   * frequency) of each row. For each entry, with l = logits[row, token]:
   * l = l > 0 ? l / repetition : l · repetition; then l -= frequency · outputCount, and
   * l -= presence when outputCount > 0. `count` 0 is a no-op.
   */
  applyPenalties(
    logits: DeviceBuffer,
    entries: DeviceBuffer,
    count: number,
    penalties: DeviceBuffer,
    batch: number,
    vocab: number,
    stream: Stream,
  ): void;

  /**
   * Adds sparse per-token values to f32 logits in place (OpenAI's logit_bias; -inf bans a
   * token). `entries` is i32 [count, 3]: (row, token, f32 bits of the addend), each (row, token)
   * at most once; logits[row, token] = f32(logits[row, token] + addend). `count` 0 is a no-op.
   */
  applyLogitEdits(
    logits: DeviceBuffer,
    entries: DeviceBuffer,
    count: number,
    batch: number,
    vocab: number,
    stream: Stream,
  ): void;

  /**
   * Sets to -inf every logit a row's allowed-token bitmask leaves out (xgrammar's layout).
   * `masks` is i32 [count, ceil(vocab / 32)]: bit t & 31 of word t >> 5 of mask k set = token t
   * allowed in row rows[k]; `rows` is i32 [count], distinct rows of the [batch, vocab] logits.
   * `count` 0 is a no-op.
   */
  applyTokenBitmask(
    logits: DeviceBuffer,
    masks: DeviceBuffer,
    rows: DeviceBuffer,
    count: number,
    batch: number,
    vocab: number,
    stream: Stream,
  ): void;

  /**
   * Log-probabilities of the raw model output, for `logprobs` / `top_logprobs`. From the bf16
   * logits [batch, vocab] (as the lm head wrote them, before penalties and temperature) and the
   * sampled ids i32 [batch]: chosen f32 [batch] = log_softmax(logits[b])[ids[b]]; topIds i32
   * [batch, n] and topValues f32 [batch, n] = the n largest log-probabilities in descending
   * order, ties to the lower id. 0 <= n <= min(20, vocab); with n 0 only `chosen` is written.
   */
  logprobs(
    chosen: DeviceBuffer,
    topIds: DeviceBuffer,
    topValues: DeviceBuffer,
    logits: DeviceBuffer,
    ids: DeviceBuffer,
    batch: number,
    vocab: number,
    n: number,
    stream: Stream,
  ): void;

  /**
   * Fills `out` (bf16, `count` elements) with seeded uniform random values in [-scale, scale):
   * element i is bf16(scale · (2u − 1)), u = (philox4x32-10(key = (seed lo32, seed hi32),
   * counter = (i lo32, i hi32, 0, 0))[0] >> 8) · 2⁻²⁴, in f32 without contraction, so every backend writes the same bits. Used to build
   * random weights on the device (`--random-weights`).
   */
  fillRandom(out: DeviceBuffer, count: number, seed: number, scale: number, stream: Stream): void;

  /** f32 → bf16 (round to nearest even), `count` elements. */
  castF32ToBf16(out: DeviceBuffer, x: DeviceBuffer, count: number, stream: Stream): void;

  /** bf16 → f32, `count` elements. */
  castBf16ToF32(out: DeviceBuffer, x: DeviceBuffer, count: number, stream: Stream): void;
}
