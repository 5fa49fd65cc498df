/**
 * The engine: a model, its KV cache, the continuous-batching scheduler and a background loop
 * that runs steps while there is work, behind a small API — `generate` streams the tokens of
 * one request, and any number of requests run together.
 *
 * Start-up: open the backend, load the operators, the weights and the tokenizer, allocate the
 * activations, let the linear op time its shapes, then size the KV cache from the memory left
 * (`memoryInfo().free × kvFraction`), logging the result.
 *
 * The loop runs one scheduler step at a time — plan, launch, wait, postprocess — and waits by
 * polling the step's device event from `setImmediate` callbacks (no ~2 ms `setTimeout(0)`
 * clamp), so HTTP handlers run while the device works. On an asynchronous device the chunks of
 * step N are sent right after step N + 1 is launched, so their encoding overlaps device time.
 * A step that throws fails only the requests in it (their iterators throw the error); the
 * others carry on.
 *
 * @example Stream a completion
 * ```ts ignore
 * import { Engine } from "./engine/engine.ts";
 * const engine = await Engine.load("models/Llama-3.2-1B-Instruct");
 * for await (const chunk of engine.generate("The capital of France is", { maxTokens: 16 })) {
 *   await Deno.stdout.write(new TextEncoder().encode(chunk.text));
 * }
 * await engine.close();
 * ```
 *
 * @module
 */

import { setImmediate } from "node:timers";
import { basename } from "node:path";
import type { Backend } from "../backends/backend.ts";
import { loadOps } from "../ops/load.ts";
import type { KvCacheDtype, ModelOps } from "../ops/ops.ts";
import { type BackendChoice, openBackend } from "../backends/select.ts";
import { batchLimits, SMALL_DEVICE_LIMITS } from "./batch_limits.ts";
import { BlockManager } from "./block_manager.ts";
import { capacityFromMemory, type KvCacheDtypeOption, resolveKvCacheDtype } from "./kv_cache.ts";
import { loadModelConfig, type ModelConfig } from "../models/config.ts";
import { modelDefinition } from "../models/families.ts";
import { attentionShape, type ModelWeights } from "../models/model.ts";
import { loadWeights, randomWeights, type WeightQuantization } from "../models/weights.ts";
import { ModelRunner } from "./runner.ts";
import { GrammarCompiler } from "./grammar/compiler.ts";
import { PreparedPrompt, type Prompt, PromptPreparer } from "./prompt.ts";
import { PromptScore, type PromptTokenLogprobs } from "./prompt_logprobs.ts";
import { type LogprobEntry, OutputText } from "./request_text.ts";
import type { TokenLogprobs } from "./sampler.ts";
import {
  type BatchPlan,
  DECODE_ORDERS,
  type DecodeOrder,
  Scheduler,
  type SchedulerMetrics,
} from "./scheduler.ts";
import { checkProcessors, type LogitsProcessor } from "./logits_processors.ts";
import {
  checkParamsVocabulary,
  type FinishReason,
  type SamplingParams,
  samplingParams,
  Sequence,
} from "./sequence.ts";
import { profileRequested, type StepProfileData, StepProfiler } from "./step_profile.ts";
import { TokenTexts } from "./token_texts.ts";
import { type ChatMessage, type ChatTemplateOptions, Tokenizer } from "./tokenizer.ts";

export type { Prompt } from "./prompt.ts";

/** How an {@link Engine} is sized and where it runs. */
export interface EngineOptions {
  /** The device: a backend name ("auto" by default) or an open backend (the caller closes it). */
  readonly backend?: BackendChoice | Backend;
  /** Fraction of the free device memory (after weights and activations) for the KV cache; 0.9. */
  readonly kvFraction?: number;
  /** Exact number of KV blocks, overriding kvFraction (tests, or to share a device). */
  readonly kvBlocks?: number;
  /** Most tokens per sequence, prompt included; default and maximum: the model's context. */
  readonly maxModelLen?: number;
  /** Most sequences in one step; 1024 on a GPU of 64 GiB or more, else 256 (batch_limits.ts). */
  readonly maxRunning?: number;
  /**
   * Most tokens computed in one step (the chunked-prefill budget), >= maxRunning; 8192 on a GPU
   * of 64 GiB or more, else 2048.
   */
  readonly maxBatchedTokens?: number;
  /** Tokens per KV block, a power of two; 16. */
  readonly blockSize?: number;
  /** Share full KV blocks between requests with the same prefix; true. */
  readonly prefixCaching?: boolean;
  /** Replay decode steps as device graphs where the backend can; true. */
  readonly graphs?: boolean;
  /**
   * Kernel logits processors for every request (engine/logits_processors.ts), run at the end of
   * each forward pass and recorded into the decode graphs. Compile their kernels on the backend
   * passed as `backend` (open it first). Requests add their own with
   * `SamplingParams.logitsProcessors`.
   */
  readonly logitsProcessors?: readonly LogitsProcessor[];
  /** Base of the seeds given to requests without one; random by default. */
  readonly seed?: number;
  /** Receives start-up and error lines; default: stderr. */
  readonly log?: (line: string) => void;
  /**
   * Record the step profile (engine/step_profile.ts): per step shape, device time from events,
   * idle and host gaps. Default: on when `DENALI_PROFILE` includes `steps`.
   */
  readonly profile?: boolean;
  /**
   * The operators to run with, loaded for `backend`; default `loadOps(backend)`. Tests pass
   * wrapped operators to record launches or inject failures.
   */
  readonly ops?: ModelOps;
  /**
   * "fp8": hold the decoder layers' linear weights in FP8 E4M3 (W8A16), quantizing a bf16
   * checkpoint (or random weights) at load with one scale per output channel. An FP8 checkpoint
   * (config.json's quantization_config) runs in FP8 without it. "awq": random 4-bit weights
   * (random-weight sources only, for benchmarks; AWQ/GPTQ checkpoints run 4-bit without it).
   * Default: as the checkpoint is.
   */
  readonly quantization?: WeightQuantization;
  /**
   * How the KV cache stores keys and values, as vLLM's `--kv-cache-dtype`: "bf16" (or "auto",
   * the default), or "fp8" (alias "fp8_e4m3"): FP8 E4M3 with a per-layer K and V scale of 1,
   * twice the tokens in the same memory. On a GPU it runs the FP8-KV attention kernels
   * (kernels/src/attention.cu).
   */
  readonly kvCacheDtype?: KvCacheDtypeOption;
  /**
   * How each step orders its decode rows (engine/scheduler.ts {@link DecodeOrder}): "arrival"
   * or "longest-first". Default: `DENALI_DECODE_ORDER`, else "longest-first", which served the
   * offline ShareGPT-shaped run 1.025× faster on an H100 (decode attention's longest blocks start
   * first; bench/results/2026-12-07-s20-ragged-decode-h100.md). No token changes with it.
   */
  readonly decodeOrder?: DecodeOrder;
}

