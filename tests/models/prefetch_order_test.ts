/**
 * Where each family's forward pass asks for `prefetchWeight`, recorded on the CPU ops: every
 * projection after a layer's first names its weight in a prefetch right after the projection
 * before it, with the rows it will run and the window between ("attention" exactly where
 * attention runs in between), and nothing else is prefetched. The prefetches' effect on time is
 * measured on a GPU; this pins what they ask for.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Architecture, ModelConfig } from "../../models/config.ts";
import { cpuOps } from "../../ops/cpu/index.ts";
import type { LinearWeight, ModelOps, PrefetchWindow } from "../../ops/ops.ts";
import { cpuPrefill } from "../support/cpu_prefill.ts";

const BASE = {
  hiddenSize: 64,
  intermediateSize: 96,
  numHiddenLayers: 3,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  headDim: 16,
  rmsNormEps: 1e-6,
  ropeTheta: 10000,
  ropeScaling: null,
  maxPositionEmbeddings: 256,
  vocabSize: 96,
  tieWordEmbeddings: false,
  dtype: "bfloat16",
  bosTokenId: 1,
  eosTokenIds: [2],
} as const;

type Call =
  | { op: "linear"; weight: LinearWeight; m: number }
  | { op: "prefetch"; weight: LinearWeight; tokens: number; window: PrefetchWindow }
  | { op: "attention" };

/** The CPU ops, recording projections, prefetches and attention calls in order. */
function recording(calls: Call[]): ModelOps {
  const ops = cpuOps();
  return {
    ...ops,
    linear(out, x, weight, m, n, k, stream) {
      calls.push({ op: "linear", weight, m });
      ops.linear(out, x, weight, m, n, k, stream);
    },
    prefetchWeight(weight, tokens, window, stream) {
      calls.push({ op: "prefetch", weight, tokens, window });
      return ops.prefetchWeight(weight, tokens, window, stream);
    },
    decodeAttention(args, stream) {
      calls.push({ op: "attention" });
      ops.decodeAttention(args, stream);
    },
    prefillAttention(args, stream) {
      calls.push({ op: "attention" });
      ops.prefillAttention(args, stream);
    },
  };
}

for (
  const architecture of [
    "LlamaForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "MistralForCausalLM",
  ] as Architecture[]
) {
  Deno.test(`prefetch order: ${architecture} names each next projection's weight`, () => {
    const config: ModelConfig = { ...BASE, architecture };
    const calls: Call[] = [];
    const ids = [1, 17, 42, 5, 93];
    cpuPrefill(config, ids, recording(calls), () => null);
    const linears = calls.filter((c) => c.op === "linear");
    // q/k/v, o, gate/up, down a layer, then the lm head (one sampled row).
    assert.equal(linears.length, 4 * config.numHiddenLayers + 1);
    assert.equal(linears[linears.length - 1].m, 1, "the lm head runs the sampled row");
    let prefetches = 0;
    calls.forEach((call, i) => {
      if (call.op !== "prefetch") return;
      prefetches++;
      const next = calls.slice(i + 1).findIndex((c) => c.op === "linear");
      assert.ok(next >= 0, `prefetch ${prefetches} has a projection after it`);
      const reader = calls[i + 1 + next] as Extract<Call, { op: "linear" }>;
      assert.equal(reader.weight, call.weight, `prefetch ${prefetches} names the next weight`);
      assert.equal(call.tokens, reader.m, `prefetch ${prefetches}: the reader's rows`);
      const between = calls.slice(i + 1, i + 1 + next);
      const window = between.some((c) => c.op === "attention") ? "attention" : "elementwise";
      assert.equal(call.window, window, `prefetch ${prefetches}: its window`);
      const before = calls.slice(0, i).findLast((c) => c.op !== "attention");
      assert.equal(before?.op, "linear", `prefetch ${prefetches} follows a projection`);
    });
    // Every projection but the first one's.
    assert.equal(prefetches, linears.length - 1);
  });
}
