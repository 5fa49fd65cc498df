/**
 * bench/op_timer.ts on the CPU backend: the operators it records per decode step are the ones the
 * Llama forward pass makes (counted from the config, not from a recording), whole steps only,
 * and the per-operator times sum to no more than the steps' spans.
 */

import assert from "node:assert/strict";
import { CpuBackend } from "../backends/cpu.ts";
import { CONFIG_PRESETS, type ModelConfig } from "../models/config.ts";
import { Engine } from "../engine/engine.ts";
import { loadOps } from "../ops/load.ts";
import { formatOpReport, opName, OpTimer, summarizeOps } from "../bench/op_timer.ts";

/** A tiny random Llama on the CPU backend whose operators go through an OpTimer. */
async function timedTinyEngine(): Promise<{ config: ModelConfig; timer: OpTimer; engine: Engine }> {
  const config = CONFIG_PRESETS.tiny;
  const backend = new CpuBackend();
  const timer = new OpTimer(backend, await loadOps(backend), 4096);
  const engine = await Engine.load({ config, randomWeights: true, seed: 3 }, {
    backend,
    ops: timer.ops,
    graphs: false,
    maxRunning: 2,
    maxModelLen: 64,
    maxBatchedTokens: 64,
    log: () => {},
  });
  return { config, timer, engine };
}

Deno.test("op timer: per-step operator counts of a tiny Llama's decode steps", async () => {
  const { config, timer, engine } = await timedTinyEngine();
  try {
    let started = 0;
    await Promise.all([[5, 6, 7], [8, 9, 10, 11]].map(async (prompt) => {
      let count = 0;
      for await (
        const _ of engine.generate(prompt, { maxTokens: 8, temperature: 0, ignoreEos: true })
      ) {
        if (++count === 2 && ++started === 2) timer.arm(3);
      }
    }));
  } finally {
    await engine.close();
  }
  const report = timer.report();
  assert.equal(report.steps, 3, "the steps arm asked for, whole");
  const perStep = (name: string) =>
    (report.ops.find((op) => op.name === name)?.calls ?? 0) / report.steps;
  const { hiddenSize: h, intermediateSize: inter, numHiddenLayers: layers } = config;
  const q = config.numAttentionHeads * config.headDim,
    kv = config.numKeyValueHeads * config.headDim;
  // Per layer qkv, o, gate/up and down, then the lm head; shapes that coincide add up.
  const linears = new Map<string, number>();
  for (
    const [n, k, calls] of [[q + 2 * kv, h, layers], [h, q, layers], [2 * inter, h, layers], [
      h,
      inter,
      layers,
    ], [config.vocabSize, h, 1]]
  ) {
    linears.set(`linear ${n}x${k}`, (linears.get(`linear ${n}x${k}`) ?? 0) + calls);
  }
  for (const [name, calls] of linears) assert.equal(perStep(name), calls, name);
  assert.equal(perStep("rmsNorm"), 2 * layers + 1);
  assert.equal(perStep("decodeAttention"), layers);
  assert.equal(perStep("embedding"), 1);
  assert.equal(perStep("prefillAttention"), 0, "a prefill step was recorded");
  // The fused operators decline on the CPU (launching nothing): not operators of the step.
  const declined = report.ops.filter((op) => /^linear(SiluMul|RmsNorm) /.test(op.name));
  assert.deepEqual(declined, []);
  assert.ok(report.opMs <= report.spanMs + 1e-6, `${report.opMs} ms of ops in ${report.spanMs}`);
  const lines = formatOpReport(report, "tiny");
  assert.match(
    lines.at(-1)!,
    /^OPS tiny steps=\d+ ops_us_per_step=[\d.]+ span_us_per_step=[\d.]+$/,
  );
  timer.reset();
  assert.equal(timer.report().steps, 0);
  timer.destroy();
});

Deno.test("op timer: a prefill pass's gather of its sampled rows is not a pass", async () => {
  const { config, timer, engine } = await timedTinyEngine();
  // Armed before any pass: the first is the two prompts' prefill (7 rows, 2 sampled, so the
  // final norm's rows are gathered with a second embedding call), the second a decode.
  timer.arm(2);
  try {
    await Promise.all([[5, 6, 7], [8, 9, 10, 11]].map(async (prompt) => {
      for await (
        const _ of engine.generate(prompt, { maxTokens: 3, temperature: 0, ignoreEos: true })
      );
    }));
  } finally {
    await engine.close();
  }
  const report = timer.report();
  const calls = (name: string) => report.ops.find((op) => op.name === name)?.calls ?? 0;
  const layers = config.numHiddenLayers;
  assert.equal(report.steps, 2);
  assert.equal(calls("embedding"), 3, "two in the prefill pass, one in the decode pass");
  assert.equal(calls("rmsNorm"), 2 * (2 * layers + 1));
  assert.equal(calls("prefillAttention"), layers);
  assert.equal(calls("decodeAttention"), layers);
  timer.destroy();
});

Deno.test("op timer: sums intervals per name, largest first; linear by weight shape", () => {
  assert.equal(opName("linear", [null, null, null, 1, 6144, 4096]), "linear 6144x4096");
  assert.equal(
    opName("linearSiluMul", [null, null, null, 1, 14336, 4096]),
    "linearSiluMul 14336x4096",
  );
  assert.equal(
    opName("linearRmsNorm", [null, null, null, null, null, null, 1, 6144, 4096, 1e-5]),
    "linearRmsNorm 6144x4096",
  );
  assert.equal(opName("rmsNorm", [1, 2, 3]), "rmsNorm");
  const report = summarizeOps(["a", "b", "a", "c"], [1, 5, 2, 0.5], 2, 10);
  assert.deepEqual(report.ops, [
    { name: "b", calls: 1, ms: 5 },
    { name: "a", calls: 2, ms: 3 },
    { name: "c", calls: 1, ms: 0.5 },
  ]);
  assert.equal(report.opMs, 8.5);
  const lines = formatOpReport(report, "x");
  assert.equal(
    lines[1],
    'OPS x op="a" calls_per_step=1.0 us_per_step=1500.0 us_per_call=1500.00 share=0.353',
  );
  assert.equal(lines[3], "OPS x steps=2 ops_us_per_step=4250.0 span_us_per_step=5000.0");
});
