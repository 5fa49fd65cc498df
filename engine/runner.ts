/**
 * The model runner: takes any model definition (models/model.ts) and runs scheduler steps on
 * one device. It owns the step inputs, the paged K/V cache, the logits and sampling buffers and
 * the decode graphs; the model's forward pass owns its activations. `launch` / `ready` /
 * `finish` run one scheduler step (a {@link BatchPlan}) and return a sampled token for each
 * entry that samples.
 *
 * Only the Backend interface and ModelOps are used, so the same code runs on CUDA, HIP and the
 * CPU. All buffers are allocated in the constructor (the KV cache in `allocateKvCache`, once
 * the engine knows how much memory is left), so a step allocates no device memory.
 *
 * Decode-only steps replay a captured device graph where the backend has graphs: one per
 * (padded batch, context bucket), captured on first use. Padding rows write no K/V and attend
 * to one position of a reserved scratch block. The context bucket (a power of two) fixes the
 * block-table stride and decodeAttention's split; bucketing keeps short contexts from paying
 * for a split sized for the longest context the model allows.
 *
 * @module
 */

import type {
  Backend,
  DeviceBuffer,
  DeviceEvent,
  DeviceGraph,
  Stream,
} from "../backends/backend.ts";
import { type KvCacheDtype, kvElementBytes, type ModelOps } from "../ops/ops.ts";
import type { ModelConfig } from "../models/config.ts";
import type {
  Forward,
  LinearShape,
  LogitsOut,
  ModelDefinition,
  ModelWeights,
  StepShape,
} from "../models/model.ts";
import { BatchInputs } from "./batch_inputs.ts";
import { kvBytesPerBlock, KvCache, type KvCacheShape } from "./kv_cache.ts";
import type { LogitsProcessor } from "./logits_processors.ts";
import { Sampler, type SampleRows, type TokenLogprobs } from "./sampler.ts";
import type { BatchPlan } from "./scheduler.ts";
import type { Sequence } from "./sequence.ts";

/** Sizes and switches of a {@link ModelRunner}. */
export interface RunnerOptions {
  /** Most tokens in one step; activations are sized for it. */
  readonly maxBatchedTokens: number;
  /** Most sequences in one step. */
  readonly maxRunning: number;
  /** Tokens per KV block. */
  readonly blockSize: number;
  /** Most tokens one sequence holds; sizes block tables and the decode workspace. */
  readonly maxModelLen: number;
  /** Replay decode steps as device graphs where the backend can capture them (default true). */
  readonly graphs?: boolean;
  /** The KV cache's element type (default "bf16"); "fp8" halves a block's bytes. */
  readonly kvCacheDtype?: KvCacheDtype;
  /** Told of each graph captured, and once if graphs turn out to be unavailable. */
  readonly log?: (line: string) => void;
  /**
   * Kernel logits processors run on every sampled row at the end of each forward pass (and so
   * recorded into the decode graphs); see engine/logits_processors.ts.
   */
  readonly logitsProcessors?: readonly LogitsProcessor[];
}

/** Counters for logs and tests. */
export interface RunnerCounters {
  /** Steps run launch by launch. */
  eagerSteps: number;
  /** Decode steps run by replaying a graph. */
  graphReplays: number;
  /** Graphs captured so far. */
  graphsCaptured: number;
}

/** The smallest context bucket a decode graph is captured for. */
const MIN_GRAPH_CONTEXT = 256;

/**
 * Decode batch sizes graphs are captured for, as vLLM does: 1, 2, 4, then every multiple of 8 up
 * to 256, of 16 up to 512 and of 32 beyond, below maxRunning, and maxRunning. A batch pads to the
 * next size, so at most 7 rows are wasted up to 256 rows and under 7% beyond (powers of two would
 * run 129 rows as 256), and a maxRunning of 1024 needs 67 graphs per context bucket, not 131.
 */
export function graphBatchSizes(maxRunning: number): number[] {
  const sizes: number[] = [];
  for (const b of [1, 2, 4]) if (b < maxRunning) sizes.push(b);
  for (let b = 8; b < maxRunning; b += b < 256 ? 8 : b < 512 ? 16 : 32) sizes.push(b);
  sizes.push(maxRunning);
  return sizes;
}

/** One captured decode graph and the shape it was captured with. */
interface CapturedGraph {
  readonly graph: DeviceGraph;
  readonly batch: number;
  readonly maxBlocks: number;
  readonly maxContext: number;
}

