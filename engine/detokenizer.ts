/**
 * Incremental detokenization for streaming: text for each new token as soon as it is complete.
 *
 * Decoding one token at a time is wrong twice over: a byte-level token may hold half of a
 * UTF-8 character (😀 is three tokens in Llama 3), and decoders such as SentencePiece's strip
 * or merge spaces depending on the neighbours. Decoding the whole sequence every step is right
 * but quadratic. So, as vLLM and HF TGI do, we decode a short window: the tokens already
 * emitted last time (the prefix, [prefixOffset, readOffset)) followed by the new ones. The new
 * text is the window's text minus the prefix's text. While the window's text ends in U+FFFD,
 * the replacement character of an incomplete UTF-8 sequence, nothing is emitted: the next token
 * usually completes the character.
 *
 * @example
 * ```ts ignore
 * const stream = new IncrementalDecoder(tokenizer, { promptIds });
 * for (const id of generated) send(stream.push(id));
 * send(stream.flush());
 * ```
 *
 * @module
 */

/** What the decoder needs of a tokenizer: `decode`, as engine/tokenizer.ts's `Tokenizer` has. */
export interface TokenDecoder {
  /** The text of `ids`; "" for none. */
  decode(ids: readonly number[], options?: { skipSpecialTokens?: boolean }): string;
}

/** Options for {@link IncrementalDecoder}. */
export interface IncrementalDecoderOptions {
  /** Leave special tokens out of the text; default false. */
  readonly skipSpecialTokens?: boolean;
  /**
   * The prompt. Its last few ids give the first generated tokens their context (SentencePiece
   * drops a leading space at the start of a decode; a prompt may end inside a character). The
   * prompt's own text is never emitted.
   */
  readonly promptIds?: readonly number[];
}

/** How many prompt ids seed the window: vLLM's INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET. */
export const PROMPT_CONTEXT = 5;

const REPLACEMENT_CHARACTER = 0xfffd;

/**
 * Streams one sequence's text. Feed each generated id to {@link push}; call {@link flush} when
 * the sequence ends to get text held back (a dangling partial character, as U+FFFD).
 *
 * Concatenating every push() and the flush() gives exactly `decode(ids)` for any decoder whose
 * output for a window is the same on its own as inside a longer sequence, once split on a
 * character boundary; byte-level BPE (Llama 3), and Llama 2's SentencePiece decoder, are such.
 *
 * It keeps only the window's ids, not the whole sequence, and reuses one array for them, so a
 * step allocates nothing beyond the decoded strings themselves.
 */
export class IncrementalDecoder {
  readonly #tokenizer: TokenDecoder;
  readonly #options: { skipSpecialTokens: boolean };
  /** ids[prefixOffset..]: the prefix, then the tokens not yet emitted. */
  #window: number[] = [];
  /** Where in #window the unread tokens start (readOffset − prefixOffset). */
  #read = 0;
  /** Length of the prefix's decoded text, in UTF-16 code units. */
  #prefixLength = 0;
  #count = 0;

  /**
   * Starts a sequence, seeded with the prompt's last ids when given.
   * @param tokenizer decodes windows of ids, usually the model's `Tokenizer`
   * @param options special-token handling and the prompt
   */
  constructor(tokenizer: TokenDecoder, options: IncrementalDecoderOptions = {}) {
    this.#tokenizer = tokenizer;
    this.#options = { skipSpecialTokens: options.skipSpecialTokens ?? false };
    this.reset(options.promptIds);
  }

  /** Generated ids pushed since the start or the last reset. */
  get tokenCount(): number {
    return this.#count;
  }

  /**
   * Starts over for a new sequence, keeping the window's array.
   *
   * @param promptIds the new sequence's prompt, for context (see the constructor's options)
   */
  reset(promptIds: readonly number[] = []): void {
    this.#window.length = 0;
    for (let i = Math.max(0, promptIds.length - PROMPT_CONTEXT); i < promptIds.length; i++) {
      this.#window.push(promptIds[i]);
    }
    this.#read = this.#window.length;
    this.#prefixLength = this.#decodeLength();
    this.#count = 0;
  }

  /**
   * Adds one generated id and returns the text it completes: "" while a character is still
   * incomplete (or the token has no text, like a skipped special token), else all text since
   * the last non-empty return.
   */
  push(id: number): string {
    this.#window.push(id);
    this.#count++;
    const text = this.#tokenizer.decode(this.#window, this.#options);
    if (
      text.length <= this.#prefixLength ||
      text.charCodeAt(text.length - 1) === REPLACEMENT_CHARACTER
    ) {
      return "";
    }
    const start = this.#prefixLength;
    this.#advance();
    return text.slice(start);
  }

  /**
   * Returns the text still held back, U+FFFD included: call it once the sequence has ended.
   * The decoder stays usable; pushing more continues the same sequence.
   */
  flush(): string {
    if (this.#read === this.#window.length) return "";
    const text = this.#tokenizer.decode(this.#window, this.#options);
    const start = this.#prefixLength;
    this.#advance();
    return text.length > start ? text.slice(start) : "";
  }

  /** The unread tokens were emitted: they become the prefix of the next window. */
  #advance(): void {
    const window = this.#window;
    const drop = this.#read;
    // Shift in place rather than splice, which would allocate the removed ids.
    window.copyWithin(0, drop);
    window.length -= drop;
    this.#read = window.length;
    this.#prefixLength = this.#decodeLength();
  }

  #decodeLength(): number {
    return this.#window.length === 0
      ? 0
      : this.#tokenizer.decode(this.#window, this.#options).length;
  }
}
