/**
 * The scriptable engine's GPU targets (issue 15), each printed as
 * `TARGET <name> value=<x> goal=<y> met|MISSED`:
 * - `user_launch_vs_builtin` (≤ 1.02): host time per launch of a kernel compiled at run time by
 *   compileKernels against Denali's built-in launcher of the same signature (`args8` of
 *   kernels/src/runtime_test.cu), interleaved round by round (bench/round_timer.ts), medians;
 * - `user_launch_triton_ratio` (≥ 5): Triton 3.6's launch (and CuPy's RawKernel where CuPy is
 *   installed; the smaller ratio counts), from bench/launch_py.py, over the run-time kernel's;
 * - `compile_cached_ms` (≤ 5): median wall time of compileKernels when the image is in the disk
 *   cache (hash, read, module load, launcher generation);
 * - `processor_decode_b64` (≤ 1.03): median decode step of random Llama-3-8B weights at batch 64
 *   with one user kernel processor on every row (engine-wide, so inside the decode graphs), over
 *   the same step without it; two engines loaded side by side, rounds interleaved.
 * It also prints `RESULT` lines: the same step with the processor given per request (launched
 * after each graph replay), and the per-step cost of a host (TypeScript) processor at batch 1 and
 * 64, which copies each row to the host and back.
 *
 * Usage: deno run -A bench/scriptable_bench.ts [--part all|launch|compile|decode|host]
 *        [--preset llama3-8b] [--tokens 128] [--rounds 3] [--python python3]
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { Backend } from "../backends/backend.ts";
import { openCuda } from "../backends/cuda.ts";
import { Engine, type EngineOptions } from "../engine/engine.ts";
import {
  hostLogitsProcessor,
  kernelLogitsProcessor,
  type LogitsProcessor,
} from "../engine/logits_processors.ts";
import type { SamplingParams } from "../engine/sequence.ts";
import { compileKernels } from "../kernels/compile.ts";
import { loadKernels } from "../kernels/modules.ts";
import { configPreset } from "../models/config.ts";
import { helpRequested } from "../tools/cli.ts";
import { BATCH, printResult, timeInterleaved } from "./round_timer.ts";

const USAGE = `Usage: deno run -A bench/scriptable_bench.ts [options]

The scriptable engine's GPU targets: run-time kernel launch cost against the built-in launcher
and Triton/CuPy, cached compile time, and decode with a user logits processor (NVIDIA GPU).
  --part P       all (default), launch, compile, decode or host
  --preset NAME  model shape for decode and host (default llama3-8b)
  --tokens N     output tokens per request in the decode runs (default 128)
  --rounds N     interleaved rounds per decode variant (default 3)
  --python CMD   Python for bench/launch_py.py (default python3)
  -h, --help     show this help`;

/** args8's signature and body (kernels/src/runtime_test.cu), as user source. */
const ARGS8 = `
extern "C" __global__ void args8(float* a, float* b, float* c, float* d, int n, int m, float x,
                                 float y) {
  if (n < 0) a[0] = b[0] + c[0] * d[0] + x * y + (float)m;
}
`;

/** A user processor that reads and writes every logit of its rows: Gemma-style soft-capping. */
const SOFTCAP = `
extern "C" __global__ void softcap(float* logits, const int* rows, int count, int vocab,
                                   float cap) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= vocab) return;
  float* x = logits + (size_t)rows[blockIdx.y] * vocab + t;
  *x = cap * tanhf(*x / cap);
}
`;

