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

import type { LogprobEntry } from "../engine/request_text.ts";
import type { TokenTexts } from "../engine/token_texts.ts";

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
    out.text_offset.push(e.textOffset);
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
