/**
 * The serving benchmark's request shapes: deterministic per seed, ShareGPT-like means, long
 * tails, and token ids inside the vocabulary.
 *
 * @module
 */

import assert from "node:assert/strict";
import { requestShapes } from "../bench/serve_bench.ts";

Deno.test("serve bench: request shapes are deterministic and ShareGPT-shaped", () => {
  const shapes = requestShapes(5000, 0, 32000, 2048);
  assert.deepEqual(requestShapes(50, 7, 32000, 2048), requestShapes(50, 7, 32000, 2048));
  assert.notDeepEqual(requestShapes(50, 7, 32000, 2048), requestShapes(50, 8, 32000, 2048));
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const prompts = shapes.map((s) => s.prompt.length);
  const outputs = shapes.map((s) => s.outputTokens);
  // ShareGPT: about 227 prompt and 200 completion tokens on average.
  assert.ok(Math.abs(mean(prompts) - 227) < 227 * 0.05, `prompt mean ${mean(prompts)}`);
  assert.ok(Math.abs(mean(outputs) - 200) < 200 * 0.05, `output mean ${mean(outputs)}`);
  // Long-tailed: the median sits well below the mean, and some requests are long.
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  assert.ok(median(prompts) < 0.8 * mean(prompts));
  assert.ok(Math.max(...prompts) >= 800);
  for (const s of shapes) {
    assert.ok(s.prompt.length >= 4 && s.prompt.length <= 1024);
    assert.ok(s.prompt.every((id) => Number.isInteger(id) && id >= 100 && id < 32000));
  }
});
