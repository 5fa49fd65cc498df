/**
 * Hand-written validators for the bodies of POST /v1/completions and /v1/chat/completions. Each
 * turns untrusted JSON into a {@link GenerationRequest} or throws a 400 {@link ApiError} naming
 * the field at fault.
 *
 * Beyond OpenAI's fields, vLLM's sampling extensions are accepted: top_k, min_p,
 * repetition_penalty, ignore_eos, stop_token_ids. Not supported, so accepted only at their
 * neutral values: best_of (1). Every other field
 * is checked by server/fields.ts: unknown or unsupported ones get a 400 naming them.
 *
 * @module
 */

import { MAX_TOP_LOGPROBS, type SamplingParams } from "../engine/sequence.ts";
import type { ChatMessage } from "../engine/tokenizer.ts";
import { ApiError, badField } from "./errors.ts";
import { checkFields } from "./fields.ts";
import { type OutputConstraint, parseOutputConstraint } from "./structured.ts";
import { parseToolRequest, templateMessages, type ToolRequest } from "./tools.ts";

/** A validated generation request, in the engine's terms. */
export interface GenerationRequest {
  /** Text, token ids, or chat messages. */
  readonly prompt: string | number[] | ChatMessage[];
  /** Sampling parameters for `Engine.generate`; absent fields take the engine's defaults. */
  readonly params: Partial<SamplingParams>;
  /** Stream the reply as server-sent events. */
  readonly stream: boolean;
  /** Send a final chunk with usage when streaming. */
  readonly includeUsage: boolean;
  /** The model the client named, if any. */
  readonly model: string | null;
  /** Echo the prompt before the completion (completions only). */
  readonly echo: boolean;
  /** Choices to generate from the prompt (OpenAI's `n`). */
  readonly n: number;
  /** vLLM's `return_tokens_as_token_ids`: name logprobs tokens `token_id:<id>`. */
  readonly tokensAsIds: boolean;
  /** What the output must match (response_format, guided_*), or null. */
  readonly constraint: OutputConstraint | null;
  /** The functions a chat answer may call (`tools`, `tool_choice`), or null. */
  readonly tools: ToolRequest | null;
}

type Body = Record<string, unknown>;

function isObject(value: unknown): value is Body {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function optNumber(body: Body, key: string, min: number, max: number): number | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw badField(key, `must be a number, got ${describe(value)}`);
  }
  if (value < min || value > max) throw badField(key, `must be in [${min}, ${max}], got ${value}`);
  return value;
}

function optInteger(body: Body, key: string, min: number, max: number): number | undefined {
  const value = optNumber(body, key, min, max);
  if (value !== undefined && !Number.isInteger(value)) {
    throw badField(key, `must be an integer, got ${value}`);
  }
  return value;
}

function optBoolean(body: Body, key: string): boolean | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "boolean") throw badField(key, `must be a boolean, got ${describe(value)}`);
  return value;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (value === undefined) return "nothing";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "string") return `a string`;
  if (typeof value === "object") return "an object";
  return `${typeof value} ${String(value)}`;
}

/** A field the engine does not implement yet: only its neutral value passes. */
function notImplemented(body: Body, key: string, neutral: unknown[]): void {
  const value = body[key];
  if (value === undefined || value === null || neutral.includes(value)) return;
  throw badField(
    key,
    `is not supported by this server yet; leave it out or send ${
      neutral.map((v) => JSON.stringify(v)).join(" or ")
    }`,
  );
}

/** OpenAI's logit_bias: {"<token id>": bias in [-100, 100]} → [id, bias] pairs. */
function logitBias(body: Body): [number, number][] {
  const value = body.logit_bias;
  if (value === undefined || value === null) return [];
  if (!isObject(value)) {
    throw badField(
      "logit_bias",
      `must be an object mapping token ids to biases, got ${describe(value)}`,
    );
  }
  return Object.entries(value).map(([key, bias]) => {
    if (!/^(0|[1-9][0-9]{0,9})$/.test(key) || Number(key) > 0x7fffffff) {
      throw badField("logit_bias", `keys must be token ids (integers >= 0), got "${key}"`);
    }
    if (typeof bias !== "number" || !(bias >= -100 && bias <= 100)) {
      throw badField(
        "logit_bias",
        `the bias of token ${key} must be in [-100, 100], got ${describe(bias)}`,
      );
    }
    return [Number(key), bias];
  });
}

/** A list of token ids (vLLM's stop_token_ids, allowed_token_ids); ids >= vocab: routes. */
function tokenIds(body: Body, key: string): number[] | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value)) {
    throw badField(key, `must be an array of token ids, got ${describe(value)}`);
  }
  return value.map((id, i) => {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id > 0x7fffffff) {
      throw badField(key, `item ${i} must be a token id (an integer >= 0)`);
    }
    return id;
  });
}

