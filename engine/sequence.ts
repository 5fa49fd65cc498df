/**
 * One generation request as the scheduler and the block manager see it: its token ids (prompt
 * then generated), its sampling parameters, how much of its KV is computed, where that KV lives
 * (the block table), and how it ended.
 *
 * The scheduler owns the status fields and the block manager owns the block table and the
 * prefix-hash chain; the model runner only reads. Both are plain public fields rather than
 * accessors so the per-step loops touch no closures.
 *
 * @module
 */

/** Where a sequence is in its life. `preempted` is a waiting sequence that lost its KV. */
export type SequenceStatus = "waiting" | "running" | "preempted" | "finished";

/**
 * Why a sequence ended, in OpenAI's vocabulary where one exists: `stop` (EOS, a stop token or a
 * stop string), `length` (max_tokens, the model's context or the whole KV cache), `abort`
 * (cancelled), `error` (the step that ran it failed, or it could never be scheduled).
 */
export type FinishReason = "stop" | "length" | "abort" | "error";

/** How a sequence samples and when it stops. */
export interface SamplingParams {
  /** Softmax temperature; 0 means greedy. */
  readonly temperature: number;
  /** Keep the k most likely tokens; 0 means off. */
  readonly topK: number;
  /** Nucleus mass in (0, 1]; 1 means off. */
  readonly topP: number;
  /** Drop tokens below minP times the top probability; 0 means off. */
  readonly minP: number;
  /** RNG seed; null lets the engine pick one. */
  readonly seed: number | null;
  /** Most tokens to generate (the prompt does not count). */
  readonly maxTokens: number;
  /** The model's end-of-sequence ids (from generation_config.json); ignored with ignoreEos. */
  readonly eosTokenIds: readonly number[];
  /** Extra ids that end the sequence (the request's `stop_token_ids`); always honoured. */
  readonly stopTokenIds: readonly number[];
  /** Strings that end the sequence; the matched string is not part of the output text. */
  readonly stop: readonly string[];
  /** Keep generating past EOS (benchmarks), until max_tokens or a stop token id. */
  readonly ignoreEos: boolean;
  /**
   * HF/vLLM repetition penalty on every token of the prompt and output so far: positive logits
   * are divided by it, negative ones multiplied; 1 means off, > 1 discourages repeats.
   */
  readonly repetitionPenalty: number;
  /** OpenAI presence penalty in [-2, 2], subtracted once from every token already generated. */
  readonly presencePenalty: number;
  /** OpenAI frequency penalty in [-2, 2], subtracted per occurrence in the generated tokens. */
  readonly frequencyPenalty: number;
  /**
   * Return log-probabilities of each sampled token (of the raw model output) and of this many
   * most likely alternatives (0 to 20); null means none.
   */
  readonly logprobs: number | null;
}

const DEFAULTS: SamplingParams = {
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  seed: null,
  maxTokens: 16,
  eosTokenIds: [],
  stopTokenIds: [],
  stop: [],
  ignoreEos: false,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
  logprobs: null,
};

/** Most alternatives `logprobs` may ask for (OpenAI's top_logprobs limit). */
export const MAX_TOP_LOGPROBS = 20;

function tokenIdList(name: string, ids: readonly number[]): readonly number[] {
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id > 0x7fffffff) {
      throw new RangeError(`sampling params: ${name} must hold int32 token ids >= 0, got ${id}`);
    }
  }
  return Object.freeze([...ids]);
}

/**
 * Fills in defaults and checks every field, so a bad request fails when it arrives with a message
 * naming the field, not later inside a step. Defaults follow vLLM (maxTokens 16, temperature 1).
 */
