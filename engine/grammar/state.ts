/**
 * One request's place in its grammar: which tokens may come next (as a bitmask), and the
 * tokens it accepted so far.
 *
 * @module
 */

import type { Sequence, TokenBitmaskFiller } from "../sequence.ts";
import { fillNextTokenBitmask, type GrammarMatcher } from "./xgrammar.ts";

/** Words of a token bitmask over `vocabSize` tokens: bit (id & 31) of word (id >> 5). */
export function bitmaskWords(vocabSize: number): number {
  return Math.ceil(vocabSize / 32);
}

/**
 * A request's grammar matcher; see the module doc. As the request's `tokenBitmask` it catches up
 * on the tokens its sequence generated since the last step, then writes the next mask.
 */
export class GrammarState implements TokenBitmaskFiller {
  readonly #matcher: GrammarMatcher;
  readonly #also: Int32Array | null;
  readonly #stopTokenIds: readonly number[];
  /** Output tokens of the sequence accepted so far. */
  #accepted = 0;
  #failed = false;
  #disposed = false;

  /**
   * Wraps a matcher (use `GrammarCompiler.state`).
   * @param matcher xgrammar's matcher
   * @param vocabSize the logits' width
   * @param also a bitmask every mask is and-ed with (tokens the grammar may not use), or null
   * @param stopTokenIds the ids that end the grammar (allowed once it is complete)
   */
  constructor(
    matcher: GrammarMatcher,
    readonly vocabSize: number,
    also: Int32Array | null,
    stopTokenIds: readonly number[],
  ) {
    this.#matcher = matcher;
    this.#also = also;
    this.#stopTokenIds = stopTokenIds;
  }

  /** Whether a generated token broke the grammar (it then constrains nothing more). */
  get failed(): boolean {
    return this.#failed;
  }

  /**
   * The engine's per-step hook (see TokenBitmaskFiller): accepts `seq`'s new output tokens and
   * writes the mask of its next one. A complete grammar allows only its stop tokens (so a
   * request that ignores EOS pads with them); false once a token broke the grammar.
   */
  fill(mask: Int32Array, seq: Sequence): boolean {
    if (this.#failed || this.#disposed) return false;
    const outputs = seq.numOutputTokens, first = seq.numPromptTokens;
    for (; this.#accepted < outputs; this.#accepted++) {
      if (this.#matcher.isTerminated()) break;
      if (!this.#matcher.acceptToken(seq.tokenAt(first + this.#accepted))) {
        this.#failed = true;
        return false;
      }
    }
    this.#accepted = outputs;
    if (this.#matcher.isTerminated()) {
      mask.fill(0);
      for (const id of this.#stopTokenIds) mask[id >>> 5] |= 1 << (id & 31);
      return true;
    }
    this.fillBitmaskNow(mask, 0);
    return true;
  }

  /** {@link fillBitmask}, synchronously (the engine's path). */
  fillBitmaskNow(out: Int32Array, offset: number): void {
    fillNextTokenBitmask(this.#matcher, this.vocabSize, out, offset);
    this.#and(out, offset);
  }

  /**
   * Writes the allowed next tokens as a bitmask into `out` at word `offset` (see
   * {@link bitmaskWords}): a set bit allows the token.
   */
  async fillBitmask(out: Int32Array, offset: number): Promise<void> {
    // The web build returns a fresh array per call; there is no fill-in-place binding.
    out.set(await this.#matcher.getNextTokenBitmask(), offset);
    this.#and(out, offset);
  }

  #and(out: Int32Array, offset: number): void {
    const also = this.#also;
    if (also === null) return;
    for (let w = 0; w < also.length; w++) out[offset + w] &= also[w];
  }

  /** Advances past `tokenId`; false when the grammar does not allow it (nothing changes). */
  accept(tokenId: number): boolean {
    return this.#matcher.acceptToken(tokenId);
  }

  /** Whether the grammar is complete and its stop token accepted: the output must end. */
  get terminated(): boolean {
    return this.#matcher.isTerminated();
  }

  /** Frees the matcher; safe to call twice. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#matcher.dispose();
  }
}

/**
 * One request's grammar for each of its `n` choices: a choice's sequence takes the next unused
 * state on its first mask, and keeps it. All are freed together.
 */
export class GrammarChoices implements TokenBitmaskFiller {
  readonly #states: readonly GrammarState[];
  readonly #bySequence = new Map<number, GrammarState>();

  /**
   * @param states one state per choice, each fresh
   */
  constructor(states: readonly GrammarState[]) {
    this.#states = states;
  }

  /** Fills the mask of `seq`'s choice (see {@link GrammarState.fill}). */
  fill(mask: Int32Array, seq: Sequence): boolean {
    let state = this.#bySequence.get(seq.id);
    if (state === undefined) {
      state = this.#states[this.#bySequence.size];
      if (state === undefined) return false;
      this.#bySequence.set(seq.id, state);
    }
    return state.fill(mask, seq);
  }

  /** Frees every choice's state. */
  dispose(): void {
    for (const state of this.#states) state.dispose();
  }
}
