/**
 * Each token id's own text and bytes — the id decoded alone, as OpenAI's logprobs name tokens —
 * decoded once and cached. The engine places tokens in the output text by their bytes; the
 * server names tokens and their alternatives by their text.
 *
 * @module
 */

import type { Tokenizer } from "./tokenizer.ts";

/**
 * GPT-2's byte-level alphabet, inverted: the character a byte-level BPE vocabulary writes for
 * each byte → the byte. Printable Latin-1 bytes stand for themselves; the other 68 bytes are
 * shifted to U+0100 onwards in byte order.
 */
const BYTE_LEVEL: ReadonlyMap<number, number> = (() => {
  const map = new Map<number, number>();
  let shifted = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    map.set(printable ? b : 256 + shifted++, b);
  }
  return map;
})();

const encoder = new TextEncoder();

/** Token ids → their text and bytes, decoded once each and cached (the vocabulary bounds it). */
export class TokenTexts {
  readonly #cache = new Map<number, { text: string; bytes: number[]; special: boolean }>();

  /** The model's tokenizer; without one a token reads `token_id:<id>`, as in vLLM. */
  readonly tokenizer: Tokenizer | null;

  /**
   * Starts an empty cache.
   * @param tokenizer the model's tokenizer, or null
   */
  constructor(tokenizer: Tokenizer | null) {
    this.tokenizer = tokenizer;
  }

  /** The token's text, decoded alone. */
  text(id: number): string {
    return this.#get(id).text;
  }

  /**
   * The token's bytes. A token holding only part of a UTF-8 character decodes to U+FFFD alone,
   * whose bytes would lose the information clients use `bytes` for (joining tokens back into
   * characters), so such a token's bytes come from its vocabulary entry: byte-level BPE
   * characters mapped back to bytes, or a SentencePiece byte-fallback token `<0xNN>`. Otherwise
   * they are the UTF-8 of the text.
   */
  bytes(id: number): number[] {
    return this.#get(id).bytes;
  }

  /** The bytes the token adds to the output text: none for a special token (skipped there). */
  outputBytes(id: number): number[] {
    const cached = this.#get(id);
    return cached.special ? [] : cached.bytes;
  }

  #get(id: number): { text: string; bytes: number[]; special: boolean } {
    let cached = this.#cache.get(id);
    if (cached === undefined) {
      const tokenizer = this.tokenizer;
      const text = tokenizer === null
        ? `token_id:${id}`
        : tokenizer.decode([id], { skipSpecialTokens: false });
      const raw = text.includes("\ufffd") ? this.#rawBytes(id) : null;
      const special = tokenizer !== null && text !== "" &&
        tokenizer.decode([id], { skipSpecialTokens: true }) === "";
      cached = { text, bytes: raw ?? [...encoder.encode(text)], special };
      this.#cache.set(id, cached);
    }
    return cached;
  }

  #rawBytes(id: number): number[] | null {
    const piece = this.tokenizer?.idToToken(id);
    if (piece === undefined) return null;
    const fallback = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
    if (fallback) return [parseInt(fallback[1], 16)];
    const bytes: number[] = [];
    for (const char of piece) {
      const b = BYTE_LEVEL.get(char.codePointAt(0)!);
      if (b === undefined) return null; // not a byte-level vocabulary
      bytes.push(b);
    }
    return bytes;
  }
}