export function samplingParams(given: Partial<SamplingParams> = {}): SamplingParams {
  const p = { ...DEFAULTS, ...given };
  const check = (ok: boolean, field: string, want: string, got: unknown) => {
    if (!ok) throw new RangeError(`sampling params: ${field} must be ${want}, got ${got}`);
  };
  check(p.temperature >= 0 && Number.isFinite(p.temperature), "temperature", ">= 0", p.temperature);
  check(Number.isInteger(p.topK) && p.topK >= 0, "topK", "an integer >= 0", p.topK);
  check(p.topP > 0 && p.topP <= 1, "topP", "in (0, 1]", p.topP);
  check(p.minP >= 0 && p.minP <= 1, "minP", "in [0, 1]", p.minP);
  check(p.seed === null || Number.isSafeInteger(p.seed), "seed", "null or an integer", p.seed);
  check(
    Number.isInteger(p.maxTokens) && p.maxTokens >= 1,
    "maxTokens",
    "an integer >= 1",
    p.maxTokens,
  );
  check(
    p.repetitionPenalty > 0 && Number.isFinite(p.repetitionPenalty),
    "repetitionPenalty",
    "a number > 0",
    p.repetitionPenalty,
  );
  for (const field of ["presencePenalty", "frequencyPenalty"] as const) {
    check(p[field] >= -2 && p[field] <= 2, field, "in [-2, 2]", p[field]);
  }
  check(
    p.logprobs === null ||
      (Number.isInteger(p.logprobs) && p.logprobs >= 0 && p.logprobs <= MAX_TOP_LOGPROBS),
    "logprobs",
    `null or an integer in [0, ${MAX_TOP_LOGPROBS}]`,
    p.logprobs,
  );
  for (const s of p.stop) {
    check(typeof s === "string" && s.length > 0, "stop", "non-empty strings", JSON.stringify(s));
  }
  return Object.freeze({
    ...p,
    eosTokenIds: tokenIdList("eosTokenIds", p.eosTokenIds),
    stopTokenIds: tokenIdList("stopTokenIds", p.stopTokenIds),
    stop: Object.freeze([...p.stop]),
  });
}

let nextId = 0;

/** A request being generated: tokens, progress, KV placement and outcome. */
export class Sequence {
  /** Unique within the process unless the caller passes its own. */
  readonly id: number;
  /** Validated sampling parameters. */
  readonly params: SamplingParams;
  /** How many of the leading tokens are the prompt. */
  readonly numPromptTokens: number;
  /** Set by the scheduler. */
  status: SequenceStatus = "waiting";
  /**
   * Leading tokens whose K/V are in the cache. The next step computes tokens from here on; it is
   * numTokens - 1 while decoding (the last sampled token is fed next step).
   */
  numComputedTokens = 0;
  /** Physical KV block of each logical block, in order; owned by the BlockManager. */
  readonly blockTable: number[] = [];
  /** Leading blocks whose content hash is folded into chainHashHi/Lo; owned by the BlockManager. */
  hashedBlocks = 0;
  /** High 32 bits of the hash of block `hashedBlocks - 1` (0 before the first). */
  chainHashHi = 0;
  /** Low 32 bits of the same hash. */
  chainHashLo = 0;
  /** Set once the request is cancelled; the scheduler has freed its blocks by then. */
  cancelled = false;
  /** Times the scheduler took its KV away to make room; it is recomputed on resume. */
  numPreemptions = 0;
  /** Why it ended, once it has. */
  finishReason: FinishReason | null = null;
  /** The error behind finishReason "error". */
  error: Error | null = null;
  /** The stop token id that ended it, as in vLLM's `stop_reason` (stop strings: the engine's). */
  stopReason: number | null = null;
  /** Resolves (never rejects) with the finish reason once the sequence ends. */
  readonly done: Promise<FinishReason>;
  /**
   * With a penalty on: each distinct token of the prompt and output → times it was generated
   * (0 for prompt-only tokens), kept up to date by appendToken so the sampler reads it without
   * scanning the history each step. Null when no penalty is set.
   */
  readonly penaltyCounts: Map<number, number> | null;

  #tokens: Int32Array;
  #length: number;
  #resolve!: (reason: FinishReason) => void;

