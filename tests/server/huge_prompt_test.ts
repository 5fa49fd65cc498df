/**
 * A huge prompt must not freeze other streams (the hardening issue's item 1): four ~4 MB
 * prompts, each under the body limit, sent while a stream runs, are all refused with
 * `context_length_exceeded` within a deadline, and the stream's events keep coming meanwhile.
 * Before the fix each such prompt was encoded on the event loop (about a microsecond per byte):
 * the stream stalled for seconds per prompt, and four took the resident set to 1.26 GB.
 */

import assert from "node:assert/strict";
import { assertApiError, startTestServer } from "../support/server.ts";

/** Longest pause allowed between two events of the running stream, in ms. */
const STALL_BOUND_MS = 1500;
/** All four refusals must arrive within this, in ms (encoding them all would take ~16 s). */
const REFUSAL_DEADLINE_MS = 6000;
/** Most the resident set may grow while they are refused (encoding them took it to 1.26 GB). */
const RSS_GROWTH_BOUND = 512 * 2 ** 20;

Deno.test({
  name: "four 4 MB prompts are refused at once and never stall a running stream",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const served = await startTestServer({ kvBlocks: 64, maxModelLen: 1024 });
    const { base, model, post } = served;
    try {
      // A stream long enough to outlive the huge requests; its event times are recorded.
      const stamps: number[] = [];
      const streaming = (async () => {
        const res = await post("/v1/completions", {
          model,
          prompt: "Once upon a time",
          max_tokens: 600,
          temperature: 0,
          ignore_eos: true,
          stream: true,
        });
        const reader = res.body!.getReader();
        while (true) {
          const { done } = await reader.read();
          if (done) break;
          stamps.push(performance.now());
        }
      })();
      // Let it get going before the huge prompts arrive.
      const t0 = performance.now();
      while (stamps.length < 5) {
        assert(performance.now() - t0 < 10_000, "the stream did not start");
        await new Promise((r) => setTimeout(r, 5));
      }

      const huge = JSON.stringify({ model, prompt: "x".repeat(4_000_000), max_tokens: 4 });
      assert(huge.length < 4 * 2 ** 20, "under the body limit, so the prompt check must act");
      const rssBefore = Deno.memoryUsage().rss;
      let rssPeak = rssBefore;
      const sampler = setInterval(() => {
        rssPeak = Math.max(rssPeak, Deno.memoryUsage().rss);
      }, 10);
      const sent = performance.now();
      const replies = await Promise.all(
        Array.from({ length: 4 }, () => post("/v1/completions", huge)),
      );
      const refusedIn = performance.now() - sent;
      clearInterval(sampler);
      const growth = rssPeak - rssBefore;
      assert(growth < RSS_GROWTH_BOUND, `RSS grew ${(growth / 2 ** 20).toFixed(0)} MiB`);
      for (const res of replies) {
        const error = await assertApiError(res, 400, "prompt", "huge prompt");
        assert.deepStrictEqual(error.code, "context_length_exceeded");
        assert.match(error.message, /4000000 bytes of text, so at least \d+ tokens/);
      }
      assert(refusedIn < REFUSAL_DEADLINE_MS, `refusals took ${refusedIn.toFixed(0)} ms`);

      // Chat with a huge message is refused the same way (the rendered text is measured).
      const chat = await post("/v1/chat/completions", {
        model,
        messages: [{ role: "user", content: "y".repeat(3_000_000) }],
      });
      assert.deepStrictEqual(
        (await assertApiError(chat, 400, "messages", "huge chat")).code,
        "context_length_exceeded",
      );

      await streaming;
      const window = stamps.filter((t) => t >= sent - STALL_BOUND_MS);
      let worst = 0;
      for (let i = 1; i < window.length; i++) worst = Math.max(worst, window[i] - window[i - 1]);
      assert(window.length > 10, `only ${window.length} events after the huge prompts`);
      assert(worst < STALL_BOUND_MS, `the stream stalled for ${worst.toFixed(0)} ms`);
      console.log(
        `4 huge prompts refused in ${refusedIn.toFixed(0)} ms; longest stream gap ` +
          `${worst.toFixed(0)} ms; RSS grew ${(growth / 2 ** 20).toFixed(0)} MiB`,
      );
      // The server still serves.
      const ok = await fetch(`${base}/health`);
      assert.deepStrictEqual(ok.status, 200);
      await ok.body?.cancel();
    } finally {
      await served.close();
    }
  },
});
