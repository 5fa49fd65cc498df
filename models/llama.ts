/**
 * Llama (`LlamaForCausalLM`): its weights in a checkpoint and its forward pass over the
 * operators. Families that differ from Llama in a step or two (biases, norms on q and k) extend
 * {@link LlamaForward} and override its hooks.
 *
 * Weights are laid out as the forward pass wants them, not as HF stores them: q, k and v fused
 * into one [(H + 2·KV)·D, hidden] matrix and gate and up into one [2·inter, hidden] matrix, so
 * each is a single `linear` call.
 *
 * A step is, for T tokens (decode rows first, then prefill chunks, as the scheduler orders):
 * embedding → per layer [rmsNorm (fused residual) → q/k/v projection → qkvRope (which also
 * writes the new k and v rows into the layer's cache, kvWrite's job, one launch fewer) →
 * decodeAttention on the decode rows, prefillAttention on the prefill rows → o projection →
 * rmsNorm (fused residual) → gate/up projection → siluMul → down projection] → final rmsNorm
 * → the rows that sample (gathered) → lm head → f32. Where the step is a GEMV's (up to 16
 * tokens, on a GPU) and the SiLU epilogue is on (ops/gpu/linear.ts), gate/up and siluMul are one
 * launch (`linearSiluMul`: the GEMV applies SiLU-and-multiply before it stores, and the
 * [T, 2·inter] gate/up rows are never written).
 *
 * The q/k/v projection is one `linear` over the fused weight, whatever the token count: one
 * launch, and a GEMM wide enough to fill the device (three, over row slices of the weight, left
 * the k and v GEMMs of a few hundred rows with a few tiles each). Its output interleaves q, k
 * and v per token, and `qkvRope` splits it into the contiguous [tokens, heads, headDim] arrays
 * the cache and attention take, applying the family's bias or q/k norms and RoPE on the way. The
 * gate/up output is used fused, as siluMul reads it.
 *
 * @module
 */

import type { Backend, DeviceBuffer, Stream } from "../backends/backend.ts";
import type {
  AttentionShape,
  DecodeAttentionArgs,
  KvCacheWrite,
  LinearWeight,
  ModelOps,
  PrefillAttentionArgs,
  QkvRopeArgs,
  RopeTable,
} from "../ops/ops.ts";
import { isFp8Weight } from "../ops/linear_weight.ts";
import type { ModelConfig } from "./config.ts";
import {
  attentionShape,
  type Forward,
  type ForwardSizes,
  type LayerCaches,
  type LinearShape,
  type LogitsOut,
  type ModelDefinition,
  type ModelWeights,
  type StepInputs,
  type StepShape,
  type WeightSlot,
} from "./model.ts";
import { createRopeTable, ropeInverseFrequencies } from "./rope.ts";

/** Adds a matrix slot of `cols` columns whose row blocks are the named tensors, in order. */
export function matrixSlot(
  slots: WeightSlot[],
  key: string,
  cols: number,
  ...parts: [string, number][]
): void {
  let offset = 0;
  const placed = parts.map(([name, rows]) => {
    const part = { name, shape: [rows, cols], offset };
    offset += rows * cols * 2;
    return part;
  });
  slots.push({ key, bytes: offset, isNorm: false, parts: placed });
}

/** Adds a vector slot whose pieces are the named 1-D tensors, in order (e.g. fused biases). */
export function vectorSlot(slots: WeightSlot[], key: string, ...parts: [string, number][]): void {
  let offset = 0;
  const placed = parts.map(([name, length]) => {
    const part = { name, shape: [length], offset };
    offset += length * 2;
    return part;
  });
  slots.push({ key, bytes: offset, isNorm: false, parts: placed });
}

/** Adds a decoder layer's linear weight: a matrix slot that may be held in FP8. */
export function linearSlot(
  slots: WeightSlot[],
  key: string,
  cols: number,
  ...parts: [string, number][]
): void {
  matrixSlot(slots, key, cols, ...parts);
  slots[slots.length - 1] = { ...slots[slots.length - 1], linear: true };
}

/** Adds a norm slot: one [width] vector. */
export function normSlot(slots: WeightSlot[], key: string, name: string, width: number): void {
  slots.push({ key, bytes: width * 2, isNorm: true, parts: [{ name, shape: [width], offset: 0 }] });
}

