/**
 * Engine-only serving throughput: the workload of bench/serve_bench.ts (the same seeded
 * ShareGPT-shaped prompts and output lengths) fed straight to `Engine.generate`, with no HTTP or
 * SSE, so the engine's cost and the server's can be told apart. Two modes:
 * - `--concurrency C`: C callers, each sending its next request when the last one ends (as
 *   serve_bench.ts does over HTTP);
 * - `--offline`: every request submitted at once, as the peers' offline throughput benchmarks do.
 *
 * Prints first-token and inter-token latency, completion and total tok/s, and one
 * `RESULT {json}` line for bench/throughput_targets.ts. With the step profile on
 * (`DENALI_PROFILE=steps`, or `--profile`) it also measures the device's read bandwidth and GEMM
 * rate and prints the profile summary against the roofline bound and the phased bound (attention,
 * then the rest of the step, one after the other; engine/roofline.ts, engine/step_profile.ts).
 *
 * It uses only the public `Engine` API, so the same file runs against an older checkout of Denali
 * (the baseline): features the older engine lacks (the profile) are skipped there.
 *
 * Usage: deno run -A bench/engine_bench.ts [--preset llama3-8b] [--requests 1000]
 *        [--concurrency 256 | --offline] [--max-num-seqs 256] [--max-batched-tokens 2048]
 *        [--max-len 2048] [--vocab 32000] [--seed 0] [--warmup 8] [--profile]
 *        [--profile-out FILE] [--label name] [--quantization fp8|awq] [--kv-cache-dtype fp8]
 *        [--tiny DIR] (a checkpoint directory instead of a random-weights preset, e.g. on the CPU)
 *
 * @module
 */

import { parseArgs } from "node:util";
import { configPreset } from "../models/config.ts";
import { Engine, type EngineOptions } from "../engine/engine.ts";
import type { DeviceCeilings } from "../engine/roofline.ts";
import { openBackend } from "../backends/select.ts";
import { type RequestShape, requestShapes } from "./serve_bench.ts";

/** What one request measured. */
interface Timing {
  firstTokenMs: number;
  gapsMs: number[];
  completionTokens: number;
  promptTokens: number;
}

/** Latency and throughput of one run, as RESULT prints it. */
export interface RunResult {
  readonly label: string;
  readonly mode: string;
  readonly requests: number;
  readonly seconds: number;
  readonly completionTokPerS: number;
  readonly totalTokPerS: number;
  readonly ttftAvgMs: number;
  readonly itlP50Ms: number;
  readonly itlP99Ms: number;
}

/** The p-quantile of ascending `sorted` (nearest rank below). */
export function percentile(sorted: readonly number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : NaN;
}

/** Throughput and latency figures of finished requests that took `seconds` in all. */
export function runResult(
  label: string,
  mode: string,
  timings: readonly Timing[],
  seconds: number,
): RunResult {
  const gaps = timings.flatMap((t) => t.gapsMs).sort((a, b) => a - b);
  const completion = timings.reduce((s, t) => s + t.completionTokens, 0);
  const prompt = timings.reduce((s, t) => s + t.promptTokens, 0);
  return {
    label,
    mode,
    requests: timings.length,
    seconds,
    completionTokPerS: completion / seconds,
    totalTokPerS: (completion + prompt) / seconds,
    ttftAvgMs: timings.reduce((s, t) => s + t.firstTokenMs, 0) / Math.max(1, timings.length),
    itlP50Ms: percentile(gaps, 0.5),
    itlP99Ms: percentile(gaps, 0.99),
  };
}

/** Runs one request through the engine and times its tokens. */
async function timeOne(engine: Engine, shape: RequestShape): Promise<Timing> {
  const started = performance.now();
  let first = 0, last = 0, tokens = 0;
  const gaps: number[] = [];
  for await (
    const chunk of engine.generate(shape.prompt, {
      maxTokens: shape.outputTokens,
      temperature: 0,
      ignoreEos: true,
    })
  ) {
    if (chunk.tokenId < 0) continue;
    const now = performance.now();
    if (tokens++ === 0) first = now;
    else gaps.push(now - last);
    last = now;
  }
  return {
    firstTokenMs: first - started,
    gapsMs: gaps,
    completionTokens: tokens,
    promptTokens: shape.prompt.length,
  };
}

/** Sends `shapes` with at most `concurrency` in flight (Infinity: all at once). */
export async function drive(
  engine: Engine,
  shapes: readonly RequestShape[],
  concurrency: number,
): Promise<Timing[]> {
  if (!Number.isFinite(concurrency)) {
    return await Promise.all(shapes.map((s) => timeOne(engine, s)));
  }
  const timings: Timing[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, shapes.length) }, async () => {
      while (next < shapes.length) timings.push(await timeOne(engine, shapes[next++]));
    }),
  );
  return timings;
}

/** Prints a run the way serve_bench.ts does, then its RESULT line. */
export function printResult(r: RunResult): void {
  const ms = (x: number) => x.toFixed(1);
  console.log(
    `engine-only ${r.label}: ${r.requests} requests, ${r.mode}, ${r.seconds.toFixed(2)} s`,
  );
  console.log(`first-token latency (ms): avg ${ms(r.ttftAvgMs)}`);
  console.log(`per-token latency (ms): p50 ${ms(r.itlP50Ms)}, p99 ${ms(r.itlP99Ms)}`);
  console.log(`completion tok/s: ${r.completionTokPerS.toFixed(1)}`);
  console.log(`total tok/s: ${r.totalTokPerS.toFixed(1)}`);
  console.log(`RESULT ${JSON.stringify(r)}`);
}

