/**
 * Decode speed on the GPU machine: ms per decode step of a Llama model with seeded random
 * weights (default the Llama-3-8B config, bf16) at several batch sizes with a 512-token context,
 * through the real Engine (paged KV cache, scheduler, decode graphs). Also prints the bandwidth
 * floor: weight bytes over the device-to-device copy bandwidth measured in the same run.
 * bench/decode_hf.py prints the HF transformers baselines in the same `DECODE` line format.
 *
 * Usage: deno run -A bench/decode_bench.ts [--preset llama3-8b] [--batches 1,8,64,256]
 *        [--context 512] [--steps 64]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { openBackend } from "../backends/select.ts";
import { configPreset, parameterCount } from "../models/config.ts";
import { Engine } from "../engine/engine.ts";
import { copyBandwidthGbps } from "./kernels/measure.ts";
import { helpRequested } from "../tools/cli.ts";

const USAGE = `Usage: deno run -A bench/decode_bench.ts [options]

Decode ms/step of a random-weight Llama through the Engine, beside the bandwidth floor (GPU).
  --preset NAME     model shape (default llama3-8b)
  --batches LIST    batch sizes (default 1,8,64,256)
  --context N       context length (default 512)
  --steps N         decode steps per batch (default 64)
  -h, --help        show this help`;

/** Runs the benchmark; only when this file is the main module (deno bench must not run it). */
async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      preset: { type: "string", default: "llama3-8b" },
      batches: { type: "string", default: "1,8,64,256" },
      context: { type: "string", default: "512" },
      steps: { type: "string", default: "64" },
    },
  });
  const config = configPreset(values.preset!);
  const batches = values.batches!.split(",").map(Number);
  const context = Number(values.context);
  const steps = Number(values.steps);

  const backend = openBackend("auto");
  const stream = backend.createStream();
  const copyGbps = copyBandwidthGbps(backend, stream);
  const weightBytes = 2 * parameterCount(config);
  const floorMs = weightBytes / (copyGbps * 1e6);
  console.log(
    `device: ${backend.info.name}; model ${values.preset}, ${(weightBytes / 1e9).toFixed(2)} GB`,
  );
  console.log(
    `DECODE floor batch=1 ms_per_step=${floorMs.toFixed(3)} copy_gbps=${copyGbps.toFixed(0)}`,
  );

  const engine = await Engine.load({ config, randomWeights: true, seed: 1 }, {
    backend,
    maxRunning: Math.max(...batches),
    maxModelLen: context + steps + 8,
    maxBatchedTokens: 8192,
  });
  console.log(`engine: ${JSON.stringify(engine.info)}`);

  let seed = 7;
  const randomPrompt = () =>
    Array.from(
      { length: context },
      () => (seed = (seed * 1103515245 + 12345) >>> 0) % (config.vocabSize - 100) + 100,
    );

  /** Runs `batch` requests to completion: warm-up (graph capture, JIT) when `tokens` is small. */
  async function run(prompts: number[][], tokens: number, onFirst: () => void) {
    let firstTokens = 0;
    await Promise.all(prompts.map(async (prompt) => {
      let count = 0;
      for await (
        const _ of engine.generate(prompt, { maxTokens: tokens, temperature: 0, ignoreEos: true })
      ) {
        if (count++ === 0 && ++firstTokens === prompts.length) onFirst();
      }
    }));
  }

  for (const batch of batches) {
    // Warm-up at the same batch and context, so decode graphs are captured before timing.
    await run(Array.from({ length: batch }, randomPrompt), 4, () => {});
    const prompts = Array.from({ length: batch }, randomPrompt);
    let firstAt = 0;
    const started = performance.now();
    await run(prompts, steps + 1, () => firstAt = performance.now());
    const ended = performance.now();
    const msPerStep = (ended - firstAt) / steps;
    console.log(
      `DECODE denali batch=${batch} ms_per_step=${msPerStep.toFixed(3)} ` +
        `prefill_s=${((firstAt - started) / 1000).toFixed(2)} of_floor=${
          (msPerStep / floorMs).toFixed(3)
        } tok_s=${(batch * 1000 / msPerStep).toFixed(0)}`,
    );
  }
  console.log(`stats: ${JSON.stringify(engine.stats())}`);
  await engine.close();
}

if (import.meta.main && !helpRequested(Deno.args, USAGE)) await main();