/** A model to run with seeded random weights instead of a checkpoint. */
export interface RandomWeightsSource {
  /** The model's shape. */
  readonly config: ModelConfig;
  /** Marks the source as random weights. */
  readonly randomWeights: true;
  /** Seed of the weights; 0. */
  readonly seed?: number;
  /** A directory with tokenizer.json, for text prompts and output; token ids only without. */
  readonly tokenizerDir?: string;
}

/**
 * One generated token and the text it completes. The engine owns the request's text (see
 * engine/request_text.ts): a server only formats chunks.
 */
export interface GenerationChunk {
  /** Which choice of the request the chunk belongs to: 0 to n − 1 (always 0 for `generate`). */
  readonly index: number;
  /**
   * The sampled token id; -1 on a final chunk that carries no token (the sequence ended
   * because the KV cache could hold no more of it).
   */
  readonly tokenId: number;
  /**
   * Text that became final with this token: "" while a UTF-8 character is incomplete, or while
   * it might still turn out to begin a stop string. Concatenated, the chunks give the output:
   * without any stop string that ended it, and without the text of a stop token.
   */
  readonly text: string;
  /** Code points of output text before `text` (Python `str` indices, as OpenAI counts). */
  readonly textOffset: number;
  /** Set on the last chunk: why generation ended. */
  readonly finishReason?: FinishReason;
  /**
   * Set on the last chunk: the stop token id or stop string that ended it, as vLLM's
   * `stop_reason`; null when neither did.
   */
  readonly stopReason?: number | string | null;
  /**
   * With `logprobs` set in the params: the entries that became final with this chunk — this
   * token's, or earlier ones' whose character it completes; on the last chunk all that are
   * left. Every generated token gets one, in order, including tokens a stop string cut off.
   */
  readonly logprobs?: readonly LogprobEntry[];
  /**
   * With `promptLogprobs` set in the params: every prompt token with its place in the prompt's
   * text and its log-probability (null for the first), on one chunk (index 0, tokenId -1) that
   * comes before any generated token's.
   */
  readonly promptLogprobs?: readonly PromptTokenLogprobs[];
}

/** What the engine runs on, for logs and /v1/models. */
export interface EngineInfo {
  /** The model directory's name, or "random-weights". */
  readonly model: string;
  /** "cuda", "hip" or "cpu". */
  readonly backend: string;
  /** The device's name. */
  readonly device: string;
  /** KV blocks in the cache. */
  readonly kvBlocks: number;
  /** Tokens the KV cache holds. */
  readonly kvTokens: number;
  /** The KV cache's element type. */
  readonly kvCacheDtype: KvCacheDtype;
  /** How the decoder's linear weights are held: bf16, FP8 or 4-bit (AWQ/GPTQ). */
  readonly weightFormat: ModelWeights["format"];
}

/** Scheduler metrics plus the engine's own counters. */
export interface EngineStats extends SchedulerMetrics {
  /** Steps run so far. */
  readonly steps: number;
  /** Steps that failed (their requests failed with the error). */
  readonly failedSteps: number;
  /** Decode graphs captured. */
  readonly graphsCaptured: number;
  /** Decode steps that replayed a graph. */
  readonly graphReplays: number;
}

/** Engine options with defaults applied and checked. */
interface Resolved {
  kvFraction: number;
  kvBlocks: number | null;
  maxModelLen: number | null;
  maxRunning: number;
  maxBatchedTokens: number;
  blockSize: number;
  prefixCaching: boolean;
  graphs: boolean;
  kvCacheDtype: KvCacheDtype;
  seed: number;
  log: (line: string) => void;
  profile: boolean;
  decodeOrder: DecodeOrder;
}

/** The decode order asked for: `requested`, else DENALI_DECODE_ORDER, else "longest-first". */
export function decodeOrderWanted(requested?: DecodeOrder): DecodeOrder {
  let order: string | undefined = requested;
  if (order === undefined) {
    try {
      order = Deno.env.get("DENALI_DECODE_ORDER");
    } catch {
      // no --allow-env: the default
    }
  }
  order ??= "longest-first";
  if (!(DECODE_ORDERS as readonly string[]).includes(order)) {
    const what = requested === undefined ? "DENALI_DECODE_ORDER" : "EngineOptions.decodeOrder";
    throw new RangeError(`${what} must be ${DECODE_ORDERS.join(" or ")}, got ${order}`);
  }
  return order as DecodeOrder;
}

