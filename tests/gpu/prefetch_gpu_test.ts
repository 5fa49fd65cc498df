/**
 * The L2 weight prefetch on a real NVIDIA GPU (`deno task test:gpu`, or DENALI_GPU_TESTS=1):
 * - `prefetchWeight` runs (true) on an sm_90 device and leaves a GEMV after it bit for bit what
 *   it is without;
 * - an engine with every prefetch on (DENALI_L2_PREFETCH=all, a cap that cuts the projections)
 *   decodes a batch, from CUDA graphs, to the same tokens and the same logprobs, bit for bit, as
 *   one with them off. Each prefetch kernel sits between a GEMV and the kernel that reads the
 *   GEMV's output, and holds the stream's order only by waiting for that GEMV before it exits:
 *   if it did not, the reader could start on a half-written output and the bits would differ.
 *
 * @module
 */

import assert from "node:assert/strict";
import { openCuda } from "../../backends/cuda.ts";
import { Engine, type EngineOptions } from "../../engine/engine.ts";
import type { ModelConfig } from "../../models/config.ts";
import { configPreset } from "../../models/config.ts";
import { loadGpuOps } from "../../ops/gpu/index.ts";
import { loadPrefetchOps } from "../../ops/gpu/prefetch.ts";
import { withEnvAsync } from "../support/env.ts";

const ignore = !Deno.env.get("DENALI_GPU_TESTS");

/** Llama-3-8B's widths over two layers and a short vocabulary: the projections are 32-224 MiB. */
const CONFIG: ModelConfig = {
  ...configPreset("llama3-8b"),
  numHiddenLayers: 2,
  vocabSize: 32000,
};

Deno.test({
  name: "gpu prefetch: prefetchWeight runs on sm_90 and changes no GEMV bit",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const gpu = openCuda();
  try {
    const [major] = gpu.info.computeCapability;
    const ops = await loadGpuOps(gpu);
    const prefetch = await loadPrefetchOps(gpu, { mode: "all", maxBytes: 8 * 2 ** 20 });
    const n = 4096, k = 4096, s = gpu.createStream();
    const w = gpu.alloc(2 * n * k), x = gpu.alloc(2 * k);
    const out = [gpu.alloc(2 * n), gpu.alloc(2 * n)];
    try {
      ops.fillRandom(w, n * k, 3, 0.02, s);
      ops.fillRandom(x, k, 4, 1, s);
      ops.linear(out[0], x, w, 1, n, k, s);
      assert.equal(prefetch.prefetchWeight(w, 1, "attention", s), major >= 9);
      ops.linear(out[1], x, w, 1, n, k, s);
      s.synchronize();
      const [a, b] = out.map((o) => {
        const host = new Uint16Array(n);
        gpu.copyToHost(host, o);
        return host;
      });
      assert.deepEqual(b, a);
    } finally {
      for (const b of [w, x, ...out]) gpu.free(b);
    }
  } finally {
    gpu.close();
  }
});

/** Greedy tokens and their logprobs for four prompts decoded together. */
async function decodeBatch(
  options: EngineOptions,
): Promise<{ tokens: number[][]; logprobs: number[][] }> {
  const engine = await Engine.load({ config: CONFIG, randomWeights: true, seed: 7 }, options);
  try {
    const prompts = [[1, 5, 9], [1, 300, 4000, 77, 12], [1, 2], [1, 31000, 8]];
    const runs = await Promise.all(prompts.map(async (ids) => {
      const tokens: number[] = [], logprobs: number[] = [];
      for await (
        const chunk of engine.generate(ids, {
          temperature: 0,
          ignoreEos: true,
          maxTokens: 24,
          logprobs: 0,
        })
      ) {
        if (chunk.tokenId < 0) continue;
        tokens.push(chunk.tokenId);
        for (const entry of chunk.logprobs ?? []) logprobs.push(entry.logprob);
      }
      return { tokens, logprobs };
    }));
    assert.ok(engine.stats().graphReplays > 10, `graph replays: ${engine.stats().graphReplays}`);
    return { tokens: runs.map((r) => r.tokens), logprobs: runs.map((r) => r.logprobs) };
  } finally {
    await engine.close();
  }
}

Deno.test({
  name: "gpu prefetch: a batch decodes to the same bits with every prefetch on as with none",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const options: EngineOptions = {
    backend: "cuda",
    log: () => {},
    kvBlocks: 256,
    maxModelLen: 512,
  };
  const off = await withEnvAsync(
    { DENALI_L2_PREFETCH: "off" },
    () => decodeBatch(options),
  );
  const on = await withEnvAsync(
    { DENALI_L2_PREFETCH: "all", DENALI_L2_PREFETCH_MB: "16" },
    () => decodeBatch(options),
  );
  assert.equal(off.tokens.flat().length, 4 * 24);
  assert.equal(off.logprobs.flat().length, 4 * 24);
  assert.deepEqual(on.tokens, off.tokens);
  assert.deepEqual(on.logprobs, off.logprobs);
});
