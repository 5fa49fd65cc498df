/**
 * Parity with HF transformers on the CUDA backend (`deno task test:gpu`): the same checks as
 * tests/engine/parity_test.ts — HF's last-position logits to bf16 accuracy, its greedy
 * continuations token for token up to a proven near tie, batched equal to alone, and the same
 * under chunked prefill and KV pressure — with the GPU kernels, cuBLASLt and decode graphs in
 * the path. The near-tie width is measured on this device's own logits (tests/support/parity.ts).
 * The Qwen2, Qwen3 and Mistral fixtures run beside the Llama ones once generated. Also: a
 * head_dim the GPU kernels lack fails at load.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Engine } from "../../engine/engine.ts";
import { configPreset } from "../../models/config.ts";
import { registerParityTests } from "../support/parity.ts";

registerParityTests("cuda", !Deno.env.get("DENALI_GPU_TESTS"));

Deno.test({
  name: "gpu: a head_dim the attention kernels lack fails at load, saying which they take",
  ignore: !Deno.env.get("DENALI_GPU_TESTS"),
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const config = { ...configPreset("tiny"), headDim: 96, numAttentionHeads: 4 };
  await assert.rejects(
    Engine.load({ config, randomWeights: true }, { backend: "cuda", log: () => {} }),
    (e: Error) => /head_dim 64 and 128/.test(e.message) && /96/.test(e.message),
  );
});
