/**
 * The throughput issue's TARGET lines, from the logs of one device call
 * (tools/throughput_session.sh and tools/serve_session.sh write them):
 * - `new_offline.log`, `base_offline.log`: bench/engine_bench.ts `--offline` on the new tree (step
 *   profile on) and on the baseline checkout;
 * - `new_c256.log`, `base_c256.log`: bench/serve_bench.ts through each tree's HTTP server at
 *   concurrency 256 (or engine_bench.ts `--concurrency 256`: both print the same lines);
 * - `new_c1.log`: engine_bench.ts `--concurrency 1` on the new tree, step profile on;
 * - `new_offline_fp8.log` (optional): engine_bench.ts `--offline` with FP8 weights and an FP8 KV
 *   cache, for the quantization issue's `serve_offline_fp8` (FP8 over bf16, same run).
 *
 * Besides the TARGET lines it prints the offline run's throughput at its roofline: the tokens it
 * generated over the sum of its steps' roofline bounds, the most any engine could reach with the
 * same steps on this device.
 *
 * Usage: deno run -A bench/throughput_targets.ts DIR
 *
 * @module
 */

import { helpRequested } from "../tools/cli.ts";

const USAGE = `Usage: deno run -A bench/throughput_targets.ts DIR

Prints the throughput issue's TARGET lines from the logs of one device call in DIR.
  -h, --help   show this help`;

/** The figures a log holds (NaN where it lacks one). */
export interface LogFigures {
  readonly completionTokPerS: number;
  readonly itlP50Ms: number;
  /** The profile's busy fraction (engine logs with the profile on). */
  readonly busy: number;
  /** Decode-only steps of >= 128 rows: device time over their roofline bound. */
  readonly bigDecodeOfBound: number;
  /** Mean device time of a decode-only step of one row, from the per-step columns. */
  readonly batch1StepMs: number;
  /** Wall seconds of the run. */
  readonly seconds: number;
  /** Sum of every profiled step's roofline bound (decode, mixed and prefill kinds), in ms. */
  readonly boundMs: number;
  /** The same with each step's phased bound (attention, then the rest), in ms. */
  readonly phasedMs: number;
  /** Decode-only steps of >= 128 rows: device time over their phased bound. */
  readonly bigDecodeOfPhased: number;
}

const number = (text: string, pattern: RegExp): number => {
  const match = text.match(pattern);
  return match ? Number(match[1]) : NaN;
};

/** Reads the figures out of one log's text (and its per-step columns, if given). */
export function logFigures(text: string, steps: Record<string, number[]> | null): LogFigures {
  let batch1 = NaN;
  if (steps !== null) {
    let sum = 0, n = 0;
    for (let i = 0; i < steps.deviceMs.length; i++) {
      if (steps.decodeRows[i] === 1 && steps.prefillRows[i] === 0) {
        sum += steps.deviceMs[i];
        n++;
      }
    }
    if (n > 0) batch1 = sum / n;
  }
  const kindSum = (field: string) => {
    let sum = NaN;
    const line = new RegExp(`^PROFILE kind=(?:decode|mixed|prefill) .* ${field}=([\\d.]+)`, "gm");
    for (const match of text.matchAll(line)) {
      sum = (Number.isNaN(sum) ? 0 : sum) + Number(match[1]);
    }
    return sum;
  };
  return {
    completionTokPerS: number(text, /completion tok\/s: ([\d.]+)/),
    itlP50Ms: number(text, /per-token latency \(ms\): p50 ([\d.]+)/),
    busy: number(text, /^PROFILE steps=.* busy=([\d.]+)/m),
    bigDecodeOfBound: number(text, /^PROFILE kind=decode_b128 .* of_bound=([\d.]+)/m),
    bigDecodeOfPhased: number(text, /^PROFILE kind=decode_b128 .* of_phased=([\d.]+)/m),
    batch1StepMs: batch1,
    seconds: number(text, /^engine-only .*, ([\d.]+) s$/m),
    boundMs: kindSum("bound_ms"),
    phasedMs: kindSum("phased_ms"),
  };
}

/**
 * The offline run's completion tok/s had every step taken exactly its roofline bound: the tokens
 * it generated over the sum of the bounds (NaN without the profile).
 */
