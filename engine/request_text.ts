/**
 * One sequence's output text, owned in one place: its generated ids are detokenized once
 * (incrementally), stop strings are matched once, text that might still begin a stop string is
 * held back, and, where logprobs are asked for, each token is placed in the text (its
 * `textOffset`) so the server only formats what this module reports.
 *
 * The scheduler knows no text: it ends a sequence on token ids and lengths only. When a stop
 * string matches here, the engine ends the sequence itself.
 *
 * Rules, as vLLM's (`vllm/v1/engine/detokenizer.py` and the OpenAI server):
 * - a stop string is cut from the text, with everything after it;
 * - a stop token (EOS or `stopTokenIds`) adds no text;
 * - every generated token counts, stop strings and stop tokens included: each has its logprobs
 *   entry, as each counts in `usage`. A token's `textOffset` is where its text starts in the
 *   generated text before any cut, so tokens of a stop string point at or past the end of the
 *   returned text, as vLLM's do.
 *
 * A token's entry is reported with the chunk that places it: its own, or, while it holds part
 * of a UTF-8 character, the one completing that character (the character's start is its
 * offset). Held-back text does not hold back entries: streamed and whole, they are the same.
 *
 * @module
 */

import { IncrementalDecoder, PROMPT_CONTEXT } from "./detokenizer.ts";
import type { TokenLogprobs } from "./sampler.ts";
import type { TokenTexts } from "./token_texts.ts";

/** One generated token's logprobs, with where its text starts in the output text. */
export interface LogprobEntry extends TokenLogprobs {
  /** The sampled token. */
  readonly tokenId: number;
  /**
   * Code points of generated text before this token's (Python `str` indices, as OpenAI's
   * `text_offset`); a stop token starts at the end of the text.
   */
  readonly textOffset: number;
}

/** What an {@link OutputText} needs to know of its request. */
export interface OutputTextOptions {
  /** The tokenizer's token texts; null without a tokenizer (token ids only, no text). */
  readonly texts: TokenTexts | null;
  /** The prompt, whose last ids give the first generated tokens their context. */
  readonly promptIds: ArrayLike<number>;
  /** Strings that end the output; need a tokenizer. */
  readonly stop: readonly string[];
  /** Whether the request wants logprobs, so tokens must be placed in the text. */
  readonly logprobs: boolean;
  /**
   * vLLM's `min_tokens`: a stop string must end in text of a later token (text of the first
   * minTokens tokens is not searched, as vLLM's `stop_check_offset`); 0 by default.
   */
  readonly minTokens?: number;
}

const NO_ENTRIES: readonly LogprobEntry[] = Object.freeze([]);

/** A token given to the decoder that has no place in the text yet, and its logprobs. */
interface Unplaced {
  readonly id: number;
  readonly logprobs: TokenLogprobs | undefined;
}

/**
 * Follows one sequence's tokens. After each {@link push} or {@link finish}, `text`,
 * `textOffset` and `entries` describe what became final with that call.
 */
export class OutputText {
  /** Text that became final with the last call: "" while held back or incomplete. */
  text = "";
  /** Code points of output text before `text`. */
  textOffset = 0;
  /**
   * Logprob entries of the tokens placed by the last call (a token is placed once the
   * character it starts is complete); once the output ends, all that are left.
   */
  entries: readonly LogprobEntry[] = NO_ENTRIES;
  /** The stop string that ended the output, once one has. */
  stopString: string | null = null;

  readonly #texts: TokenTexts | null;
  readonly #decoder: IncrementalDecoder | null;
  readonly #stop: readonly string[];
  readonly #longestStop: number;
  readonly #logprobs: boolean;
  readonly #minTokens: number;
  #tokens = 0;
  /** Decoded text not released yet (held back for stop strings). */
  #pending = "";
  /** Length of #pending already searched for stop strings. */
  #scanned = 0;
  /** Code points of the released text. */
  #releasedCodePoints = 0;
  /** Code points of the decoded text whose tokens are placed (logprobs only). */
  #decodedCodePoints = 0;
  /** The ids the decoder last released text for: the context of the next ones, as its own. */
  #context: number[];
  #unplaced: Unplaced[] = [];
  /** Placed entries not reported yet. */
  #placed: LogprobEntry[] = [];
  #ended = false;

