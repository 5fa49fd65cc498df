/**
 * What a model family is, as the runner and the weight loader see it: where its weights come
 * from in a checkpoint ({@link WeightSlot}) and how it computes one step over the operators
 * ({@link Forward}). Each family is one file beside this one (models/llama.ts, ...), listed in
 * models/families.ts.
 *
 * @module
 */

import type { Backend, DeviceBuffer, Stream } from "../backends/backend.ts";
import type { AttentionShape, KvCacheDtype, LinearWeight, ModelOps } from "../ops/ops.ts";
import type { ModelConfig } from "./config.ts";

/** One checkpoint tensor's place in a device buffer. */
export interface WeightPart {
  /** The tensor's name in the checkpoint, e.g. "model.layers.0.self_attn.q_proj.weight". */
  readonly name: string;
  /** Its shape, as the config predicts it. */
  readonly shape: readonly number[];
  /** Byte offset of the part inside its buffer. */
  readonly offset: number;
}

/** One device buffer of a model's weights: checkpoint tensors stacked by rows (a fusion). */
export interface WeightSlot {
  /** The family's key for the buffer, e.g. "0.qkvProj". */
  readonly key: string;
  /** Its size in bytes, bf16. */
  readonly bytes: number;
  /** A norm weight: random weights fill it with ones, not noise. */
  readonly isNorm: boolean;
  /**
   * A decoder layer's linear weight [rows, cols], which may be held in FP8 (an FP8 checkpoint,
   * or `--quantization fp8`); the model reads it with `ModelWeights.linear`. Embeddings and the
   * lm head stay bf16.
   */
  readonly linear?: boolean;
  /** The tensors that fill it, in order. */
  readonly parts: readonly WeightPart[];
}

/** A model's weights on one device, by slot key: bf16, or FP8 for linear slots. */
export interface ModelWeights {
  /** The config the weights were checked against. */
  readonly config: ModelConfig;
  /** The bf16 buffer of slot `key`; throws for a key the layout lacks or an FP8 slot. */
  get(key: string): DeviceBuffer;
  /** The weight of linear slot `key` in whatever form it is held (bf16 or FP8). */
  linear(key: string): LinearWeight;
  /** "fp8" or "awq" (4-bit) when linear slots are held quantized, else "bf16". */
  readonly format: "bf16" | "fp8" | "awq";
  /** Whether the layout has slot `key` (a tied lm head has none). */
  has(key: string): boolean;
  /** Device bytes held. */
  readonly bytes: number;
  /**
   * Per layer, the FP8 KV-cache scales the checkpoint provides (compressed-tensors
   * `kv_cache_scheme`: `self_attn.k_scale` and `v_scale`), or null: an FP8 KV cache then uses 1.
   */
  readonly kvScales: { readonly k: Float32Array; readonly v: Float32Array } | null;
  /** Frees every buffer; the weights must not be used afterwards. A second call does nothing. */
  free(): void;
}

/** The shape of one step's launches. */
export interface StepShape {
  /** Tokens in the step: decode rows first, then prefill chunks. */
  tokens: number;
  /** Decode rows (one token each). */
  decodes: number;
  /** Block-table stride of the decode rows. */
  decodeMaxBlocks: number;
  /** Longest decode context (sizes decodeAttention's split). */
  decodeMaxContext: number;
  /** Prefill chunks. */
  prefills: number;
  /** Tokens in the prefill chunks. */
  prefillTokens: number;
  /** Block-table stride of the prefill chunks. */
  prefillMaxBlocks: number;
  /** Rows of logits the lm head computes. */
  logitRows: number;
  /** Whether the rows that sample are gathered by `logitRows` first (else rows 0..logitRows-1). */
  gather: boolean;
}