export function rooflineTokPerS(f: LogFigures, boundMs = f.boundMs): number {
  return f.completionTokPerS * f.seconds / (boundMs / 1000);
}

/** One `TARGET` line; a NaN value is MISSED (the run did not show it). */
export function targetLine(
  name: string,
  value: number,
  goal: number,
  higherIsBetter: boolean,
): string {
  const met = Number.isFinite(value) && (higherIsBetter ? value >= goal : value <= goal);
  const shown = Number.isFinite(value) ? value.toFixed(3) : "NaN";
  return `TARGET ${name} value=${shown} goal=${goal} ${met ? "met" : "MISSED"}`;
}

/** Every target of the throughput issue, from the figures of the runs. */
export function throughputTargets(f: {
  newOffline: LogFigures;
  baseOffline: LogFigures;
  newC256: LogFigures;
  baseC256: LogFigures;
  newC1: LogFigures;
  newOfflineFp8?: LogFigures;
}): string[] {
  const fp8 = f.newOfflineFp8
    ? [
      targetLine(
        "serve_offline_fp8",
        f.newOfflineFp8.completionTokPerS / f.newOffline.completionTokPerS,
        1.3,
        true,
      ),
    ]
    : [];
  return [
    targetLine("serve_offline_1000", f.newOffline.completionTokPerS, 20000, true),
    targetLine(
      "serve_offline_vs_4ce50e3",
      f.newOffline.completionTokPerS / f.baseOffline.completionTokPerS,
      2.0,
      true,
    ),
    targetLine(
      "serve_c256_vs_4ce50e3",
      f.newC256.completionTokPerS / f.baseC256.completionTokPerS,
      1.8,
      true,
    ),
    targetLine("serve_c256_itl_p50_vs_4ce50e3", f.newC256.itlP50Ms / f.baseC256.itlP50Ms, 1, false),
    targetLine("serve_busy", f.newOffline.busy, 0.95, true),
    targetLine("decode_roofline_b128", f.newOffline.bigDecodeOfBound, 1.3, false),
    targetLine("serve_c1_itl", f.newC1.itlP50Ms / f.newC1.batch1StepMs, 1.05, false),
    ...fp8,
  ];
}

async function read(dir: string, name: string): Promise<LogFigures> {
  const text = await Deno.readTextFile(`${dir}/${name}.log`).catch(() => "");
  const steps = await Deno.readTextFile(`${dir}/${name}_steps.json`)
    .then((t) => JSON.parse(t) as Record<string, number[]>)
    .catch(() => null);
  return logFigures(text, steps);
}

if (import.meta.main && !helpRequested(Deno.args, USAGE)) {
  const dir = Deno.args[0];
  if (dir === undefined || dir === "--help" || dir === "-h") {
    console.log("Usage: deno run -A bench/throughput_targets.ts DIR (see the module doc)");
    Deno.exit(dir === undefined ? 2 : 0);
  }
  const newOffline = await read(dir, "new_offline");
  const fp8Log = await Deno.stat(`${dir}/new_offline_fp8.log`).then(() => true, () => false);
  const atRoofline = rooflineTokPerS(newOffline);
  console.log(
    `# serve_offline_at_roofline tok_s=${atRoofline.toFixed(1)} (tokens generated over the sum ` +
      `of the steps' roofline bounds); measured ${newOffline.completionTokPerS.toFixed(1)}, ` +
      `${(newOffline.completionTokPerS / atRoofline).toFixed(3)} of it`,
  );
  const atPhased = rooflineTokPerS(newOffline, newOffline.phasedMs);
  console.log(
    `# serve_offline_at_phased_bound tok_s=${atPhased.toFixed(1)} (the same with attention and ` +
      `the rest of each step one after the other); measured ` +
      `${(newOffline.completionTokPerS / atPhased).toFixed(3)} of it; decode steps of >= 128 ` +
      `rows at ${newOffline.bigDecodeOfPhased.toFixed(3)}x their phased bound`,
  );
  const lines = throughputTargets({
    newOffline,
    baseOffline: await read(dir, "base_offline"),
    newC256: await read(dir, "new_c256"),
    baseC256: await read(dir, "base_c256"),
    newC1: await read(dir, "new_c1"),
    ...(fp8Log ? { newOfflineFp8: await read(dir, "new_offline_fp8") } : {}),
  });
  for (const line of lines) console.log(line);
}