/** Llama's checkpoint tensors and the device buffers they fill (fused q/k/v and gate/up). */
export function llamaWeightLayout(config: ModelConfig): WeightSlot[] {
  const {
    hiddenSize: h,
    intermediateSize: inter,
    numAttentionHeads: heads,
    numKeyValueHeads: kv,
    headDim: d,
    vocabSize: vocab,
  } = config;
  const slots: WeightSlot[] = [];
  matrixSlot(slots, "embedTokens", h, ["model.embed_tokens.weight", vocab]);
  for (let i = 0; i < config.numHiddenLayers; i++) {
    const p = `model.layers.${i}.self_attn.`, m = `model.layers.${i}.mlp.`;
    normSlot(slots, `${i}.inputNorm`, `model.layers.${i}.input_layernorm.weight`, h);
    linearSlot(
      slots,
      `${i}.qkvProj`,
      h,
      [`${p}q_proj.weight`, heads * d],
      [`${p}k_proj.weight`, kv * d],
      [`${p}v_proj.weight`, kv * d],
    );
    linearSlot(slots, `${i}.oProj`, heads * d, [`${p}o_proj.weight`, h]);
    normSlot(
      slots,
      `${i}.postAttentionNorm`,
      `model.layers.${i}.post_attention_layernorm.weight`,
      h,
    );
    linearSlot(
      slots,
      `${i}.gateUpProj`,
      h,
      [`${m}gate_proj.weight`, inter],
      [`${m}up_proj.weight`, inter],
    );
    linearSlot(slots, `${i}.downProj`, inter, [`${m}down_proj.weight`, h]);
  }
  normSlot(slots, "norm", "model.norm.weight", h);
  if (!config.tieWordEmbeddings) matrixSlot(slots, "lmHead", h, ["lm_head.weight", vocab]);
  return slots;
}

/**
 * One decoder layer's weights, row-major [out, in] as `linear` takes them: norms bf16, the
 * projections bf16 or FP8.
 */
export interface LayerWeights {
  /** input_layernorm: [hidden]. */
  readonly inputNorm: DeviceBuffer;
  /** q_proj, k_proj and v_proj stacked: [(H + 2·KV)·D, hidden], q rows first, then k, then v. */
  readonly qkvProj: LinearWeight;
  /** o_proj: [hidden, H·D]. */
  readonly oProj: LinearWeight;
  /** post_attention_layernorm: [hidden]. */
  readonly postAttentionNorm: DeviceBuffer;
  /** gate_proj and up_proj stacked: [2·inter, hidden], gate rows first (as `siluMul` reads). */
  readonly gateUpProj: LinearWeight;
  /** down_proj: [hidden, inter]. */
  readonly downProj: LinearWeight;
}

/** A Llama model's weights by role. */
export interface LlamaWeights {
  /** embed_tokens: [vocab, hidden]. */
  readonly embedTokens: DeviceBuffer;
  /** The decoder layers, in order. */
  readonly layers: readonly LayerWeights[];
  /** The final norm: [hidden]. */
  readonly norm: DeviceBuffer;
  /** lm_head: [vocab, hidden]; the very buffer `embedTokens` is when the embeddings are tied. */
  readonly lmHead: DeviceBuffer;
}

/** Llama's weights by role, from the buffers {@link llamaWeightLayout} names. */
export function llamaWeights(weights: ModelWeights): LlamaWeights {
  const config = weights.config;
  const embedTokens = weights.get("embedTokens");
  return {
    embedTokens,
    layers: Array.from({ length: config.numHiddenLayers }, (_, i) => ({
      inputNorm: weights.get(`${i}.inputNorm`),
      qkvProj: weights.linear(`${i}.qkvProj`),
      oProj: weights.linear(`${i}.oProj`),
      postAttentionNorm: weights.get(`${i}.postAttentionNorm`),
      gateUpProj: weights.linear(`${i}.gateUpProj`),
      downProj: weights.linear(`${i}.downProj`),
    })),
    norm: weights.get("norm"),
    lmHead: config.tieWordEmbeddings ? embedTokens : weights.get("lmHead"),
  };
}

/**
 * The Llama forward pass: its activations, the RoPE table and the decode workspace, allocated
 * once for the largest step, and `run`, which enqueues one step.
 */
