/**
 * Log-probabilities in OpenAI's two response formats, from the engine's per-token
 * `GenerationChunk.logprobs`.
 *
 * - /v1/completions (legacy): `{tokens, token_logprobs, top_logprobs, text_offset}`, where
 *   `top_logprobs[i]` maps token text → logprob for the `logprobs` most likely tokens, plus the
 *   sampled one (so up to logprobs + 1 keys, as OpenAI documents), and `text_offset[i]` is where
 *   token i starts in the choice's text, in code points (Python's `str` indices, which is what
 *   OpenAI's clients index with).
 * - /v1/chat/completions: `{content: [{token, logprob, bytes, top_logprobs: [{token, logprob,
 *   bytes}]}], refusal: null}`, `top_logprobs` holding exactly `top_logprobs` entries.
 *
 * A token's text is its id decoded alone with special tokens kept, as vLLM does; `bytes` are
 * the token's own bytes (see {@link TokenTexts.bytes}). Logprobs below -9999 (−∞ included,
 * which JSON cannot carry) are sent as -9999, as OpenAI and vLLM do.
 *
 * @module
 */

import { IncrementalDecoder, PROMPT_CONTEXT } from "../engine/detokenizer.ts";
import type { GenerationChunk } from "../engine/engine.ts";
import type { TokenLogprobs } from "../engine/sampler.ts";
import type { Tokenizer } from "../engine/tokenizer.ts";

/** One generated token's logprobs, with where its text starts in the generated text. */
export interface LogprobEntry extends TokenLogprobs {
  /** The sampled token. */
  readonly tokenId: number;
  /** Code points of generated text before this token's. */
  readonly offset: number;
}

/** The legacy /v1/completions `logprobs` object of a choice or a streamed chunk. */
export interface CompletionLogprobs {
  /** Each token's text. */
  tokens: string[];
  /** Each token's logprob. */
  token_logprobs: number[];
  /** Each token's alternatives: text → logprob, most likely first. */
  top_logprobs: Record<string, number>[];
  /** Each token's start in the choice's text, in code points. */
  text_offset: number[];
}

/** One token of a chat `logprobs.content` list (also the shape of its alternatives). */
export interface ChatTokenLogprob {
  /** The token's text. */
  token: string;
  /** Its logprob. */
  logprob: number;
  /** Its bytes, which may be part of a UTF-8 character. */
  bytes: number[];
}

/** The /v1/chat/completions `logprobs` object of a choice or a streamed chunk. */
export interface ChatLogprobs {
  /** The tokens, each with its alternatives. */
  content: (ChatTokenLogprob & { top_logprobs: ChatTokenLogprob[] })[];
  /** Always null: no refusals here. */
  refusal: null;
}

/** JSON has no −∞; OpenAI and vLLM clamp to this. */
const LOGPROB_FLOOR = -9999;

function clamp(logprob: number): number {
  return logprob < LOGPROB_FLOOR ? LOGPROB_FLOOR : logprob;
}

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

  /** @param tokenizer the model's tokenizer; without one a token reads `token_id:<id>` (vLLM). */
  constructor(readonly tokenizer: Tokenizer | null) {}

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

