/**
 * The step profile's bookkeeping: on the CPU engine its columns must add up to what the requests
 * asked for, counted here independently of how the scheduler chunked them; and the summary of a
 * hand-made profile must give the hand-computed busy fraction, batch and bounds.
 *
 * @module
 */

import assert from "node:assert/strict";
import { CpuBackend } from "../../backends/cpu.ts";
import { CONFIG_PRESETS } from "../../models/config.ts";
import { Engine } from "../../engine/engine.ts";
import { rooflineMs, stepCost, transformerCost } from "../../engine/roofline.ts";
import { formatSummary, type StepProfileData, summarizeSteps } from "../../engine/step_profile.ts";

const CONFIG = { ...CONFIG_PRESETS.tiny, maxPositionEmbeddings: 256 };

async function drain(stream: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of stream) { /* tokens */ }
}

Deno.test("step profile: the columns add up to the requests' prompts, outputs and contexts", async () => {
  const engine = await Engine.load({ config: CONFIG, randomWeights: true, seed: 3 }, {
    backend: new CpuBackend(),
    profile: true,
    kvBlocks: 64,
    maxRunning: 4,
    maxBatchedTokens: 16, // prompts of 10 and 20 tokens take several chunks
    maxModelLen: 128,
    log: () => {},
  });
  try {
    const requests = [
      { prompt: 10, output: 4 },
      { prompt: 20, output: 6 },
      { prompt: 5, output: 3 },
    ];
    let id = 7;
    await Promise.all(requests.map((r) =>
      drain(engine.generate(
        Array.from({ length: r.prompt }, () => (id = (id * 31 + 11) % 200) + 10),
        { maxTokens: r.output, temperature: 0, ignoreEos: true },
      ))
    ));
    const p = engine.stepProfile!;
    assert.equal(p.count, engine.stats().steps);
    const sum = (a: ArrayLike<number>) => {
      let s = 0;
      for (let i = 0; i < p.count; i++) s += a[i];
      return s;
    };
    let prompts = 0, outputs = 0, decodes = 0, pairs = 0;
    for (const r of requests) {
      prompts += r.prompt;
      outputs += r.output;
      decodes += r.output - 1; // the first token comes from the prefill
      // Causal pairs of the prompt, then each decode at position q sees q + 1 positions.
      pairs += (r.prompt * (r.prompt + 1)) / 2;
      for (let q = r.prompt; q < r.prompt + r.output - 1; q++) pairs += q + 1;
    }
    assert.equal(sum(p.prefillTokens), prompts);
    assert.equal(sum(p.decodeRows), decodes);
    assert.equal(sum(p.logitRows), outputs);
    assert.equal(sum(p.attentionPairs), pairs);
    for (let i = 0; i < p.count; i++) {
      assert.ok(p.decodeRows[i] + p.prefillTokens[i] <= 16, `step ${i} is over the budget`);
      assert.ok(Number.isFinite(p.deviceMs[i]) && p.deviceMs[i] >= 0);
      assert.ok(p.hostGapMs[i] >= 0 && p.deviceIdleMs[i] >= 0);
      assert.equal(p.graph[i], 0); // the CPU has no graphs
    }
    assert.equal(p.hostGapMs[0], 0);
    const summary = summarizeSteps(p, transformerCost(CONFIG), null);
    assert.equal(summary.steps, p.count);
    const kinds = summary.kinds;
    assert.equal(kinds.decode.steps + kinds.mixed.steps + kinds.prefill.steps, p.count);
    assert.ok(kinds.prefill.steps > 0 && kinds.decode.steps > 0);
    engine.resetStepProfile();
    assert.equal(engine.stepProfile!.count, 0);
  } finally {
    await engine.close();
  }
});

Deno.test("step profile: off unless asked for", async () => {
  const engine = await Engine.load({ config: CONFIG, randomWeights: true }, {
    backend: new CpuBackend(),
    profile: false,
    kvBlocks: 8,
    log: () => {},
  });
  try {
    assert.equal(engine.stepProfile, null);
  } finally {
    await engine.close();
  }
});