/** A model on one device, ready to run scheduler steps. */
export class ModelRunner {
  /** The model's shape. */
  readonly config: ModelConfig;
  /** The device. */
  readonly backend: Backend;
  /** The device's operators. */
  readonly ops: ModelOps;
  /** The weights (owned by the caller, who frees them). */
  readonly weights: ModelWeights;
  /** The model's forward pass (owned by the runner). */
  readonly forward: Forward;
  /** The stream every step runs on (graphs cannot be captured on the default stream). */
  readonly stream: Stream;
  /** Sizes the buffers were allocated for. */
  readonly options: Required<Omit<RunnerOptions, "log" | "logitsProcessors">>;
  /** Steps and graphs so far. */
  readonly counters: RunnerCounters = { eagerSteps: 0, graphReplays: 0, graphsCaptured: 0 };

  readonly #log: (line: string) => void;
  readonly #owned: DeviceBuffer[] = [];
  readonly #inputs: BatchInputs;
  // [maxRunning, vocab]: the lm head's bf16 output and its f32 copy, which the sampler reads.
  readonly #logits: LogitsOut;
  readonly #sampler: Sampler;
  // Recorded after each launched step; its completion means the results are on the host.
  readonly #done: DeviceEvent;
  // The rows the sampler reads: sample row s is plan entry sampleEntry[s] of #plan.
  #plan: BatchPlan | null = null;
  readonly #rows: { count: number } & SampleRows = {
    count: 0,
    seqOf: (s: number): Sequence => this.#plan!.seq(this.#inputs.sampleEntry[s]),
  };
  #kv: KvCache | null = null;
  readonly #maxBlocksPerSeq: number;
  // Graphs: keyed by batch-size index · 64 + log2 of the context bucket.
  #graphsOn: boolean;
  readonly #graphs = new Map<number, CapturedGraph>();
  readonly #batchSizes: number[];
  readonly #shape: StepShape = {
    tokens: 0,
    decodes: 0,
    decodeMaxBlocks: 0,
    decodeMaxContext: 0,
    prefills: 0,
    prefillTokens: 0,
    prefillMaxBlocks: 0,
    logitRows: 0,
    gather: false,
  };
  // Reused for every padded build, so a graph step allocates nothing.
  readonly #padding = { batch: 0, maxBlocks: 0, maxContext: 0, scratchBlock: 0 };
  #freed = false;

  /**
   * Creates the model's forward pass and allocates the step inputs and the sampling buffers
   * for `maxRunning` rows. The KV cache comes later, from {@link allocateKvCache}. On failure
   * whatever was allocated is freed.
   *
   * @param backend the device
   * @param ops the device's operators (`await loadOps(backend)`)
   * @param model the model family (models/families.ts)
   * @param weights the model's weights on that device
   * @param options sizes; see {@link RunnerOptions}
   */
  constructor(
    backend: Backend,
    ops: ModelOps,
    model: ModelDefinition,
    weights: ModelWeights,
    options: RunnerOptions,
  ) {
    const config = weights.config;
    for (const key of ["maxBatchedTokens", "maxRunning", "blockSize", "maxModelLen"] as const) {
      const value = options[key];
      if (!Number.isSafeInteger(value) || value < 1) {
        throw new RangeError(`ModelRunner: ${key} must be an integer >= 1, got ${value}`);
      }
    }
    if (options.maxBatchedTokens < options.maxRunning) {
      throw new RangeError(
        `ModelRunner: maxBatchedTokens (${options.maxBatchedTokens}) must be >= maxRunning ` +
          `(${options.maxRunning})`,
      );
    }
    this.config = config;
    this.backend = backend;
    this.ops = ops;
    this.weights = weights;
    this.options = {
      maxBatchedTokens: options.maxBatchedTokens,
      maxRunning: options.maxRunning,
      blockSize: options.blockSize,
      maxModelLen: options.maxModelLen,
      graphs: options.graphs ?? true,
      kvCacheDtype: options.kvCacheDtype ?? "bf16",
    };
    this.#log = options.log ?? (() => {});
    this.#graphsOn = this.options.graphs;
    this.#batchSizes = graphBatchSizes(options.maxRunning);
    this.#maxBlocksPerSeq = Math.ceil(options.maxModelLen / options.blockSize);
    const T = options.maxBatchedTokens, R = options.maxRunning, vocab = config.vocabSize;

    this.stream = backend.createStream();
    let forward: Forward | null = null;
    let inputs: BatchInputs | null = null;
    let sampler: Sampler | null = null;
    let done: DeviceEvent | null = null;
    try {
      forward = model.createForward(backend, ops, weights, {
        maxTokens: T,
        maxRows: R,
        blockSize: options.blockSize,
        maxBlocksPerSeq: this.#maxBlocksPerSeq,
        kvCacheDtype: this.options.kvCacheDtype,
      });
      inputs = new BatchInputs(backend, {
        maxTokens: T,
        maxEntries: R,
        maxBlocksPerSeq: this.#maxBlocksPerSeq,
        blockSize: options.blockSize,
      });
      this.#logits = { bf16: this.#alloc(R * vocab * 2), f32: this.#alloc(R * vocab * 4) };
      sampler = new Sampler(backend, ops, this.stream, {
        maxRows: R,
        vocab,
        maxModelLen: options.maxModelLen,
        engineProcessors: options.logitsProcessors,
      });
      done = backend.createEvent();
    } catch (error) {
      forward?.free();
      inputs?.free();
      sampler?.free();
      done?.destroy();
      for (const buffer of this.#owned) backend.free(buffer);
      if (this.stream !== backend.defaultStream) this.stream.destroy();
      throw error;
    }
    this.forward = forward;
    this.#inputs = inputs;
    this.#sampler = sampler;
    this.#done = done;
  }

  /** The KV cache's shape for this model. */
  get kvShape(): KvCacheShape {
    return {
      numLayers: this.config.numHiddenLayers,
      numKvHeads: this.config.numKeyValueHeads,
      headDim: this.config.headDim,
      blockSize: this.options.blockSize,
      bytesPerElement: kvElementBytes(this.options.kvCacheDtype),
    };
  }

  /** Device bytes one KV block takes across all layers (K and V). */
  get kvBytesPerBlock(): number {
    return kvBytesPerBlock(this.kvShape);
  }

  /** Whether decode steps replay graphs (false once capture proved unavailable). */
  get graphsEnabled(): boolean {
    return this.#graphsOn;
  }

  /**
   * Lets the device's linear op pick its fastest implementation for every shape a step will
   * use: each graph batch size and a full token budget. Call once before the first step (it
   * must precede graph capture) and before sizing the KV cache, since timing allocates.
   */
  prepare(): void {
    const { hiddenSize: h, vocabSize: vocab } = this.config;
    const shapes: LinearShape[] = [];
    for (const m of this.#batchSizes) {
      shapes.push(...this.forward.linearShapes(m), { m, n: vocab, k: h });
    }
    // Mixed and prefill steps run any token count up to the budget; between the shapes timed
    // here, linear takes the decision of the nearest one, so a power-of-two ladder covers them.
    const budget = this.options.maxBatchedTokens;
    for (let m = 512; m < budget; m *= 2) {
      if (!this.#batchSizes.includes(m)) shapes.push(...this.forward.linearShapes(m));
    }
    if (!this.#batchSizes.includes(budget)) shapes.push(...this.forward.linearShapes(budget));
    this.ops.prepareLinear(shapes, this.stream);
    this.stream.synchronize();
  }

  /**
   * Allocates the K and V caches of every layer: `numBlocks` usable blocks plus one scratch
   * block that graph padding reads. Call once.
   */
  allocateKvCache(numBlocks: number): void {
    if (this.#kv !== null) throw new Error("ModelRunner: the KV cache is already allocated");
    this.#kv = new KvCache(this.backend, this.kvShape, numBlocks, this.stream);
    this.#padding.scratchBlock = this.#kv.scratchBlock;
  }

  /**
   * Enqueues one step: computes `plan`'s tokens, writes their K/V, and samples; the results
   * land in pinned host memory. Poll {@link ready} (or wait), then call {@link finish}. The
   * plan must stay as it is until then. Throws whatever a device call throws; the caller then
   * fails the step.
   */
  launch(plan: BatchPlan): void {
    if (this.#freed) throw new Error("ModelRunner.launch: the model was freed");
    if (this.#kv === null) {
      throw new Error("ModelRunner.launch: allocate the KV cache first (allocateKvCache)");
    }
    if (this.#plan !== null) {
      throw new Error("ModelRunner.launch: the previous step was not finished (call finish)");
    }
    this.#plan = plan;
    this.#rows.count = 0;
    try {
      this.#launchSteps(plan);
      this.#done.record(this.stream);
    } catch (error) {
      this.#plan = null;
      throw error;
    }
  }

  #launchSteps(plan: BatchPlan): void {
    if (plan.count > 0) {
      if (plan.numDecodes === plan.count && this.#graphsOn && this.#replay(plan)) {
        this.counters.graphReplays++;
      } else {
        const inputs = this.#inputs;
        inputs.build(plan);
        inputs.upload(this.stream);
        const s = this.#shape;
        s.tokens = inputs.numTokens;
        s.decodes = inputs.numDecodes;
        s.decodeMaxBlocks = inputs.decodeMaxBlocks;
        s.decodeMaxContext = inputs.decodeMaxContext;
        s.prefills = inputs.numPrefills;
        s.prefillTokens = inputs.prefillTokens;
        s.prefillMaxBlocks = inputs.prefillMaxBlocks;
        s.logitRows = inputs.numSamples;
        s.gather = inputs.gather;
        this.#run(s);
        this.counters.eagerSteps++;
      }
      this.#rows.count = this.#inputs.numSamples;
      this.#sampler.launch(this.#rows, this.#logits.f32, this.#logits.bf16);
    }
  }

  /** Forgets a launched step whose completion the device reported as failed. */
  abandon(): void {
    this.#plan = null;
  }

  /** Whether the launched step has finished on the device (never blocks). */
  ready(): boolean {
    return this.#done.query();
  }

  /**
   * Completes the launched step once {@link ready}: for each plan entry i that samples, puts its
   * next token in `sampled[i]` and, if its sequence asks for logprobs and `logprobs` is given,
   * their values in `logprobs[i]`.
   */
  finish(sampled: Int32Array, logprobs: (TokenLogprobs | undefined)[] | null = null): void {
    const plan = this.#plan;
    if (plan === null) throw new Error("ModelRunner.finish: no step was launched");
    try {
      if (sampled.length < plan.count) {
        throw new RangeError(
          `ModelRunner.finish: sampled holds ${sampled.length} ids, the plan has ${plan.count}`,
        );
      }
      this.#sampler.collect(this.#rows, this.#inputs.sampleEntry, sampled, logprobs);
    } finally {
      this.#plan = null;
    }
  }

  /**
   * Copies the f32 logits of plan entry `entry` (one that sampled in the last finished step)
   * into `out` (length vocab), after any penalties its sequence asked for. Valid until the next
   * launch.
   */
  readLogits(entry: number, out: Float32Array): void {
    const vocab = this.config.vocabSize;
    if (out.length !== vocab) {
      throw new RangeError(`ModelRunner.readLogits: out must hold ${vocab} floats`);
    }
    const inputs = this.#inputs;
    for (let s = 0; s < inputs.numSamples; s++) {
      if (inputs.sampleEntry[s] !== entry) continue;
      this.backend.copyToHost(out, this.#logits.f32.slice(s * vocab * 4, vocab * 4), this.stream);
      this.stream.synchronize();
      return;
    }
    throw new RangeError(`ModelRunner.readLogits: entry ${entry} did not sample in the last step`);
  }

  /** Frees every buffer and graph the model allocated (not the weights). A second call is a no-op. */
  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    try {
      this.stream.synchronize();
    } finally {
      for (const captured of this.#graphs.values()) captured.graph.destroy();
      this.#graphs.clear();
      this.forward.free();
      this.#inputs.free();
      this.#sampler.free();
      this.#done.destroy();
      this.#kv?.free();
      for (const buffer of this.#owned) this.backend.free(buffer);
      this.#owned.length = 0;
      if (this.stream !== this.backend.defaultStream) this.stream.destroy();
    }
  }

  #alloc(bytes: number): DeviceBuffer {
    const buffer = this.backend.alloc(bytes);
    this.#owned.push(buffer);
    return buffer;
  }

  /** Runs a decode-only plan through its graph (capturing it first); false to go eager. */
  #replay(plan: BatchPlan): boolean {
    const batch = this.#paddedBatch(plan.count);
    let longest = 1;
    for (let i = 0; i < plan.count; i++) {
      const context = plan.seq(i).numComputedTokens + 1;
      if (context > longest) longest = context;
    }
    const bs = this.options.blockSize;
    const cap = this.#maxBlocksPerSeq * bs;
    let bucket = MIN_GRAPH_CONTEXT, log2 = 8;
    while (bucket < longest) {
      bucket *= 2;
      log2++;
    }
    if (bucket > cap) bucket = cap;
    const maxBlocks = Math.ceil(bucket / bs);
    const inputs = this.#inputs;
    const padding = this.#padding;
    padding.batch = batch;
    padding.maxBlocks = maxBlocks;
    padding.maxContext = bucket;
    inputs.build(plan, padding);
    inputs.upload(this.stream);
    const captured = this.#graphFor(batch, bucket, log2, true);
    if (captured === null) return false;
    captured.graph.launch(this.stream);
    return true;
  }

  /**
   * Captures every decode graph a step can replay — each graph batch size at each context bucket
   * — so that no step pays for a capture while requests wait (vLLM and SGLang capture at start
   * too). Graphs capture launches, not data, so no inputs are needed. Returns how many graphs
   * exist afterwards; 0 when the backend has no graphs.
   */
  captureAllGraphs(): number {
    if (this.#kv === null) {
      throw new Error(
        "ModelRunner.captureAllGraphs: allocate the KV cache first (allocateKvCache)",
      );
    }
    const cap = this.#maxBlocksPerSeq * this.options.blockSize;
    for (let bucket = MIN_GRAPH_CONTEXT, log2 = 8;; bucket *= 2, log2++) {
      for (const batch of this.#batchSizes) {
        const graph = this.#graphsOn
          ? this.#graphFor(batch, Math.min(bucket, cap), log2, false)
          : null;
        if (graph === null) {
          return 0;
        }
      }
      if (bucket >= cap) break;
    }
    this.stream.synchronize();
    return this.#graphs.size;
  }

  /**
   * The graph for `batch` rows at context `bucket` (2^log2, capped), captured on first use (and
   * logged if `announce`).
   */
  #graphFor(
    batch: number,
    bucket: number,
    log2: number,
    announce: boolean,
  ): CapturedGraph | null {
    const key = this.#batchSizes.indexOf(batch) * 64 + log2;
    let captured = this.#graphs.get(key);
    if (captured !== undefined) return captured;
    const maxBlocks = Math.ceil(bucket / this.options.blockSize);
    const s = this.#shape;
    s.tokens = batch;
    s.decodes = batch;
    s.decodeMaxBlocks = maxBlocks;
    s.decodeMaxContext = bucket;
    s.prefills = 0;
    s.prefillTokens = 0;
    s.prefillMaxBlocks = 0;
    s.logitRows = batch;
    s.gather = false;
    const graph = this.#capture(s);
    if (graph === null) return null;
    captured = { graph, batch, maxBlocks, maxContext: bucket };
    this.#graphs.set(key, captured);
    this.counters.graphsCaptured++;
    if (announce) {
      this.#log(`graph captured: ${batch} decode rows, context bucket ${bucket} tokens`);
    }
    return captured;
  }

  /** The graph batch size for `count` decode rows. */
  #paddedBatch(count: number): number {
    for (const size of this.#batchSizes) if (size >= count) return size;
    throw new RangeError(
      `ModelRunner: ${count} decodes exceed maxRunning ${this.options.maxRunning}`,
    );
  }

  /**
   * Records the step's launches into a graph; null (and graphs off from then on) when the
   * backend cannot capture. A failure inside the captured work ends the capture and throws.
   */
  #capture(s: StepShape): DeviceGraph | null {
    try {
      this.backend.beginCapture(this.stream);
    } catch (error) {
      this.#graphsOn = false;
      this.#log(
        `graphs: unavailable on ${this.backend.kind} (${(error as Error).message}); ` +
          `decode steps run launch by launch`,
      );
      return null;
    }
    try {
      this.#run(s);
    } catch (error) {
      try {
        this.backend.endCapture(this.stream).destroy();
      } catch {
        // The capture is already invalid; the original error says why.
      }
      throw error;
    }
    return this.backend.endCapture(this.stream);
  }

  /** Enqueues the launches of one step, up to f32 logits for `s.logitRows` rows. */
  #run(s: StepShape): void {
    this.forward.run(s, this.#inputs, this.#kv!, this.#logits, this.stream);
    if (s.logitRows > 0) this.#sampler.launchEngineProcessors(this.#logits.f32, s.logitRows);
  }
}
