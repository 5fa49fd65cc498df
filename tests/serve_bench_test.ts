/**
 * The serving benchmark's request shapes: deterministic per seed, ShareGPT-like means, long
 * tails, token ids inside the vocabulary, prefixes that are smaller workloads, and the
 * `--dump-workload` file that bench/serve_hf.py replays.
 *
 * @module
 */

import assert from "node:assert/strict";
import { requestShapes, workloadFile } from "../bench/serve_bench.ts";

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

Deno.test("serve bench: a smaller request count is a prefix of a larger one", () => {
  // serve_session.sh compares Denali and HF transformers on the first K requests of the main run's
  // workload; that is only the same workload if `--requests K` draws exactly those requests.
  assert.deepEqual(
    requestShapes(200, 0, 32000, 2048),
    requestShapes(1000, 0, 32000, 2048).slice(0, 200),
  );
});

Deno.test("serve bench: --dump-workload writes the requests as JSON without a server", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/workload.json`;
    const script = new URL("../bench/serve_bench.ts", import.meta.url).pathname;
    const args = ["run", "-A", script, "--dump-workload", file, "--requests", "20", "--seed", "3"];
    // No --url: nothing listens on the default port, so any fetch would fail the run.
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: [...args, "--vocab", "1000", "--max-len", "256"],
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(code, 0, new TextDecoder().decode(stderr));
    const written = JSON.parse(await Deno.readTextFile(file));
    assert.deepEqual(written, workloadFile(20, 3, 1000, 256));
    assert.equal(written.requests.length, 20);
    assert.deepEqual(written.requests, requestShapes(20, 3, 1000, 256));
    for (const r of written.requests) {
      assert.ok(r.prompt.length >= 4 && r.prompt.length <= 128 && r.outputTokens <= 128);
      assert.ok(r.prompt.every((id: number) => id >= 100 && id < 1000));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
