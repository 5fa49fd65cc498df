/**
 * POST /tokenize and /detokenize in vLLM's shapes.
 *
 * - /tokenize takes `{prompt, add_special_tokens = true}` or `{messages,
 *   add_generation_prompt = true, add_special_tokens = false}` (the chat template writes BOS),
 *   with `return_token_strs`, and answers `{count, max_model_len, tokens, token_strs}`. No
 *   context check: the count is what the client compares with `max_model_len`.
 * - /detokenize takes `{tokens}` and answers `{prompt}`, the ids decoded with special tokens
 *   kept (as vLLM decodes them).
 *
 * @module
 */

import type { Engine } from "../engine/engine.ts";
import type { ChatMessage } from "../engine/tokenizer.ts";
import { ChatTemplateError } from "../engine/tokenizer.ts";
import { ApiError, badField } from "./errors.ts";
import { parseMessages } from "./schema.ts";

type Body = Record<string, unknown>;

const TOKENIZE_FIELDS = new Set([
  "model",
  "prompt",
  "messages",
  "add_special_tokens",
  "add_generation_prompt",
  "return_token_strs",
]);

function flag(body: Body, key: string): boolean | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "boolean") throw badField(key, "must be a boolean");
  return value;
}

function unknownFields(body: Body, known: Set<string>, path: string): void {
  for (const key of Object.keys(body)) {
    if (!known.has(key)) {
      throw badField(key, `is not a field of ${path} (unrecognized request argument); remove it`);
    }
  }
}

/** Answers POST /tokenize for a parsed JSON body. */
export async function tokenize(engine: Engine, body: Body): Promise<Response> {
  unknownFields(body, TOKENIZE_FIELDS, "/tokenize");
  if (engine.tokenizer === null) {
    throw new ApiError(400, "this model has no tokenizer: it takes token ids only");
  }
  const hasPrompt = body.prompt !== undefined && body.prompt !== null;
  const hasMessages = body.messages !== undefined && body.messages !== null;
  if (hasPrompt === hasMessages) {
    throw new ApiError(400, "send either `prompt` (a string) or `messages` (chat), not both");
  }
  let input: string | ChatMessage[];
  if (hasPrompt) {
    if (typeof body.prompt !== "string") throw badField("prompt", "must be a string");
    if (body.add_generation_prompt !== undefined) {
      throw badField("add_generation_prompt", "applies to messages, not to a prompt");
    }
    input = body.prompt;
  } else {
    input = parseMessages(body.messages);
  }
  const param = hasPrompt ? "prompt" : "messages";
  let tokens: number[];
  try {
    tokens = await engine.tokenize(input, {
      addSpecialTokens: flag(body, "add_special_tokens"),
      addGenerationPrompt: flag(body, "add_generation_prompt"),
    });
  } catch (error) {
    if (error instanceof ChatTemplateError) throw new ApiError(400, error.message, param);
    throw error;
  }
  const tokenizer = engine.tokenizer;
  return Response.json({
    count: tokens.length,
    max_model_len: engine.maxModelLen,
    tokens,
    token_strs: flag(body, "return_token_strs")
      ? tokens.map((id) => tokenizer.idToToken(id) ?? "")
      : null,
  });
}

/** Answers POST /detokenize for a parsed JSON body. */
export function detokenize(engine: Engine, body: Body): Response {
  unknownFields(body, new Set(["model", "tokens"]), "/detokenize");
  const tokens = body.tokens;
  if (!Array.isArray(tokens)) throw badField("tokens", "must be an array of token ids");
  const vocab = engine.config.vocabSize;
  tokens.forEach((id, i) => {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= vocab) {
      throw badField("tokens", `item ${i} must be a token id in [0, ${vocab}), got ${id}`);
    }
  });
  if (engine.tokenizer === null) {
    throw new ApiError(400, "this model has no tokenizer: it cannot turn ids into text");
  }
  return Response.json({ prompt: engine.tokenizer.decode(tokens as number[]) });
}
