/**
 * A request's prompt, tokenized and checked once: text (encoded with BOS as the model expects),
 * token ids (checked against the vocabulary), or chat messages (rendered with the chat template,
 * ending with the assistant's turn). The result, a {@link PreparedPrompt}, goes to
 * `Engine.generate` as is, so nothing tokenizes or checks it again.
 *
 * @module
 */

import type { ChatMessage, Tokenizer } from "./tokenizer.ts";

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

/** Tokenizes and checks prompts for one model. */
export class PromptPreparer {
  /**
   * @param tokenizer the model's tokenizer; null: token-id prompts only
   * @param vocabSize ids must be below it
   * @param maxModelLen a prompt must leave room in it for one generated token
   */
  constructor(
    readonly tokenizer: Tokenizer | null,
    readonly vocabSize: number,
    readonly maxModelLen: number,
  ) {}

  /**
   * Tokenizes and checks `prompt`.
   *
   * @throws PromptError for an empty prompt, an id outside the vocabulary or a prompt too long
   * for maxModelLen; TypeError for a text prompt without a tokenizer or a prompt of the wrong
   * type; ChatTemplateError when the chat template fails
   */
  prepare(prompt: Prompt): PreparedPrompt {
    let prepared: PreparedPrompt;
    if (typeof prompt === "string") {
      if (prompt.length === 0) throw empty();
      prepared = new PreparedPrompt(this.#needTokenizer("a text prompt").encode(prompt), prompt);
    } else if (!Array.isArray(prompt)) {
      throw new TypeError("prompt must be a string, an array of token ids or chat messages");
    } else if (prompt.length === 0) {
      throw empty();
    } else if (typeof prompt[0] === "object") {
      const tokenizer = this.#needTokenizer("a chat prompt");
      const text = tokenizer.applyChatTemplate(prompt as ChatMessage[], {
        addGenerationPrompt: true,
      });
      prepared = new PreparedPrompt(tokenizer.encode(text, { addSpecialTokens: false }), text);
    } else {
      prepared = new PreparedPrompt(this.#checkIds(prompt as readonly number[]), null);
    }
    const length = prepared.ids.length;
    if (length >= this.maxModelLen) {
      throw new PromptError(
        "context_length_exceeded",
        `the prompt is ${length} tokens but maxModelLen is ${this.maxModelLen} tokens, which ` +
          `must leave room for at least one generated token; shorten the prompt`,
      );
    }
    return prepared;
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

function empty(): PromptError {
  return new PromptError("empty", "prompt is empty: pass some text, token ids or chat messages");
}
