/**
 * The kernel benchmark of record (GPU machine): runs every family benchmark
 * (bench/kernels/*_bench.ts) and its PyTorch counterpart (bench/kernels/*_torch.py) in one run,
 * then prints one table: each kernel's time, GB/s and TFLOP/s, its ratio to the copy bandwidth
 * measured in the same run, and PyTorch's time over ours (above 1: Denali is faster); then the
 * kernel targets (targetRows) met or missed in that run.
 *
 * Usage: deno run -A bench/kernels_bench.ts [--report saved.log]... (saved logs: no run, just the
 * tables)
 *
 * @module
 */

import { parseArgs } from "node:util";
import { helpRequested } from "../tools/cli.ts";

const USAGE = `Usage: deno run -A bench/kernels_bench.ts [--report saved.log]...

Runs every kernel benchmark under bench/kernels/ and the PyTorch baselines (NVIDIA GPU), then
prints the kernel tables and TARGET lines.
  --report FILE   no run: the tables and targets of a saved log (repeatable)
  -h, --help      show this help`;

/** One `BENCH <op> <shape> time_us=... gbps=... [tflops=...]` line. */
export interface BenchLine {
  /** Kernel name, e.g. `linear_gemv` or `torch_linear_gemv`. */
  readonly op: string;
  /** Shape label, as the family benchmark prints it. */
  readonly shape: string;
  /** Key-value fields: time_us, gbps, tflops. */
  readonly fields: Readonly<Record<string, number>>;
}

/** Parses every BENCH line of a benchmark log. */
export function parseBench(log: string): BenchLine[] {
  const lines: BenchLine[] = [];
  for (const line of log.split("\n")) {
    const parts = line.trim().split(/\s+/);
    if (parts[0] !== "BENCH" || parts.length < 3) continue;
    const fields: Record<string, number> = {};
    const named = parts.slice(2).filter((p) => p.includes("="));
    for (const pair of named) {
      const [key, value] = pair.split("=");
      fields[key] = Number(value);
    }
    const shape = parts[2].includes("=") && !parts[2].includes(",") && parts[2].startsWith("gbps")
      ? ""
      : parts[2];
    lines.push({ op: parts[1], shape, fields });
  }
  return lines;
}

/** Every copy bandwidth (GB/s) the run measured; the benchmarks compare against the best. */
function copyBandwidths(lines: readonly BenchLine[]): number[] {
  return lines.filter((l) => l.op === "copy_bandwidth").map((l) => l.fields.gbps);
}

/** The markdown table of Denali's kernels against the copy bandwidth and PyTorch. */
export function renderReport(lines: readonly BenchLine[]): string {
  const copy = copyBandwidths(lines);
  const copyGbps = copy.length ? Math.max(...copy) : NaN;
  const torch = torchTimes(lines);
  const rows = [
    `Copy bandwidth (device-to-device, read + write, best of ${copy.length}): ${
      copyGbps.toFixed(0)
    } GB/s`,
    "",
    "| kernel | shape | time µs | GB/s | of copy BW | TFLOP/s | PyTorch µs | PyTorch / Denali |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const line of lines) {
    if (line.op === "copy_bandwidth" || line.op.startsWith("torch_")) continue;
    const base = line.op.replace(/^accel_/, "");
    const reference = torch.get(`${base} ${line.shape}`);
    const { time_us: us, gbps, tflops } = line.fields;
    const ratio = reference ? (reference / us).toFixed(2) : "";
    rows.push(
      `| ${line.op} | ${line.shape} | ${us.toFixed(1)} | ${gbps.toFixed(0)} | ${
        (gbps / copyGbps).toFixed(2)
      } | ${tflops ? tflops.toFixed(1) : ""} | ${
        reference ? reference.toFixed(1) : ""
      } | ${ratio} |`,
    );
  }
  return rows.join("\n");
}

/**
 * PyTorch's time per `<op> <shape>` (op without `torch_`): its `_dense` line where there is one
 * (timed as Denali's calls are, bench/kernels/torch_common.py), else its plain line.
 */
function torchTimes(lines: readonly BenchLine[]): Map<string, number> {
  const times = new Map<string, number>();
  for (const dense of [false, true]) {
    for (const l of lines) {
      if (!l.op.startsWith("torch_") || l.op.endsWith("_dense") !== dense) continue;
      times.set(`${l.op.slice(6).replace(/_dense$/, "")} ${l.shape}`, l.fields.time_us);
    }
  }
  return times;
}

