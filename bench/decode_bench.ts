/**
 * Decode speed on the GPU machine: ms per decode step of each model preset with seeded random
 * weights (default Llama-3-8B, Qwen2.5-7B, Qwen3-8B and Mistral-7B, bf16) at batch 1 and 64 with
 * a 512-token context, through the real Engine (paged KV cache, scheduler, decode graphs), beside
 * its bandwidth floor.
 *
 * The floor is the bytes one decode step reads over what a read-only kernel reaches on this
 * device (bench/device_ceilings.ts `measureReadGbps`, 1 GiB): every weight once (the input
 * embedding table not at all: a step reads one row of it per token, counted as such; a tied
 * table once, as the lm head), the family's own vectors (biases, q/k norms), and the K/V
 * positions the step attends to. Each preset prints `TARGET decode_b1_<preset>` with its batch-1
 * time over that floor (goal 1.15). bench/decode_hf.py prints the HF transformers baselines in
 * the same `DECODE` line format.
 *
 * With `--quantization fp8` each preset runs twice in one call, bf16 weights and then the same
 * weights quantized to FP8 at load (W8A16), one engine on the device at a time; the FP8 runs
 * print their DECODE lines with `weights=fp8` (their floor stays the bf16 one) and each preset
 * ends with `TARGET decode_b1_fp8` (llama3-8b, the model) or a `# decode_b1_fp8` line:
 * the FP8 batch-1 ms/step over the bf16 one (goal 0.60). `--quantization awq` does the same
 * with random 4-bit weights (AWQ layout, group 128: W4A16) and `TARGET decode_b1_awq` (goal
 * 0.40); `--quantization fp8,awq` runs all three in one call.
 *
 * `--kv-cache-dtype fp8` runs every engine with the FP8 KV cache: the DECODE lines say `kv=fp8`,
 * the floor counts one byte a cached element, and the TARGET lines (defined on the bf16 cache)
 * become `#` lines.
 *
 * Usage: deno run -A bench/decode_bench.ts [--presets llama3-8b,qwen2.5-7b,qwen3-8b,mistral-7b]
 *        [--batches 1,64] [--context 512] [--steps 64] [--quantization fp8,awq]
 *        [--kv-cache-dtype fp8]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { openBackend } from "../backends/select.ts";
import { configPreset, type ModelConfig, parameterCount } from "../models/config.ts";
import { Engine } from "../engine/engine.ts";
import { resolveKvCacheDtype } from "../engine/kv_cache.ts";
import { measureReadGbps } from "./device_ceilings.ts";
import { helpRequested } from "../tools/cli.ts";

const USAGE = `Usage: deno run -A bench/decode_bench.ts [options]

Decode ms/step of random-weight models through the Engine, beside the bytes-read floor (GPU).
  --presets LIST    model shapes (default llama3-8b,qwen2.5-7b,qwen3-8b,mistral-7b)
  --preset NAME     one model shape (the same as --presets NAME)
  --batches LIST    batch sizes (default 1,64)
  --context N       context length (default 512)
  --steps N         decode steps per batch (default 64)
  --quantization fp8  also run each preset with FP8 weights: TARGET decode_b1_fp8 (FP8 ÷ bf16)
  --quantization awq  ... with random 4-bit weights: TARGET decode_b1_awq (4-bit ÷ bf16); a
                      list (fp8,awq) runs both
  --kv-cache-dtype fp8  every run on the FP8 KV cache (the floor counts its bytes; the TARGET
                        lines, defined on the bf16 cache, print as # lines)
  -h, --help        show this help`;

/** Issue 13's goals for the batch-1 decode step, quantized over bf16. */
const QUANTIZED_GOALS = { fp8: 0.6, awq: 0.4 } as const;

/** The batch-1 goal: decode within 15% of the floor. */
const GOAL = 1.15;

/**
 * Bytes one decode step of `batch` rows reads, each row attending to `context` positions:
 * the weights once without the input embedding table (a tied table counts once, as the lm head
 * reads it whole), one embedding row per row, and the K and V of every attended position at
 * `kvBytes` an element (2 for the bf16 cache, 1 for FP8).
 */
export function decodeStepBytes(
  config: ModelConfig,
  batch: number,
  context: number,
  kvBytes = 2,
): number {
  const h = config.hiddenSize;
  const table = config.tieWordEmbeddings ? 0 : config.vocabSize * h;
  const weights = 2 * (parameterCount(config) - table);
  const kvPerPosition = 2 * config.numHiddenLayers * config.numKeyValueHeads * config.headDim *
    kvBytes;
  return weights + batch * h * 2 + batch * context * kvPerPosition;
}

