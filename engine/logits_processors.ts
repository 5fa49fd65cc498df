/**
 * User logits processors: code that changes the f32 logits of the rows that use it, on the
 * device, after the model and before sampling. Two kinds:
 * - a **kernel** processor launches a user kernel (compiled with `compileKernels`) once per step
 *   over all the rows that use it, at the cost of one generated launch; engine-wide ones are
 *   recorded into the decode graphs, so a replayed step pays nothing on the host for them;
 * - a **host** processor calls a TypeScript function on each row's logits: its rows are copied to
 *   pinned host memory, the stream is waited for once, the function runs on each row and the rows
 *   are copied back.
 *   It works on every backend (it is how a kernel's CPU reference runs on the CPU backend), but
 *   the wait stalls the pipeline each step: see bench/scriptable_bench.ts for its measured cost.
 *
 * Where they run (engine/sampler.ts): engine-wide processors (EngineOptions.logitsProcessors) at
 * the end of the forward pass, on every row; then per request: logitBias / banned ids /
 * minTokens, allowed ids and the token bitmask, then `SamplingParams.logitsProcessors` in the
 * order given (each position one launch per distinct processor), then penalties and sampling.
 *
 * The row signature of a kernel processor:
 * ```c
 * extern "C" __global__ void my_processor(float* logits, const int* rows, int count, int vocab,
 *                                         ...extra);
 * ```
 * Row `rows[k]` (k < count) of the [*, vocab] f32 logits is the k-th row to process. The launch
 * is grid (blocksPerRow, count, 1), block (block, 1, 1): by default one thread per token,
 * blockIdx.y the row and blockIdx.x * blockDim.x + threadIdx.x the token. NVRTC includes no
 * standard headers: write `int` rather than `int32_t`, and -inf as `__int_as_float(0xff800000)`
 * (there is no `INFINITY`).
 *
 * @module
 */

import type { Backend, DeviceBuffer, Stream } from "../backends/backend.ts";
import type { KernelLauncher } from "../kernels/launcher.ts";
import type { LoadedKernels } from "../kernels/modules.ts";
import type { Sequence } from "./sequence.ts";

/** The rows one processor call works on; reused from call to call (keep nothing past it). */
export interface LogitsRows {
  /** The device the logits are on. */
  readonly backend: Backend;
  /** The stream to enqueue on. */
  readonly stream: Stream;
  /** f32 [rows, vocab] logits. */
  readonly logits: DeviceBuffer;
  /** Row length. */
  readonly vocab: number;
  /** How many rows to process. */
  readonly count: number;
  /** The rows are rowIds[offset, offset + count). */
  readonly offset: number;
  /** Row indices on the host. */
  readonly rowIds: Int32Array;
  /** The same indices on the device (i32). */
  readonly rowIdsDevice: DeviceBuffer;
  /**
   * Pinned host memory for `count` rows of logits (count × vocab floats), for host processors;
   * allocated on first use and reused (valid until the next call).
   */
  hostRows(count: number): Float32Array;
  /** The sequence of the k-th row (k < count); null for engine-wide processors. */
  sequence(k: number): Sequence | null;
}

/** Changes logits rows before sampling; see the module doc. */
export interface LogitsProcessor {
  /** Names it in errors and logs. */
  readonly name: string;
  /** Whether it only enqueues device work, so decode graphs can record it. */
  readonly capturable: boolean;
  /** Processes `rows`. */
  process(rows: LogitsRows): void;
}

/** Options of {@link kernelLogitsProcessor}. */
export interface KernelProcessorOptions {
  /** Extra arguments after (logits, rows, count, vocab): device buffers or scalars; at most 6. */
  readonly args?: readonly unknown[];
  /** Threads per block; default 256. */
  readonly block?: number;
  /** Blocks per row; default ceil(vocab / block) (one thread per token). */
  readonly blocksPerRow?: number | ((vocab: number) => number);
}

const ROW_PARAMS = ["ptr", "ptr", "i32", "i32"] as const;
const MAX_EXTRA_ARGS = 6;

/**
 * A processor that launches kernel `name` of `kernels` (from `compileKernels`) with the row
 * signature of the module doc.
 *
 * @example
 * ```ts ignore
 * const mod = await compileKernels(gpu, `
 *   extern "C" __global__ void no_odd_ids(float* logits, const int* rows, int count, int vocab) {
 *     const int t = blockIdx.x * blockDim.x + threadIdx.x;
 *     float* row = logits + (size_t)rows[blockIdx.y] * vocab;
 *     if (t < vocab && (t & 1)) row[t] = __int_as_float(0xff800000);  // -inf
 *   }`, { name: "no_odd" });
 * const processor = kernelLogitsProcessor(mod, "no_odd_ids");
 * engine.generate("Hi", { logitsProcessors: [processor] });
 * ```
 * @throws TypeError when the kernel is missing or does not start with the row parameters
 */