/** The device inputs of one step (engine/batch_inputs.ts fills them), i32 unless noted. */
export interface StepInputs {
  /** [tokens] token ids. */
  readonly tokenIds: DeviceBuffer;
  /** [tokens] positions. */
  readonly positions: DeviceBuffer;
  /** [tokens] KV-cache slots. */
  readonly slots: DeviceBuffer;
  /** [decodes, decodeMaxBlocks] block tables of the decode rows. */
  readonly decodeBlockTables: DeviceBuffer;
  /** [decodes] context lengths of the decode rows. */
  readonly decodeContextLens: DeviceBuffer;
  /** [prefills + 1] prefix sums of the prefill chunks' tokens. */
  readonly queryStarts: DeviceBuffer;
  /** [prefills] context lengths (cached + new) of the prefill chunks. */
  readonly prefillContextLens: DeviceBuffer;
  /** [prefills, prefillMaxBlocks] block tables of the prefill chunks. */
  readonly prefillBlockTables: DeviceBuffer;
  /** [logitRows] the token rows that sample, when the shape gathers. */
  readonly logitRows: DeviceBuffer;
}

/** The paged K/V cache, one K and one V buffer per layer. */
export interface LayerCaches {
  /** Layer `layer`'s K cache. */
  k(layer: number): DeviceBuffer;
  /** Layer `layer`'s V cache. */
  v(layer: number): DeviceBuffer;
}

/** Where a step's logits go. */
export interface LogitsOut {
  /** bf16 [logitRows, vocab], as the lm head writes them (logprobs read these). */
  readonly bf16: DeviceBuffer;
  /** f32 [logitRows, vocab], what the sampler reads. */
  readonly f32: DeviceBuffer;
}

/** Sizes a forward pass allocates its activations for. */
export interface ForwardSizes {
  /** Most tokens in one step. */
  readonly maxTokens: number;
  /** Most rows that sample in one step. */
  readonly maxRows: number;
  /** Tokens per KV block. */
  readonly blockSize: number;
  /** Block-table stride of the longest sequence. */
  readonly maxBlocksPerSeq: number;
  /** The KV cache's element type; "bf16" when absent. */
  readonly kvCacheDtype?: KvCacheDtype;
}

/** A linear call's shape, for `prepareLinear`. */
export interface LinearShape {
  /** Rows of x. */
  readonly m: number;
  /** Rows of the weight (outputs). */
  readonly n: number;
  /** Columns (inputs). */
  readonly k: number;
  /** The weight is FP8 (an Fp8Weight): prepareLinear also times the W8A8 path for it. */
  readonly fp8?: boolean;
}

/** A family's forward pass on one device, with its activations allocated. */
export interface Forward {
  /**
   * Enqueues the launches of one step on `stream`, from the token ids up to `s.logitRows` rows
   * of logits in `out`. Allocates nothing, so it can be captured into a graph.
   */
  run(
    s: StepShape,
    inputs: StepInputs,
    kv: LayerCaches,
    out: LogitsOut,
    stream: Stream,
  ): void;
  /** Every linear shape a step of `m` tokens runs, for `prepareLinear`. */
  linearShapes(m: number): LinearShape[];
  /** Frees the activations. A second call does nothing. */
  free(): void;
}

/** A model family: how it reads its checkpoint and how it computes. */
export interface ModelDefinition {
  /** The HF architecture name in config.json, e.g. "LlamaForCausalLM". */
  readonly architecture: string;
  /** The device buffers the weights need and the checkpoint tensors that fill them. */
  weightLayout(config: ModelConfig): WeightSlot[];
  /**
   * A forward pass over `weights`, its activations allocated on `backend` for `sizes`. On
   * failure whatever it allocated is freed. A feature the device cannot run fails here.
   */
  createForward(
    backend: Backend,
    ops: ModelOps,
    weights: ModelWeights,
    sizes: ForwardSizes,
  ): Forward;
}

/**
 * The shape of `config`'s attention calls with a KV cache of `blockSize`-token blocks of
 * `kvDtype` elements. An "fp8" cache gets `scales` (a layer's checkpoint-provided K and V
 * scales), else 1 each, vLLM's default when the checkpoint has none.
 */
export function attentionShape(
  config: ModelConfig,
  blockSize: number,
  kvDtype: KvCacheDtype = "bf16",
  scales: { readonly k: number; readonly v: number } = { k: 1, v: 1 },
): AttentionShape {
  const shape = {
    numHeads: config.numAttentionHeads,
    numKvHeads: config.numKeyValueHeads,
    headDim: config.headDim,
    blockSize,
    scale: 1 / Math.sqrt(config.headDim),
  };
  return kvDtype === "fp8" ? { ...shape, kvDtype, kScale: scales.k, vScale: scales.v } : shape;
}