export class LlamaForward implements Forward {
  /** The model's shape. */
  readonly config: ModelConfig;
  /** The weights by role. */
  readonly weights: LlamaWeights;
  /** Head counts, head dimension, block size and softmax scale of every attention call. */
  readonly shape: AttentionShape;
  /** Each layer's attention shape: `shape`, with the layer's own K/V scales on an FP8 cache. */
  readonly #layerShapes: AttentionShape[];
  /** The device's operators. */
  protected readonly ops: ModelOps;
  /** The device. */
  protected readonly backend: Backend;
  readonly #owned: DeviceBuffer[] = [];
  readonly #rope: RopeTable;
  // Activations, [maxTokens, ...] bf16.
  readonly #residual: DeviceBuffer;
  // Where a fused norm (linearRmsNorm) writes the residual sum; it and #residual then swap roles.
  readonly #residualSpare: DeviceBuffer;
  readonly #hidden: DeviceBuffer;
  readonly #normed: DeviceBuffer;
  readonly #q: DeviceBuffer;
  readonly #k: DeviceBuffer;
  readonly #v: DeviceBuffer;
  readonly #attn: DeviceBuffer;
  // The fused q/k/v projection's output, [maxTokens, (H + 2·KV)·D].
  readonly #qkv: DeviceBuffer;
  readonly #gateUp: DeviceBuffer;
  readonly #act: DeviceBuffer;
  // [maxRows, hidden]: the rows that sample, gathered.
  readonly #gathered: DeviceBuffer;
  readonly #decodeWorkspace: DeviceBuffer;
  // Views of q and attn starting at token row r (the first prefill row), made once per r.
  readonly #qAt: (DeviceBuffer | undefined)[] = [];
  readonly #attnAt: (DeviceBuffer | undefined)[] = [];
  // The attention calls' arguments, allocated once and refilled per layer.
  readonly #decodeArgs: DecodeAttentionArgs;
  readonly #prefillArgs: PrefillAttentionArgs;
  readonly #qkvArgs: QkvRopeArgs;
  // qkvRope's cache write (so no kvWrite launch), refilled per layer.
  readonly #cacheWrite: KvCacheWrite;
  #freed = false;

