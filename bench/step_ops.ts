/**
 * Where a decode step's device time goes, operator by operator (GPU machine; no profiler
 * needed): a random-weight model through the real Engine with graphs off and its operators
 * wrapped in bench/op_timer.ts, so each operator's device time is measured alone, between a
 * pair of events, with runtime_test's spin_ns holding the device while the host queues each
 * step. Prints `OPS` lines: per operator (linear per weight shape) its calls, µs per step and
 * share, then the sum over operators and the steps' span (the sum plus the gaps between
 * launches). For shares and the per-operator cost; the decode step's time as served is
 * bench/decode_bench.ts's (graphs, programmatic launch). `--mixed` times the prefill steps that
 * bring the batch in instead (each a maxBatchedTokens chunk beside the decodes already running:
 * the mixed steps of an offline run).
 *
 * Usage: deno run -A bench/step_ops.ts [--preset llama3-8b] [--batches 1,128] [--context 512]
 *        [--steps 4] [--quantization fp8|awq] [--kv-cache-dtype fp8] [--mixed]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { openBackend } from "../backends/select.ts";
import type { Backend, Stream } from "../backends/backend.ts";
import { configPreset } from "../models/config.ts";
import { Engine } from "../engine/engine.ts";
import { loadOps } from "../ops/load.ts";
import { loadKernels } from "../kernels/modules.ts";
import { helpRequested } from "../tools/cli.ts";
import { formatOpReport, OpTimer } from "./op_timer.ts";

const USAGE = `Usage: deno run -A bench/step_ops.ts [options]

Per-operator device time of decode steps of a random-weight model (GPU).
  --preset NAME          model shape (default llama3-8b)
  --batches LIST         decode batch sizes (default 1,128)
  --context N            prompt tokens per sequence (default 512)
  --steps N              decode steps timed per batch (default 4)
  --quantization Q       fp8 or awq weights (default bf16)
  --kv-cache-dtype D     fp8 for an FP8 KV cache (default bf16)
  --mixed                time the batch's prefill steps instead (a maxBatchedTokens prefill
                         chunk a step, beside the decodes of the sequences already prefilled)
  -h, --help             show this help`;

/** Prefill tokens a step: the engine's budget in bench/decode_bench.ts too. */
const MAX_BATCHED_TOKENS = 8192;

/** A device wait before each step, or null where the backend runs no kernels (the CPU). */
async function spinGate(backend: Backend): Promise<((stream: Stream) => void) | null> {
  if (backend.kind === "cpu") return null;
  const kernels = await loadKernels(backend, "runtime_test");
  const spin = kernels.launchers.spin_ns.launch;
  // 20 ms: longer than the host takes to queue a step's few hundred launches and event pairs.
  return (stream) => spin(1, 1, 1, 1, 1, 1, 0, stream, 20_000_000);
}

/** Runs the benchmark; only when this file is the main module. */
async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      preset: { type: "string", default: "llama3-8b" },
      batches: { type: "string", default: "1,128" },
      context: { type: "string", default: "512" },
      steps: { type: "string", default: "4" },
      quantization: { type: "string" },
      "kv-cache-dtype": { type: "string" },
      mixed: { type: "boolean", default: false },
    },
  });
  const quantization = values.quantization as "fp8" | "awq" | undefined;
  if (quantization !== undefined && quantization !== "fp8" && quantization !== "awq") {
    throw new Error(`--quantization ${quantization} is not supported; use fp8 or awq`);
  }
  const kvCacheDtype = values["kv-cache-dtype"] as "fp8" | undefined;
  const batches = values.batches!.split(",").map(Number);
  const context = Number(values.context), steps = Number(values.steps);
  const config = configPreset(values.preset!);
  const backend = openBackend("auto");
  const timer = new OpTimer(backend, await loadOps(backend), 2048 * steps, await spinGate(backend));
  const engine = await Engine.load({ config, randomWeights: true, seed: 1 }, {
    backend,
    ops: timer.ops,
    graphs: false,
    maxRunning: Math.max(...batches),
    maxModelLen: context + steps + 8 +
      Math.ceil(Math.max(...batches) * context / MAX_BATCHED_TOKENS),
    maxBatchedTokens: MAX_BATCHED_TOKENS,
    log: () => {},
    quantization,
    kvCacheDtype,
  });
  const label = `preset=${values.preset}${quantization ? ` weights=${quantization}` : ""}${
    kvCacheDtype ? ` kv=${kvCacheDtype}` : ""
  }`;
  console.log(`# ${backend.info.name}; ${label}; context ${context}; graphs off, events per op`);
  let seed = 7;
  const prompt = () =>
    Array.from(
      { length: context },
      () => (seed = (seed * 1103515245 + 12345) >>> 0) % (config.vocabSize - 100) + 100,
    );
  try {
    for (const batch of batches) {
      // Prefill runs maxBatchedTokens a step, and a sequence decodes while later ones prefill:
      // each asks for enough tokens to be still running when the last one has its second, so
      // the timed steps decode the whole batch.
      const prefillSteps = Math.ceil(batch * context / MAX_BATCHED_TOKENS);
      const maxTokens = steps + 4 + prefillSteps;
      let started = 0, running = 0;
      // --mixed: the first prefillSteps passes, from the first prompt's chunk to the last one's.
      if (values.mixed) timer.arm(prefillSteps);
      await Promise.all(Array.from({ length: batch }, async () => {
        let count = 0;
        const params = { maxTokens, temperature: 0, ignoreEos: true };
        for await (const _ of engine.generate(prompt(), params)) {
          if (++count === 2 && ++started === batch && !values.mixed) {
            running = engine.stats().running;
            timer.arm(steps);
          }
        }
      }));
      timer.disarm();
      const report = timer.report();
      const what = values.mixed ? `prefill_steps=${prefillSteps}` : `running=${running}`;
      for (const line of formatOpReport(report, `${label} batch=${batch} ${what}`)) {
        console.log(line);
      }
      timer.reset();
    }
  } finally {
    await engine.close();
    timer.destroy();
    backend.close();
  }
}

if (import.meta.main && !helpRequested(Deno.args, USAGE)) await main();
