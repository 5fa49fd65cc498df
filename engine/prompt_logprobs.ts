/**
 * A prompt's log-probabilities (vLLM's `prompt_logprobs`, and what `echo` with `logprobs`
 * returns): for each prompt token after the first, its log-probability given the tokens before
 * it, and the most likely alternatives there.
 *
 * They are computed on the device by the engine's own machinery, off the path of requests that
 * do not ask: once the request's prefill has put the prompt's full KV blocks in the prefix
 * cache, position j is scored by a one-token sequence whose prompt is the first j tokens and
 * whose only allowed token is token j (`allowedTokenIds`), so the sampler reports that token's
 * raw log-probability and the raw top alternatives. Each such sequence finds the shared blocks
 * in the cache and computes only its partial last block, so scoring costs about blockSize / 2
 * extra tokens per prompt token, at most `window` sequences at a time.
 *
 * @module
 */

import { OutputText } from "./request_text.ts";
import type { TokenLogprobs } from "./sampler.ts";
import { type SamplingParams, samplingParams, Sequence } from "./sequence.ts";
import type { TokenTexts } from "./token_texts.ts";

/** One prompt token with its place in the prompt's text and its logprobs. */
export interface PromptTokenLogprobs {
  /** The prompt token. */
  readonly tokenId: number;
  /** Code points of the prompt's decoded text before this token's. */
  readonly textOffset: number;
  /** Its log-probability and alternatives; null for the first token (nothing precedes it). */
  readonly logprobs: TokenLogprobs | null;
}

/** The scoring of one prompt: which positions run, and what came back. */
export class PromptScore {
  /** The next position to start (positions 1 .. ids.length − 1 are scored). */
  #next = 1;
  /** Positions scored so far. */
  #done = 0;
  readonly #results: (TokenLogprobs | undefined)[];
  readonly #params: SamplingParams;

  /**
   * @param ids the prompt's token ids
   * @param top alternatives per position (0 to 20)
   * @param eosTokenIds the model's EOS ids (ignored: each sequence samples one forced token)
   */
  constructor(readonly ids: readonly number[], top: number, eosTokenIds: readonly number[]) {
    this.#results = new Array(ids.length).fill(undefined);
    this.#params = samplingParams({
      temperature: 0,
      maxTokens: 1,
      ignoreEos: true,
      eosTokenIds,
      logprobs: top,
      seed: 0,
    });
  }

  /** Whether every position has its result. */
  get complete(): boolean {
    return this.#done === this.ids.length - 1;
  }

  /** The sequence scoring the next position, or null when all have started. */
  next(): { seq: Sequence; position: number } | null {
    const j = this.#next;
    if (j >= this.ids.length) return null;
    this.#next++;
    const params = { ...this.#params, allowedTokenIds: [this.ids[j]] };
    return { seq: new Sequence(this.ids.slice(0, j), params), position: j };
  }

  /** Records position j's result: the forced token's logprobs. */
  record(position: number, logprobs: TokenLogprobs): void {
    if (this.#results[position] === undefined) this.#done++;
    this.#results[position] = logprobs;
  }

  /**
   * Every prompt token, placed in the prompt's decoded text (special tokens skipped, as the
   * output text is), with its logprobs; call once complete.
   */
  tokens(texts: TokenTexts | null): PromptTokenLogprobs[] {
    const ids = this.ids;
    const placer = new OutputText({ texts, promptIds: [], stop: [], logprobs: true });
    const offsets: number[] = [];
    const dummy = { logprob: 0, top: [] };
    for (let i = 0; i < ids.length; i++) {
      if (i < ids.length - 1) placer.push(ids[i], dummy);
      else placer.finish(ids[i], dummy, false);
      for (const e of placer.entries) offsets.push(e.textOffset);
    }
    return ids.map((tokenId, i) => ({
      tokenId,
      textOffset: offsets[i],
      logprobs: i === 0 ? null : this.#results[i] ?? null,
    }));
  }
}
