/**
 * The kernel benchmark of record (GPU machine): runs every family benchmark
 * (bench/kernels/*_bench.ts) and its PyTorch counterpart (bench/kernels/*_torch.py) in one run,
 * then prints one table: each kernel's time, GB/s and TFLOP/s, its ratio to the copy bandwidth
 * measured in the same run, and PyTorch's time over ours (above 1: Denali is faster).
 *
 * Usage: deno run -A bench/kernels_bench.ts [--report saved.log]
 *
 * @module
 */

import { parseArgs } from "node:util";

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

/** The markdown table of Denali's kernels against the copy bandwidth and PyTorch. */
export function renderReport(lines: readonly BenchLine[]): string {
  const copy = lines.filter((l) => l.op === "copy_bandwidth").map((l) => l.fields.gbps);
  const copyGbps = copy.length ? Math.max(...copy) : NaN;
  const torch = new Map(
    lines.filter((l) => l.op.startsWith("torch_")).map((l) => [`${l.op.slice(6)} ${l.shape}`, l]),
  );
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
    const ratio = reference ? (reference.fields.time_us / us).toFixed(2) : "";
    rows.push(
      `| ${line.op} | ${line.shape} | ${us.toFixed(1)} | ${gbps.toFixed(0)} | ${
        (gbps / copyGbps).toFixed(2)
      } | ${tflops ? tflops.toFixed(1) : ""} | ${
        reference ? reference.fields.time_us.toFixed(1) : ""
      } | ${ratio} |`,
    );
  }
  return rows.join("\n");
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

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { report: { type: "string" } } });
  const log = values.report ? Deno.readTextFileSync(values.report) : await runAll();
  console.log(`\n${renderReport(parseBench(log))}`);
}