function resolveOptions(options: EngineOptions): Resolved {
  const integer = (name: string, value: number, min: number, why = "") => {
    if (!Number.isSafeInteger(value) || value < min) {
      throw new RangeError(
        `EngineOptions.${name} must be an integer >= ${min}${why}, got ${value}`,
      );
    }
    return value;
  };
  const r: Resolved = {
    kvFraction: options.kvFraction ?? 0.9,
    kvBlocks: options.kvBlocks ?? null,
    maxModelLen: options.maxModelLen ?? null,
    // Checked here with the small defaults, so a bad option fails before any device work; the
    // device's own defaults replace them once it is open (see batchLimits).
    maxRunning: integer("maxRunning", options.maxRunning ?? SMALL_DEVICE_LIMITS.maxRunning, 1),
    maxBatchedTokens: 0,
    blockSize: integer("blockSize", options.blockSize ?? 16, 1),
    prefixCaching: options.prefixCaching ?? true,
    graphs: options.graphs ?? true,
    kvCacheDtype: resolveKvCacheDtype(options.kvCacheDtype, "EngineOptions.kvCacheDtype"),
    seed: options.seed ?? Math.floor(Math.random() * 2 ** 32),
    log: options.log ?? ((line) => console.error(line)),
    profile: options.profile ?? profileRequested(),
    decodeOrder: decodeOrderWanted(options.decodeOrder),
  };
  r.maxBatchedTokens = integer(
    "maxBatchedTokens",
    options.maxBatchedTokens ??
      Math.max(SMALL_DEVICE_LIMITS.maxBatchedTokens, r.maxRunning),
    r.maxRunning,
    ` (maxRunning: every running sequence must fit one step)`,
  );
  if (!(r.kvFraction > 0 && r.kvFraction <= 1)) {
    throw new RangeError(`EngineOptions.kvFraction must be in (0, 1], got ${r.kvFraction}`);
  }
  if (r.kvBlocks !== null) integer("kvBlocks", r.kvBlocks, 1);
  if (r.maxModelLen !== null) integer("maxModelLen", r.maxModelLen, 2);
  if ((r.blockSize & (r.blockSize - 1)) !== 0) {
    throw new RangeError(
      `EngineOptions.blockSize must be a power of two (the GPU kernels need one), got ` +
        r.blockSize,
    );
  }
  if (!Number.isSafeInteger(r.seed)) {
    throw new RangeError(`EngineOptions.seed must be an integer, got ${r.seed}`);
  }
  return r;
}

/** One choice of a request: its sequence and its text. */
class Choice {
  /** Output tokens already sent. */
  emitted = 0;
  /** Target for lastLogits, filled in the step that samples the first token. */
  logits: Float32Array | null = null;
  logitsFilled = false;

  constructor(
    /** Its index among the request's choices. */
    readonly index: number,
    readonly seq: Sequence,
    /** Its detokenized text, stop strings and token placement. */
    readonly output: OutputText,
    readonly request: Request,
  ) {}

  /** The chunk for what the output text reported last, for token `tokenId`. */
  chunk(tokenId: number, finishReason?: FinishReason): GenerationChunk {
    const out = this.output;
    const index = this.index;
    const wantsLogprobs = this.seq.params.logprobs !== null;
    if (finishReason === undefined) {
      return wantsLogprobs
        ? { index, tokenId, text: out.text, textOffset: out.textOffset, logprobs: out.entries }
        : { index, tokenId, text: out.text, textOffset: out.textOffset };
    }
    const stopReason = out.stopString ?? this.seq.stopReason;
    const chunk = {
      index,
      tokenId,
      text: out.text,
      textOffset: out.textOffset,
      finishReason,
      stopReason,
    };
    return wantsLogprobs ? { ...chunk, logprobs: out.entries } : chunk;
  }
}

/**
 * Per-request state: its choices and the one stream they share. Choices after the first wait
 * for the first one's prompt to be computed, so they find its KV blocks in the prefix cache
 * instead of computing the prompt again.
 */
class Request {
  /** Choices not ended yet, started or waiting. */
  live: number;
  /** Choices waiting for the first choice's first token. */
  waiting: Choice[] = [];
  /** Choices handed to the scheduler. */
  readonly started: Choice[] = [];
  /** The prompt's scoring, when the request asked for prompt logprobs. */
  score: PromptScore | null = null;
  /** Ids of the scoring sequences in flight. */
  readonly scoring = new Set<number>();
  /** Chunks held back until the prompt logprobs, which come first, are sent. */
  held: GenerationChunk[] | null = null;

  /** Sends a chunk, or holds it while the prompt logprobs are still being computed. */
  push(chunk: GenerationChunk): void {
    if (this.held !== null) this.held.push(chunk);
    else this.stream.push(chunk);
  }
  /** Removes the abort listener. */
  detach: () => void = () => {};

  constructor(readonly stream: ChunkStream, n: number) {
    this.live = n;
  }
}

/**
 * The async iterator `generate` returns. Chunks queue until read; `return()` (a `break` out of
 * `for await`) cancels the request at once, even while a `next()` is pending.
 */
