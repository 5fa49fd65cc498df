/**
 * Prompt logprobs (engine/prompt_logprobs.ts) against an independent reference: the engine's own
 * full forward pass (`lastLogits`) of each prefix, with log_softmax and ranking redone here in
 * float64. The prompt's chunk comes first, the generated tokens are unchanged by the scoring,
 * and a request that does not ask gets no such chunk.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Engine } from "../../engine/engine.ts";
import { logSoftmax } from "../support/numeric.ts";

const TINY = new URL("../../checkpoints/tiny-llama", import.meta.url).pathname;

Deno.test({
  name: "prompt logprobs: each prompt token's logprob and top alternatives, first",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const engine = await Engine.load(TINY, {
      backend: "cpu",
      log: () => {},
      kvBlocks: 64,
      blockSize: 4,
      maxRunning: 8,
      seed: 1,
    });
    try {
      const tokenizer = engine.tokenizer!;
      const text = "Hello 世界, once upon a time";
      const ids = tokenizer.encode(text);
      const params = { temperature: 0, maxTokens: 6, ignoreEos: true };
      const plain = await Array.fromAsync(engine.generate(ids, params));
      assert(plain.every((c) => c.promptLogprobs === undefined));

      const before = engine.stats().prefillTokens;
      const chunks = await Array.fromAsync(engine.generate(ids, { ...params, promptLogprobs: 3 }));
      const scoringCost = engine.stats().prefillTokens - before;
      // The prompt chunk first, then the same generated tokens as without scoring.
      const prompt = chunks[0].promptLogprobs!;
      assert.ok(prompt, "the first chunk carries the prompt logprobs");
      assert.deepEqual(chunks[0].tokenId, -1);
      assert.deepEqual(
        chunks.slice(1).map((c) => [c.tokenId, c.text]),
        plain.map((c) => [c.tokenId, c.text]),
      );
      assert.deepEqual(prompt.map((p) => p.tokenId), ids);
      assert.equal(prompt[0].logprobs, null);
      for (let j = 1; j < ids.length; j++) {
        const reference = logSoftmax(await engine.lastLogits(ids.slice(0, j)));
        const got = prompt[j].logprobs!;
        assert(Math.abs(got.logprob - reference[ids[j]]) < 1e-4, `position ${j}`);
        const order = [...reference.keys()].sort((a, b) => reference[b] - reference[a] || a - b);
        assert.equal(got.top.length, 3);
        got.top.forEach((alt, k) => {
          assert(Math.abs(alt.logprob - reference[alt.tokenId]) < 1e-4, `position ${j} top ${k}`);
          assert(
            alt.tokenId === order[k] || Math.abs(reference[order[k]] - alt.logprob) < 1e-4,
            `position ${j} top ${k}: ${alt.tokenId}, expected ${order[k]}`,
          );
        });
      }
      // Offsets: each whole-character token's text sits at its offset in the decoded prompt.
      const decoded = [...tokenizer.decode(ids, { skipSpecialTokens: true })];
      let whole = 0;
      for (const p of prompt) {
        const own = tokenizer.decode([p.tokenId], { skipSpecialTokens: true });
        if (own === "" || own.includes("\ufffd")) continue;
        whole++;
        assert.equal(decoded.slice(p.textOffset, p.textOffset + [...own].length).join(""), own);
      }
      assert(whole >= 5, `${whole} whole tokens`);
      // The prompt was computed once by the request; each position's sequence recomputed at
      // most one block of 4 (its partial last block) plus the request's own prefill.
      assert(scoringCost <= ids.length + 4 * (ids.length - 1), `${scoringCost} tokens`);
      assert.equal(engine.stats().kvBlocksUsed, 0);

      // n choices: one prompt chunk, before every choice's tokens.
      const many = await Array.fromAsync(
        engine.generateChoices(ids, { ...params, promptLogprobs: 0, seed: 4 }, 3),
      );
      assert.equal(many.filter((c) => c.promptLogprobs !== undefined).length, 1);
      assert.ok(many[0].promptLogprobs);
      // A one-token prompt: only the first token, with no logprob.
      const one = await Array.fromAsync(
        engine.generate([ids[0]], { ...params, promptLogprobs: 1 }),
      );
      assert.deepEqual(one[0].promptLogprobs, [{ tokenId: ids[0], textOffset: 0, logprobs: null }]);
      // Cancelling mid-way frees everything, scoring sequences included.
      const controller = new AbortController();
      const stream = engine.generate(ids, { ...params, promptLogprobs: 2 }, controller.signal);
      controller.abort();
      assert.deepEqual(await Array.fromAsync(stream), []);
      const deadline = performance.now() + 5000;
      while (engine.stats().kvBlocksUsed > 0 || engine.stats().running > 0) {
        assert(performance.now() < deadline, "blocks still held after the abort");
        await new Promise((r) => setTimeout(r, 5));
      }
    } finally {
      await engine.close();
    }
  },
});
