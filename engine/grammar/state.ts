/**
 * One request's place in its grammar: which tokens may come next (as a bitmask), and the
 * tokens it accepted so far.
 *
 * @module
 */

import type { GrammarMatcher } from "./xgrammar.ts";

/** Words of a token bitmask over `vocabSize` tokens: bit (id & 31) of word (id >> 5). */
export function bitmaskWords(vocabSize: number): number {
  return Math.ceil(vocabSize / 32);
}

/** A request's grammar matcher; see the module doc. */
export class GrammarState {
  readonly #matcher: GrammarMatcher;
  readonly #also: Int32Array | null;
  #disposed = false;

  /**
   * Wraps a matcher (use `GrammarCompiler.state`).
   * @param matcher xgrammar's matcher
   * @param vocabSize the logits' width
   * @param also a bitmask every mask is and-ed with (tokens the grammar may not use), or null
   */
  constructor(matcher: GrammarMatcher, readonly vocabSize: number, also: Int32Array | null) {
    this.#matcher = matcher;
    this.#also = also;
  }

  /**
   * Writes the allowed next tokens as a bitmask into `out` at word `offset` (see
   * {@link bitmaskWords}): a set bit allows the token.
   */
  async fillBitmask(out: Int32Array, offset: number): Promise<void> {
    // The web build returns a fresh array per call; there is no fill-in-place binding.
    out.set(await this.#matcher.getNextTokenBitmask(), offset);
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