async function main() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      preset: { type: "string", default: "llama3-8b" },
      tiny: { type: "string" },
      requests: { type: "string", default: "1000" },
      concurrency: { type: "string", default: "256" },
      offline: { type: "boolean", default: false },
      "max-num-seqs": { type: "string" },
      "max-batched-tokens": { type: "string" },
      "max-len": { type: "string", default: "2048" },
      vocab: { type: "string", default: "32000" },
      seed: { type: "string", default: "0" },
      warmup: { type: "string", default: "8" },
      profile: { type: "boolean", default: false },
      label: { type: "string", default: "denali" },
      "profile-out": { type: "string" },
      quantization: { type: "string" },
      "kv-cache-dtype": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(
      "Usage: deno run -A bench/engine_bench.ts [--preset llama3-8b | --tiny DIR] " +
        "[--requests N] [--concurrency C | --offline] [--max-num-seqs N] " +
        "[--max-batched-tokens N] [--max-len N] [--vocab N] [--seed N] [--warmup N] " +
        "[--profile] [--profile-out FILE] [--label NAME] [--quantization fp8|awq] " +
        "[--kv-cache-dtype fp8]",
    );
    return;
  }
  const requests = Number(values.requests);
  const maxLen = Number(values["max-len"]);
  const offline = values.offline!;
  const concurrency = offline ? Infinity : Number(values.concurrency);
  // Measure the roofline's ceilings before the engine takes the device's memory for its cache.
  const wantProfile = values.profile || (Deno.env.get("DENALI_PROFILE") ?? "").includes("steps");
  const backend = openBackend("auto");
  let ceilings: DeviceCeilings | null = null;
  if (wantProfile && backend.kind !== "cpu") {
    const { measureCeilings } = await import("./device_ceilings.ts");
    const stream = backend.createStream();
    ceilings = await measureCeilings(backend, stream);
    stream.destroy();
  }
  const options: EngineOptions = {
    backend,
    maxModelLen: maxLen,
    maxRunning: values["max-num-seqs"] ? Number(values["max-num-seqs"]) : undefined,
    maxBatchedTokens: values["max-batched-tokens"]
      ? Number(values["max-batched-tokens"])
      : undefined,
    seed: 1,
    ...(values.profile ? { profile: true } : {}),
    // Set only when asked, so the file still runs against a checkout without these options.
    ...(values.quantization
      ? { quantization: values.quantization as EngineOptions["quantization"] }
      : {}),
    ...(values["kv-cache-dtype"]
      ? { kvCacheDtype: values["kv-cache-dtype"] as EngineOptions["kvCacheDtype"] }
      : {}),
  };
  const engine = values.tiny ? await Engine.load(values.tiny, options) : await Engine.load(
    { config: configPreset(values.preset!), randomWeights: true, seed: 1 },
    options,
  );
  const vocab = Math.min(Number(values.vocab), engine.config.vocabSize);
  console.log(`engine: ${JSON.stringify(engine.info)}`);
  // The shapes come from the same stream serve_bench.ts draws; the warm-up uses another seed.
  const shapes = requestShapes(requests, Number(values.seed), vocab, maxLen);
  const warmup = requestShapes(Number(values.warmup), 12345, vocab, maxLen);
  await drive(engine, warmup, Infinity);

  // Only engines that have the step profile (not older checkouts used as baselines).
  const profiled = "stepProfile" in engine && engine.stepProfile !== null;
  if (profiled) engine.resetStepProfile();
  const started = performance.now();
  const timings = await drive(engine, shapes, concurrency);
  const seconds = (performance.now() - started) / 1000;
  const mode = offline ? "offline" : `concurrency ${concurrency}`;
  printResult(runResult(values.label!, mode, timings, seconds));
  console.log(`stats: ${JSON.stringify(engine.stats())}`);
  if (profiled) await printProfile(engine, seconds, ceilings, values["profile-out"]);
  await engine.close();
  backend.close();
}

/** Prints the step-profile summary, against measured ceilings on a GPU. */
async function printProfile(
  engine: Engine,
  seconds: number,
  ceilings: DeviceCeilings | null,
  out: string | undefined,
): Promise<void> {
  // Imported here: a baseline checkout without the profile never reaches this.
  const { formatSummary, summarizeSteps } = await import("../engine/step_profile.ts");
  const { loadedModelCost } = await import("../engine/roofline.ts");
  const data = engine.stepProfile!;
  const summary = summarizeSteps(data, loadedModelCost(engine.config, engine.info), ceilings);
  for (const line of formatSummary(summary)) console.log(line);
  console.log(
    `PROFILE device_busy_of_wall=${(summary.deviceMs / (seconds * 1000)).toFixed(3)} ` +
      `(device time over the run's wall time, host start-up of the run included)`,
  );
  console.log(`PROFILE_JSON ${JSON.stringify({ summary, ceilings })}`);
  if (out !== undefined) {
    // Every step's columns, for looking at gaps and step times one by one.
    const columns: Record<string, number[]> = {};
    for (const [key, value] of Object.entries(data)) {
      if (ArrayBuffer.isView(value)) {
        columns[key] = Array.from(value as Float64Array).slice(0, data.count);
      }
    }
    await Deno.writeTextFile(out, JSON.stringify(columns));
  }
}

if (import.meta.main) await main();
