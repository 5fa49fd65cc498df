/**
 * The OpenAI-surface engine paths on a real NVIDIA GPU (`deno task test:gpu`), with the tiny
 * checkpoint (its tokenizer, random weights):
 * - prompt logprobs (what `echo` with `logprobs` returns), computed by forced one-token
 *   sequences over the prompt's cached blocks, against the GPU's own full forward pass of each
 *   prefix (`lastLogits`), log_softmax redone in float64;
 * - `n` = 4 with a seed against four single requests with seed + i.
 *
 * Tolerances: both sides run in bf16 on the same device, but with different batch shapes (a
 * one-block tail against a whole prefill), so logits may differ by a few bf16 ulps: logprobs
 * within 0.05. A sampled choice follows the same logits and seed as its single request, so it
 * may only part from it where two tokens' probabilities sit within that rounding: at most one of
 * the four choices may differ.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Engine, type GenerationChunk } from "../../engine/engine.ts";
import { logSoftmax } from "../support/numeric.ts";

const ignore = !Deno.env.get("DENALI_GPU_TESTS");
const TINY = new URL("../../checkpoints/tiny-llama", import.meta.url).pathname;

Deno.test({
  name: "gpu: prompt logprobs match the forward pass; n = 4 with a seed matches singles",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const engine = await Engine.load(TINY, { backend: "cuda", log: () => {}, seed: 1 });
    try {
      const ids = engine.tokenizer!.encode("Once upon a time, in a land far away, 世界 waited");
      const chunks = await Array.fromAsync(
        engine.generate(ids, { temperature: 0, maxTokens: 4, promptLogprobs: 5 }),
      );
      const prompt = chunks[0].promptLogprobs!;
      assert.deepEqual(prompt.map((p) => p.tokenId), ids);
      for (let j = 1; j < ids.length; j++) {
        const ref = logSoftmax(await engine.lastLogits(ids.slice(0, j)));
        const got = prompt[j].logprobs!;
        assert(Math.abs(got.logprob - ref[ids[j]]) < 0.05, `position ${j}`);
        for (const alt of got.top) {
          assert(Math.abs(alt.logprob - ref[alt.tokenId]) < 0.05, `position ${j} alternative`);
        }
      }

      const params = { temperature: 1, maxTokens: 16, ignoreEos: true };
      const tokens = (cs: GenerationChunk[], index: number) =>
        cs.filter((c) => c.index === index && c.tokenId >= 0).map((c) => c.tokenId);
      const together = await Array.fromAsync(
        engine.generateChoices(ids, { ...params, seed: 77 }, 4),
      );
      let differ = 0;
      for (let i = 0; i < 4; i++) {
        const single = await Array.fromAsync(engine.generate(ids, { ...params, seed: 77 + i }));
        if (tokens(together, i).join() !== tokens(single, 0).join()) differ++;
      }
      assert(differ <= 1, `${differ} of 4 choices differ from their single requests`);
      assert.equal(engine.stats().kvBlocksUsed, 0);
    } finally {
      await engine.close();
    }
  },
});