export function kernelLogitsProcessor(
  kernels: LoadedKernels,
  name: string,
  options: KernelProcessorOptions = {},
): LogitsProcessor {
  const launcher: KernelLauncher | undefined = kernels.launchers[name];
  if (launcher === undefined) {
    throw new TypeError(
      `kernelLogitsProcessor: no kernel '${name}' in the module (has ${
        Object.keys(kernels.launchers).join(", ")
      })`,
    );
  }
  const params = launcher.signature.params;
  const types = params.map((p) => p.type);
  if (ROW_PARAMS.some((type, i) => types[i] !== type)) {
    throw new TypeError(
      `kernelLogitsProcessor: ${name} takes (${
        params.map((p) => `${p.type} ${p.name}`).join(", ")
      }); a logits processor kernel starts (float* logits, const int* rows, int count, int vocab), ` +
        `then its own arguments`,
    );
  }
  const extra = options.args ?? [];
  if (extra.length !== params.length - 4 || extra.length > MAX_EXTRA_ARGS) {
    throw new TypeError(
      `kernelLogitsProcessor: ${name} takes ${params.length - 4} argument(s) after the row ` +
        `parameters (at most ${MAX_EXTRA_ARGS}); args has ${extra.length}`,
    );
  }
  const block = options.block ?? 256;
  const perRow = options.blocksPerRow;
  const blocksOf = typeof perRow === "function"
    ? perRow
    : perRow === undefined
    ? (vocab: number) => Math.ceil(vocab / block)
    : () => perRow;
  const launch = launcher.launch;
  const [a, b, c, d, e, f] = extra;
  // One call shape per arity, so a launch spreads no array.
  type Call = (r: LogitsRows, grid: number, rows: number) => void;
  const calls: Call[] = [
    (r, g, rows) =>
      launch(g, r.count, 1, block, 1, 1, 0, r.stream, r.logits, rows, r.count, r.vocab),
    (r, g, rows) =>
      launch(g, r.count, 1, block, 1, 1, 0, r.stream, r.logits, rows, r.count, r.vocab, a),
    (r, g, rows) =>
      launch(g, r.count, 1, block, 1, 1, 0, r.stream, r.logits, rows, r.count, r.vocab, a, b),
    (r, g, rows) =>
      launch(g, r.count, 1, block, 1, 1, 0, r.stream, r.logits, rows, r.count, r.vocab, a, b, c),
    (r, g, rows) =>
      launch(g, r.count, 1, block, 1, 1, 0, r.stream, r.logits, rows, r.count, r.vocab, a, b, c, d),
    (r, g, rows) =>
      launch(
        g,
        r.count,
        1,
        block,
        1,
        1,
        0,
        r.stream,
        r.logits,
        rows,
        r.count,
        r.vocab,
        a,
        b,
        c,
        d,
        e,
      ),
    (r, g, rows) =>
      launch(
        g,
        r.count,
        1,
        block,
        1,
        1,
        0,
        r.stream,
        r.logits,
        rows,
        r.count,
        r.vocab,
        a,
        b,
        c,
        d,
        e,
        f,
      ),
  ];
  const call = calls[extra.length];
  return {
    name,
    capturable: true,
    process(rows) {
      if (rows.count === 0) return;
      call(rows, blocksOf(rows.vocab), rows.rowIdsDevice.ptr + 4 * rows.offset);
    },
  };
}

/**
 * A processor that calls `fn` on each row's logits on the host (a pinned copy, written back after
 * `fn` returns). `seq` is the row's sequence, or null when the processor is engine-wide. Each
 * step waits for the stream once to copy the rows down: use a kernel processor where the step
 * time matters.
 *
 * @example
 * ```ts ignore
 * const noDigits = hostLogitsProcessor("no_digits", (logits) => {
 *   for (const id of digitIds) logits[id] = -Infinity;
 * });
 * engine.generate("Spell it out:", { logitsProcessors: [noDigits] });
 * ```
 */
export function hostLogitsProcessor(
  name: string,
  fn: (logits: Float32Array, seq: Sequence | null) => void,
): LogitsProcessor {
  return {
    name,
    capturable: false,
    process(rows) {
      const { backend, stream, logits, vocab, count } = rows;
      if (count === 0) return;
      const host = rows.hostRows(count);
      const rowOf = (k: number) =>
        logits.slice(4 * vocab * rows.rowIds[rows.offset + k], 4 * vocab);
      const hostOf = (k: number) => host.subarray(k * vocab, (k + 1) * vocab);
      // All rows down, one wait, the calls, all rows back: one round trip per step, not per row.
      for (let k = 0; k < count; k++) backend.copyToHost(hostOf(k), rowOf(k), stream);
      stream.synchronize();
      for (let k = 0; k < count; k++) fn(hostOf(k), rows.sequence(k));
      for (let k = 0; k < count; k++) backend.copyToDevice(rowOf(k), hostOf(k), stream);
    },
  };
}

/** Throws a TypeError naming the field unless every entry is a LogitsProcessor. */
export function checkProcessors(field: string, processors: readonly LogitsProcessor[]): void {
  if (!Array.isArray(processors)) {
    throw new TypeError(`${field} must be an array of logits processors`);
  }
  for (const p of processors) {
    if (typeof p?.process !== "function" || typeof p.capturable !== "boolean") {
      throw new TypeError(
        `${field} holds ${String(p)}; make processors with kernelLogitsProcessor or ` +
          `hostLogitsProcessor`,
      );
    }
  }
}
