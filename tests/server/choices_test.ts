/**
 * `n` > 1 on both endpoints (the OpenAI-surface issue's item 3): with a seed, choice i is what a
 * single request with seed + i gives (the reference: four single requests); usage counts every
 * choice and the prompt once; streamed chunks carry their choice's index and join to the
 * non-streamed choices; the prompt is computed once (the other choices find its full KV blocks
 * in the prefix cache); a client leaving frees every choice's blocks.
 */

import assert from "node:assert/strict";
import { assertApiError, startTestServer } from "../support/server.ts";

const BLOCK = 16;

/** The `data:` events of an SSE body, parsed, up to [DONE]. */
async function events(res: Response): Promise<Record<string, unknown>[]> {
  assert.deepStrictEqual(res.status, 200);
  const out: Record<string, unknown>[] = [];
  for (const line of (await res.text()).split("\n")) {
    if (line.startsWith("data: {")) out.push(JSON.parse(line.slice(6)));
  }
  return out;
}

Deno.test({
  name: "server: n choices match single requests with seed + i, streamed and not",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const served = await startTestServer({
      kvBlocks: 128,
      blockSize: BLOCK,
      maxRunning: 16,
      maxModelLen: 512,
    });
    const { engine, model, post } = served;
    const c = "/v1/completions";
    const chat = "/v1/chat/completions";
    // 100 tokens: six full blocks and a partial one.
    const prompt = Array.from({ length: 100 }, (_, i) => 10 + (i * 7) % 200);
    const sampled = {
      model,
      max_tokens: 12,
      temperature: 1,
      ignore_eos: true,
      logprobs: 0,
      return_tokens_as_token_ids: true,
    };
    try {
      await t.step("completions: n = 4 with a seed against four single requests", async () => {
        const singles: { choices: Record<string, unknown>[] }[] = [];
        for (let i = 0; i < 4; i++) {
          singles.push(await (await post(c, { ...sampled, prompt, seed: 42 + i })).json());
        }
        const before = engine.stats().prefillTokens;
        const res = await (await post(c, { ...sampled, prompt, seed: 42, n: 4 })).json();
        const prefilled = engine.stats().prefillTokens - before;
        assert.deepStrictEqual(res.choices.length, 4);
        for (let i = 0; i < 4; i++) {
          const got = res.choices[i], want = singles[i].choices[0];
          assert.deepStrictEqual(got.index, i);
          assert.deepStrictEqual(got.text, want.text, `choice ${i}`);
          assert.deepStrictEqual(got.logprobs, want.logprobs, `choice ${i} tokens`);
          assert.deepStrictEqual(got.finish_reason, want.finish_reason);
        }
        const distinct = new Set(res.choices.map((ch: { text: string }) => ch.text)).size;
        assert(distinct >= 3, `only ${distinct} distinct choices: seeds + i were not used`);
        assert.deepStrictEqual(res.usage, {
          prompt_tokens: prompt.length,
          completion_tokens: 4 * 12,
          total_tokens: prompt.length + 48,
        });
        // The prompt was computed once, plus each other choice's partial last block (the
        // singles above had cached its full blocks already, so the first choice may hit them
        // too): far from four whole prompts.
        assert(prefilled <= prompt.length + 3 * BLOCK, `prefilled ${prefilled} tokens`);
        assert.deepStrictEqual(engine.stats().kvBlocksUsed, 0);
      });

      await t.step("a fresh prompt: n = 4 computes it once", async () => {
        const fresh = prompt.map((id) => id + 1);
        const before = engine.stats().prefillTokens;
        const res = await (await post(c, { ...sampled, prompt: fresh, n: 4, seed: 1 })).json();
        const prefilled = engine.stats().prefillTokens - before;
        assert.deepStrictEqual(res.choices.length, 4);
        // Choice 0: all 100; choices 1-3: the 4 tokens of the partial block each.
        assert.deepStrictEqual(prefilled, 100 + 3 * (100 % BLOCK));
      });

      await t.step("completions: streamed n = 4 joins to the non-streamed choices", async () => {
        const body = { ...sampled, prompt, seed: 7, n: 4, echo: false };
        const whole = await (await post(c, body)).json();
        const streamed = await events(
          await post(c, { ...body, stream: true, stream_options: { include_usage: true } }),
        );
        const texts = ["", "", "", ""];
        const tokens: string[][] = [[], [], [], []];
        const reasons: (string | null)[] = [null, null, null, null];
        for (const e of streamed.slice(0, -1)) {
          const choices = e.choices as {
            index: number;
            text: string;
            finish_reason: string | null;
            logprobs: { tokens: string[] };
          }[];
          assert.deepStrictEqual(choices.length, 1);
          const ch = choices[0];
          texts[ch.index] += ch.text;
          tokens[ch.index].push(...ch.logprobs.tokens);
          if (ch.finish_reason !== null) reasons[ch.index] = ch.finish_reason;
        }
        for (let i = 0; i < 4; i++) {
          assert.deepStrictEqual(texts[i], whole.choices[i].text, `choice ${i}`);
          assert.deepStrictEqual(tokens[i], whole.choices[i].logprobs.tokens);
          assert.deepStrictEqual(reasons[i], whole.choices[i].finish_reason);
        }
        assert.deepStrictEqual(streamed.at(-1)!.usage, whole.usage);
      });

      await t.step("chat: n = 3, streamed and not, with a role chunk per choice", async () => {
        const body = {
          model,
          messages: [{ role: "user", content: "Tell me a story" }],
          max_tokens: 8,
          temperature: 1,
          seed: 3,
          n: 3,
        };
        const whole = await (await post(chat, body)).json();
        assert.deepStrictEqual(whole.choices.map((ch: { index: number }) => ch.index), [0, 1, 2]);
        const single = await (await post(chat, { ...body, n: 1, seed: 5 })).json();
        assert.deepStrictEqual(whole.choices[2].message, single.choices[0].message);
        const streamed = await events(await post(chat, { ...body, stream: true }));
        const texts = ["", "", ""];
        const roles = [0, 0, 0];
        for (const e of streamed) {
          const ch = (e.choices as { index: number; delta: { role?: string; content?: string } }[])[
            0
          ];
          if (ch.delta.role === "assistant") roles[ch.index]++;
          texts[ch.index] += ch.delta.content ?? "";
        }
        assert.deepStrictEqual(roles, [1, 1, 1]);
        assert.deepStrictEqual(
          texts,
          whole.choices.map((ch: { message: { content: string } }) => ch.message.content),
        );
        assert.deepStrictEqual(whole.usage.completion_tokens, 3 * 8);
      });

      await t.step("the first choice ending at once still lets the others run", async () => {
        const res = await (await post(c, {
          model,
          prompt,
          max_tokens: 1,
          n: 4,
          seed: 9,
          temperature: 1,
        })).json();
        assert.deepStrictEqual(res.choices.length, 4);
        assert(res.choices.every((ch: { finish_reason: string }) => ch.finish_reason === "length"));
        assert.deepStrictEqual(res.usage.completion_tokens, 4);
      });

      await t.step("a client leaving mid-stream frees every choice's blocks", async () => {
        const controller = new AbortController();
        const res = await post(c, {
          model,
          prompt,
          max_tokens: 400,
          ignore_eos: true,
          n: 4,
          stream: true,
        }, { signal: controller.signal });
        const reader = res.body!.getReader();
        let seen = 0;
        while (seen < 20) {
          const { done } = await reader.read();
          if (done) break;
          seen++;
        }
        assert(engine.stats().running >= 2, "the choices were running");
        controller.abort();
        const deadline = performance.now() + 5000;
        while (engine.stats().kvBlocksUsed > 0 || engine.stats().running > 0) {
          assert(performance.now() < deadline, "blocks still held 5 s after the client left");
          await new Promise((r) => setTimeout(r, 10));
        }
      });

      await t.step("n out of range is a 400 naming it", async () => {
        await assertApiError(await post(c, { prompt: "x", n: 0 }), 400, "n");
        await assertApiError(await post(c, { prompt: "x", n: 200 }), 400, "n");
      });
    } finally {
      await served.close();
    }
  },
});
