/**
 * The forward pass's use of `linearRmsNorm`, on the CPU: the CPU ops decline it, so this wraps
 * them with a `linearRmsNorm` that accepts every call and computes it as its contract says (the
 * residual copied to residualOut and `rmsNorm` there into a scratch row, then `linear`). A model
 * that passed it the wrong input, residual, norm weight or product, or lost track of which buffer
 * holds the residual after the swaps, would then differ from the plain CPU run; it must match it
 * bit for bit, on every family's fixture checkpoint, in last-position logits and in greedy
 * decoding (steps of one row, the GEMVs' case on a GPU).
 *
 * @module
 */

import assert from "node:assert/strict";
import type { DeviceBuffer } from "../../backends/backend.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import { Engine } from "../../engine/engine.ts";
import { cpuOps } from "../../ops/cpu/index.ts";
import type { ModelOps } from "../../ops/ops.ts";
import { modelDir } from "../support/parity.ts";

/** The CPU ops with a `linearRmsNorm` that always runs (composed); `calls` counts its calls. */
function composedOps(backend: CpuBackend): { ops: ModelOps; calls: () => number } {
  const base = cpuOps();
  let normed: DeviceBuffer | null = null, calls = 0;
  const ops: ModelOps = {
    ...base,
    linearRmsNorm(out, x, res, resOut, gamma, w, m, n, k, eps, stream) {
      assert.equal(base.linearRmsNorm(out, x, res, resOut, gamma, w, m, n, k, eps, stream), false);
      if (normed === null || normed.bytes < 2 * m * k) normed = backend.alloc(2 * m * k);
      // The contract: the sum goes to resOut, the residual stays as it was.
      if (res !== null) backend.copyDevice(resOut!.slice(0, 2 * m * k), res.slice(0, 2 * m * k));
      base.rmsNorm(normed, x, gamma, resOut, m, k, eps, stream);
      base.linear(out, normed, w, m, n, k, stream);
      calls++;
      return true;
    },
  };
  return { ops, calls: () => calls };
}

const PROMPTS = [[1, 5, 9, 2, 7], [3, 3, 8]];

for (
  const name of [
    "llama3-gqa",
    "llama3-tied",
    "llama3-gqa-fp8",
    "qwen2-bias",
    "qwen3-qknorm",
    "mistral",
  ]
) {
  Deno.test({
    name:
      `norm prologue wiring (${name}): the forward pass with linearRmsNorm taken equals it declined`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const run = async (fused: boolean) => {
        const backend = new CpuBackend();
        const composed = composedOps(backend);
        const engine = await Engine.load(modelDir(name), {
          backend,
          ops: fused ? composed.ops : cpuOps(),
          log: () => {},
        });
        try {
          const logits: Float32Array[] = [];
          const tokens: number[][] = [];
          for (const prompt of PROMPTS) {
            logits.push(await engine.lastLogits(prompt));
            const ids: number[] = [];
            for await (
              const chunk of engine.generate(prompt, {
                temperature: 0,
                maxTokens: 6,
                ignoreEos: true,
              })
            ) ids.push(chunk.tokenId);
            tokens.push(ids);
          }
          return { logits, tokens, calls: composed.calls() };
        } finally {
          await engine.close();
        }
      };
      const plain = await run(false), fused = await run(true);
      assert.equal(plain.calls, 0);
      assert.ok(fused.calls > 0, "the fused path was taken");
      assert.deepEqual(fused.tokens, plain.tokens, "greedy tokens");
      for (const [i, l] of fused.logits.entries()) {
        const differ = l.findIndex((v, j) => !Object.is(v, plain.logits[i][j]));
        assert.equal(differ, -1, `prompt ${i}: first differing logit ${differ}`);
      }
    },
  });
}
