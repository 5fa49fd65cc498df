/**
 * The request fields each endpoint knows. A field outside these lists gets a 400 naming it, as
 * OpenAI answers "Unrecognized request argument"; a known field this server does not implement,
 * and that would change the output, gets a 400 unless it holds its neutral value — never a
 * silent ignore. Fields that only label a request (user, metadata, ...) are accepted and unused.
 *
 * @module
 */

import { badField } from "./errors.ts";

type Body = Record<string, unknown>;

/** Which endpoint a body is for. */
export type Endpoint = "completion" | "chat";

/** Fields both endpoints implement (schema.ts reads them). */
const COMMON = [
  "model",
  "stream",
  "stream_options",
  "max_tokens",
  "temperature",
  "top_p",
  "top_k",
  "min_p",
  "seed",
  "stop",
  "stop_token_ids",
  "presence_penalty",
  "frequency_penalty",
  "repetition_penalty",
  "ignore_eos",
  "logit_bias",
  "n",
  "logprobs",
  "return_tokens_as_token_ids",
  "min_tokens",
  "allowed_token_ids",
  // Structured output (server/structured.ts).
  "response_format",
  "guided_json",
  "guided_regex",
  "guided_choice",
  "guided_grammar",
  "guided_decoding_backend",
];

/** Fields only one endpoint implements. */
const OWN: Record<Endpoint, readonly string[]> = {
  completion: ["prompt", "echo", "best_of", "suffix"],
  chat: [
    "messages",
    "top_logprobs",
    "max_completion_tokens",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
  ],
};

/** Labels and routing hints that do not change the output: accepted, unused. */
const LABELS = [
  "user",
  "metadata",
  "store",
  "service_tier",
  "request_id",
  "priority",
  "cache_salt",
];

/**
 * Known fields this server does not implement, with the values that mean "off" (absent and
 * null always pass).
 */
const UNSUPPORTED: Readonly<Record<string, readonly unknown[]>> = {
  guided_whitespace_pattern: [],
  structural_tag: [],
  functions: [],
  function_call: ["none", "auto"],
  bad_words: [],
  logits_processors: [],
  use_beam_search: [false],
  length_penalty: [1],
  prompt_logprobs: [],
  include_stop_str_in_output: [false],
  skip_special_tokens: [true],
  spaces_between_special_tokens: [true],
  truncate_prompt_tokens: [],
  chat_template: [],
  chat_template_kwargs: [],
  continue_final_message: [false],
  add_generation_prompt: [true],
  add_special_tokens: [],
  documents: [],
  echo: [false],
  modalities: [],
  audio: [],
  prediction: [],
  reasoning_effort: [],
  web_search_options: [],
  return_token_ids: [false],
  vllm_xargs: [],
};

/**
 * Throws a 400 naming the first field of `body` that `endpoint` does not know, or that it knows
 * but does not implement and that is not at its neutral value.
 */
export function checkFields(body: Body, endpoint: Endpoint): void {
  for (const key of Object.keys(body)) {
    if (COMMON.includes(key) || OWN[endpoint].includes(key) || LABELS.includes(key)) continue;
    const value = body[key];
    const neutral = UNSUPPORTED[key];
    if (neutral === undefined) {
      throw badField(
        key,
        `is not a field of ${endpoint === "chat" ? "/v1/chat/completions" : "/v1/completions"}` +
          ` (unrecognized request argument); remove it`,
      );
    }
    if (value === undefined || value === null) continue;
    if (neutral.some((n) => sameJson(n, value))) continue;
    throw badField(
      key,
      `is not supported by this server, and would change the output; leave it out` +
        (neutral.length > 0
          ? ` or send ${neutral.map((n) => JSON.stringify(n)).join(" or ")}`
          : ""),
    );
  }
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