  /**
   * Allocates the RoPE table and the activations for `sizes`; on failure whatever was
   * allocated is freed.
   */
  constructor(backend: Backend, ops: ModelOps, weights: ModelWeights, sizes: ForwardSizes) {
    const config = weights.config;
    this.config = config;
    this.backend = backend;
    this.ops = ops;
    this.weights = llamaWeights(weights);
    const {
      hiddenSize: h,
      intermediateSize: inter,
      numAttentionHeads: heads,
      numKeyValueHeads: kvHeads,
      headDim,
    } = config;
    this.shape = attentionShape(config, sizes.blockSize, sizes.kvCacheDtype);
    // An FP8 cache takes each layer's checkpoint-provided K and V scales, where it has them.
    const kvScales = sizes.kvCacheDtype === "fp8" ? weights.kvScales : null;
    this.#layerShapes = Array.from(
      { length: config.numHiddenLayers },
      (_, l) =>
        kvScales === null ? this.shape : attentionShape(config, sizes.blockSize, "fp8", {
          k: kvScales.k[l],
          v: kvScales.v[l],
        }),
    );
    const T = sizes.maxTokens, R = sizes.maxRows;
    const qDim = heads * headDim, kvDim = kvHeads * headDim;
    let rope: RopeTable | null = null;
    try {
      rope = createRopeTable(
        backend,
        ropeInverseFrequencies(headDim, config.ropeTheta, config.ropeScaling ?? undefined),
      );
      const bf16 = (elements: number) => this.alloc(elements * 2);
      this.#residual = bf16(T * h);
      this.#residualSpare = bf16(T * h);
      this.#hidden = bf16(T * h);
      this.#normed = bf16(T * h);
      this.#q = bf16(T * qDim);
      this.#k = bf16(T * kvDim);
      this.#v = bf16(T * kvDim);
      this.#attn = bf16(T * qDim);
      this.#gateUp = bf16(T * 2 * inter);
      // The gate/up output is dead from the q/k/v projection to the gate/up projection, so the
      // fused q/k/v output lives in it where it fits (it does for every shipped family).
      const qkvElements = T * (qDim + 2 * kvDim);
      this.#qkv = qkvElements <= T * 2 * inter
        ? this.#gateUp.slice(0, qkvElements * 2)
        : bf16(qkvElements);
      this.#act = bf16(T * inter);
      this.#gathered = bf16(R * h);
      this.#decodeWorkspace = this.alloc(
        ops.decodeWorkspaceBytes(R, sizes.maxBlocksPerSeq * sizes.blockSize, this.shape),
      );
    } catch (error) {
      if (rope) backend.free(rope.invFreq);
      this.#freeOwned();
      throw error;
    }
    this.#rope = rope;
    const placeholder = this.#attn;
    this.#decodeArgs = {
      out: placeholder,
      q: placeholder,
      kCache: placeholder,
      vCache: placeholder,
      blockTables: placeholder,
      contextLens: placeholder,
      batch: 0,
      maxBlocks: 0,
      maxContext: 0,
      shape: this.shape,
      workspace: this.#decodeWorkspace,
    };
    this.#prefillArgs = {
      out: placeholder,
      q: placeholder,
      kCache: placeholder,
      vCache: placeholder,
      queryStarts: placeholder,
      contextLens: placeholder,
      blockTables: placeholder,
      seqs: 0,
      tokens: 0,
      maxBlocks: 0,
      shape: this.shape,
    };
    this.#cacheWrite = {
      kCache: placeholder,
      vCache: placeholder,
      slots: placeholder,
      shape: this.shape,
    };
    this.#qkvArgs = {
      q: this.#q,
      k: this.#k,
      v: this.#v,
      qkv: this.#qkv,
      positions: placeholder,
      table: this.#rope,
      bias: null,
      qNorm: null,
      kNorm: null,
      eps: config.rmsNormEps,
      tokens: 0,
      numHeads: heads,
      numKvHeads: kvHeads,
      cache: this.#cacheWrite,
    };
  }

  linearShapes(m: number): LinearShape[] {
    const { hiddenSize: h, intermediateSize: inter } = this.config;
    const qDim = this.config.numAttentionHeads * this.config.headDim;
    const kvDim = this.config.numKeyValueHeads * this.config.headDim;
    const layer = this.weights.layers[0];
    return [
      { m, n: qDim + 2 * kvDim, k: h, fp8: isFp8Weight(layer.qkvProj) },
      { m, n: h, k: qDim, fp8: isFp8Weight(layer.oProj) },
      { m, n: 2 * inter, k: h, fp8: isFp8Weight(layer.gateUpProj) },
      { m, n: h, k: inter, fp8: isFp8Weight(layer.downProj) },
    ];
  }

  run(s: StepShape, inputs: StepInputs, kv: LayerCaches, out: LogitsOut, stream: Stream): void {
    const ops = this.ops, w = this.weights, c = this.config;
    const h = c.hiddenSize, eps = c.rmsNormEps, inter = c.intermediateSize;
    const heads = c.numAttentionHeads, kvHeads = c.numKeyValueHeads;
    const qDim = heads * c.headDim, kvDim = kvHeads * c.headDim;
    const T = s.tokens;
    const hidden = this.#hidden, normed = this.#normed;
    // The residual stream: rmsNorm updates it in place; a fused norm writes the sum to the spare,
    // and the two swap.
    let residual = this.#residual, spare = this.#residualSpare;
    const q = this.#q, attn = this.#attn;
    const decode = this.#decodeArgs, prefill = this.#prefillArgs, qkv = this.#qkvArgs;
    qkv.positions = inputs.positions;
    const cacheWrite = this.#cacheWrite;
    cacheWrite.slots = inputs.slots;
    qkv.tokens = T;
    if (s.decodes > 0) {
      decode.out = attn;
      decode.q = q;
      decode.blockTables = inputs.decodeBlockTables;
      decode.contextLens = inputs.decodeContextLens;
      decode.batch = s.decodes;
      decode.maxBlocks = s.decodeMaxBlocks;
      decode.maxContext = s.decodeMaxContext;
    }
    if (s.prefills > 0) {
      prefill.out = this.#rowsAt(this.#attnAt, attn, qDim, s.decodes);
      prefill.q = this.#rowsAt(this.#qAt, q, qDim, s.decodes);
      prefill.queryStarts = inputs.queryStarts;
      prefill.contextLens = inputs.prefillContextLens;
      prefill.blockTables = inputs.prefillBlockTables;
      prefill.seqs = s.prefills;
      prefill.tokens = s.prefillTokens;
      prefill.maxBlocks = s.prefillMaxBlocks;
    }

    // The embeddings go straight into the residual stream, which layer 0 normalises as it is.
    ops.embedding(residual, w.embedTokens, inputs.tokenIds, T, h, stream);
    for (let l = 0; l < c.numHiddenLayers; l++) {
      const layer = w.layers[l];
      const kCache = kv.k(l), vCache = kv.v(l), shape = this.#layerShapes[l];
      decode.shape = shape;
      prefill.shape = shape;
      // Layer 0 normalises the embeddings alone; the others add the last output to the residual
      // first. linearRmsNorm does either inside the q/k/v GEMV where a kernel takes it.
      const input = l === 0 ? residual : hidden, sum = l === 0 ? null : residual;
      const sumOut = l === 0 ? null : spare, inputNorm = layer.inputNorm;
      const qkvOut = this.#qkv, qkvN = qDim + 2 * kvDim, qkvProj = layer.qkvProj;
      if (
        ops.linearRmsNorm(qkvOut, input, sum, sumOut, inputNorm, qkvProj, T, qkvN, h, eps, stream)
      ) {
        if (sumOut !== null) {
          spare = residual;
          residual = sumOut;
        }
      } else {
        ops.rmsNorm(normed, input, inputNorm, sum, T, h, eps, stream);
        ops.linear(qkvOut, normed, qkvProj, T, qkvN, h, stream);
      }
      this.layerQkvRope(l, qkv);
      cacheWrite.kCache = kCache;
      cacheWrite.vCache = vCache;
      cacheWrite.shape = shape;
      ops.qkvRope(qkv, stream);
      if (s.decodes > 0) {
        decode.kCache = kCache;
        decode.vCache = vCache;
        ops.decodeAttention(decode, stream);
      }
      if (s.prefills > 0) {
        prefill.kCache = kCache;
        prefill.vCache = vCache;
        ops.prefillAttention(prefill, stream);
      }
      ops.linear(hidden, attn, layer.oProj, T, h, qDim, stream);
      // The post-attention norm, likewise inside the gate/up GEMV where a kernel takes it (then
      // siluMul apart: no kernel has both the norm prologue and the SiLU epilogue).
      const post = layer.postAttentionNorm, gu = layer.gateUpProj, gateUp = this.#gateUp;
      if (
        ops.linearRmsNorm(gateUp, hidden, residual, spare, post, gu, T, 2 * inter, h, eps, stream)
      ) {
        const sumOut = spare;
        spare = residual;
        residual = sumOut;
        ops.siluMul(this.#act, gateUp, T, inter, stream);
      } else {
        ops.rmsNorm(normed, hidden, post, residual, T, h, eps, stream);
        if (!ops.linearSiluMul(this.#act, normed, gu, T, inter, h, stream)) {
          ops.linear(gateUp, normed, gu, T, 2 * inter, h, stream);
          ops.siluMul(this.#act, gateUp, T, inter, stream);
        }
      }
      ops.linear(hidden, this.#act, layer.downProj, T, h, inter, stream);
    }
    // A step of prefill chunks that all stop short of their prompt's end samples nothing.
    if (s.logitRows === 0) return;
    ops.rmsNorm(normed, hidden, w.norm, residual, T, h, eps, stream);
    let rows = normed;
    if (s.gather) {
      // embedding is a row gather: rows[s] = normed[logitRows[s]].
      ops.embedding(this.#gathered, normed, inputs.logitRows, s.logitRows, h, stream);
      rows = this.#gathered;
    }
    const vocab = c.vocabSize;
    ops.linear(out.bf16, rows, w.lmHead, s.logitRows, vocab, h, stream);
    ops.castBf16ToF32(out.f32, out.bf16, s.logitRows * vocab, stream);
  }

  /**
   * A family's part of layer `layer`'s `qkvRope` call: its bias or q/k norm weights, set on
   * `args` (which the caller refills for every layer). Llama has none.
   */
  protected layerQkvRope(_layer: number, _args: QkvRopeArgs): void {}

  /** Allocates a device buffer that `free` releases. */
  protected alloc(bytes: number): DeviceBuffer {
    const buffer = this.backend.alloc(bytes);
    this.#owned.push(buffer);
    return buffer;
  }

  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    this.backend.free(this.#rope.invFreq);
    this.#freeOwned();
  }

  #freeOwned(): void {
    for (const buffer of this.#owned) this.backend.free(buffer);
    this.#owned.length = 0;
  }

  /** A view of `buffer` from token row `row` on (rows of `width` bf16), made once per row. */
  #rowsAt(
    cache: (DeviceBuffer | undefined)[],
    buffer: DeviceBuffer,
    width: number,
    row: number,
  ): DeviceBuffer {
    let view = cache[row];
    if (view === undefined) {
      view = buffer.slice(row * width * 2);
      cache[row] = view;
    }
    return view;
  }
}

/** The Llama family. */
export const llama: ModelDefinition = {
  architecture: "LlamaForCausalLM",
  weightLayout: llamaWeightLayout,
  createForward: (backend, ops, weights, sizes) => new LlamaForward(backend, ops, weights, sizes),
};
