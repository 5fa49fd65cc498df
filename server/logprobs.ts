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
 * the token's own bytes (see {@link TokenTexts.bytes}). With vLLM's `return_tokens_as_token_ids`
 * a token is named `token_id:<id>` instead, which tells apart tokens of the same text. Logprobs
 * below -9999 (−∞ included, which JSON cannot carry) are sent as -9999, as OpenAI and vLLM do.
 *
 * Completions' `top_logprobs` is a dict keyed by token text, so two tokens of the same text
 * (parts of characters both decoding to U+FFFD, say) share a key. The convention is vLLM's: the
 * dict is built from the sampled token, then the alternatives by rank, and a repeated text keeps
 * its first place with the later (less likely) token's logprob. Name tokens by id to keep
 * every alternative.
 *
 * @module
 */

import type { PromptTokenLogprobs } from "../engine/prompt_logprobs.ts";
import type { LogprobEntry } from "../engine/request_text.ts";
import type { TokenTexts } from "../engine/token_texts.ts";

/** The legacy /v1/completions `logprobs` object of a choice or a streamed chunk. */
export interface CompletionLogprobs {
  /** Each token's text. */
  tokens: string[];
  /** Each token's logprob; null for the first prompt token of an echo. */
  token_logprobs: (number | null)[];
  /** Each token's alternatives: text → logprob; null for the first prompt token of an echo. */
  top_logprobs: (Record<string, number> | null)[];
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

/** How tokens are named: by their text, or as `token_id:<id>` (vLLM's option). */
export interface TokenNaming {
  /** The token texts of the engine's tokenizer. */
  readonly texts: TokenTexts;
  /** Name every token `token_id:<id>`. */
  readonly asIds: boolean;
}

function nameOf(naming: TokenNaming, id: number): string {
  return naming.asIds ? `token_id:${id}` : naming.texts.text(id);
}

/**
 * `entries` in the legacy /v1/completions format. With `echo`, the prompt's tokens come first
 * (the first with null logprobs, as vLLM sends it) and the generated tokens' offsets count
 * from the end of the echoed prompt.
 */
export function completionLogprobs(
  entries: readonly LogprobEntry[],
  naming: TokenNaming,
  echo: { readonly tokens: readonly PromptTokenLogprobs[]; readonly length: number } | null = null,
): CompletionLogprobs {
  const out: CompletionLogprobs = {
    tokens: [],
    token_logprobs: [],
    top_logprobs: [],
    text_offset: [],
  };
  for (const p of echo?.tokens ?? []) {
    if (p.logprobs === null) {
      out.tokens.push(nameOf(naming, p.tokenId));
      out.token_logprobs.push(null);
      out.top_logprobs.push(null);
      out.text_offset.push(p.textOffset);
    } else {
      add(out, { tokenId: p.tokenId, textOffset: p.textOffset, ...p.logprobs }, naming, 0);
    }
  }
  const shift = echo?.length ?? 0;
  for (const e of entries) add(out, e, naming, shift);
  return out;
}

/** Appends one token's entry, its offset moved by `shift` code points. */
function add(out: CompletionLogprobs, e: LogprobEntry, naming: TokenNaming, shift: number): void {
  const chosen = nameOf(naming, e.tokenId);
  out.tokens.push(chosen);
  out.token_logprobs.push(clamp(e.logprob));
  // vLLM's dict: the sampled token, then the alternatives by rank (the sampled one once); a
  // repeated text takes the later logprob. No prototype, so no text is special.
  const top: Record<string, number> = Object.create(null);
  top[chosen] = clamp(e.logprob);
  for (const t of e.top) {
    if (t.tokenId !== e.tokenId) top[nameOf(naming, t.tokenId)] = clamp(t.logprob);
  }
  out.top_logprobs.push(top);
  out.text_offset.push(e.textOffset + shift);
}

/** `entries` in the /v1/chat/completions format. */
export function chatLogprobs(entries: readonly LogprobEntry[], naming: TokenNaming): ChatLogprobs {
  const one = (tokenId: number, logprob: number): ChatTokenLogprob => ({
    token: nameOf(naming, tokenId),
    logprob: clamp(logprob),
    bytes: naming.texts.bytes(tokenId),
  });
  return {
    content: entries.map((e) => ({
      ...one(e.tokenId, e.logprob),
      top_logprobs: e.top.map((t) => one(t.tokenId, t.logprob)),
    })),
    refusal: null,
  };
}
