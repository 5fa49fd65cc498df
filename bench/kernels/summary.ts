/**
 * Reads the output of one kernel-benchmark run (Denali's `BENCH` lines and PyTorch's, in any
 * order, one log or several) and prints the kernel targets as ratios measured in that run:
 *
 * - GEMV (M ≤ 16): bytes moved per second over the measured copy bandwidth (target ≥ 0.85);
 * - GEMM (M > 16): Denali's own kernel over `torch.matmul` (≥ 0.5), and the chosen path, the
 *   faster of Denali's kernel and the tuned vendor library, over `torch.matmul` (≥ 0.95). The
 *   torch time is its `_dense` line (timed as Denali's calls are) where the log has one;
 * - decode attention at 4k+ context: over the copy bandwidth (≥ 0.70).
 *
 * Usage: `deno run -A bench/kernels/summary.ts <log>...`
 *
 * @module
 */

/** One `BENCH <op> <shape> time_us=<t> gbps=<g> ...` line. */
export interface BenchLine {
  /** The op, such as `linear_gemv` or `torch_linear_gemm_dense`. */
  readonly op: string;
  /** The shape label, such as `m1_n4096_k4096`. */
  readonly shape: string;
  /** Median microseconds per call. */
  readonly timeUs: number;
  /** Bytes moved per second, in GB/s. */
  readonly gbps: number;
}

/** The `BENCH` lines of a log; other lines are skipped. */
export function parseBench(text: string): BenchLine[] {
  const lines: BenchLine[] = [];
  for (const line of text.split("\n")) {
    const m = /^BENCH (\S+) (\S+) time_us=([\d.]+) gbps=([\d.]+)/.exec(line.trim());
    if (m) lines.push({ op: m[1], shape: m[2], timeUs: Number(m[3]), gbps: Number(m[4]) });
    // The copy bandwidth has no shape and no time: `BENCH copy_bandwidth gbps=<g>`.
    const copy = /^BENCH (\w*copy_bandwidth) gbps=([\d.]+)/.exec(line.trim());
    if (copy) lines.push({ op: copy[1], shape: "", timeUs: 0, gbps: Number(copy[2]) });
  }
  return lines;
}

/** One target check: what was measured, the ratio, the bound and whether it holds. */
export interface TargetRow {
  /** The family and shape. */
  readonly what: string;
  /** The measured ratio. */
  readonly ratio: number;
  /** The target it is held to (ratio ≥ bound). */
  readonly bound: number;
}

/** The copy bandwidth of the run (Denali's `copy_bandwidth` line; torch's is not used). */
function copyBandwidth(lines: readonly BenchLine[]): number {
  const copy = lines.find((l) => l.op === "copy_bandwidth");
  if (!copy) throw new Error("no `BENCH copy_bandwidth` line: run a Denali kernel bench first");
  return copy.gbps;
}

/** The target rows of a run, in log order. */
export function targetRows(lines: readonly BenchLine[]): TargetRow[] {
  const time = (op: string, shape: string) =>
    lines.find((l) => l.op === op && l.shape === shape)?.timeUs;
  const rows: TargetRow[] = [];
  for (const l of lines) {
    if (l.op === "linear_gemv") {
      rows.push({
        what: `gemv ${l.shape} of copy`,
        ratio: l.gbps / copyBandwidth(lines),
        bound: 0.85,
      });
    } else if (l.op === "linear_gemm") {
      const torch = time("torch_linear_gemm_dense", l.shape) ?? time("torch_linear_gemm", l.shape);
      if (torch === undefined) continue;
      const accel = time("accel_linear_gemm", l.shape) ?? Infinity;
      rows.push({ what: `gemm ${l.shape} own / torch`, ratio: torch / l.timeUs, bound: 0.5 });
      rows.push({
        what: `gemm ${l.shape} chosen / torch`,
        ratio: torch / Math.min(l.timeUs, accel),
        bound: 0.95,
      });
    } else if (l.op === "decode_attention") {
      const ctx = Number(/ctx(\d+)/.exec(l.shape)?.[1] ?? 0);
      if (ctx < 4096) continue;
      rows.push({
        what: `decode attention ${l.shape} of copy`,
        ratio: l.gbps / copyBandwidth(lines),
        bound: 0.7,
      });
    }
  }
  return rows;
}

async function main() {
  if (Deno.args.length === 0) {
    console.error("usage: deno run -A bench/kernels/summary.ts <log>...");
    Deno.exit(2);
  }
  const texts = await Promise.all(Deno.args.map((path) => Deno.readTextFile(path)));
  const rows = targetRows(parseBench(texts.join("\n")));
  console.log("| target | ratio | bound | met |\n|---|---:|---:|---|");
  for (const r of rows) {
    const met = r.ratio >= r.bound ? "yes" : "**no**";
    console.log(`| ${r.what} | ${r.ratio.toFixed(3)} | ${r.bound} | ${met} |`);
  }
  const missed = rows.filter((r) => r.ratio < r.bound).length;
  console.log(`\n${rows.length - missed} of ${rows.length} targets met`);
}

if (import.meta.main) await main();
