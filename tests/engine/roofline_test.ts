/**
 * The roofline bound against hand-computed cases, and the 8B shape against the config's own
 * parameter count.
 *
 * @module
 */

import assert from "node:assert/strict";
import { llama3_8b, parameterCount } from "../../models/config.ts";
import {
  linearWeightBytes,
  loadedModelCost,
  phasedBoundMs,
  prefillChunkWork,
  rooflineMs,
  stepCost,
  transformerCost,
} from "../../engine/roofline.ts";
import { kvElementBytes } from "../../ops/ops.ts";

// hidden 4, intermediate 8, 2 layers, 2 heads over 1 KV head of dim 2, vocab 10.
const TINY = {
  hiddenSize: 4,
  intermediateSize: 8,
  numHiddenLayers: 2,
  numAttentionHeads: 2,
  numKeyValueHeads: 1,
  headDim: 2,
  vocabSize: 10,
};

Deno.test("roofline: a tiny model's bytes and FLOPs, counted by hand", () => {
  const model = transformerCost(TINY);
  // Per layer: q/k/v (4 + 2 + 2) × 4 = 32, o 4 × 4 = 16, gate/up/down 3 × 4 × 8 = 96.
  assert.equal(model.linearParams, 2 * 144);
  assert.equal(model.normParams, 5 * 4);
  assert.equal(model.lmHeadParams, 40);
  // K and V, 2 layers, 1 head of 2 bf16 values: 2 × 2 × 2 × 2 bytes.
  assert.equal(model.kvBytesPerToken, 16);
  const work = { tokens: 3, logitRows: 2, kvTokensRead: 10, attentionPairs: 12 };
  const cost = stepCost(model, work);
  // weights 576 + norms 40 + 3 embedding rows 24 + lm head 80 + K/V 160.
  assert.equal(cost.bytes, 880);
  // linear 2·3·288 + lm head 2·2·40 + attention 4·qDim 4·12 pairs·2 layers.
  assert.equal(cost.flops, 1728 + 160 + 384);
  // 880 bytes at 880 bytes/ms is 1 ms; 2272 FLOPs at 1136 FLOP/ms is 2 ms: compute-bound.
  assert.ok(Math.abs(rooflineMs(cost, { readGbps: 880e-6, peakTflops: 1136e-9 }) - 2) < 1e-9);
  // Ten times the peak: 0.2 ms of compute, so the 1 ms of reading bounds it.
  assert.ok(Math.abs(rooflineMs(cost, { readGbps: 880e-6, peakTflops: 11360e-9 }) - 1) < 1e-9);
  // Phased (attention, then the rest): 160 of the bytes and 384 of the FLOPs are attention's. At
  // 880 bytes/ms and 2272 FLOP/ms the whole step is bound at 1 ms both ways, but run one after
  // the other attention reads for 160/880 ms and the rest computes for 1888/2272 ms.
  assert.equal(cost.attentionBytes, 160);
  assert.equal(cost.attentionFlops, 384);
  const ceilings = { readGbps: 880e-6, peakTflops: 2272e-9 };
  assert.ok(Math.abs(rooflineMs(cost, ceilings) - 1) < 1e-9);
  assert.ok(Math.abs(phasedBoundMs(cost, ceilings) - (160 / 880 + 1888 / 2272)) < 1e-9);
  // Where both phases are bound by reading, the phases add up to the whole: no overlap to win.
  assert.ok(
    Math.abs(phasedBoundMs(cost, { readGbps: 880e-6, peakTflops: 11360e-9 }) - 1) < 1e-9,
  );
  // A prefill step short of every prompt's end reads no lm head.
  const noLogits = stepCost(model, { ...work, logitRows: 0 });
  assert.equal(noLogits.bytes, 800);
  assert.equal(noLogits.flops, 1728 + 384);
});

