/**
 * server/logprobs.ts's formats on hand-made entries, against dicts and lists written out here:
 * vLLM's convention for completions' `top_logprobs` when two tokens share a text, and
 * `return_tokens_as_token_ids`, which keeps them apart.
 *
 * @module
 */

import assert from "node:assert/strict";
import { TokenTexts } from "../../engine/token_texts.ts";
import { Tokenizer } from "../../engine/tokenizer.ts";
import { chatLogprobs, completionLogprobs } from "../../server/logprobs.ts";

const tok = await Tokenizer.load(new URL("../../checkpoints/tiny-llama", import.meta.url).pathname);
const texts = new TokenTexts(tok);

// Two byte tokens that are parts of characters: alone, both decode to U+FFFD.
const partial = [...Array(tok.vocabSize).keys()].filter((id) => texts.text(id) === "\ufffd");
const [p1, p2] = partial;
const a = tok.encode("a", { addSpecialTokens: false })[0];
const b = tok.encode("b", { addSpecialTokens: false })[0];

Deno.test("completions top_logprobs: a repeated text takes the later logprob, as vLLM", () => {
  assert.ok(partial.length >= 2, "the tiny vocabulary has partial-character tokens");
  // Sampled p2 (third most likely); alternatives by rank: a, p1, p2, b.
  const entry = {
    tokenId: p2,
    logprob: -1.5,
    textOffset: 0,
    top: [
      { tokenId: a, logprob: -0.5 },
      { tokenId: p1, logprob: -1 },
      { tokenId: p2, logprob: -1.5 },
      { tokenId: b, logprob: -20000 },
    ],
  };
  const byText = completionLogprobs([entry], { texts, asIds: false });
  assert.deepEqual(byText.tokens, ["\ufffd"]);
  assert.deepEqual(byText.token_logprobs, [-1.5]);
  // Built as vLLM builds it: {p2: -1.5}, then a, p1 (same text as p2: overwrites), b (clamped).
  assert.deepEqual(Object.entries(byText.top_logprobs[0]!), [
    ["\ufffd", -1],
    ["a", -0.5],
    ["b", -9999],
  ]);
  const byId = completionLogprobs([entry], { texts, asIds: true });
  assert.deepEqual(byId.tokens, [`token_id:${p2}`]);
  assert.deepEqual(Object.entries(byId.top_logprobs[0]!), [
    [`token_id:${p2}`, -1.5],
    [`token_id:${a}`, -0.5],
    [`token_id:${p1}`, -1],
    [`token_id:${b}`, -9999],
  ]);
  // Chat keeps a list, so nothing is lost either way; ids only rename.
  const chat = chatLogprobs([entry], { texts, asIds: true }).content[0];
  assert.equal(chat.token, `token_id:${p2}`);
  assert.deepEqual(
    chat.top_logprobs.map((t) => t.token),
    [a, p1, p2, b].map((id) => `token_id:${id}`),
  );
  assert.deepEqual(chat.bytes, texts.bytes(p2));
});