class ChunkStream implements AsyncIterableIterator<GenerationChunk> {
  readonly #queue: GenerationChunk[] = [];
  #head = 0;
  #ended = false;
  #error: Error | null = null;
  #waiting: {
    resolve: (result: IteratorResult<GenerationChunk>) => void;
    reject: (error: Error) => void;
  } | null = null;

  constructor(readonly onReturn: () => void) {}

  push(chunk: GenerationChunk): void {
    if (this.#ended) return;
    if (this.#waiting !== null) {
      const { resolve } = this.#waiting;
      this.#waiting = null;
      resolve({ value: chunk, done: false });
    } else {
      this.#queue.push(chunk);
    }
  }

  end(error: Error | null = null): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = error;
    if (this.#waiting !== null && this.#head === this.#queue.length) {
      const { resolve, reject } = this.#waiting;
      this.#waiting = null;
      if (error) reject(error);
      else resolve({ value: undefined, done: true });
    }
  }

  next(): Promise<IteratorResult<GenerationChunk>> {
    if (this.#head < this.#queue.length) {
      const value = this.#queue[this.#head++];
      if (this.#head === this.#queue.length) {
        this.#queue.length = 0;
        this.#head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.#ended) {
      const error = this.#error;
      this.#error = null; // thrown once; later calls just report done
      return error ? Promise.reject(error) : Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => this.#waiting = { resolve, reject });
  }

  return(): Promise<IteratorResult<GenerationChunk>> {
    this.onReturn();
    this.#queue.length = 0;
    this.#head = 0;
    this.#ended = true;
    this.#error = null;
    if (this.#waiting !== null) {
      const { resolve } = this.#waiting;
      this.#waiting = null;
      resolve({ value: undefined, done: true });
    }
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<GenerationChunk> {
    return this;
  }
}

/** A loaded model serving generation requests. */
export class Engine {
  /** What the engine runs on. */
  readonly info: EngineInfo;
  /** The model's shape. */
  readonly config: ModelConfig;
  /** The tokenizer, or null for random weights without one (token-id prompts only). */
  readonly tokenizer: Tokenizer | null;
  /** Most tokens per sequence. */
  readonly maxModelLen: number;
  /** The ids that end generation by default. */
  readonly eosTokenIds: readonly number[];
  /** Each token's own text and bytes, for naming tokens in logprobs. */
  readonly tokenTexts: TokenTexts;

  readonly #backend: Backend;
  readonly #ownsBackend: boolean;
  readonly #weights: ModelWeights;
  readonly #model: ModelRunner;
  readonly #scheduler: Scheduler;
  readonly #prompts: PromptPreparer;
  readonly #log: (line: string) => void;
  /** Started, unfinished choices by sequence id. */
  readonly #requests = new Map<number, Choice>();
  /** Sequences scoring a prompt position (prompt logprobs), by sequence id. */
  readonly #scoring = new Map<number, { request: Request; position: number }>();
  readonly #sampled: Int32Array;
  readonly #logprobs: (TokenLogprobs | undefined)[];
  // Tokens of the last finished step, sent while the next step runs (see #run).
  readonly #pendingSeqs: (Sequence | undefined)[];
  readonly #pendingLogprobs: (TokenLogprobs | undefined)[];
  #pendingCount = 0;
  readonly #overlap: boolean;
  readonly #seedBase: number;
  #seedCounter = 0;
  #loop: Promise<void> | null = null;
  #grammars: Promise<GrammarCompiler> | null = null;
  #closed = false;
  #steps = 0;
  #failedSteps = 0;
  readonly #profiler: StepProfiler | null;

  private constructor(parts: {
    info: EngineInfo;
    config: ModelConfig;
    tokenizer: Tokenizer | null;
    tokenizerDir: string | undefined;
    backend: Backend;
    ownsBackend: boolean;
    weights: ModelWeights;
    model: ModelRunner;
    blocks: BlockManager;
    options: Resolved;
    maxModelLen: number;
  }) {
    this.info = parts.info;
    this.config = parts.config;
    this.tokenizer = parts.tokenizer;
    this.#backend = parts.backend;
    this.#ownsBackend = parts.ownsBackend;
    this.#weights = parts.weights;
    this.#model = parts.model;
    this.#log = parts.options.log;
    this.#seedBase = parts.options.seed;
    this.maxModelLen = parts.maxModelLen;
    this.eosTokenIds = parts.tokenizer?.eosIds.length
      ? parts.tokenizer.eosIds
      : parts.config.eosTokenIds;
    this.#sampled = new Int32Array(parts.options.maxRunning);
    this.#logprobs = new Array(parts.options.maxRunning).fill(undefined);
    this.#pendingSeqs = new Array(parts.options.maxRunning).fill(undefined);
    this.#pendingLogprobs = new Array(parts.options.maxRunning).fill(undefined);
    this.#overlap = parts.backend.asynchronous;
    this.#profiler = parts.options.profile
      ? new StepProfiler(parts.backend, parts.model.stream)
      : null;
    this.#scheduler = new Scheduler(parts.blocks, {
      maxRunning: parts.options.maxRunning,
      maxBatchedTokens: parts.options.maxBatchedTokens,
      maxModelLen: parts.maxModelLen,
      decodeOrder: parts.options.decodeOrder,
    });
    this.tokenTexts = new TokenTexts(parts.tokenizer);
    this.#prompts = new PromptPreparer(parts.tokenizer, parts.config.vocabSize, parts.maxModelLen, {
      tokenizerDir: parts.tokenizerDir,
    });
  }

  /**
   * Loads a model and sizes its KV cache. `source` is a Hugging Face model directory
   * (config.json, *.safetensors, tokenizer.json), or a config with `randomWeights: true`.
   *
   * @throws ConfigError, WeightsError, TokenizerError naming the file; RangeError naming the
   * option for bad options; the backend's errors when the device cannot be opened
   */
  static async load(
    source: string | RandomWeightsSource,
    options: EngineOptions = {},
  ): Promise<Engine> {
    const o = resolveOptions(options);
    if (typeof source !== "string" && source?.randomWeights !== true) {
      throw new TypeError(
        "Engine.load: pass a model directory, or { config, randomWeights: true } for random weights",
      );
    }
    // Read the config first: a wrong path or option fails before any device work.
    const config = typeof source === "string" ? await loadModelConfig(source) : source.config;
    const maxModelLen = o.maxModelLen ?? config.maxPositionEmbeddings;
    if (maxModelLen > config.maxPositionEmbeddings) {
      throw new RangeError(
        `EngineOptions.maxModelLen (${maxModelLen}) exceeds the model's context of ` +
          `${config.maxPositionEmbeddings} tokens (max_position_embeddings); lower it`,
      );
    }
    const tokenizerDir = typeof source === "string" ? source : source.tokenizerDir;
    const tokenizer = tokenizerDir === undefined ? null : await Tokenizer.load(tokenizerDir);
    if (tokenizer !== null && tokenizer.vocabSize > config.vocabSize) {
      throw new RangeError(
        `the tokenizer in ${tokenizerDir} has ${tokenizer.vocabSize} tokens but the model's ` +
          `vocab_size is ${config.vocabSize}; they belong to different models`,
      );
    }

    const ownsBackend = typeof options.backend !== "object";
    const backend = typeof options.backend === "object" ? options.backend : openBackend(
      options.backend ?? "auto",
      { onSkip: (kind, why) => o.log(`backend ${kind} skipped: ${why}`) },
    );
    let weights: ModelWeights | null = null;
    let model: ModelRunner | null = null;
    try {
      const limits = batchLimits(options, {
        kind: backend.kind,
        totalMemory: backend.info.totalMemory,
      });
      o.maxRunning = limits.maxRunning;
      o.maxBatchedTokens = limits.maxBatchedTokens;
      const ops: ModelOps = options.ops ?? await loadOps(backend);
      // The attention ops check the model's shape here, so a head_dim the device's kernels lack,
      // or a KV shape they refuse, fails before the weights load (minutes for a
      // large checkpoint), not after.
      ops.decodeWorkspaceBytes(
        1,
        o.blockSize,
        attentionShape(config, o.blockSize, o.kvCacheDtype),
      );
      const quantization = options.quantization ?? null;
      if (quantization !== null && quantization !== "fp8" && quantization !== "awq") {
        throw new RangeError(
          `EngineOptions.quantization ${JSON.stringify(quantization)} is not supported; use ` +
            '"fp8" ("awq" for random weights)',
        );
      }
      weights = typeof source === "string"
        ? await loadWeights(source, config, backend, { quantization, ops })
        : randomWeights(config, backend, ops, source.seed ?? 0, { quantization });
      model = new ModelRunner(backend, ops, modelDefinition(config), weights, {
        maxBatchedTokens: o.maxBatchedTokens,
        maxRunning: o.maxRunning,
        blockSize: o.blockSize,
        maxModelLen,
        graphs: o.graphs,
        kvCacheDtype: o.kvCacheDtype,
        logitsProcessors: engineProcessors(options.logitsProcessors),
        log: o.log,
      });
      model.prepare();

      const numBlocks = kvBlockCount(backend, model, o, maxModelLen);
      model.allocateKvCache(numBlocks);
      if (o.graphs) {
        const started = performance.now();
        const graphs = model.captureAllGraphs();
        if (graphs > 0) {
          o.log(
            `graphs: ${graphs} decode graphs captured in ` +
              `${((performance.now() - started) / 1000).toFixed(1)} s`,
          );
        }
      }
      const blocks = new BlockManager(numBlocks, o.blockSize, { prefixCaching: o.prefixCaching });
      const name = typeof source === "string"
        ? basename(source.replace(/\/+$/, ""))
        : "random-weights";
      o.log(
        `model ${name}: ${config.numHiddenLayers} layers, hidden ${config.hiddenSize}, ` +
          `${(weights.bytes / 2 ** 30).toFixed(2)} GiB of ${weights.format} weights on ` +
          `${backend.kind} ` +
          `(${backend.info.name})`,
      );
      o.log(blocks.describe());
      o.log(
        `limits: maxModelLen ${maxModelLen}, maxRunning ${o.maxRunning}, maxBatchedTokens ` +
          `${o.maxBatchedTokens}; graphs ${o.graphs ? "on where the backend has them" : "off"}; ` +
          `decode order ${o.decodeOrder}`,
      );
      return new Engine({
        info: {
          model: name,
          backend: backend.kind,
          device: backend.info.name,
          kvBlocks: numBlocks,
          kvTokens: numBlocks * o.blockSize,
          kvCacheDtype: o.kvCacheDtype,
          weightFormat: weights.format,
        },
        config,
        tokenizer,
        tokenizerDir,
        backend,
        ownsBackend,
        weights,
        model,
        blocks,
        options: o,
        maxModelLen,
      });
    } catch (error) {
      model?.free();
      weights?.free();
      if (ownsBackend) backend.close();
      throw error;
    }
  }

  /**
   * Starts generating from `prompt` — text (tokenized with BOS as the model expects), token
   * ids, or chat messages (rendered with the chat template, ending with the assistant's turn) —
   * and streams one chunk per token. Aborting `signal`, or leaving the iteration early
   * (`break`, `iterator.return()`), cancels the request and frees its KV blocks at once. A step
   * that fails makes the iterator throw its error.
   *
   * Parameters default as in vLLM (maxTokens 16, temperature 1); eosTokenIds default to the
   * model's. A request without a seed gets the next one of the engine's seed sequence.
   *
   * @throws RangeError naming the problem for an empty prompt, one too long for maxModelLen or
   * the KV cache, an id outside the vocabulary, or an invalid sampling parameter;
   * ChatTemplateError when the model has no chat template; Error once the engine is closed
   */
  generate(
    prompt: Prompt | PreparedPrompt,
    params: Partial<SamplingParams> = {},
    signal?: AbortSignal,
  ): AsyncIterableIterator<GenerationChunk> {
    return this.#submit(prompt, params, 1, signal, null).request.stream;
  }

  /**
   * {@link generate} with `n` choices of one prompt (OpenAI's `n`), streamed together: each
   * chunk carries its choice's `index`, and each choice ends with its own `finishReason` chunk.
   * The prompt is computed once: choices 1 to n − 1 start when choice 0 has its first token,
   * and share its KV blocks through the prefix cache (all but the last, partial block). With a
   * seed, choice i samples with seed + i, so it gives what a single request with that seed
   * gives; without, each takes the next seed of the engine's sequence.
   *
   * @throws as {@link generate}; RangeError for n not an integer in [1, maxRunning]
   */
  generateChoices(
    prompt: Prompt | PreparedPrompt,
    params: Partial<SamplingParams>,
    n: number,
    signal?: AbortSignal,
  ): AsyncIterableIterator<GenerationChunk> {
    if (!Number.isInteger(n) || n < 1 || n > this.#scheduler.maxRunning) {
      throw new RangeError(
        `n must be an integer in [1, ${this.#scheduler.maxRunning}] (maxRunning), got ${n}`,
      );
    }
    return this.#submit(prompt, params, n, signal, null).request.stream;
  }

  /**
   * Tokenizes and checks a prompt once, for {@link generate}: a server calls this to learn the
   * prompt's ids (usage, echo) and to answer a bad prompt before it starts a response. A text
   * too long for the context by its size alone is refused without encoding; a long one is
   * encoded on a worker, so running requests do not wait for it (see engine/prompt.ts).
   *
   * @throws PromptError naming the problem (empty, outside the vocabulary, longer than
   * maxModelLen: code "context_length_exceeded"); ChatTemplateError when the template fails;
   * TypeError for text without a tokenizer
   * @param chat more variables for a chat prompt's template (e.g. `tools`)
   */
  prepare(prompt: Prompt, chat: ChatTemplateOptions = {}): Promise<PreparedPrompt> {
    if (this.#closed) return Promise.reject(new Error("the engine is closed; load a new one"));
    return this.#prompts.prepareAsync(prompt, chat);
  }

  /**
   * The token ids of a text, or of chat messages rendered with the chat template, without the
   * context-length check `prepare` makes (for counting tokens: vLLM's /tokenize). A long text
   * is encoded on the worker, as in `prepare`.
   *
   * @param options `addSpecialTokens`: add BOS (etc.) as the tokenizer says; default true for a
   * text, false for chat (the template writes them). `addGenerationPrompt`: end a chat with the
   * assistant's turn; default true.
   * @throws TypeError without a tokenizer; ChatTemplateError when the template fails
   */
  tokenize(
    prompt: string | readonly ChatMessage[],
    options: { readonly addSpecialTokens?: boolean; readonly addGenerationPrompt?: boolean } = {},
  ): Promise<number[]> {
    const tokenizer = this.tokenizer;
    if (tokenizer === null) {
      return Promise.reject(
        new TypeError("this engine has no tokenizer (random weights without tokenizerDir)"),
      );
    }
    try {
      const chat = typeof prompt !== "string";
      const text = chat
        ? tokenizer.applyChatTemplate(prompt, {
          addGenerationPrompt: options.addGenerationPrompt ?? true,
        })
        : prompt;
      return this.#prompts.encodeAsync(text, options.addSpecialTokens ?? !chat);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * The grammar compiler for this model's vocabulary (structured output): started on first use
   * (xgrammar loads, and its vocabulary view is built, once). A request passes a
   * `GrammarState` from it as `tokenBitmask`.
   *
   * @throws TypeError when the engine has no tokenizer (grammars match text)
   */
  grammarCompiler(): Promise<GrammarCompiler> {
    const tokenizer = this.tokenizer;
    if (tokenizer === null) {
      return Promise.reject(
        new TypeError(
          "structured output needs a tokenizer, and this engine has none (random weights " +
            "without tokenizerDir); load with tokenizerDir",
        ),
      );
    }
    if (this.#grammars === null) {
      this.#grammars = GrammarCompiler.create(tokenizer, this.config.vocabSize, this.eosTokenIds);
      this.#grammars.catch(() => this.#grammars = null);
    }
    return this.#grammars;
  }

  /**
   * The f32 logits over the whole vocabulary at the last position of `promptIds`, computed by
   * the same batched forward pass `generate` uses (for parity tests against a reference).
   */
  async lastLogits(promptIds: readonly number[]): Promise<Float32Array> {
    const logits = new Float32Array(this.config.vocabSize);
    const choice = this.#submit(
      promptIds,
      { temperature: 0, maxTokens: 1, ignoreEos: true },
      1,
      undefined,
      logits,
    );
    for await (const _ of choice.request.stream) { /* drain */ }
    if (!choice.logitsFilled) {
      throw new Error(`lastLogits: the request ended (${choice.seq.finishReason}) without logits`);
    }
    return logits;
  }

  /** Queue and cache occupancy, scheduler counters and graph use, for /metrics. */
  stats(): EngineStats {
    const counters = this.#model.counters;
    return {
      ...this.#scheduler.metrics(),
      steps: this.#steps,
      failedSteps: this.#failedSteps,
      graphsCaptured: counters.graphsCaptured,
      graphReplays: counters.graphReplays,
    };
  }

  /**
   * The step profile recorded so far, or null when profiling is off (see
   * {@link EngineOptions.profile}). The columns are live: read them between steps.
   * @internal for the benchmarks; its columns change with the profile
   */
  get stepProfile(): StepProfileData | null {
    return this.#profiler?.data ?? null;
  }

  /** Forgets the steps profiled so far (e.g. after a warm-up); a no-op when profiling is off. */
  resetStepProfile(): void {
    this.#profiler?.reset();
  }

  /**
   * Stops the engine: live requests fail with an error saying so, the loop finishes its step,
   * and the model, weights and (when the engine opened it) the backend are released.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#scheduler.failAll(new Error("the engine was closed while the request was running"));
    this.#prompts.close();
    await this.#loop;
    // Requests end through their `done` promises; let those callbacks run before freeing.
    await Promise.resolve();
    await this.#grammars?.then((g) => g.close(), () => {});
    this.#profiler?.free();
    this.#model.free();
    this.#weights.free();
    if (this.#ownsBackend) this.#backend.close();
  }

  /** Queues a request of `n` choices; returns its first choice. */
  #submit(
    prompt: Prompt | PreparedPrompt,
    given: Partial<SamplingParams>,
    n: number,
    signal: AbortSignal | undefined,
    logits: Float32Array | null,
  ): Choice {
    if (this.#closed) throw new Error("the engine is closed; load a new one");
    const ids = prompt instanceof PreparedPrompt ? prompt.ids : this.#prompts.prepare(prompt).ids;
    // Fields given as undefined (an optional request field left out) take the defaults.
    const defined: Partial<Record<keyof SamplingParams, unknown>> = {};
    for (const [key, value] of Object.entries(given)) {
      if (value !== undefined) defined[key as keyof SamplingParams] = value;
    }
    const stream = new ChunkStream(() => this.#cancel(request));
    const request = new Request(stream, n);
    const choices: Choice[] = [];
    for (let i = 0; i < n; i++) {
      const params = samplingParams({
        eosTokenIds: this.eosTokenIds,
        ...defined as Partial<SamplingParams>,
        seed: given.seed == null ? this.#nextSeed() : (given.seed + i) % Number.MAX_SAFE_INTEGER,
      });
      if (i === 0) checkParamsVocabulary(params, this.config.vocabSize);
      const output = new OutputText({
        texts: this.tokenizer === null ? null : this.tokenTexts,
        promptIds: ids,
        stop: params.stop,
        logprobs: params.logprobs !== null,
        minTokens: params.minTokens,
      });
      choices.push(new Choice(i, new Sequence(ids, params), output, request));
    }
    const first = choices[0];
    first.logits = logits;
    const top = first.seq.params.promptLogprobs;
    if (top !== null) {
      request.score = new PromptScore(ids, top, this.eosTokenIds);
      request.held = [];
      request.live++; // the scoring is one more thing the stream waits for
    }

    if (signal?.aborted) {
      stream.end();
      return first;
    }
    this.#scheduler.add(first.seq); // throws RequestRejectedError for a prompt the cache can't hold
    this.#track(first);
    request.waiting = choices.slice(1);
    if (signal) {
      const onAbort = () => this.#cancel(request);
      signal.addEventListener("abort", onAbort, { once: true });
      request.detach = () => signal.removeEventListener("abort", onAbort);
    }
    this.#kick();
    return first;
  }

  /** Follows a choice the scheduler now has. */
  #track(choice: Choice): void {
    choice.request.started.push(choice);
    this.#requests.set(choice.seq.id, choice);
    choice.seq.done.then(() => this.#ended(choice));
  }

  /**
   * Hands a request's waiting choices to the scheduler, and starts its prompt's scoring: the
   * prompt's blocks are cached now.
   */
  #startWaiting(request: Request): void {
    const waiting = request.waiting;
    if (waiting.length === 0 && request.score === null) return; // the common case: n = 1
    request.waiting = [];
    for (const choice of waiting) {
      this.#scheduler.add(choice.seq);
      this.#track(choice);
    }
    this.#scoreMore(request);
    this.#kick();
  }

  /** Keeps up to a window of the prompt's scoring sequences in flight. */
  #scoreMore(request: Request): void {
    const score = request.score;
    if (score === null || request.live === 0 || request.held === null) return;
    if (score.complete) {
      this.#deliverScore(request); // a one-token prompt: nothing to score
      return;
    }
    const window = this.#scheduler.maxRunning;
    while (request.scoring.size < window) {
      const next = score.next();
      if (next === null) break;
      const { seq, position } = next;
      this.#scheduler.add(seq);
      request.scoring.add(seq.id);
      this.#scoring.set(seq.id, { request, position });
      seq.done.then(() => {
        // Still here after its step's chunks went out: it ended without its token.
        if (this.#scoring.get(seq.id)?.request !== request) return;
        this.#scoring.delete(seq.id);
        request.scoring.delete(seq.id);
        if (seq.finishReason === "abort") return;
        this.#cancel(
          request,
          seq.error ??
            new Error(`computing the prompt's logprobs failed at position ${position}`),
        );
      });
    }
  }

  /** A scoring sequence's token arrived: record it; send the prompt logprobs once all are in. */
  #scored(seq: Sequence, logprobs: TokenLogprobs | undefined): void {
    const entry = this.#scoring.get(seq.id);
    if (entry === undefined || seq.numOutputTokens === 0) return;
    const { request, position } = entry;
    this.#scoring.delete(seq.id);
    request.scoring.delete(seq.id);
    // One token per sequence: it has ended (maxTokens 1) or ends now.
    if (!seq.isFinished) this.#scheduler.finish(seq.id, "length");
    if (logprobs !== undefined) request.score!.record(position, logprobs);
    this.#scoreMore(request);
  }

  /** Sends the prompt logprobs, then the chunks held back behind them. */
  #deliverScore(request: Request): void {
    const score = request.score!;
    request.stream.push({
      index: 0,
      tokenId: -1,
      text: "",
      textOffset: 0,
      promptLogprobs: score.tokens(this.tokenizer === null ? null : this.tokenTexts),
    });
    const held = request.held ?? [];
    request.held = null;
    for (const chunk of held) request.stream.push(chunk);
    if (--request.live > 0) return;
    request.detach();
    request.stream.end();
  }

  #nextSeed(): number {
    // Wraps within the safe integers; any integer is a valid seed.
    return (this.#seedBase + this.#seedCounter++) % Number.MAX_SAFE_INTEGER;
  }

  /**
   * Ends every choice of a request: cancelled (abort, or the caller left the iteration), or
   * failed with `error`, which its stream then throws.
   */
  #cancel(request: Request, error: Error | null = null): void {
    if (request.live === 0) return;
    request.live = 0;
    request.waiting = [];
    for (const choice of request.started) {
      const id = choice.seq.id;
      if (this.#requests.get(id) !== choice) continue;
      this.#requests.delete(id);
      this.#scheduler.cancel(id); // frees the blocks now
    }
    for (const id of request.scoring) {
      this.#scoring.delete(id);
      this.#scheduler.cancel(id);
    }
    request.scoring.clear();
    request.held = null;
    request.detach();
    request.stream.end(error);
  }

  /** A sequence ended outside a step's token (cancel, failed step, close, cache limit). */
  #ended(choice: Choice): void {
    const seq = choice.seq;
    if (this.#requests.get(seq.id) !== choice) return; // already finished with its token
    if (seq.finishReason === "error") {
      // One failed choice fails the request: its stream ends with the error.
      this.#cancel(choice.request, seq.error ?? new Error("the request failed"));
      return;
    }
    if (seq.finishReason === "abort") {
      this.#cancel(choice.request);
      return;
    }
    choice.output.finish(null, undefined, false);
    this.#close(choice, -1);
  }

  /** Sends a choice's last chunk; the request's stream ends with its last choice. */
  #close(choice: Choice, tokenId: number): void {
    const request = choice.request;
    this.#requests.delete(choice.seq.id);
    request.push(choice.chunk(tokenId, this.#finishReason(choice)));
    // Choices waiting for this one's prompt need not wait any more.
    if (choice.index === 0) this.#startWaiting(request);
    if (--request.live > 0) return;
    request.detach();
    request.stream.end();
  }

  /** Why a choice ended: a stop string its text matched wins over the scheduler's reason. */
  #finishReason(choice: Choice): FinishReason {
    return choice.output.stopString !== null ? "stop" : choice.seq.finishReason ?? "stop";
  }

  #kick(): void {
    if (this.#loop !== null) return;
    this.#loop = this.#run().finally(() => {
      this.#loop = null;
      // Work submitted after the loop's last check but before this callback would wait forever.
      if (!this.#closed && this.#scheduler.hasWork) this.#kick();
    });
  }

  async #run(): Promise<void> {
    // Start in a later macrotask: `generate` returns at once, and requests submitted in the
    // same tick share the first step.
    await nextTick();
    while (!this.#closed && this.#scheduler.hasWork) {
      try {
        // On a device that works asynchronously, the previous step's tokens go out while the
        // next step runs: encoding and writing a few hundred stream chunks then costs no device
        // time. Where ops finish inside their calls (the CPU) they went out already.
        const plan = this.#launchStep();
        this.#flushEmits();
        if (plan === null) {
          await nextTick();
          continue;
        }
        if (!(await this.#deviceDone(plan))) continue;
        // No await from here to the next flush: a request that finished in this step must
        // send its last token before its `done` callbacks run (they would end it without).
        this.#finishStep(plan);
        if (!this.#overlap) this.#flushEmits();
      } catch (error) {
        // Not a model failure (those fail their step): the scheduler's state is suspect, so
        // fail everything rather than hang requests.
        const e = error instanceof Error ? error : new Error(String(error));
        this.#log(`engine loop failed: ${e.stack ?? e.message}`);
        this.#scheduler.failAll(e);
        await nextTick();
      }
    }
    this.#flushEmits();
  }

  /** Plans and launches one step; null when there was nothing to run or the launch failed. */
  #launchStep(): BatchPlan | null {
    const plan = this.#scheduler.step();
    if (plan.count === 0) return null;
    this.#steps++;
    const profiler = this.#profiler;
    try {
      profiler?.beforeLaunch(plan);
      const replays = this.#model.counters.graphReplays;
      this.#model.launch(plan);
      profiler?.afterLaunch(this.#model.counters.graphReplays !== replays);
    } catch (error) {
      profiler?.stepFailed();
      this.#failStep(plan, error);
      return null;
    }
    return plan;
  }

  /**
   * Waits for the launched step, polling so HTTP handlers run meanwhile (at least one yield,
   * even if the device is already done); false (the step failed) if the device reported an
   * error.
   */
  async #deviceDone(plan: BatchPlan): Promise<boolean> {
    try {
      do await nextTick(); while (!this.#model.ready());
      this.#profiler?.stepDone();
      return true;
    } catch (error) {
      this.#profiler?.stepFailed();
      this.#model.abandon();
      this.#failStep(plan, error);
      return false;
    }
  }

  /** Reads the finished step's tokens, applies them, and queues their chunks. */
  #finishStep(plan: BatchPlan): void {
    try {
      this.#model.finish(this.#sampled, this.#logprobs);
      for (let i = 0; i < plan.count; i++) {
        if (plan.samples[i] === 0) continue;
        const request = this.#requests.get(plan.seq(i).id);
        if (request?.logits) {
          this.#model.readLogits(i, request.logits);
          request.logitsFilled = true;
        }
      }
    } catch (error) {
      this.#failStep(plan, error);
      return;
    }
    this.#scheduler.postprocess(plan, this.#sampled);
    for (let i = 0; i < plan.count; i++) {
      if (plan.samples[i] === 0) continue;
      const n = this.#pendingCount++;
      this.#pendingSeqs[n] = plan.seq(i);
      this.#pendingLogprobs[n] = this.#logprobs[i];
    }
  }

  #failStep(plan: BatchPlan, error: unknown): void {
    const e = error instanceof Error ? error : new Error(String(error));
    this.#failedSteps++;
    this.#log(`step failed (${plan.count} requests fail with it): ${e.message}`);
    this.#scheduler.failStep(plan, e);
  }

  /** Sends the chunks of the last finished step. */
  #flushEmits(): void {
    const n = this.#pendingCount;
    this.#pendingCount = 0;
    for (let i = 0; i < n; i++) {
      this.#emit(this.#pendingSeqs[i]!, this.#pendingLogprobs[i]);
      this.#pendingSeqs[i] = undefined;
      this.#pendingLogprobs[i] = undefined;
    }
  }

  /** Sends the chunk of `seq`'s newest token, and ends its choice if it finished. */
  #emit(seq: Sequence, logprobs: TokenLogprobs | undefined): void {
    const choice = this.#requests.get(seq.id);
    if (choice === undefined) {
      this.#scored(seq, logprobs);
      return;
    }
    if (choice.emitted >= seq.numOutputTokens) return;
    choice.emitted = seq.numOutputTokens;
    const tokenId = seq.lastTokenId;
    const output = choice.output;
    if (seq.isFinished) {
      output.finish(tokenId, logprobs, typeof seq.stopReason === "number");
    } else if (output.push(tokenId, logprobs)) {
      // A stop string: the scheduler knows no text, so the engine ends the sequence. On an
      // asynchronous device the step now running computes one more token for it, unused.
      this.#scheduler.finish(seq.id, "stop");
    } else {
      choice.request.push(choice.chunk(tokenId));
      if (choice.index === 0 && seq.numOutputTokens === 1) this.#startWaiting(choice.request);
      return;
    }
    this.#close(choice, tokenId);
  }
}

