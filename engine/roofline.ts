/**
 * The roofline bound of one engine step: the least time the device could take, given the bytes
 * the step must read and the arithmetic it must do, at a measured read bandwidth and a measured
 * matrix peak. The step profile (engine/step_profile.ts) compares each step's device time with
 * this bound.
 *
 * Bytes counted are those the step really reads from device memory, and no more:
 * - every layer's linear weights (q/k/v, o, gate/up, down) and norm weights, read once per step
 *   whatever the token count (they are streamed once per GEMM; re-reads hit L2 for small M), the
 *   linear ones at their stored size (bf16, FP8 or 4-bit, {@link linearWeightBytes}), the rest
 *   in bf16;
 * - one embedding row per token (a gather, not the table);
 * - the final norm and the lm head, when the step computes any logits;
 * - the K and V of every position each token attends to: a decode row reads its whole context, a
 *   prefill chunk reads its context up to its last token once.
 *
 * Activations are left out: they are small against the weights and mostly stay in L2.
 * FLOPs count 2 per multiply-add: 2·params per token for the linear layers, 2·lmHead per logit
 * row, and attention's QKᵀ and PV, 4·qDim per (query, key) pair, per layer.
 *
 * @module
 */

import type { ModelConfig } from "../models/config.ts";
import { type KvCacheDtype, kvElementBytes } from "../ops/ops.ts";

/** What the bound needs to know of a model. */
export interface ModelCost {
  /** Parameters of every layer's linear weights (no embeddings, no lm head). */
  readonly linearParams: number;
  /** Parameters of the norms (every layer's two and the final one). */
  readonly normParams: number;
  /** Parameters of the lm head (vocab × hidden). */
  readonly lmHeadParams: number;
  /** Hidden size: one embedding row. */
  readonly hiddenSize: number;
  /** Query width, heads × headDim. */
  readonly qDim: number;
  /** Layers. */
  readonly numLayers: number;
  /** Bytes of K and V one position holds, over all layers. */
  readonly kvBytesPerToken: number;
  /** Bytes per element of the decoder's linear weights (2 for bf16); the rest stays bf16. */
  readonly weightBytes: number;
}

/** The shape of a Llama-style model, as its config describes it. */
export type TransformerShape = Pick<
  ModelConfig,
  | "hiddenSize"
  | "intermediateSize"
  | "numHiddenLayers"
  | "numAttentionHeads"
  | "numKeyValueHeads"
  | "headDim"
  | "vocabSize"
>;

/**
 * Device bytes per element of a decoder linear weight held as `format` (ModelWeights.format):
 * bf16 2; FP8 1 (its per-row f32 scale adds 4/K, under 0.1% at K >= 4096, left out so the bound
 * stays a floor); 4-bit ½ plus one f32 scale and one u8 zero per group of `groupSize` (128 by
 * default, AutoAWQ's and GPTQ's usual size). Embeddings, norms and the lm head stay bf16.
 */
export function linearWeightBytes(format: "bf16" | "fp8" | "awq", groupSize = 128): number {
  if (format === "fp8") return 1;
  if (format === "awq") return 0.5 + 5 / groupSize;
  return 2;
}

/**
 * The cost figures of a Llama-shaped model (Llama, Qwen, Mistral) in bf16 with a bf16 KV cache.
 * `kvElementBytes` and `weightBytes` change for quantized caches and weights.
 */
export function transformerCost(
  shape: TransformerShape,
  weightBytes = 2,
  kvElementBytes = 2,
): ModelCost {
  const h = shape.hiddenSize, L = shape.numHiddenLayers;
  const qDim = shape.numAttentionHeads * shape.headDim;
  const kvDim = shape.numKeyValueHeads * shape.headDim;
  const perLayer = (qDim + 2 * kvDim) * h + qDim * h + 3 * h * shape.intermediateSize;
  return {
    linearParams: L * perLayer,
    normParams: (2 * L + 1) * h,
    lmHeadParams: shape.vocabSize * h,
    hiddenSize: h,
    qDim,
    numLayers: L,
    kvBytesPerToken: 2 * L * kvDim * kvElementBytes,
    weightBytes,
  };
}

