/**
 * The engine-only benchmark's arithmetic and its two ways of sending requests, on the CPU.
 *
 * @module
 */

import assert from "node:assert/strict";
import { CpuBackend } from "../backends/cpu.ts";
import { CONFIG_PRESETS } from "../models/config.ts";
import { Engine } from "../engine/engine.ts";
import { drive, percentile, runResult } from "../bench/engine_bench.ts";
import { requestShapes } from "../bench/serve_bench.ts";

Deno.test("engine bench: throughput and latency figures, computed by hand", () => {
  const r = runResult("x", "offline", [
    { firstTokenMs: 10, gapsMs: [1, 3], completionTokens: 3, promptTokens: 7 },
    { firstTokenMs: 30, gapsMs: [2], completionTokens: 2, promptTokens: 5 },
  ], 0.5);
  assert.equal(r.completionTokPerS, 10);
  assert.equal(r.totalTokPerS, 34);
  assert.equal(r.ttftAvgMs, 20);
  assert.equal(r.itlP50Ms, 2); // gaps 1, 2, 3
  assert.equal(r.itlP99Ms, 3);
  assert.equal(percentile([], 0.5), NaN);
});

Deno.test("engine bench: offline and concurrent sending both serve every request in full", async () => {
  const engine = await Engine.load(
    { config: { ...CONFIG_PRESETS.tiny, maxPositionEmbeddings: 256 }, randomWeights: true },
    { backend: new CpuBackend(), kvBlocks: 64, maxRunning: 4, maxModelLen: 64, log: () => {} },
  );
  try {
    const shapes = requestShapes(6, 3, CONFIG_PRESETS.tiny.vocabSize, 48);
    const wanted = shapes.map((s) => s.outputTokens).sort();
    for (const concurrency of [2, Infinity]) {
      const timings = await drive(engine, shapes, concurrency);
      assert.deepEqual(timings.map((t) => t.completionTokens).sort(), wanted);
      for (const t of timings) assert.equal(t.gapsMs.length, t.completionTokens - 1);
    }
  } finally {
    await engine.close();
  }
});