Deno.test("step profile: the summary of a hand-made profile", () => {
  // Three steps: a prefill of 100 tokens, a mixed step (2 decodes + 50 prefill tokens), and a
  // decode-only step of 130 rows.
  const data: StepProfileData = {
    count: 3,
    dropped: 0,
    decodeRows: Int32Array.from([0, 2, 130]),
    prefillRows: Int32Array.from([1, 1, 0]),
    prefillTokens: Int32Array.from([100, 50, 0]),
    logitRows: Int32Array.from([1, 3, 130]),
    kvTokensRead: Float64Array.from([100, 400, 13000]),
    attentionPairs: Float64Array.from([5050, 5000, 13000]),
    graph: Uint8Array.from([0, 0, 1]),
    deviceMs: Float64Array.from([4, 6, 10]),
    deviceIdleMs: Float64Array.from([0, 1, 1]),
    hostGapMs: Float64Array.from([0, 0.5, 0.25]),
  };
  const model = transformerCost(CONFIG_PRESETS.tiny);
  const ceilings = { readGbps: 0.001, peakTflops: 1e-6 };
  const s = summarizeSteps(data, model, ceilings);
  assert.equal(s.steps, 3);
  assert.equal(s.deviceMs, 20);
  assert.equal(s.idleMs, 2);
  assert.equal(s.busyFraction, 20 / 22);
  assert.equal(s.meanDecodeBatch, 66); // (2 + 130) / 2 steps with decodes
  assert.equal(s.meanHostGapMs, 0.25);
  assert.equal(s.graphSteps, 1);
  assert.deepEqual([s.kinds.prefill.steps, s.kinds.mixed.steps, s.kinds.decode.steps], [1, 1, 1]);
  const bound = (i: number) =>
    rooflineMs(
      stepCost(model, {
        tokens: data.decodeRows[i] + data.prefillTokens[i],
        logitRows: data.logitRows[i],
        kvTokensRead: data.kvTokensRead[i],
        attentionPairs: data.attentionPairs[i],
      }),
      ceilings,
    );
  assert.equal(s.kinds.mixed.boundMs, bound(1));
  // The phased bound of the decode step, by hand: the tiny preset's attention (K/V bytes, 4 FLOPs
  // per (query, key) pair and qDim per layer) and the rest, each at its own ceiling.
  const kvBytes = 13000 * model.kvBytesPerToken;
  const attnFlops = 4 * model.qDim * 13000 * model.numLayers;
  const all = stepCost(model, {
    tokens: 130,
    logitRows: 130,
    kvTokensRead: 13000,
    attentionPairs: 13000,
  });
  const phased = Math.max(kvBytes / 1e3, attnFlops / 1e3) +
    Math.max((all.bytes - kvBytes) / 1e3, (all.flops - attnFlops) / 1e3);
  assert.ok(Math.abs(s.kinds.decode.phasedMs - phased) < 1e-9 * phased);
  assert.ok(s.kinds.decode.phasedMs >= s.kinds.decode.boundMs);
  assert.equal(s.bigDecode.phasedMs, s.kinds.decode.phasedMs);
  const lines = formatSummary(s);
  const decodeLine = lines.find((l) => l.startsWith("PROFILE kind=decode "));
  assert.match(
    decodeLine ?? "",
    new RegExp(
      `of_bound=${(10 / bound(2)).toFixed(2)} phased_ms=${phased.toFixed(1)} ` +
        `of_phased=${(10 / phased).toFixed(2)} `,
    ),
  );
  assert.equal(s.bigDecode.steps, 1);
  assert.equal(s.bigDecode.boundMs, bound(2));
  assert.equal(s.bigDecode.deviceMs, 10);
  // Below 128 rows a decode step is not in the target's set.
  assert.equal(summarizeSteps(data, model, ceilings, 131).bigDecode.steps, 0);
  // Without ceilings the bounds are unknown, the rest is the same.
  assert.ok(Number.isNaN(summarizeSteps(data, model, null).kinds.decode.boundMs));
  assert.ok(Number.isNaN(summarizeSteps(data, model, null).kinds.decode.phasedMs));
});