  /** Starts the text of one sequence. */
  constructor(options: OutputTextOptions) {
    this.#texts = options.texts;
    const tokenizer = options.texts?.tokenizer ?? null;
    const promptIds = Array.from(options.promptIds);
    this.#decoder = tokenizer === null
      ? null
      : new IncrementalDecoder(tokenizer, { promptIds, skipSpecialTokens: true });
    if (options.stop.length > 0 && tokenizer === null) {
      throw new RangeError(
        "sampling params: stop strings need a tokenizer to match text; use stopTokenIds",
      );
    }
    this.#stop = options.stop;
    let longest = 0;
    for (const s of options.stop) longest = Math.max(longest, s.length);
    this.#longestStop = longest;
    this.#logprobs = options.logprobs;
    this.#minTokens = options.minTokens ?? 0;
    // The decoder starts from the prompt's last few ids; token placement starts there too.
    this.#context = promptIds.slice(-PROMPT_CONTEXT);
  }

  /** Whether the output has ended (a stop string, or {@link finish}). */
  get ended(): boolean {
    return this.#ended;
  }

  /**
   * Adds a generated token that did not end the sequence. Returns true when it completed a
   * stop string: the output has then ended, and `text` holds the rest of it up to the string.
   */
  push(id: number, logprobs: TokenLogprobs | undefined): boolean {
    this.#begin();
    if (this.#ended) return true;
    this.#add(id, logprobs);
    if (this.#matchStop()) {
      this.#end();
      return true;
    }
    this.#release(this.#pending.length - Math.max(0, this.#longestStop - 1));
    this.#report();
    return false;
  }

  /**
   * Ends the output: the sequence ended with token `id` (null when it ended without one: the
   * cache was full, or it was cancelled), whose text is left out when `stopToken` is set (EOS
   * or a stop token id, as vLLM does). A stop string completed by the held-back text still
   * cuts it; `stopString` then says so.
   */
  finish(id: number | null, logprobs: TokenLogprobs | undefined, stopToken: boolean): void {
    this.#begin();
    if (this.#ended) return;
    if (id !== null && !stopToken) this.#add(id, logprobs);
    if (this.#decoder !== null) this.#append(this.#decoder.flush(), true);
    // A stop token has no text: it starts where the text ends, after every earlier token.
    if (id !== null && stopToken && this.#logprobs && logprobs !== undefined) {
      this.#placeAtEnd(id, logprobs);
    }
    this.#matchStop();
    this.#end();
  }

  #begin(): void {
    this.text = "";
    this.textOffset = this.#releasedCodePoints;
    this.entries = NO_ENTRIES;
  }

  /** Feeds a token to the decoder and places what it released. */
  #add(id: number, logprobs: TokenLogprobs | undefined): void {
    this.#tokens++;
    const decoder = this.#decoder;
    if (decoder === null) {
      // No text at all (no tokenizer): every token starts at 0.
      if (this.#logprobs && logprobs !== undefined) this.#placeAtEnd(id, logprobs);
      return;
    }
    if (this.#logprobs) this.#unplaced.push({ id, logprobs });
    this.#append(decoder.push(id), false);
  }

  /**
   * Appends text the decoder released, placing the tokens waiting for it; `last`: the decoder
   * was flushed, so tokens still without text are placed at its end.
   */
  #append(piece: string, last: boolean): void {
    if (this.#unplaced.length > 0 && (piece.length > 0 || last)) this.#place(piece);
    if (piece.length === 0) return;
    this.#pending += piece;
  }

  /** Searches the pending text's new tail for the earliest stop string; cuts the text there. */
  #matchStop(): boolean {
    if (this.#stop.length === 0 || this.stopString !== null) return this.stopString !== null;
    const text = this.#pending;
    if (this.#tokens <= this.#minTokens) {
      this.#scanned = text.length;
      return false;
    }
    // A match that ends in the new text starts at most longest − 1 characters before it.
    const from = Math.max(0, this.#scanned - this.#longestStop + 1);
    this.#scanned = text.length;
    let best = -1;
    let which = "";
    for (const s of this.#stop) {
      const at = text.indexOf(s, from);
      if (at >= 0 && (best < 0 || at < best)) {
        best = at;
        which = s;
      }
    }
    if (best < 0) return false;
    this.#pending = text.slice(0, best);
    this.stopString = which;
    return true;
  }

  /** The output is over: release all pending text and report every entry left. */
  #end(): void {
    this.#ended = true;
    this.#release(this.#pending.length);
    this.#report();
  }

  /** Releases the first `upTo` UTF-16 units of the pending text, never half a surrogate pair. */
  #release(upTo: number): void {
    const pending = this.#pending;
    let n = Math.min(upTo, pending.length);
    if (n <= 0) return;
    const last = pending.charCodeAt(n - 1);
    if (n < pending.length && last >= 0xd800 && last <= 0xdbff) n--;
    if (n === 0) return;
    const text = n === pending.length ? pending : pending.slice(0, n);
    this.#pending = n === pending.length ? "" : pending.slice(n);
    this.#scanned = Math.max(0, this.#scanned - n);
    this.text = text;
    this.#releasedCodePoints += codePoints(text);
  }

  /** Moves the placed entries to `entries`. */
  #report(): void {
    if (this.#placed.length === 0) return;
    this.entries = this.#placed;
    this.#placed = [];
  }

  #placeAtEnd(id: number, logprobs: TokenLogprobs): void {
    this.#placed.push({ tokenId: id, ...logprobs, textOffset: this.#decodedCodePoints });
  }

  /** The decoder released `text` for the unplaced tokens: place each in it. */
  #place(text: string): void {
    const tokens = this.#unplaced;
    const ids = tokens.map((t) => t.id);
    // One token, the usual case, starts where the text does; several need placing.
    const starts = ids.length === 1 ? [0] : this.#starts(ids, text);
    for (let i = 0; i < tokens.length; i++) {
      const { id, logprobs } = tokens[i];
      if (logprobs === undefined) continue;
      const within = starts[i];
      this.#placed.push({
        tokenId: id,
        ...logprobs,
        textOffset: this.#decodedCodePoints + codePoints(text.slice(0, within)),
      });
    }
    this.#decodedCodePoints += codePoints(text);
    this.#context = ids;
    this.#unplaced = [];
  }

  /**
   * Where each of `ids` starts in `text`, the text the decoder released for them: by their
   * bytes where those give the text (byte-level BPE), else where the text decoded up to each
   * stops agreeing with the whole (SentencePiece's context-dependent spaces).
   */
  #starts(ids: number[], text: string): number[] {
    const texts = this.#texts!;
    const exact = startsFromBytes(ids.map((id) => texts.outputBytes(id)), text);
    if (exact !== null) return exact;
    const decode = (some: number[]) =>
      texts.tokenizer!.decode([...this.#context, ...some], { skipSpecialTokens: true });
    const context = decode([]).length;
    const full = decode(ids);
    return ids.map((_, i) =>
      Math.max(0, Math.min(text.length, commonPrefix(decode(ids.slice(0, i)), full) - context))
    );
  }
}

