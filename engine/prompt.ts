/**
 * A request's prompt, tokenized and checked once: text (encoded with BOS as the model expects),
 * token ids (checked against the vocabulary), or chat messages (rendered with the chat template,
 * ending with the assistant's turn). The result, a {@link PreparedPrompt}, goes to
 * `Engine.generate` as is, so nothing tokenizes or checks it again.
 *
 * A huge prompt must not stall other requests. So a text is first measured against a cheap
 * bound: no token stands for more than the tokenizer's longest token (in UTF-8 bytes), so a text
 * of more than (maxModelLen − 1) × that many bytes cannot fit, and is refused without encoding.
 * A text that passes and is long (over 16 KiB; encoding costs about a microsecond per byte) is
 * encoded on a worker (engine/tokenize_worker.ts) by {@link PromptPreparer.prepareAsync}, so the
 * event loop, and every stream on it, carries on meanwhile.
 *
 * @module
 */

import {
  type ChatMessage,
  type ChatTemplateOptions,
  type Tokenizer,
  utf8Length,
} from "./tokenizer.ts";
import type { TokenizeReply, TokenizeRequest } from "./tokenize_worker.ts";

/** The prompt forms `Engine.generate` accepts. */
export type Prompt = string | readonly number[] | readonly ChatMessage[];

/** Why a prompt was refused, for an API's error code. */
export type PromptProblem = "empty" | "vocabulary" | "context_length_exceeded";

/** A prompt that cannot run: empty, outside the vocabulary, or too long for the context. */
export class PromptError extends RangeError {
  /**
   * Creates the error.
   * @param problem which check failed
   * @param message what is wrong, with the sizes involved, and what to do about it
   */
  constructor(readonly problem: PromptProblem, message: string) {
    super(message);
    this.name = "PromptError";
  }
}

/** A prompt's token ids, checked against the vocabulary and the context length. */
export class PreparedPrompt {
  /** The prompt's token ids. */
  readonly ids: readonly number[];
  /** The text that was encoded (the prompt, or the rendered chat); null for token ids. */
  readonly text: string | null;

  /**
   * Wraps ids that are already checked (use {@link PromptPreparer.prepare}).
   * @param ids the prompt's token ids
   * @param text the text that was encoded, or null
   */
  constructor(ids: readonly number[], text: string | null) {
    this.ids = ids;
    this.text = text;
  }
}

/** Where a {@link PromptPreparer} may encode long texts. */
export interface PromptPreparerOptions {
  /** The tokenizer's checkpoint directory, for the worker; without it every text is inline. */
  readonly tokenizerDir?: string;
  /** Texts of more UTF-8 bytes than this go to the worker (prepareAsync only); 16 KiB. */
  readonly inlineBytes?: number;
}

/** A text prompt before encoding: the text and whether BOS (etc.) is still to be added. */
interface TextPrompt {
  readonly text: string;
  readonly addSpecialTokens: boolean;
}

/** Tokenizes and checks prompts for one model. */
export class PromptPreparer {
  readonly #inlineBytes: number;
  readonly #worker: TokenizeWorker | null;

  /**
   * @param tokenizer the model's tokenizer; null: token-id prompts only
   * @param vocabSize ids must be below it
   * @param maxModelLen a prompt must leave room in it for one generated token
   * @param options where long texts are encoded
   */
  constructor(
    readonly tokenizer: Tokenizer | null,
    readonly vocabSize: number,
    readonly maxModelLen: number,
    options: PromptPreparerOptions = {},
  ) {
    this.#inlineBytes = options.inlineBytes ?? 16 * 1024;
    this.#worker = tokenizer !== null && options.tokenizerDir !== undefined
      ? new TokenizeWorker(options.tokenizerDir)
      : null;
  }

  /**
   * Tokenizes and checks `prompt` on this thread.
   *
   * @throws PromptError for an empty prompt, an id outside the vocabulary or a prompt too long
   * for maxModelLen; TypeError for a text prompt without a tokenizer or a prompt of the wrong
   * type; ChatTemplateError when the chat template fails
   */
  prepare(prompt: Prompt): PreparedPrompt {
    const text = this.#text(prompt);
    if (text === null) return this.#checked(this.#checkIds(prompt as readonly number[]), null);
    return this.#checked(this.#encodeInline(text), text.text);
  }

  /**
   * As {@link prepare}, but a long text is encoded on the worker, so the caller's event loop
   * keeps running; the cheap length bound is checked first either way. `chat` adds variables
   * for a chat prompt's template (e.g. `tools`).
   */
  async prepareAsync(prompt: Prompt, chat: ChatTemplateOptions = {}): Promise<PreparedPrompt> {
    const text = this.#text(prompt, chat);
    if (text === null) return this.#checked(this.#checkIds(prompt as readonly number[]), null);
    const ids = this.#worker !== null && text.text.length > this.#inlineBytes / 3 &&
        utf8Length(text.text) > this.#inlineBytes
      ? await this.#worker.encode(text.text, text.addSpecialTokens)
      : this.#encodeInline(text);
    return this.#checked(ids, text.text);
  }