/** vLLM's allowed_token_ids: only these may be sampled; an empty list would allow none. */
function allowedTokenIds(body: Body): number[] | undefined {
  const ids = tokenIds(body, "allowed_token_ids");
  if (ids !== undefined && ids.length === 0) {
    throw badField("allowed_token_ids", "must name at least one token (empty allows none)");
  }
  return ids;
}

/** vLLM's min_tokens: no stop token or stop string before this many tokens; <= max_tokens. */
function minTokens(body: Body, maxTokens: number | undefined): number | undefined {
  const min = optInteger(body, "min_tokens", 0, Number.MAX_SAFE_INTEGER);
  if (min !== undefined && maxTokens !== undefined && min > maxTokens) {
    throw badField("min_tokens", `must be at most max_tokens (${maxTokens}), got ${min}`);
  }
  return min;
}

/** Most choices one request may ask for, as OpenAI allows. */
const MAX_CHOICES = 128;

function common(body: Body): Omit<GenerationRequest, "prompt" | "echo" | "tools"> {
  const model = body.model;
  if (model !== undefined && model !== null && typeof model !== "string") {
    throw badField("model", `must be a string, got ${describe(model)}`);
  }
  // OpenAI's limit; the engine also needs n <= its maxRunning.
  const n = optInteger(body, "n", 1, MAX_CHOICES) ?? 1;
  const repetition = optNumber(body, "repetition_penalty", -Infinity, Infinity);
  if (repetition !== undefined && !(repetition > 0)) {
    throw badField("repetition_penalty", `must be > 0 (1 is off), got ${repetition}`);
  }
  const maxTokens = optInteger(body, "max_tokens", 1, Number.MAX_SAFE_INTEGER) ??
    optInteger(body, "max_completion_tokens", 1, Number.MAX_SAFE_INTEGER);
  const stopValue = body.stop;
  let stop: string[] | undefined;
  if (typeof stopValue === "string") {
    stop = stopValue.length > 0 ? [stopValue] : [];
  } else if (Array.isArray(stopValue)) {
    if (stopValue.length > 4) {
      throw badField("stop", `takes at most 4 strings, got ${stopValue.length}`);
    }
    stop = stopValue.map((s, i) => {
      if (typeof s !== "string" || s.length === 0) {
        throw badField("stop", `item ${i} must be a non-empty string`);
      }
      return s;
    });
  } else if (stopValue !== undefined && stopValue !== null) {
    throw badField("stop", `must be a string or an array of strings, got ${describe(stopValue)}`);
  }
  const seed = optInteger(body, "seed", Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  const stream = optBoolean(body, "stream") ?? false;
  const streamOptions = body.stream_options;
  let includeUsage = false;
  if (streamOptions !== undefined && streamOptions !== null) {
    if (!isObject(streamOptions)) {
      throw badField("stream_options", `must be an object, got ${describe(streamOptions)}`);
    }
    const v = streamOptions.include_usage;
    if (v !== undefined && v !== null && typeof v !== "boolean") {
      throw badField("stream_options.include_usage", `must be a boolean, got ${describe(v)}`);
    }
    includeUsage = v === true;
  }
  return {
    model: typeof model === "string" ? model : null,
    stream,
    includeUsage,
    n,
    tokensAsIds: optBoolean(body, "return_tokens_as_token_ids") ?? false,
    constraint: parseOutputConstraint(body),
    params: {
      stopTokenIds: tokenIds(body, "stop_token_ids"),
      logitBias: logitBias(body),
      allowedTokenIds: allowedTokenIds(body),
      minTokens: minTokens(body, maxTokens),
      maxTokens,
      temperature: optNumber(body, "temperature", 0, 2),
      topP: optNumber(body, "top_p", Number.MIN_VALUE, 1),
      topK: (() => {
        const k = optInteger(body, "top_k", -1, 2 ** 31 - 1);
        return k === -1 ? 0 : k;
      })(),
      minP: optNumber(body, "min_p", 0, 1),
      seed: seed === undefined ? undefined : ((seed % 2 ** 32) + 2 ** 32) % 2 ** 32,
      stop,
      ignoreEos: optBoolean(body, "ignore_eos"),
      presencePenalty: optNumber(body, "presence_penalty", -2, 2),
      frequencyPenalty: optNumber(body, "frequency_penalty", -2, 2),
      repetitionPenalty: repetition,
    },
  };
}

/** `logprobs` of /v1/completions, or `top_logprobs` of chat: an integer in [0, 20], or absent. */
function topCount(body: Body, key: string): number | undefined {
  return optInteger(body, key, 0, MAX_TOP_LOGPROBS);
}

function parseObject(body: unknown): Body {
  if (!isObject(body)) throw new ApiError(400, "the request body must be a JSON object");
  return body;
}

/** Validates a /v1/completions body. */
export function parseCompletionRequest(raw: unknown): GenerationRequest {
  const body = parseObject(raw);
  checkFields(body, "completion");
  const prompt = body.prompt;
  let parsed: string | number[];
  if (typeof prompt === "string") {
    if (prompt.length === 0) throw badField("prompt", "must not be empty");
    parsed = prompt;
  } else if (Array.isArray(prompt)) {
    if (prompt.length === 0) throw badField("prompt", "must not be empty");
    if (prompt.length === 1 && typeof prompt[0] === "string") {
      if (prompt[0].length === 0) throw badField("prompt", "must not be empty");
      parsed = prompt[0];
    } else {
      for (let i = 0; i < prompt.length; i++) {
        const id = prompt[i];
        if (typeof id !== "number" || !Number.isInteger(id) || id < 0) {
          throw badField(
            "prompt",
            `must be a string or an array of token ids (integers >= 0); item ${i} is ${
              describe(id)
            } (batches of prompts are not supported)`,
          );
        }
      }
      parsed = prompt as number[];
    }
  } else {
    throw badField("prompt", `must be a string or an array of token ids, got ${describe(prompt)}`);
  }
  const logprobs = topCount(body, "logprobs");
  if (body.top_logprobs !== undefined && body.top_logprobs !== null) {
    throw badField(
      "top_logprobs",
      "is a chat completions field; on /v1/completions send logprobs: <0 to 20>",
    );
  }
  notImplemented(body, "best_of", [1]);
  const suffix = body.suffix;
  if (suffix !== undefined && suffix !== null) {
    throw badField("suffix", "is not supported by this server");
  }
  const echo = optBoolean(body, "echo") ?? false;
  const base = common(body);
  return {
    ...base,
    params: {
      ...base.params,
      logprobs: logprobs ?? null,
      // echo with logprobs returns the prompt's logprobs first, as vLLM does.
      promptLogprobs: echo && logprobs !== undefined ? logprobs : null,
    },
    prompt: parsed,
    tools: null,
    echo,
  };
}

/** Validates chat messages: roles, and content as a string or text parts (joined). */
export function parseMessages(messages: unknown): ChatMessage[] {
  if (!Array.isArray(messages)) {
    throw badField("messages", `must be an array of messages, got ${describe(messages)}`);
  }
  if (messages.length === 0) throw badField("messages", "must hold at least one message");
  return messages.map((m, i) => {
    const at = `messages[${i}]`;
    if (!isObject(m)) throw badField(at, `must be an object, got ${describe(m)}`);
    if (typeof m.role !== "string" || m.role.length === 0) {
      throw badField(`${at}.role`, `must be a non-empty string`);
    }
    const content = m.content;
    if (typeof content === "string" || content === null || content === undefined) {
      return m as ChatMessage;
    }
    if (!Array.isArray(content)) {
      throw badField(`${at}.content`, `must be a string or an array of text parts`);
    }
    // Text parts only: join them, as templates written for strings expect.
    const text = content.map((part, j) => {
      if (!isObject(part) || part.type !== "text" || typeof part.text !== "string") {
        throw badField(`${at}.content[${j}]`, `must be {"type": "text", "text": "..."}`);
      }
      return part.text;
    }).join("");
    return { ...m, content: text } as ChatMessage;
  });
}

/** Validates a /v1/chat/completions body. */
export function parseChatRequest(raw: unknown): GenerationRequest {
  const body = parseObject(raw);
  checkFields(body, "chat");
  const parsed = parseMessages(body.messages);
  const logprobs = optBoolean(body, "logprobs") ?? false;
  const top = topCount(body, "top_logprobs");
  // As OpenAI: alternatives need logprobs on; 0 (what some clients send by default) passes.
  if (top !== undefined && top > 0 && !logprobs) {
    throw badField("top_logprobs", `needs logprobs: true, got top_logprobs ${top} without it`);
  }
  const tools = parseToolRequest(body);
  const base = common(body);
  if (tools !== null && tools.choice !== "auto" && base.constraint !== null) {
    throw badField(
      "tool_choice",
      `cannot force a tool call together with ${base.constraint.field}: send one of them`,
    );
  }
  return {
    ...base,
    params: { ...base.params, logprobs: logprobs ? top ?? 0 : null },
    prompt: templateMessages(parsed),
    echo: false,
    tools,
  };
}