/** One kernel target of issue 3, checked on one run: the ratio and the bound it must reach. */
export interface TargetRow {
  /** The family and shape. */
  readonly what: string;
  /** The measured ratio. */
  readonly ratio: number;
  /** The target (ratio ≥ bound). */
  readonly bound: number;
  /**
   * The same ratio for a kernel that only reads the same bytes, timed alike (bench/kernels/
   * measure.ts readOnlyKernel), where the run measured one: what reading them costs, before any
   * arithmetic.
   */
  readonly readOnly?: number;
}

/**
 * The kernel targets of a run: GEMV (M ≤ 16) over the copy bandwidth (≥ 0.85); own GEMM over
 * torch.matmul (≥ 0.5) and the chosen path, the faster of Denali's kernel and the tuned vendor
 * library, over torch.matmul (≥ 0.95); decode attention at 4k+ context over the copy bandwidth
 * (≥ 0.70). Rows over the copy bandwidth also carry the read-only kernel's ratio for the same
 * bytes, where the run has a `read_only_same_size` line of that shape.
 */
export function targetRows(lines: readonly BenchLine[]): TargetRow[] {
  const copy = Math.max(...copyBandwidths(lines));
  const torch = torchTimes(lines);
  const line = (op: string, shape: string) => lines.find((l) => l.op === op && l.shape === shape);
  const time = (op: string, shape: string) => line(op, shape)?.fields.time_us;
  // The read-only kernel's fraction of the copy bandwidth, by the shape of its line.
  const readOnly = (shape: string) => {
    const gbps = line("read_only_same_size", shape)?.fields.gbps;
    return gbps === undefined ? undefined : gbps / copy;
  };
  const rows: TargetRow[] = [];
  for (const l of lines) {
    const { gbps, time_us: us } = l.fields;
    if (l.op === "linear_gemv") {
      const weight = readOnly(l.shape.replace(/^m\d+_/, ""));
      rows.push({
        what: `gemv ${l.shape} of copy`,
        ratio: gbps / copy,
        bound: 0.85,
        readOnly: weight,
      });
    } else if (l.op === "linear_gemm" && torch.has(`linear_gemm ${l.shape}`)) {
      const reference = torch.get(`linear_gemm ${l.shape}`)!;
      const chosen = Math.min(us, time("accel_linear_gemm", l.shape) ?? Infinity);
      rows.push({ what: `gemm ${l.shape} own / torch`, ratio: reference / us, bound: 0.5 });
      rows.push({ what: `gemm ${l.shape} chosen / torch`, ratio: reference / chosen, bound: 0.95 });
    } else if (l.op === "decode_attention" && Number(/ctx(\d+)/.exec(l.shape)?.[1]) >= 4096) {
      rows.push({
        what: `decode attention ${l.shape} of copy`,
        ratio: gbps / copy,
        bound: 0.7,
        readOnly: readOnly(l.shape),
      });
    }
  }
  return rows;
}

/** The targets as a markdown table, with a count of those met. */
export function renderTargets(rows: readonly TargetRow[]): string {
  const table = rows.map((r) =>
    `| ${r.what} | ${r.ratio.toFixed(3)} | ${r.bound} | ${
      r.ratio >= r.bound ? "yes" : "**no**"
    } | ${r.readOnly === undefined ? "" : r.readOnly.toFixed(3)} |`
  );
  const met = rows.filter((r) => r.ratio >= r.bound).length;
  return [
    "| target | ratio | bound | met | read-only kernel, same bytes |",
    "|---|---:|---:|---|---:|",
    ...table,
    "",
    `${met} of ${rows.length} targets met`,
  ]
    .join("\n");
}

async function runAll(): Promise<string> {
  const dir = new URL("./kernels/", import.meta.url).pathname;
  const files = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  let log = "";
  const commands: [string, string[]][] = [
    ...files.filter((f) => f.endsWith("_bench.ts")).map((f): [string, string[]] => [
      Deno.execPath(),
      ["run", "-A", `${dir}${f}`],
    ]),
    ...files.filter((f) => f.endsWith("_torch.py")).map((f): [string, string[]] => [
      "python3",
      [`${dir}${f}`],
    ]),
  ];
  for (const [command, args] of commands) {
    console.error(`--- ${args[args.length - 1]}`);
    const out = await new Deno.Command(command, { args, stdout: "piped", stderr: "inherit" })
      .output();
    const text = new TextDecoder().decode(out.stdout);
    console.log(text.trimEnd());
    if (!out.success) console.error(`FAILED: ${args[args.length - 1]}`);
    log += text;
  }
  return log;
}

if (import.meta.main && !helpRequested(Deno.args, USAGE)) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { report: { type: "string", multiple: true } },
  });
  const log = values.report
    ? values.report.map((path) => Deno.readTextFileSync(path)).join("\n")
    : await runAll();
  const lines = parseBench(log);
  console.log(`\n${renderReport(lines)}\n\n${renderTargets(targetRows(lines))}`);
}