function target(name: string, value: number, goal: number, atMost: boolean): void {
  const met = atMost ? value <= goal : value >= goal;
  console.log(
    `TARGET ${name} value=${value.toFixed(3)} goal=${goal} ${met ? "met" : "MISSED"}`,
  );
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

async function compileCached(gpu: Backend): Promise<void> {
  const cacheDir = Deno.makeTempDirSync({ prefix: "denali-bench-cache-" });
  try {
    let t = performance.now();
    const cold = await compileKernels(gpu, ARGS8, { name: "args8_bench", cacheDir });
    console.log(`RESULT compile_cold_ms ${(performance.now() - t).toFixed(2)}`);
    cold.module.unload();
    const times: number[] = [];
    for (let i = 0; i < 30; i++) {
      t = performance.now();
      const mod = await compileKernels(gpu, ARGS8, { name: "args8_bench", cacheDir });
      times.push(performance.now() - t);
      if (!mod.fromCache) throw new Error("the second compile missed the cache");
      mod.module.unload();
    }
    console.log(`RESULT compile_cached_ms_all ${times.map((v) => v.toFixed(2)).join(" ")}`);
    target("compile_cached_ms", median(times), 5, true);
  } finally {
    Deno.removeSync(cacheDir, { recursive: true });
  }
}

async function launchCost(gpu: Backend, python: string): Promise<void> {
  const stream = gpu.createStream();
  const [a, b, c, d] = [0, 1, 2, 3].map(() => gpu.alloc(1024));
  const builtin = (await loadKernels(gpu, "runtime_test")).launchers.args8.launch;
  const user = (await compileKernels(gpu, ARGS8, { name: "args8_bench", cacheDir: null }))
    .launchers.args8.launch;
  const timings = timeInterleaved([
    {
      name: "builtin_args8",
      batch: () => {
        for (let i = 0; i < BATCH; i++) {
          builtin(1, 1, 1, 32, 1, 1, 0, stream, a, b, c, d, 32, 7, 1.5, 2.5);
        }
      },
    },
    {
      name: "user_args8",
      batch: () => {
        for (let i = 0; i < BATCH; i++) {
          user(1, 1, 1, 32, 1, 1, 0, stream, a, b, c, d, 32, 7, 1.5, 2.5);
        }
      },
    },
  ], () => stream.synchronize());
  for (const [name, timing] of timings) printResult(name, timing);
  // Medians: a descheduled round on a shared host moves the mean, not the median.
  const userNs = timings.get("user_args8")!.medianNs;
  target("user_launch_vs_builtin", userNs / timings.get("builtin_args8")!.medianNs, 1.02, true);

  const script = new URL("./launch_py.py", import.meta.url).pathname;
  const output = await new Deno.Command(python, {
    args: [script],
    stdout: "piped",
    stderr: "piped",
  })
    .output().catch((error) => ({
      success: false,
      stdout: new Uint8Array(),
      stderr: new TextEncoder().encode(String(error)),
    }));
  const text = new TextDecoder().decode(output.stdout);
  console.log(text.trimEnd());
  const medianOf = (name: string) => {
    const match = new RegExp(`RESULT ${name} mean_ns=[0-9.]+ median_ns=([0-9.]+)`).exec(text);
    return match ? Number(match[1]) : null;
  };
  const peers = [medianOf("triton_3_6"), medianOf("cupy_rawkernel")].filter((v) => v !== null);
  if (peers.length === 0) {
    console.log(`launch_py.py gave no Triton result:\n${new TextDecoder().decode(output.stderr)}`);
    console.log("TARGET user_launch_triton_ratio value=nan goal=5 MISSED");
  } else {
    target("user_launch_triton_ratio", Math.min(...peers as number[]) / userNs, 5, false);
  }
  for (const buffer of [a, b, c, d]) gpu.free(buffer);
  stream.destroy();
}

/** Median decode step (ms) of 64 concurrent greedy requests: the median inter-token gap. */
async function decodeStepMs(
  engine: Engine,
  tokens: number,
  params: Partial<SamplingParams> = {},
  batch = 64,
): Promise<number> {
  const gaps: number[] = [];
  await Promise.all(Array.from({ length: batch }, async (_, r) => {
    const prompt = Array.from({ length: 32 }, (_, i) => (r * 7919 + i * 104729) % 100000);
    let last = 0, n = 0;
    for await (
      const chunk of engine.generate(prompt, {
        temperature: 0,
        ignoreEos: true,
        maxTokens: tokens,
        ...params,
      })
    ) {
      const now = performance.now();
      if (n++ >= 8) gaps.push(now - last); // past the prefill and the first steps
      last = now;
      void chunk;
    }
  }));
  return median(gaps);
}

/** Room for 64 requests of 32 + 128 tokens; graphs for every batch size up to 64. */
function engineOptions(gpu: Backend): EngineOptions {
  return {
    backend: gpu,
    kvBlocks: 1024,
    maxRunning: 64,
    maxBatchedTokens: 2048,
    maxModelLen: 256,
    log: (line) => console.error(line),
  };
}

async function decode(
  gpu: Backend,
  preset: string,
  tokens: number,
  rounds: number,
  host: boolean,
) {
  const config = configPreset(preset);
  const options = engineOptions(gpu);
  const mod = await compileKernels(gpu, SOFTCAP, { name: "softcap" });
  const processor = kernelLogitsProcessor(mod, "softcap", { args: [30] });
  const plain = await Engine.load({ config, randomWeights: true }, options);
  const withProcessor = await Engine.load({ config, randomWeights: true }, {
    ...options,
    logitsProcessors: [processor],
  });
  try {
    await decodeStepMs(plain, 16);
    await decodeStepMs(withProcessor, 16);
    const base: number[] = [], graphed: number[] = [], perRequest: number[] = [];
    for (let round = 0; round < rounds; round++) {
      base.push(await decodeStepMs(plain, tokens));
      graphed.push(await decodeStepMs(withProcessor, tokens));
      perRequest.push(await decodeStepMs(plain, tokens, { logitsProcessors: [processor] }));
    }
    const b = median(base), g = median(graphed), p = median(perRequest);
    console.log(
      `RESULT decode_step_ms_b64 plain=${b.toFixed(3)} engine_processor=${
        g.toFixed(3)
      } request_processor=${p.toFixed(3)} (${preset})`,
    );
    console.log(`RESULT processor_decode_b64_per_request ${(p / b).toFixed(4)}`);
    target("processor_decode_b64", g / b, 1.03, true);
    if (host) await hostCost(plain);
  } finally {
    await plain.close();
    await withProcessor.close();
    mod.module.unload();
  }
}

/** Step time with a no-op host processor on every row, at batch 1 and 64, beside none. */
async function hostCost(engine: Engine): Promise<void> {
  const noop: LogitsProcessor = hostLogitsProcessor("noop", () => {});
  for (const batch of [1, 64]) {
    await decodeStepMs(engine, 16, {}, batch);
    const plain = await decodeStepMs(engine, 48, {}, batch);
    const host = await decodeStepMs(engine, 48, { logitsProcessors: [noop] }, batch);
    console.log(
      `RESULT host_processor_b${batch} step_ms=${host.toFixed(3)} plain_ms=${plain.toFixed(3)} ` +
        `cost_per_step_ms=${(host - plain).toFixed(3)} per_row_us=${
          ((host - plain) * 1000 / batch).toFixed(1)
        }`,
    );
  }
}

async function main(args: string[]): Promise<number> {
  if (helpRequested(args, USAGE)) return 0;
  const { values } = parseArgs({
    args,
    options: {
      part: { type: "string", default: "all" },
      preset: { type: "string", default: "llama3-8b" },
      tokens: { type: "string", default: "128" },
      rounds: { type: "string", default: "3" },
      python: { type: "string", default: "python3" },
    },
  });
  const part = values.part;
  const gpu = openCuda();
  try {
    console.log(`device: ${gpu.info.name} (${gpu.info.arch}), Deno ${Deno.version.deno}`);
    if (part === "all" || part === "compile") await compileCached(gpu);
    if (part === "all" || part === "launch") await launchCost(gpu, values.python);
    if (part === "all" || part === "decode") {
      const rounds = Number(values.rounds);
      await decode(gpu, values.preset, Number(values.tokens), rounds, part === "all");
    }
    if (part === "host") {
      const config = configPreset(values.preset);
      const engine = await Engine.load({ config, randomWeights: true }, engineOptions(gpu));
      try {
        await hostCost(engine);
      } finally {
        await engine.close();
      }
    }
  } finally {
    gpu.close();
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