function codePoints(text: string): number {
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

const utf8 = new TextDecoder();

/** A token whose text is not placed yet, and its logprobs. */
interface Unplaced {
  readonly id: number;
  readonly logprobs: TokenLogprobs | undefined;
}

/**
 * Follows one request's chunks and hands back each token's logprobs once they are final.
 *
 * Where a token's text starts (text_offset, and the stop-string rule below) is measured with a
 * decoder like the engine's, fed the same ids, so positions are those of the text the engine
 * returns. The decoder holds back tokens while they end in part of a UTF-8 character (or add no
 * text, like a skipped special token); when it releases text for several tokens, each is placed
 * at the character holding its first byte (see startsFromBytes): a token that is part of a
 * character starts where that character does, as does one continuing an invalid sequence
 * (U+FFFD). Where the tokens' bytes do not give the text, a token starts where the text decoded
 * up to it stops agreeing with the released text, which is the same but for invalid sequences.
 * So the logprobs of held tokens come with the chunk that completes their text, not with their
 * own. Chat without stop strings needs no positions and sends every token's at once.
 *
 * A stop string is cut from the output text, and the tokens that made it are no part of the
 * answer, so their logprobs are dropped too: a token is kept when its text starts before the
 * end of the returned text (one that straddles the cut, partly returned, is kept; one wholly
 * inside the stop string is dropped). Without a stop string every token is kept, EOS included.
 * While a stop string may still match, the engine holds back text that could begin one; a
 * token's logprobs wait likewise until text past its start has been sent, so a stream never
 * sends logprobs of a token that a later stop string removes.
 */
export class LogprobsTracker {
  readonly #texts: TokenTexts;
  /** Null when positions are not needed (or there is no text: no tokenizer). */
  readonly #decoder: IncrementalDecoder | null;
  readonly #stopStrings: boolean;
  /** UTF-16 length and code points of the generated text decoded so far. */
  #decoded = 0;
  #decodedCodePoints = 0;
  /** UTF-16 length of the generated text the engine has released. */
  #released = 0;
  /** The ids the decoder last released text for: the context of the next ones, as its own. */
  #context: number[];
  /** Tokens given to the decoder since it last released text. */
  #unplaced: Unplaced[] = [];
  /** Placed tokens' entries not handed out yet, with their start (UTF-16). */
  #placed: { entry: LogprobEntry; start: number }[] = [];
  #finished = false;

  /**
   * @param texts the engine's tokenizer's token texts (without a tokenizer: token-id prompts,
   * no text, nothing to place)
   * @param promptIds the request's prompt, which the engine's decoder starts from too
   * @param options `offsets`: the format needs text offsets (completions); `stopStrings`: the
   * request has stop strings, which may cut tokens
   */
  constructor(
    texts: TokenTexts,
    promptIds: readonly number[],
    options: { readonly offsets: boolean; readonly stopStrings: boolean },
  ) {
    this.#texts = texts;
    const tokenizer = texts.tokenizer;
    this.#stopStrings = options.stopStrings;
    this.#decoder = tokenizer !== null && (options.offsets || options.stopStrings)
      ? new IncrementalDecoder(tokenizer, { promptIds, skipSpecialTokens: true })
      : null;
    // The engine's decoder starts from the prompt's last few ids; so does this copy.
    this.#context = promptIds.slice(-PROMPT_CONTEXT);
  }

  /** Takes the next chunk of the request; returns the entries that became final with it. */
  take(chunk: GenerationChunk): LogprobEntry[] {
    if (this.#finished) return [];
    if (chunk.tokenId >= 0) {
      if (this.#decoder === null) {
        if (chunk.logprobs !== undefined) {
          const entry = { tokenId: chunk.tokenId, ...chunk.logprobs, offset: 0 };
          this.#placed.push({ entry, start: 0 });
        }
      } else {
        this.#unplaced.push({ id: chunk.tokenId, logprobs: chunk.logprobs });
        const text = this.#decoder.push(chunk.tokenId);
        if (text.length > 0) this.#place(text);
      }
    }
    this.#released += chunk.text.length;
    if (chunk.finishReason !== undefined) {
      this.#finished = true;
      if (this.#decoder !== null && this.#unplaced.length > 0) this.#place(this.#decoder.flush());
      // Only a stop string leaves decoded text unreturned.
      const cut = this.#decoded > this.#released;
      const kept = this.#placed.filter((p) => !cut || p.start < this.#released);
      this.#placed = [];
      return kept.map((p) => p.entry);
    }
    let ready = this.#placed.length;
    if (this.#stopStrings) {
      ready = 0;
      while (ready < this.#placed.length && this.#placed[ready].start < this.#released) ready++;
    }
    return this.#placed.splice(0, ready).map((p) => p.entry);
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
        entry: {
          tokenId: id,
          ...logprobs,
          offset: this.#decodedCodePoints + codePoints(text.slice(0, within)),
        },
        start: this.#decoded + within,
      });
    }
    this.#decoded += text.length;
    this.#decodedCodePoints += codePoints(text);
    this.#context = ids;
    this.#unplaced = [];
  }

  /** Where each of `ids` starts in `text`, the text the decoder released for them. */
  #starts(ids: number[], text: string): number[] {
    const exact = startsFromBytes(ids.map((id) => this.#texts.outputBytes(id)), text);
    if (exact !== null) return exact;
    const decode = (some: number[]) =>
      this.#texts.tokenizer!.decode([...this.#context, ...some], { skipSpecialTokens: true });
    const context = decode([]).length;
    const full = decode(ids);
    return ids.map((_, i) =>
      Math.max(0, Math.min(text.length, commonPrefix(decode(ids.slice(0, i)), full) - context))
    );
  }
}

/** `entries` in the legacy /v1/completions format. */
export function completionLogprobs(
  entries: readonly LogprobEntry[],
  texts: TokenTexts,
): CompletionLogprobs {
  const out: CompletionLogprobs = {
    tokens: [],
    token_logprobs: [],
    top_logprobs: [],
    text_offset: [],
  };
  for (const e of entries) {
    out.tokens.push(texts.text(e.tokenId));
    out.token_logprobs.push(clamp(e.logprob));
    // A dict keyed by text: two ids with the same text (parts of characters both decoding to
    // U+FFFD) share one key, which keeps the likelier. No prototype, so no text is special.
    const top: Record<string, number> = Object.create(null);
    for (const t of e.top) {
      const key = texts.text(t.tokenId);
      if (!Object.hasOwn(top, key)) top[key] = clamp(t.logprob);
    }
    const chosen = texts.text(e.tokenId);
    if (!Object.hasOwn(top, chosen)) top[chosen] = clamp(e.logprob);
    out.top_logprobs.push(top);
    out.text_offset.push(e.offset);
  }
  return out;
}

/** `entries` in the /v1/chat/completions format. */
export function chatLogprobs(entries: readonly LogprobEntry[], texts: TokenTexts): ChatLogprobs {
  const one = (tokenId: number, logprob: number): ChatTokenLogprob => ({
    token: texts.text(tokenId),
    logprob: clamp(logprob),
    bytes: texts.bytes(tokenId),
  });
  return {
    content: entries.map((e) => ({
      ...one(e.tokenId, e.logprob),
      top_logprobs: e.top.map((t) => one(t.tokenId, t.logprob)),
    })),
    refusal: null,
  };
}
