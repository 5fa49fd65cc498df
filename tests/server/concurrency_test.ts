/**
 * 64 concurrent streaming completions (the server issue's acceptance case): each stream gets
 * exactly its own tokens, equal to what its prompt gives alone with greedy decoding.
 */

import assert from "node:assert/strict";
import { startTestServer } from "../support/server.ts";

const STREAMS = 64;
/** Kept small so the test stays well under a minute on a 2-core CI machine. */
const TOKENS = 16;

Deno.test({
  name: "64 concurrent greedy streams each get exactly the tokens of their prompt alone",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    // Room for all 64 in one batch, so they really run together.
    const served = await startTestServer({
      kvBlocks: 256,
      blockSize: 16,
      maxRunning: STREAMS,
      maxBatchedTokens: 512,
      maxModelLen: 256,
    });
    const { engine, model, client } = served;
    try {
      // Distinct prompts of different lengths, so the batch mixes prefill and decode rows.
      const prompts = Array.from(
        { length: STREAMS },
        (_, i) => `prompt ${i}: ${"lorem ipsum ".repeat(i % 5)}${String.fromCharCode(97 + i % 26)}`,
      );
      // logprobs 0 gives each token's text, so tokens are compared, not only the joined text.
      const args = (prompt: string) => ({
        model,
        prompt,
        max_tokens: TOKENS,
        temperature: 0,
        ignore_eos: true,
        logprobs: 0,
      });
      const alone: { text: string; tokens: string[]; logprobs: number[] }[] = [];
      for (const p of prompts) {
        const choice = (await client.completions.create(args(p))).choices[0];
        alone.push({
          text: choice.text,
          tokens: choice.logprobs!.tokens!,
          logprobs: choice.logprobs!.token_logprobs!,
        });
      }
      // Without distinct outputs, streams handed each other's tokens could go unnoticed.
      const distinct = new Set(alone.map((a) => a.tokens.join("\u0000"))).size;
      assert(distinct >= STREAMS / 4, `only ${distinct} distinct outputs for ${STREAMS} prompts`);

      let peak = 0;
      const watch = setInterval(() => peak = Math.max(peak, engine.stats().running), 1);
      const started = performance.now();
      const together = await Promise.all(prompts.map(async (p) => {
        const stream = await client.completions.create({ ...args(p), stream: true });
        let text = "";
        let events = 0;
        const tokens: string[] = [];
        const logprobs: number[] = [];
        for await (const chunk of stream) {
          const choice = chunk.choices[0];
          if (choice === undefined) continue;
          events++;
          text += choice.text;
          tokens.push(...choice.logprobs!.tokens!);
          logprobs.push(...choice.logprobs!.token_logprobs!);
        }
        return { text, tokens, logprobs, events };
      }));
      clearInterval(watch);
      const seconds = (performance.now() - started) / 1000;
      console.log(`${STREAMS} streams × ${TOKENS} tokens: ${seconds.toFixed(2)} s, peak ${peak}`);
      // Most of them in the same steps; not all is guaranteed, as the first step may start
      // before the last request has arrived.
      assert(peak >= STREAMS / 2, `at most ${peak} of ${STREAMS} requests ran at once`);
      for (let i = 0; i < STREAMS; i++) {
        const got = together[i];
        const want = alone[i];
        assert.deepStrictEqual(got.events, TOKENS, `stream ${i}: one event per token`);
        assert.deepStrictEqual(got.text, want.text, `stream ${i}: text`);
        assert.deepStrictEqual(got.tokens, want.tokens, `stream ${i}: tokens`);
        // The CPU backend computes each row on its own, so batching does not change a logprob;
        // 1e-5 leaves room for a backend that sums rows in another order, nothing more.
        for (let j = 0; j < TOKENS; j++) {
          assert(
            Math.abs(got.logprobs[j] - want.logprobs[j]) <= 1e-5,
            `stream ${i} token ${j}: logprob ${got.logprobs[j]} alone ${want.logprobs[j]}`,
          );
        }
      }
    } finally {
      await served.close();
    }
  },
});