  /**
   * Encodes a text as {@link prepareAsync} would (a long one on the worker), without the
   * length checks: for counting tokens (a /tokenize endpoint).
   */
  async encodeAsync(text: string, addSpecialTokens: boolean): Promise<number[]> {
    const prompt = { text, addSpecialTokens };
    this.#needTokenizer("tokenizing text");
    return this.#worker !== null && utf8Length(text) > this.#inlineBytes
      ? await this.#worker.encode(text, addSpecialTokens)
      : this.#encodeInline(prompt);
  }

  /** Stops the worker, if one was started; pending encodes fail. */
  close(): void {
    this.#worker?.close();
  }

  /** The text to encode (rendered for chat) after the cheap bound; null for token ids. */
  #text(prompt: Prompt, chat: ChatTemplateOptions = {}): TextPrompt | null {
    let text: TextPrompt;
    if (typeof prompt === "string") {
      if (prompt.length === 0) throw empty();
      this.#needTokenizer("a text prompt");
      text = { text: prompt, addSpecialTokens: true };
    } else if (!Array.isArray(prompt)) {
      throw new TypeError("prompt must be a string, an array of token ids or chat messages");
    } else if (prompt.length === 0) {
      throw empty();
    } else if (typeof prompt[0] === "object") {
      const rendered = this.#needTokenizer("a chat prompt").applyChatTemplate(
        prompt as ChatMessage[],
        { ...chat, addGenerationPrompt: true },
      );
      text = { text: rendered, addSpecialTokens: false };
    } else {
      return null;
    }
    this.#checkBytes(text.text);
    return text;
  }

  /** Refuses a text too long to fit whatever it encodes to, without encoding it. */
  #checkBytes(text: string): void {
    const longest = this.tokenizer!.longestTokenBytes;
    if (longest === null) return;
    const limit = (this.maxModelLen - 1) * longest;
    // UTF-8 has at least one byte per UTF-16 unit and at most three.
    if (text.length * 3 <= limit) return;
    const bytes = utf8Length(text);
    if (bytes <= limit) return;
    throw new PromptError(
      "context_length_exceeded",
      `the prompt is ${bytes} bytes of text, so at least ${Math.ceil(bytes / longest)} tokens ` +
        `(no token of this tokenizer stands for more than ${longest} bytes), but maxModelLen ` +
        `is ${this.maxModelLen} tokens, which must leave room for at least one generated ` +
        `token; shorten the prompt`,
    );
  }

  #encodeInline(text: TextPrompt): number[] {
    return this.tokenizer!.encode(text.text, { addSpecialTokens: text.addSpecialTokens });
  }

  #checked(ids: readonly number[], text: string | null): PreparedPrompt {
    if (ids.length >= this.maxModelLen) {
      throw new PromptError(
        "context_length_exceeded",
        `the prompt is ${ids.length} tokens but maxModelLen is ${this.maxModelLen} tokens, ` +
          `which must leave room for at least one generated token; shorten the prompt`,
      );
    }
    return new PreparedPrompt(ids, text);
  }

  #checkIds(ids: readonly number[]): number[] {
    const vocab = this.vocabSize;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0 || id >= vocab) {
        throw new PromptError(
          "vocabulary",
          `prompt token ${i} is ${id}, outside the vocabulary [0, ${vocab}); pass ids from ` +
            `this model's tokenizer`,
        );
      }
    }
    return [...ids];
  }

  #needTokenizer(what: string): Tokenizer {
    if (this.tokenizer === null) {
      throw new TypeError(
        `${what} needs a tokenizer, and this engine has none (random weights without ` +
          `tokenizerDir); pass token ids, or load with tokenizerDir`,
      );
    }
    return this.tokenizer;
  }
}

/**
 * The main thread's side of engine/tokenize_worker.ts: started on the first long text, then
 * kept; encodes run one after another on it.
 */
class TokenizeWorker {
  #worker: Worker | null = null;
  #next = 0;
  readonly #pending = new Map<
    number,
    { resolve: (ids: number[]) => void; reject: (error: Error) => void }
  >();

  constructor(readonly dir: string) {}

  encode(text: string, addSpecialTokens: boolean): Promise<number[]> {
    const worker = this.#worker ?? this.#start();
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      worker.postMessage({ id, text, addSpecialTokens } satisfies TokenizeRequest);
    });
  }

  close(): void {
    this.#fail(new Error("the engine was closed while the prompt was being tokenized"));
  }

  #start(): Worker {
    const worker = new Worker(new URL("./tokenize_worker.ts", import.meta.url).href, {
      type: "module",
    });
    worker.onmessage = ({ data }: MessageEvent<TokenizeReply>) => {
      const waiting = this.#pending.get(data.id);
      if (waiting === undefined) return;
      this.#pending.delete(data.id);
      if ("error" in data) waiting.reject(new Error(`tokenizing the prompt failed: ${data.error}`));
      else waiting.resolve(Array.from(data.ids));
    };
    worker.onerror = (event) => {
      // The worker died (it could not load the tokenizer): fail what waits, start afresh next time.
      event.preventDefault();
      this.#fail(new Error(`the tokenize worker failed: ${event.message}`));
    };
    worker.postMessage({ dir: this.dir } satisfies TokenizeRequest);
    this.#worker = worker;
    return worker;
  }

  #fail(error: Error): void {
    this.#worker?.terminate();
    this.#worker = null;
    for (const { reject } of this.#pending.values()) reject(error);
    this.#pending.clear();
  }
}

function empty(): PromptError {
  return new PromptError("empty", "prompt is empty: pass some text, token ids or chat messages");
}