Deno.test("roofline: an FP8 KV cache reads one byte a cached value", () => {
  const fp8 = transformerCost(TINY, 2, kvElementBytes("fp8"));
  // 2 layers × K and V × 1 head × 2 values × 1 byte.
  assert.equal(fp8.kvBytesPerToken, 8);
  assert.equal(transformerCost(TINY, 2, kvElementBytes("bf16")).kvBytesPerToken, 16);
  // The tiny step above reads 160 bytes of K/V in bf16, 80 in FP8; the rest is unchanged.
  const work = { tokens: 3, logitRows: 2, kvTokensRead: 10, attentionPairs: 12 };
  assert.equal(stepCost(fp8, work).bytes, 880 - 80);
});

Deno.test("roofline: Llama-3-8B's counts agree with the config's parameter count", () => {
  const model = transformerCost(llama3_8b);
  assert.equal(model.linearParams, 6_979_321_856);
  // The config counts the input embeddings and the (untied) lm head as two tables.
  assert.equal(
    model.linearParams + model.normParams + 2 * model.lmHeadParams,
    parameterCount(llama3_8b),
  );
  // 32 layers × K and V × 8 heads × 128 × 2 bytes.
  assert.equal(model.kvBytesPerToken, 131_072);
  // Batch-1 decode at context 1000 on 4.8 TB/s: about 15 GB of weights and 131 MB of K/V.
  const cost = stepCost(model, {
    tokens: 1,
    logitRows: 1,
    kvTokensRead: 1000,
    attentionPairs: 1000,
  });
  const expected = (2 * (6_979_321_856 + 65 * 4096 + 128_256 * 4096) + 8192 + 131_072_000) /
    4.8e9;
  assert.ok(Math.abs(rooflineMs(cost, { readGbps: 4800, peakTflops: 800 }) - expected) < 1e-9);
});

Deno.test("roofline: a prefill chunk's causal pairs and the positions it reads", () => {
  // Tokens 5, 6, 7 see 6, 7 and 8 positions.
  assert.deepEqual(prefillChunkWork(5, 3), { pairs: 21, kvTokensRead: 8 });
  assert.deepEqual(prefillChunkWork(0, 1), { pairs: 1, kvTokensRead: 1 });
  // Chunking a prompt never changes its total pairs: 0..9 in one chunk or as 4 + 6.
  const whole = prefillChunkWork(0, 10).pairs;
  assert.equal(prefillChunkWork(0, 4).pairs + prefillChunkWork(4, 6).pairs, whole);
  assert.equal(whole, 55);
});

Deno.test("roofline: quantized linear weights shrink only the decoder's linear bytes", () => {
  assert.deepEqual(
    [linearWeightBytes("bf16"), linearWeightBytes("fp8"), linearWeightBytes("awq")],
    [2, 1, 0.5 + 5 / 128],
  );
  assert.equal(linearWeightBytes("awq", 64), 0.5 + 5 / 64);
  const work = { tokens: 3, logitRows: 2, kvTokensRead: 10, attentionPairs: 12 };
  // The tiny step reads 576 bytes of bf16 linear weights; at 1 byte, 288. Norms (40), the three
  // embedding rows (24), the lm head (80) and K/V (160) stay as they were.
  const fp8 = stepCost(transformerCost(TINY, linearWeightBytes("fp8")), work);
  assert.equal(fp8.bytes, 288 + 40 + 24 + 80 + 160);
  assert.equal(fp8.flops, stepCost(transformerCost(TINY), work).flops);
});

Deno.test("roofline: a loaded engine's cost follows its weight format and KV dtype", () => {
  assert.deepEqual(
    loadedModelCost(TINY, { weightFormat: "awq", kvCacheDtype: "fp8" }),
    transformerCost(TINY, 0.5 + 5 / 128, 1),
  );
  assert.deepEqual(
    loadedModelCost(TINY, { weightFormat: "bf16", kvCacheDtype: "bf16" }),
    transformerCost(TINY),
  );
});
