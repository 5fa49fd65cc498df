/**
 * POST /tokenize and /detokenize in vLLM's shapes, against the tokenizer itself: text and chat
 * in, `count`, `tokens`, `max_model_len` (and `token_strs`) out; ids back to text; bad bodies get
 * a 400 naming the field.
 */

import assert from "node:assert/strict";
import { assertApiError, startTestServer } from "../support/server.ts";

Deno.test({
  name: "server: /tokenize and /detokenize",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const served = await startTestServer({ kvBlocks: 32, maxModelLen: 256 });
    const { engine, model, post } = served;
    const tokenizer = engine.tokenizer!;
    try {
      const text = "Hello 世界 😀, the quick brown fox";
      const res = await (await post("/tokenize", { model, prompt: text })).json();
      const ids = tokenizer.encode(text);
      assert.deepStrictEqual(res, {
        count: ids.length,
        max_model_len: 256,
        tokens: ids,
        token_strs: null,
      });
      const bare = await (await post("/tokenize", {
        prompt: text,
        add_special_tokens: false,
        return_token_strs: true,
      })).json();
      const plain = tokenizer.encode(text, { addSpecialTokens: false });
      assert.deepStrictEqual(bare.tokens, plain);
      assert.deepStrictEqual(bare.token_strs, plain.map((id) => tokenizer.idToToken(id)));
      assert.notDeepStrictEqual(plain, ids, "BOS makes a difference here");

      // Chat: rendered with the generation prompt; the count is what a chat request uses.
      const messages = [{ role: "user", content: text }];
      const chat = await (await post("/tokenize", { messages })).json();
      assert.deepStrictEqual(
        chat.tokens,
        tokenizer.encodeChat(messages, { addGenerationPrompt: true }),
      );
      const completion = await (await post("/v1/chat/completions", {
        model,
        messages,
        max_tokens: 1,
      })).json();
      assert.deepStrictEqual(chat.count, completion.usage.prompt_tokens);
      const noPrompt = await (await post("/tokenize", {
        messages,
        add_generation_prompt: false,
      })).json();
      assert.deepStrictEqual(
        noPrompt.tokens,
        tokenizer.encodeChat(messages, { addGenerationPrompt: false }),
      );
      // No context check: a prompt longer than max_model_len is counted.
      const long = await (await post("/tokenize", { prompt: "word ".repeat(400) })).json();
      assert(long.count > 256, `${long.count}`);

      // /detokenize: ids back to the text, special tokens kept.
      const back = await (await post("/detokenize", { model, tokens: ids })).json();
      assert.deepStrictEqual(back, { prompt: tokenizer.decode(ids) });
      assert(back.prompt.endsWith(text));

      // Errors.
      await assertApiError(await post("/tokenize", {}), 400, null);
      await assertApiError(await post("/tokenize", { prompt: "x", messages }), 400, null);
      await assertApiError(await post("/tokenize", { prompt: 5 }), 400, "prompt");
      await assertApiError(await post("/tokenize", { prompt: "x", bogus: 1 }), 400, "bogus");
      await assertApiError(
        await post("/tokenize", { prompt: "x", add_special_tokens: "yes" }),
        400,
        "add_special_tokens",
      );
      await assertApiError(await post("/tokenize", { messages: [] }), 400, "messages");
      await assertApiError(await post("/tokenize", { prompt: "x", model: "other" }), 404, "model");
      await assertApiError(await post("/detokenize", { tokens: "1 2" }), 400, "tokens");
      await assertApiError(await post("/detokenize", { tokens: [1, 1e9] }), 400, "tokens");
      await assertApiError(await post("/detokenize", { tokens: [1, -1] }), 400, "tokens");
      const wrongMethod = await fetch(`${served.base}/tokenize`);
      assert.deepStrictEqual(wrongMethod.status, 405);
      await wrongMethod.body?.cancel();
    } finally {
      await served.close();
    }
    // With an API key, the tokenizer paths need it too.
    const secured = await startTestServer({ kvBlocks: 32 }, { apiKey: "sekrit" });
    try {
      await assertApiError(await secured.post("/tokenize", { prompt: "x" }), 401, null);
      const ok = await secured.post("/detokenize", { tokens: [1] }, {
        headers: { "content-type": "application/json", authorization: "Bearer sekrit" },
      });
      assert.deepStrictEqual(ok.status, 200);
      await ok.body?.cancel();
    } finally {
      await secured.close();
    }
  },
});
