/**
 * `echo` with `logprobs` on /v1/completions (the OpenAI-surface issue's item 4), as vLLM returns
 * it: the prompt's tokens first, the first with null logprobs, each later one with its
 * log-probability given the tokens before it — checked against the engine's own forward pass of
 * each prefix — then the generated tokens, unchanged but for their offsets, which count from the
 * end of the echoed prompt. Streamed and not, the same.
 */

import assert from "node:assert/strict";
import { logSoftmax } from "../support/numeric.ts";
import { startTestServer } from "../support/server.ts";

interface Legacy {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[];
  text_offset: number[];
}

Deno.test({
  name: "server: echo with logprobs returns the prompt's logprobs first",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const served = await startTestServer({ kvBlocks: 128, blockSize: 16, maxModelLen: 512 });
    const { engine, model, post } = served;
    const tokenizer = engine.tokenizer!;
    try {
      const prompt = "Once upon a time, 世界 said hello";
      const ids = tokenizer.encode(prompt);
      const base = { model, prompt, max_tokens: 5, temperature: 0, ignore_eos: true, logprobs: 2 };
      const plain = await (await post("/v1/completions", base)).json();
      const echoed = await (await post("/v1/completions", { ...base, echo: true })).json();
      const choice = echoed.choices[0];
      assert.deepStrictEqual(choice.text, prompt + plain.choices[0].text);
      assert.deepStrictEqual(echoed.usage, plain.usage, "the echo is not a completion token");

      const lp = choice.logprobs as Legacy;
      const own = plain.choices[0].logprobs as Legacy;
      const P = ids.length;
      assert.deepStrictEqual(lp.tokens.length, P + own.tokens.length);
      assert.deepStrictEqual(lp.tokens.slice(0, P), ids.map((id) => tokenizer.decode([id])));
      assert.deepStrictEqual(lp.token_logprobs[0], null);
      assert.deepStrictEqual(lp.top_logprobs[0], null);
      for (let j = 1; j < P; j++) {
        const ref = logSoftmax(await engine.lastLogits(ids.slice(0, j)));
        const got = lp.token_logprobs[j]!;
        assert(Math.abs(got - ref[ids[j]]) < 1e-4, `prompt token ${j}: ${got} vs ${ref[ids[j]]}`);
        // The sampled (here: prompt) token plus 2 alternatives, by vLLM's dict rule.
        const keys = Object.keys(lp.top_logprobs[j]!);
        assert(keys.length >= 1 && keys.length <= 3, `${keys}`);
        const best = [...ref.keys()].sort((a, b) => ref[b] - ref[a])[0];
        const text = tokenizer.decode([best]);
        assert(text in lp.top_logprobs[j]!, `position ${j}: the top token ${text} is missing`);
      }
      // Prompt offsets index the prompt text; generated ones follow it.
      const chars = [...prompt];
      for (let j = 1; j < P; j++) {
        const t = lp.tokens[j];
        if (t.includes("\ufffd")) continue;
        assert.deepStrictEqual(
          chars.slice(lp.text_offset[j], lp.text_offset[j] + [...t].length).join(""),
          t,
        );
      }
      const shift = [...prompt].length;
      assert.deepStrictEqual(lp.text_offset.slice(P), own.text_offset.map((o) => o + shift));
      assert.deepStrictEqual(lp.tokens.slice(P), own.tokens);
      assert.deepStrictEqual(lp.token_logprobs.slice(P), own.token_logprobs);

      // Streamed: the echo event carries the prompt's logprobs; joined, the same as above.
      const res = await post("/v1/completions", { ...base, echo: true, stream: true });
      const joined: Legacy = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
      let text = "";
      for (const line of (await res.text()).split("\n")) {
        if (!line.startsWith("data: {")) continue;
        const c = JSON.parse(line.slice(6)).choices[0];
        text += c.text;
        const l = c.logprobs as Legacy;
        joined.tokens.push(...l.tokens);
        joined.token_logprobs.push(...l.token_logprobs);
        joined.top_logprobs.push(...l.top_logprobs);
        joined.text_offset.push(...l.text_offset);
      }
      assert.deepStrictEqual(text, choice.text);
      assert.deepStrictEqual(joined, lp);

      // Echo without logprobs, and of token ids (decoded, special tokens skipped).
      const bare = await (await post("/v1/completions", {
        ...base,
        logprobs: undefined,
        echo: true,
      })).json();
      assert.deepStrictEqual(bare.choices[0].text, choice.text);
      assert.deepStrictEqual(bare.choices[0].logprobs, null);
      const byIds = await (await post("/v1/completions", {
        ...base,
        prompt: ids,
        echo: true,
      })).json();
      assert.deepStrictEqual(
        byIds.choices[0].text,
        tokenizer.decode(ids, { skipSpecialTokens: true }) + plain.choices[0].text,
      );
      assert.deepStrictEqual(byIds.choices[0].logprobs.token_logprobs, lp.token_logprobs);
      assert.deepStrictEqual(engine.stats().kvBlocksUsed, 0);
    } finally {
      await served.close();
    }
  },
});