/** What one step computed, as far as its cost goes. */
export interface StepWork {
  /** Tokens computed (decode rows plus prefill tokens). */
  readonly tokens: number;
  /** Rows of logits the lm head produced (0: a prefill step short of every prompt's end). */
  readonly logitRows: number;
  /** Positions of K/V read: each decode row's context, each prefill chunk's context at its end. */
  readonly kvTokensRead: number;
  /** (query, key) pairs attention scored, over all rows, per layer and head group. */
  readonly attentionPairs: number;
}

/** Bytes read and floating-point operations of one step. */
export interface StepCost {
  /** Bytes read from device memory. */
  readonly bytes: number;
  /** Floating-point operations (2 per multiply-add). */
  readonly flops: number;
  /** The part of `bytes` that is attention's K/V reads. */
  readonly attentionBytes: number;
  /** The part of `flops` that is attention's QKᵀ and PV. */
  readonly attentionFlops: number;
}

/**
 * The cost figures of a loaded engine's model: its shape, with the linear weights and the KV
 * cache at the sizes it holds them in (EngineInfo's `weightFormat` and `kvCacheDtype`).
 */
export function loadedModelCost(
  shape: TransformerShape,
  held: { readonly weightFormat: "bf16" | "fp8" | "awq"; readonly kvCacheDtype: KvCacheDtype },
): ModelCost {
  return transformerCost(
    shape,
    linearWeightBytes(held.weightFormat),
    kvElementBytes(held.kvCacheDtype),
  );
}

/** The bytes a step reads and the FLOPs it does (see the module doc for what counts). */
export function stepCost(model: ModelCost, work: StepWork): StepCost {
  const attentionBytes = work.kvTokensRead * model.kvBytesPerToken;
  const w = model.weightBytes;
  const logits = work.logitRows > 0;
  const bytes = model.linearParams * w +
    model.normParams * 2 +
    work.tokens * model.hiddenSize * 2 +
    (logits ? model.lmHeadParams * 2 : 0) +
    attentionBytes;
  const attentionFlops = 4 * model.qDim * work.attentionPairs * model.numLayers;
  const flops = 2 * work.tokens * model.linearParams +
    2 * work.logitRows * model.lmHeadParams +
    attentionFlops;
  return { bytes, flops, attentionBytes, attentionFlops };
}

/** The device's measured ceilings. */
export interface DeviceCeilings {
  /** What a read-only kernel reaches, GB/s (1e9 bytes). */
  readonly readGbps: number;
  /** What the matrix unit reaches on a large GEMM, TFLOP/s (1e12). */
  readonly peakTflops: number;
}

/** The roofline bound in milliseconds: the larger of bytes over bandwidth and FLOPs over peak. */
export function rooflineMs(cost: StepCost, ceilings: DeviceCeilings): number {
  return limitMs(cost.bytes, cost.flops, ceilings);
}

function limitMs(bytes: number, flops: number, ceilings: DeviceCeilings): number {
  return Math.max(bytes / (ceilings.readGbps * 1e6), flops / (ceilings.peakTflops * 1e9));
}

/**
 * The bound of a step whose attention and the rest (the GEMMs, the norms, the lm head) run one
 * after the other, each at its own roofline: attention's K/V bytes (or its FLOPs) plus the rest's
 * weight bytes or FLOPs, whichever is larger. An engine that never overlaps the two phases, as
 * Denali's one-stream steps do, cannot beat it; the gap between it and {@link rooflineMs} is what
 * running attention beside the GEMMs could win at most.
 */
export function phasedBoundMs(cost: StepCost, ceilings: DeviceCeilings): number {
  return limitMs(cost.attentionBytes, cost.attentionFlops, ceilings) +
    limitMs(cost.bytes - cost.attentionBytes, cost.flops - cost.attentionFlops, ceilings);
}

/**
 * The attention pairs and K/V positions read by a prefill chunk of `tokens` tokens starting at
 * position `start` (causal: token j sees positions 0..start+j).
 */
export function prefillChunkWork(start: number, tokens: number): {
  pairs: number;
  kvTokensRead: number;
} {
  return { pairs: tokens * start + (tokens * (tokens + 1)) / 2, kvTokensRead: start + tokens };
}