/** Code points in `text` (a surrogate pair counts once). */
export function codePoints(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0xdc00 || c > 0xdfff) n++; // a low surrogate completes a pair already counted
  }
  return n;
}

/** Length of the longest common prefix of `a` and `b`, never inside a surrogate pair. */
function commonPrefix(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  if (i > 0 && i < n) {
    const c = a.charCodeAt(i - 1);
    if (c >= 0xd800 && c <= 0xdbff) i--;
  }
  return i;
}

const utf8 = new TextDecoder();

/**
 * Where each token of a run of tokens starts in `text`, their decoded text, from the tokens'
 * bytes: the index (UTF-16) of the character holding the token's first byte (for a token
 * without bytes, the byte after it; the end of the text after the last byte). Characters are
 * cut as a WHATWG UTF-8 decoder cuts them, an invalid sequence's maximal part making one U+FFFD,
 * which is how `text` came about when the tokenizer is byte-level. Null when the bytes do not
 * decode to `text` (a tokenizer whose tokens' own bytes are not their bytes in context, such as
 * SentencePiece's leading spaces).
 */
function startsFromBytes(tokenBytes: readonly number[][], text: string): number[] | null {
  const bytes = tokenBytes.flat();
  if (utf8.decode(Uint8Array.from(bytes)) !== text) return null;
  // Each character's first byte and UTF-16 position.
  const charByte: number[] = [];
  const charAt: number[] = [];
  let at = 0;
  for (let i = 0; i < bytes.length;) {
    charByte.push(i);
    charAt.push(at);
    const b = bytes[i++];
    let need = 0, lower = 0x80, upper = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) need = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      if (b === 0xe0) lower = 0xa0;
      if (b === 0xed) upper = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      if (b === 0xf0) lower = 0x90;
      if (b === 0xf4) upper = 0x8f;
    }
    const four = need === 3;
    while (need > 0 && i < bytes.length && bytes[i] >= lower && bytes[i] <= upper) {
      i++;
      need--;
      lower = 0x80;
      upper = 0xbf;
    }
    at += four && need === 0 ? 2 : 1; // a whole 4-byte character is a surrogate pair
  }
  const starts: number[] = [];
  let byte = 0;
  let c = 0;
  for (const own of tokenBytes) {
    // c: the character holding byte `byte`; a token past the last byte is at the end.
    while (c + 1 < charByte.length && charByte[c + 1] <= byte) c++;
    starts.push(byte < bytes.length ? charAt[c] : at);
    byte += own.length;
  }
  return starts;
}