/** Runs the benchmark; only when this file is the main module (deno bench must not run it). */
async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      presets: { type: "string", default: "llama3-8b,qwen2.5-7b,qwen3-8b,mistral-7b" },
      preset: { type: "string" },
      batches: { type: "string", default: "1,64" },
      context: { type: "string", default: "512" },
      steps: { type: "string", default: "64" },
      quantization: { type: "string" },
      "kv-cache-dtype": { type: "string" },
    },
  });
  const kvCacheDtype = resolveKvCacheDtype(values["kv-cache-dtype"], "--kv-cache-dtype");
  const kvBytes = kvCacheDtype === "fp8" ? 1 : 2;
  const kv = kvCacheDtype === "fp8" ? " kv=fp8" : "";
  // The TARGET lines are defined on the bf16 cache; with another they print as # lines.
  const target = kvCacheDtype === "bf16" ? "TARGET" : "#";
  const asked = values.quantization === undefined ? [] : values.quantization.split(",");
  for (const name of asked) {
    if (name !== "fp8" && name !== "awq") {
      throw new Error(`--quantization ${name} is not supported; use fp8, awq or fp8,awq`);
    }
  }
  const formats: ("fp8" | "awq" | null)[] = [null, ...asked as ("fp8" | "awq")[]];
  const presets = (values.preset ?? values.presets!).split(",");
  const batches = values.batches!.split(",").map(Number);
  const context = Number(values.context);
  const steps = Number(values.steps);

  const backend = openBackend("auto");
  const readGbps = await measureReadGbps(backend, backend.createStream());
  console.log(`device: ${backend.info.name}; read-only kernel ${readGbps.toFixed(0)} GB/s`);
  const targets: string[] = [];
  for (const preset of presets) {
    const config = configPreset(preset);
    // The context grows from `context` to `context + steps` over the timed steps.
    const floorMs = (batch: number) =>
      decodeStepBytes(config, batch, context + steps / 2, kvBytes) / (readGbps * 1e6);
    console.log(
      `model ${preset} (${config.architecture}): ` +
        `${(2 * parameterCount(config) / 1e9).toFixed(2)} GB of weights, ` +
        `${(decodeStepBytes(config, 1, context + steps / 2, kvBytes) / 1e9).toFixed(3)} GB read ` +
        `per batch-1 step${kv}`,
    );
    const batchOneMs: number[] = [];
    for (const quantization of formats) {
      const weights = quantization === null ? "" : ` weights=${quantization}`;
      const engine = await Engine.load({ config, randomWeights: true, seed: 1 }, {
        backend,
        maxRunning: Math.max(...batches),
        maxModelLen: context + steps + 8,
        maxBatchedTokens: 8192,
        log: () => {},
        quantization,
        kvCacheDtype,
      });

      let seed = 7;
      const randomPrompt = () =>
        Array.from(
          { length: context },
          () => (seed = (seed * 1103515245 + 12345) >>> 0) % (config.vocabSize - 100) + 100,
        );

      /** Runs the prompts to completion; `onFirst` when every one has its first token. */
      const run = async (prompts: number[][], tokens: number, onFirst: () => void) => {
        let firstTokens = 0;
        await Promise.all(prompts.map(async (prompt) => {
          let count = 0;
          const params = { maxTokens: tokens, temperature: 0, ignoreEos: true };
          for await (const _ of engine.generate(prompt, params)) {
            if (count++ === 0 && ++firstTokens === prompts.length) onFirst();
          }
        }));
      };

      try {
        for (const batch of batches) {
          // Warm-up at the same batch and context (graphs, JIT), then the timed run.
          await run(Array.from({ length: batch }, randomPrompt), 4, () => {});
          const prompts = Array.from({ length: batch }, randomPrompt);
          let firstAt = 0;
          const started = performance.now();
          await run(prompts, steps + 1, () => firstAt = performance.now());
          const msPerStep = (performance.now() - firstAt) / steps;
          const ofFloor = msPerStep / floorMs(batch);
          if (batch === 1) batchOneMs.push(msPerStep);
          console.log(
            `DECODE floor preset=${preset} batch=${batch} ms_per_step=${
              floorMs(batch).toFixed(3)
            } ` +
              `read_gbps=${readGbps.toFixed(0)}`,
          );
          console.log(
            `DECODE denali preset=${preset} batch=${batch} ms_per_step=${msPerStep.toFixed(3)} ` +
              `prefill_s=${((firstAt - started) / 1000).toFixed(2)} of_floor=${
                ofFloor.toFixed(3)
              } tok_s=${(batch * 1000 / msPerStep).toFixed(0)}${weights}${kv}`,
          );
          if (batch === 1 && quantization === null) {
            targets.push(
              `${target} decode_b1_${preset} value=${ofFloor.toFixed(3)} goal=${GOAL} ` +
                (ofFloor <= GOAL ? "met" : "MISSED") + kv,
            );
          }
        }
        console.log(`stats ${preset}${weights}: ${JSON.stringify(engine.stats())}`);
      } finally {
        await engine.close();
      }
    }
    formats.forEach((format, i) => {
      if (format === null || batchOneMs.length !== formats.length) return;
      const ratio = batchOneMs[i] / batchOneMs[0], goal = QUANTIZED_GOALS[format];
      const line = `decode_b1_${format} value=${ratio.toFixed(3)} goal=${goal.toFixed(2)}`;
      if (preset === "llama3-8b") {
        targets.push(`${target} ${line} ${ratio <= goal ? "met" : "MISSED"}${kv}`);
      } else {
        console.log(`# ${line} preset=${preset}`);
      }
    });
  }
  for (const line of targets) console.log(line);
  backend.close();
}

if (import.meta.main && !helpRequested(Deno.args, USAGE)) await main();