  /**
   * @param promptTokenIds the prompt; at least one int32 id >= 0
   * @param params sampling parameters, checked and defaulted by `samplingParams`
   * @param id caller-chosen id; defaults to a process-wide counter
   */
  constructor(
    promptTokenIds: ArrayLike<number>,
    params: Partial<SamplingParams> = {},
    id?: number,
  ) {
    if (promptTokenIds.length === 0) {
      throw new RangeError("Sequence: the prompt is empty; a request needs at least one token");
    }
    this.id = id ?? nextId++;
    this.params = samplingParams(params);
    this.numPromptTokens = promptTokenIds.length;
    // Room for the prompt and a first stretch of output, so early appends never reallocate.
    this.#tokens = new Int32Array(promptTokenIds.length + Math.min(this.params.maxTokens, 256));
    for (let i = 0; i < promptTokenIds.length; i++) {
      const t = promptTokenIds[i];
      if (!Number.isInteger(t) || t < 0 || t > 0x7fffffff) {
        throw new RangeError(`Sequence: prompt token ${i} must be an int32 id >= 0, got ${t}`);
      }
      this.#tokens[i] = t;
    }
    this.#length = promptTokenIds.length;
    const p = this.params;
    const penalised = p.repetitionPenalty !== 1 || p.presencePenalty !== 0 ||
      p.frequencyPenalty !== 0;
    this.penaltyCounts = penalised ? new Map() : null;
    if (this.penaltyCounts) {
      for (let i = 0; i < this.#length; i++) this.penaltyCounts.set(this.#tokens[i], 0);
    }
    this.done = new Promise((resolve) => this.#resolve = resolve);
  }

  /** Prompt plus generated tokens. */
  get numTokens(): number {
    return this.#length;
  }

  /** Generated tokens so far. */
  get numOutputTokens(): number {
    return this.#length - this.numPromptTokens;
  }

  /** The most recent token (the last prompt token before anything is generated). */
  get lastTokenId(): number {
    return this.#tokens[this.#length - 1];
  }

  /**
   * The backing store of all token ids, valid in [0, numTokens) until the next append. It is
   * exposed so hashing and input building read ids without making views.
   */
  get tokenBuffer(): Int32Array {
    return this.#tokens;
  }

  /** Token i (0 = first prompt token). */
  tokenAt(i: number): number {
    return this.#tokens[i];
  }

  /** Copies tokens [start, start + count) into dst at dstOffset, without allocating. */
  copyTokens(dst: Int32Array, dstOffset: number, start: number, count: number): void {
    const src = this.#tokens;
    for (let i = 0; i < count; i++) dst[dstOffset + i] = src[start + i];
  }

  /** A view of the prompt ids (allocates a view; not for per-step use). */
  promptTokenIds(): Int32Array {
    return this.#tokens.subarray(0, this.numPromptTokens);
  }

  /** A view of the generated ids, valid until the next append. */
  outputTokenIds(): Int32Array {
    return this.#tokens.subarray(this.numPromptTokens, this.#length);
  }

  /** Appends a sampled token; grows the store by doubling, so appends are amortised O(1). */
  appendToken(id: number): void {
    if (this.#length === this.#tokens.length) {
      const grown = new Int32Array(this.#tokens.length * 2);
      grown.set(this.#tokens);
      this.#tokens = grown;
    }
    this.#tokens[this.#length++] = id;
    const counts = this.penaltyCounts;
    if (counts !== null) counts.set(id, (counts.get(id) ?? 0) + 1);
  }

  /** Whether it has ended. */
  get isFinished(): boolean {
    return this.status === "finished";
  }

  /**
   * Marks it ended and resolves `done`. The caller (the scheduler) frees its blocks first.
   * Finishing twice keeps the first reason, so a late cancel cannot rewrite a stop.
   */
  finish(reason: FinishReason, error: Error | null = null): void {
    if (this.status === "finished") return;
    this.status = "finished";
    this.finishReason = reason;
    this.error = error;
    this.#resolve(reason);
  }
}