/**
 * KV blocks to allocate: the explicit count, else what kvFraction of the free memory holds,
 * less the scratch block, and no more than every running sequence at full length could use.
 */
function kvBlockCount(
  backend: Backend,
  model: ModelRunner,
  o: Resolved,
  maxModelLen: number,
): number {
  const perBlock = model.kvBytesPerBlock;
  if (o.kvCacheDtype === "fp8") {
    const scales = model.weights.kvScales === null
      ? "K and V scales 1 per layer"
      : "each layer's K and V scales from the checkpoint";
    o.log(`KV cache: fp8 (E4M3, ${scales}), 1 byte per element`);
  }
  if (o.kvBlocks !== null) {
    o.log(
      `KV cache: ${o.kvBlocks} blocks × ${o.blockSize} tokens (set by kvBlocks), ` +
        `${((o.kvBlocks * perBlock) / 2 ** 30).toFixed(3)} GiB`,
    );
    return o.kvBlocks;
  }
  const capacity = capacityFromMemory(
    backend.memoryInfo().free,
    o.kvFraction,
    perBlock,
    o.blockSize,
  );
  o.log(capacity.description);
  const usable = capacity.numBlocks - 1; // one block is the graphs' padding scratch
  if (usable < 1) {
    throw new RangeError(
      `KV cache: ${capacity.numBlocks} block fits, and Denali needs at least 2 (one is ` +
        `scratch); free device memory or raise kvFraction`,
    );
  }
  const useful = o.maxRunning * Math.ceil(maxModelLen / o.blockSize);
  if (usable > useful) {
    o.log(
      `KV cache: capped at ${useful} blocks, as much as ${o.maxRunning} sequences of ` +
        `${maxModelLen} tokens can use`,
    );
    return useful;
  }
  return usable;
}

/** Resolves in a later macrotask, after pending I/O callbacks (no 1 ms timer clamp). */
function nextTick(): Promise<void> {
  return new Promise<void>((resolve) => setImmediate(resolve));
}

/** The engine-wide processors, checked: they are recorded into graphs, so kernels only. */
function engineProcessors(
  processors: readonly LogitsProcessor[] | undefined,
): readonly LogitsProcessor[] {
  if (processors === undefined) return [];
  checkProcessors("EngineOptions.logitsProcessors", processors);
  for (const p of processors) {
    if (!p.capturable) {
      throw new TypeError(
        `EngineOptions.logitsProcessors: ${p.name} runs on the host, and engine-wide processors ` +
          `are recorded into decode graphs; give it to the requests that need it ` +
          `(SamplingParams.logitsProcessors), or write it as a kernel (kernelLogitsProcessor)`,
      );
    }
  }
  return Object.freeze([...processors]);
}
