/**
 * GPU attention ops: launchers over kernels/src/attention.cu.
 *
 * - kvWrite: `kv_write`, grid (tokens), 128 threads.
 * - decodeAttention: `decode_attn_d{64,128}_g{1,2,4,8}`, grid (partitions, numKvHeads · chunks,
 *   batch), 128 threads. Where one partition covers the longest context the kernel writes bf16
 *   itself; a split one combines its partitions in the last block of each (sequence, head
 *   group) to finish (the fused reduce: a completion counter per group, zeroed at load and left
 *   zeroed), or, with decodeReduce "kernel" or past the counters, in `decode_reduce` after it,
 *   grid (numHeads, batch), 512 threads.
 * - prefillAttention: `prefill_attn_d{64,128}` (tensor cores on CUDA), grid
 *   (floor((tokens + 63 · seqs) / 64), numHeads), 128 threads, on CUDA two 64-key K/V stages of
 *   dynamic shared memory (2 × 34 KB at head dim 128; one stage if the device refuses).
 *
 * A shape whose `kvDtype` is "fp8" (E4M3 codes, one byte an element) takes the same launches
 * through the fp8 instantiations of the same kernel bodies: `kv_write_fp8` (code = e4m3(x /
 * scale)), `decode_attn_fp8_d*_g*` (then the same `decode_reduce`) and `prefill_attn_fp8_d*` /
 * `prefill_attn_simt_fp8_d*`, each taking the layer's kScale and vScale as two trailing f32
 * arguments. Grids, threads, shared memory, partition sizes and workspace are the bf16 path's:
 * the partials are f32 whatever the cache holds.
 *
 * On CUDA a decode call may run the tensor-core twins `decode_attn_[fp8_]mma_d*_g*` instead: the
 * same grid, partitions (the ragged split included), workspace and reduce, with q·K and p·V on
 * m16n8k16 mma (decodeUsesMma picks by the call's batch; AttentionKernelOptions.decodeKernel and
 * DENALI_DECODE_ATTN pin one family). On an FP8 cache at head dim 128 they are
 * `decode_attn_fp8_mma4_d128_g*`, built for four blocks an SM (decodeMmaBlocks).
 *
 * Decode partitions (decodePartSize): a batch that fills the GPU alone (four blocks per
 * multiprocessor; from 0.7 of that up to 2048 tokens) is not split below 2048 tokens, so it needs
 * no reduce; a smaller one is split into the fewest partitions of 32..512 tokens that fill it. A
 * block runs its partition in chunks of 512 rows with an online softmax across them. Where such a
 * full batch has contexts up to 2048 but stays under twice the target (raggedSplitParts;
 * DENALI_DECODE_RAGGED_ROWS moves the bound), the grid has up to 4 partitions a sequence and the
 * kernel sizes them from the contexts themselves (the ragged split): a context past twice (the
 * slack, DENALI_DECODE_RAGGED) a block slot's even share of the batch's tokens is split, the rest
 * run whole.
 *
 * The decode kernels and `decode_reduce` launch with programmatic dependent launch where the
 * backend offers it (CUDA, compute capability 9.0+, a CUDA 12.3+ driver; off with
 * `programmatic: false` or DENALI_PDL=0): a block may start while the previous kernel of the
 * stream still runs, and waits for it (griddepcontrol.wait) only after the reads that cannot
 * depend on it. The contract: of what decodeAttention reads, only K and V row contextLens[b] - 1
 * of each sequence (its new token) may be written by a kernel still running when it starts, and
 * only by the kernel enqueued right before it. The engine keeps it: that kernel is qkvRope
 * writing the cache (or kvWrite), which also launches programmatically but lets the next kernel
 * start only after its own wait, so everything enqueued before it is complete when a decode
 * block starts. Before its wait a decode
 * block reads contextLens, its block table and the K rows of earlier positions (the chain of
 * dependent round trips that makes a short call latency-bound); q, the rows at
 * contextLens[b] - 1 and every write come after. `decode_reduce` reads only contextLens before
 * its wait. kvWrite waits before it reads anything; prefill launches plainly.
 *
 * @module
 */

import type { Backend, DeviceBuffer } from "../../backends/backend.ts";
import { DriverError } from "../../backends/errors.ts";
import { reportFallback } from "../../backends/fallbacks.ts";
import {
  checkAttentionShape,
  checkDecode,
  checkDecodeWorkspaceSizes,
  checkKvWrite,
  checkPrefill,
} from "../checks/attention.ts";
import type {
  AttentionOps,
  AttentionShape,
  DecodeAttentionArgs,
  PrefillAttentionArgs,
} from "../ops.ts";
import type { Launcher } from "../../kernels/launcher.ts";
import { launcherWith, loadKernels, programmaticWanted } from "../../kernels/modules.ts";
import { choiceWanted, tunableWanted } from "./knobs.ts";

/** Threads per block of every attention kernel but the reduce. */
const THREADS = 128;
/** The fused decode reduce's completion counters: batch × head groups at most. */
const DECODE_COUNTERS = 65536;
/** Threads per block of decode_reduce (DECODE_REDUCE_THREADS). */
const REDUCE_THREADS = 512;
/** The shortest decode partition, in tokens; partitions are multiples of it. */
const MIN_PART = 32;
/**
 * Rows a decode block holds logits for in shared memory at once (DECODE_CHUNK); a longer
 * partition runs as several chunks in one block.
 */
const CHUNK = 512;
/**
 * The longest decode partition, where the batch alone fills the device: longer, and a long
 * sequence's blocks would run on after the rest of the batch is done.
 */
const MAX_PART = 2048;
/** Query rows per prefill block. */
const PREFILL_ROWS = 64;
/** Grid y and z limit. */
const GRID_YZ = 65535;

/** Options for loadAttentionOps, for tests and benchmarks. */
export interface AttentionKernelOptions {
  /**
   * `simt` runs prefill on the portable kernel even where the tensor-core one exists, so CUDA
   * tests can check the kernel HIP devices run; `one-stage` keeps the tensor-core kernel to one
   * K/V stage, the path taken where the device refuses the shared memory for two. Default `auto`.
   */
  readonly prefill?: "auto" | "simt" | "one-stage";
  /**
   * Decode blocks per multiprocessor the partition size aims for (default 4, unless the
   * environment sets DENALI_DECODE_PER_SM): more makes smaller partitions (more parallel loads, a
   * bigger reduce). For benchmarks that tune it.
   */
  readonly decodeBlocksPerSm?: number;
  /**
   * Whether the decode kernels and decode_reduce use programmatic dependent launch where the
   * backend offers it. Default true, unless the environment sets DENALI_PDL=0.
   */
  readonly programmatic?: boolean;
  /**
   * Which decode kernels run: `fma` (CUDA-core dot products, every backend), `mma` (q·K and p·V
   * on tensor cores, CUDA only; elsewhere `fma`) or `auto` (per call, decodeUsesMma). Default
   * `auto`, unless the environment sets DENALI_DECODE_ATTN. Since the FP8-cache mma kernels
   * widen codes straight to f16 operands, on an H100 the Llama-3-8B step took 0.88-0.97× fma's
   * with mma on an FP8 cache (1.00-1.02× at batch 32), and on a bf16 cache 0.93-0.97× at batch
   * 128-256 and 0.98-0.99× at batch 1-8 but 1.01-1.05× at batch 32-64
   * (bench/results/2026-12-07-s24-fp8-mma-decode-h100.md): `auto` keeps fma there.
   */
  readonly decodeKernel?: DecodeKernel;
  /**
   * Where a split decode's partitions are combined: `fused`, by the last block of each
   * sequence's head group inside the decode kernel (no second launch), or `kernel`, by
   * decode_reduce after it. Default `fused`, unless the environment sets
   * DENALI_DECODE_REDUCE=kernel. A call past the completion counters (batch × head groups) or
   * DECODE_CHUNK partitions takes `kernel` whatever this says.
   */
  readonly decodeReduce?: DecodeReduce;
  /**
   * The ragged split's slack (default 2, unless the environment sets DENALI_DECODE_RAGGED; 0
   * turns it off): where a batch fills the device with one partition a sequence, the decode
   * kernel splits the batch's longest contexts when the longest passes this many times a block
   * slot's even share of the batch's tokens (see raggedSplitParts). 1 to 3.75, in quarters.
   */
  readonly decodeRaggedSlack?: number;
  /**
   * How far the ragged split reaches: batches of up to this many times the block target in rows
   * (batch × head blocks), default 2, unless the environment sets DENALI_DECODE_RAGGED_ROWS; 1 to
   * 8. Past 2 it is an experiment: the offline run's steps of 132-263 rows (Llama) then split too.
   */
  readonly decodeRaggedRows?: number;
  /**
   * Whether the tensor-core decode kernels take the ragged split too (default true, unless the
   * environment sets DENALI_DECODE_RAGGED_MMA=0); the kernel side is the fma kernels' own
   * (attention.cu decode_block sizes a negative partSize from the contexts). With mma pinned on
   * ShareGPT-shaped contexts on an H100 it took decode attention to 0.66× (batch 48), 0.77× (64)
   * and 0.95× (96) its time unsplit, and the offline FP8 + FP8 KV run to 1.002-1.004×
   * (bench/results/2026-12-07-s25-decode-variants-h100.md); an FP8 cache always runs mma.
   */
  readonly decodeRaggedMma?: boolean;
  /**
   * Blocks an SM the FP8-cache tensor-core kernels of head dim 128 are built for: 4 (default,
   * unless the environment sets DENALI_DECODE_MMA_BLOCKS=3; `decode_attn_fp8_mma4_*`, q's
   * fragments in shared memory, 127 registers, so the one-wave grids the partition target aims
   * for at four blocks an SM fit them too) or 3 (q's fragments in registers, 144 registers). On
   * an H100, 4 took the Llama-3-8B step with FP8 weights and cache to 0.94-0.96× at batch 32-256
   * (1.00× at 1-16), TARGET attn_fp8kv_16k from 0.695 to 0.593 and the offline FP8 run to
   * 1.014-1.018× (bench/results/2026-12-07-s25-decode-variants-h100.md).
   */
  readonly decodeMmaBlocks?: 3 | 4;
}

/** The decode attention kernel families, or `auto` (see AttentionKernelOptions.decodeKernel). */
export type DecodeKernel = "fma" | "mma" | "auto";

/** Where a split decode's partitions meet (see AttentionKernelOptions.decodeReduce). */
export type DecodeReduce = "fused" | "kernel";

/** The partition reduce asked for: `requested`, else DENALI_DECODE_REDUCE, else `fused`. */
export function decodeReduceWanted(requested?: DecodeReduce): DecodeReduce {
  return choiceWanted(
    requested,
    "DENALI_DECODE_REDUCE",
    { fused: "fused", kernel: "kernel" },
    "fused",
    (value) => `DENALI_DECODE_REDUCE=${value} is not a decode reduce; use fused or kernel`,
  );
}

/**
 * Decode blocks per SM asked for: `requested`, else DENALI_DECODE_PER_SM, else 4. The
 * environment takes an integer in 1..64; the option any number in (0, 64], since the GPU tests
 * ask for a target under one block to reach the long-partition path at small batches.
 */
export function decodeBlocksPerSmWanted(requested?: number): number {
  if (requested !== undefined) {
    if (!(requested > 0 && requested <= 64)) {
      throw new RangeError(
        `decodeBlocksPerSm must be a number in (0, 64] (decode blocks per SM; default 4), got ${requested}`,
      );
    }
    return requested;
  }
  const fromEnv = Deno.env.get("DENALI_DECODE_PER_SM");
  if (fromEnv === undefined || fromEnv === "") return 4;
  const perSm = Number(fromEnv);
  if (!Number.isInteger(perSm) || perSm < 1 || perSm > 64) {
    throw new RangeError(
      `DENALI_DECODE_PER_SM must be an integer in 1..64 (decode blocks per SM; default 4), got ${fromEnv}`,
    );
  }
  return perSm;
}

/** The ragged split's slack asked for: `requested`, else DENALI_DECODE_RAGGED, else 2. */
export function decodeRaggedSlackWanted(requested?: number): number {
  return tunableWanted(
    requested,
    "decodeRaggedSlack",
    "DENALI_DECODE_RAGGED",
    2,
    (slack) => slack === 0 || (slack >= 1 && slack <= 3.75 && Number.isInteger(slack * 4)),
    "0 (off) or 1..3.75 in steps of 0.25 (the ragged decode split's slack; default 2)",
  );
}

/** How far the ragged split reaches: `requested`, else DENALI_DECODE_RAGGED_ROWS, else 2. */
export function decodeRaggedRowsWanted(requested?: number): number {
  return tunableWanted(
    requested,
    "decodeRaggedRows",
    "DENALI_DECODE_RAGGED_ROWS",
    2,
    (rows) => rows >= 1 && rows <= 8,
    "a number from 1 to 8 (the batches the ragged decode split reaches, in block targets of " +
      "rows; default 2)",
  );
}

/** The FP8 d128 mma kernels' blocks an SM: `requested`, else DENALI_DECODE_MMA_BLOCKS, else 4. */
export function decodeMmaBlocksWanted(requested?: 3 | 4): 3 | 4 {
  return choiceWanted<3 | 4>(
    requested,
    "DENALI_DECODE_MMA_BLOCKS",
    { 3: 3, 4: 4 },
    4,
    (value) =>
      `DENALI_DECODE_MMA_BLOCKS=${value} is not 3 or 4 (blocks an SM of the FP8-cache ` +
      "tensor-core decode kernels of head dim 128; default 4)",
  );
}

/** Whether the mma kernels split raggedly: the option, else DENALI_DECODE_RAGGED_MMA, else yes. */
export function decodeRaggedMmaWanted(requested?: boolean): boolean {
  return choiceWanted(
    requested,
    "DENALI_DECODE_RAGGED_MMA",
    { 0: false, 1: true },
    true,
    (value) =>
      `DENALI_DECODE_RAGGED_MMA=${value} is not 0 or 1 (whether the tensor-core decode kernels ` +
      "take the ragged split; default 1)",
  );
}

/**
 * The grid's partitions for the ragged split, or 0 where it does not apply: a batch whose rows
 * (batch × headBlocks) take one partition a sequence (from 0.7 of `targetBlocks`, contexts up
 * to 2048) but stay under `reach` (default 2) times the target, so that a long context can bound
 * the kernel (at batch 64 of ShareGPT-shaped contexts on an H100, 2.3x a uniform batch of the
 * same tokens); past twice the target the longest context rarely passes the default slack. Up to
 * ceil(maxContext / 512) partitions, which the workspace holds; the kernel picks the size each
 * launch from the contexts (attention.cu ragged_part_size), so a CUDA graph captured at one
 * context bucket serves any step in it. `part` is the launch-time size, where the caller has it.
 */
export function raggedSplitParts(
  batch: number,
  maxContext: number,
  headBlocks: number,
  targetBlocks: number,
  reach = 2,
  part = decodePartSize(batch, maxContext, headBlocks, targetBlocks),
): number {
  const rows = batch * headBlocks;
  if (rows >= reach * targetBlocks || maxContext > MAX_PART) return 0;
  if (part < maxContext) return 0;
  const parts = Math.ceil(maxContext / CHUNK);
  return parts > 1 ? parts : 0;
}

/** The attention ops on a GPU backend, and how they launch. */
export interface GpuAttentionOps extends AttentionOps {
  /** Whether decodeAttention's kernels launch programmatically (programmatic dependent launch). */
  readonly decodeProgrammatic: boolean;
  /** Which decode kernels decodeAttention runs. */
  readonly decodeKernel: DecodeKernel;
}

/** The decode kernels asked for: `requested`, else DENALI_DECODE_ATTN, else `auto`. */
export function decodeKernelWanted(requested?: DecodeKernel): DecodeKernel {
  // Read as programmaticWanted reads DENALI_PDL, in the same loadAttentionOps call.
  return choiceWanted<DecodeKernel>(
    requested,
    "DENALI_DECODE_ATTN",
    { fma: "fma", mma: "mma", auto: "auto" },
    "auto",
    (value) => `DENALI_DECODE_ATTN=${value} is not a decode kernel; use fma, mma or auto`,
  );
}

/**
 * Whether a decode call of `rows` (batch × head blocks) runs the tensor-core kernels. `auto`: on
 * an FP8 cache always (the fma kernels are bound by their per-element work there, and mma took
 * 0.88-0.97 of their step time at batch 1-256 but for batch 32, 1.00-1.02); on a bf16 cache up to
 * a quarter of `targetBlocks` (small split partitions: batch 1-16 of Llama on an H100) or from
 * twice it (batch 132 on). Between, the fma grid is about one wave at its four blocks an SM,
 * which the mma kernels (three an SM: 144-168 registers) need 1.3 waves for, and both read at
 * the bandwidth's pace.
 */
export function decodeUsesMma(
  kernel: DecodeKernel,
  rows: number,
  targetBlocks: number,
  fp8: boolean,
): boolean {
  if (kernel !== "auto") return kernel === "mma";
  return fp8 || rows * 4 <= targetBlocks || rows >= 2 * targetBlocks;
}

/** Query heads one decode block serves: the head-group size rounded up to 1, 2, 4 or 8. */
export function decodeHeadsPerBlock(ratio: number): number {
  return ratio <= 1 ? 1 : ratio <= 2 ? 2 : ratio <= 4 ? 4 : 8;
}

/**
 * Tokens per decode partition (grid x = ceil(maxContext / part)):
 * - when batch × headBlocks alone reaches `targetBlocks`, no split below MAX_PART (2048), and
 *   even parts past it: splitting a full grid buys no parallelism and costs a reduce launch of
 *   batch × numHeads blocks, which at batch 256 took a third of the step's attention time
 *   (bench/results/2026-12-06-s11-decode-mma-h100.md: context 513 took 1.52× context 512);
 *   from 0.7 of `targetBlocks`, one partition up to 2048 tokens too;
 * - else the smallest power of two in 32..256 whose grid stays within `targetBlocks`;
 * - else even parts of at most 512, so a context just past a multiple of 512 is not a full
 *   partition plus a nearly empty one.
 */
export function decodePartSize(
  batch: number,
  maxContext: number,
  headBlocks: number,
  targetBlocks: number,
): number {
  const context = Math.max(1, maxContext);
  const rows = batch * headBlocks;
  // Most of the device (0.7 of it: batch 47 of Llama's 8 head blocks on 132 SMs) also takes a
  // whole sequence up to 2048 a block, which beat two to four partitions of 512 by 1.2-1.4× at
  // batch 48 and 64; at batch 32 (0.48) it lost (bench/results/2026-12-06-s11-*.md).
  const most = rows * 10 >= targetBlocks * 7 && context <= MAX_PART;
  if (rows >= targetBlocks || most) return evenPart(context, Math.ceil(context / MAX_PART));
  for (let part = MIN_PART; part < CHUNK; part *= 2) {
    if (rows * Math.ceil(context / part) <= targetBlocks) return part;
  }
  return evenPart(context, Math.ceil(context / CHUNK));
}

/** The shortest multiple of MIN_PART that splits `context` into at most `parts` partitions. */
function evenPart(context: number, parts: number): number {
  return Math.ceil(context / parts / MIN_PART) * MIN_PART;
}

/** Dynamic shared bytes of one K/V stage of the tensor-core prefill (PREFILL_STAGE_BYTES). */
function prefillStageBytes(headDim: number): number {
  return 2 * 64 * (headDim + 8) * 2;
}

function aligned(op: string, name: string, buffer: DeviceBuffer, bytes: number): void {
  if (buffer.ptr % bytes !== 0) {
    throw new RangeError(
      `${op}: ${name} (0x${buffer.ptr.toString(16)}) must be ${bytes}-byte aligned`,
    );
  }
}

/** The 16-byte alignment decode and prefill need of out, q and the two cache buffers. */
function alignedQueryAndCache(
  op: string,
  args: DecodeAttentionArgs | PrefillAttentionArgs,
): void {
  aligned(op, "out", args.out, 16);
  aligned(op, "q", args.q, 16);
  aligned(op, "kCache", args.kCache, 16);
  aligned(op, "vCache", args.vCache, 16);
}

/** The fp8 kernels' two trailing f32 arguments: the layer's K and V scales (1 when absent). */
function fp8Scales(shape: AttentionShape): [number, number] {
  return [shape.kScale ?? 1, shape.vScale ?? 1];
}

function gpuShape(op: string, shape: AttentionShape): void {
  checkAttentionShape(op, shape);
  if (shape.headDim !== 64 && shape.headDim !== 128) {
    throw new RangeError(
      `${op}: shape.headDim must be 64 or 128 on the GPU, got ${shape.headDim}: the GPU ` +
        "attention kernels take head_dim 64 and 128; run this model on the CPU backend " +
        "(--backend cpu)",
    );
  }
  if ((shape.blockSize & (shape.blockSize - 1)) !== 0) {
    throw new RangeError(`${op}: shape.blockSize must be a power of two, got ${shape.blockSize}`);
  }
}

/** Loads the attention kernels onto the backend's device and returns its ops. */
export async function loadAttentionOps(
  backend: Backend,
  options: AttentionKernelOptions = {},
): Promise<GpuAttentionOps> {
  const kernels = await loadKernels(backend, "attention");
  const launchers = kernels.launchers;
  const get = (name: string): Launcher => {
    const launcher = launchers[name];
    if (!launcher) throw new Error(`attention: kernel ${name} is missing from the manifest`);
    return launcher.launch;
  };
  // Only the decode kernels and kv_write wait (griddepcontrol.wait) before touching what the
  // kernel before them may write, so only they may launch programmatically.
  const programmatic = programmaticWanted(options.programmatic);
  const decodeLauncher = (name: string) => launcherWith(backend, kernels, name, { programmatic });
  const kvWrite = decodeLauncher("kv_write").launch;
  const kvWriteFp8 = decodeLauncher("kv_write_fp8").launch;
  // Index: (headDim === 128 ? 4 : 0) + log2(heads per block). `infix` is "" or "fp8_", then
  // `family`: "" (fma), "mma_" for the tensor-core kernels (CUDA only: under HIP their bodies
  // trap), or at head dim 128 `family128`. A family no call can pick is not loaded.
  const decodeKernel = backend.kind === "cuda" ? decodeKernelWanted(options.decodeKernel) : "fma";
  const decodeKernels = (infix: string, family: string, family128 = family) =>
    [64, 128].flatMap((d) =>
      [1, 2, 4, 8].map((g) =>
        decodeLauncher(`decode_attn_${infix}${d === 128 ? family128 : family}d${d}_g${g}`).launch
      )
    );
  const fmaFamily = decodeKernel !== "mma", mmaFamily = decodeKernel !== "fma";
  const mmaBlocks = mmaFamily ? decodeMmaBlocksWanted(options.decodeMmaBlocks) : 3;
  const decode = fmaFamily ? decodeKernels("", "") : [];
  const decodeFp8 = fmaFamily ? decodeKernels("fp8_", "") : [];
  const decodeMma = mmaFamily ? decodeKernels("", "mma_") : [];
  const decodeMmaFp8 = mmaFamily
    ? decodeKernels("fp8_", "mma_", mmaBlocks === 4 ? "mma4_" : "mma_")
    : [];
  // The fused reduce's completion counters, one per (sequence, head group), zeroed here and left
  // zeroed by the kernels. Shared by every call of these ops, like linear's split-K counters, so
  // decodes on different streams must not overlap.
  const fusedReduce = decodeReduceWanted(options.decodeReduce) === "fused";
  const counters = fusedReduce ? backend.alloc(DECODE_COUNTERS * 4) : null;
  if (counters !== null) backend.memset(counters, 0);
  // The decode kernels' last pointer before any scales: the counters (fused) or 0
  // (decode_reduce combines). Built once, so a call spreads an existing array.
  const countersArg = counters === null ? [] : [counters.ptr];
  const noCountersArg = [0];
  const reduceLauncher = decodeLauncher("decode_reduce");
  const reduce = reduceLauncher.launch;
  const simt = options.prefill === "simt";
  // The CUDA tensor-core kernel pipelines two K/V stages in dynamic shared memory when the
  // device lets it have that much (69 KB at head dim 128); the portable kernels use static
  // shared memory and take none. The raised limit is an attribute of a function handle, so that
  // launcher is built over the very handles it was raised on (see launcherWith).
  const tensorCores = backend.kind === "cuda" && !simt;
  const prefillKernel = (headDim: number, fp8 = false): { launch: Launcher; stages: number } => {
    const infix = fp8 ? "fp8_" : "";
    const name = simt
      ? `prefill_attn_simt_${infix}d${headDim}`
      : `prefill_attn_${infix}d${headDim}`;
    if (tensorCores && options.prefill !== "one-stage") {
      const bytes = 2 * prefillStageBytes(headDim);
      try {
        const raised = launcherWith(backend, kernels, name, {}, (fn) => {
          fn.setMaxDynamicSharedMemory(bytes);
        });
        return { launch: raised.launch, stages: 2 };
      } catch (error) {
        // The device refuses that much shared memory (an invalid value for the attribute): one
        // stage. Anything else, a sticky device error included, is real.
        const refused = error instanceof DriverError && /FuncSetAttribute$/i.test(error.call) &&
          /INVALID_VALUE|InvalidValue/.test(error.codeName);
        if (!refused) throw error;
        reportFallback(
          "the device refuses the two-stage prefill attention's shared memory",
          `${error.message}; prefill attention runs one K/V stage`,
        );
      }
    }
    return { launch: get(name), stages: 1 };
  };
  // The fp8 kernels widen K/V into the same bf16 shared tiles, so they take the same bytes.
  const prefillKernels = (fp8: boolean) => {
    const d64 = prefillKernel(64, fp8), d128 = prefillKernel(128, fp8);
    return {
      d64,
      d128,
      shared64: tensorCores ? d64.stages * prefillStageBytes(64) : 0,
      shared128: tensorCores ? d128.stages * prefillStageBytes(128) : 0,
    };
  };
  const prefill = prefillKernels(false), prefillFp8 = prefillKernels(true);
  const targetBlocks = decodeBlocksPerSmWanted(options.decodeBlocksPerSm) *
    Math.max(1, backend.info.multiprocessors);
  // The ragged split's partSize argument, -(targetBlocks · 16 + slack in quarters); null off.
  const raggedMma = mmaFamily && decodeRaggedMmaWanted(options.decodeRaggedMma);
  const raggedSlack = fmaFamily || raggedMma
    ? decodeRaggedSlackWanted(options.decodeRaggedSlack)
    : 0;
  const raggedReach = decodeRaggedRowsWanted(options.decodeRaggedRows);
  const raggedCode = raggedSlack === 0
    ? null
    : -(Math.max(1, Math.round(targetBlocks)) * 16 + raggedSlack * 4);

  /** Bytes of partials for exactly this call (0 when one partition suffices). */
  const partialBytes = (batch: number, parts: number, shape: AttentionShape) =>
    parts === 1 ? 0 : batch * shape.numHeads * parts * (shape.headDim + 2) * 4;

  return {
    decodeProgrammatic: reduceLauncher.programmatic,
    decodeKernel,

    kvWrite(kCache, vCache, k, v, slots, tokens, shape, stream) {
      const op = "kvWrite";
      gpuShape(op, shape);
      const numBlocks = checkKvWrite(kCache, vCache, k, v, slots, tokens, shape);
      aligned(op, "kCache", kCache, 16);
      aligned(op, "vCache", vCache, 16);
      aligned(op, "k", k, 16);
      aligned(op, "v", v, 16);
      aligned(op, "slots", slots, 4);
      const common = [
        kCache,
        vCache,
        k,
        v,
        slots,
        shape.numKvHeads,
        shape.headDim,
        shape.blockSize,
        numBlocks,
      ] as const;
      if (shape.kvDtype === "fp8") {
        kvWriteFp8(tokens, 1, 1, THREADS, 1, 1, 0, stream, ...common, ...fp8Scales(shape));
      } else {
        kvWrite(tokens, 1, 1, THREADS, 1, 1, 0, stream, ...common);
      }
    },

    decodeAttention(args, stream) {
      const op = "decodeAttention";
      gpuShape(op, args.shape);
      const numBlocks = checkDecode(args);
      const {
        out,
        q,
        kCache,
        vCache,
        blockTables,
        contextLens,
        batch,
        maxBlocks,
        maxContext,
        shape,
        workspace,
      } = args;
      alignedQueryAndCache(op, args);
      aligned(op, "workspace", workspace, 16);
      aligned(op, "blockTables", blockTables, 4);
      aligned(op, "contextLens", contextLens, 4);
      const { numHeads, numKvHeads, headDim } = shape;
      const ratio = numHeads / numKvHeads;
      const heads = decodeHeadsPerBlock(ratio);
      const chunks = Math.ceil(ratio / heads);
      const headBlocks = numKvHeads * chunks;
      if (batch > GRID_YZ || headBlocks > GRID_YZ) {
        throw new RangeError(
          `${op}: batch ${batch} and numKvHeads × head chunks ${headBlocks} must be <= ${GRID_YZ}`,
        );
      }
      let part = decodePartSize(batch, maxContext, headBlocks, targetBlocks);
      let parts = Math.ceil(maxContext / part);
      const fp8 = shape.kvDtype === "fp8";
      const mma = decodeUsesMma(decodeKernel, batch * headBlocks, targetBlocks, fp8);
      const counted = counters !== null && batch * headBlocks <= DECODE_COUNTERS;
      // The mma kernels size partitions from the contexts (the ragged split) unless told not to.
      const ragged = counted && (!mma || raggedMma) && raggedCode !== null
        ? raggedSplitParts(batch, maxContext, headBlocks, targetBlocks, raggedReach, part)
        : 0;
      if (ragged > 0 && raggedCode !== null) {
        part = raggedCode;
        parts = ragged;
      }
      const need = partialBytes(batch, parts, shape);
      if (workspace.bytes < need) {
        throw new RangeError(
          `${op}: workspace has ${workspace.bytes} bytes, needs ${need} for batch ${batch} and ` +
            `maxContext ${maxContext} (size it with decodeWorkspaceBytes)`,
        );
      }
      // Partial outputs [batch, numHeads, parts, headDim] f32, then (max, sum) pairs.
      const partOut = workspace.ptr;
      const partMl = workspace.ptr + batch * numHeads * parts * headDim * 4;
      const family = mma ? (fp8 ? decodeMmaFp8 : decodeMma) : (fp8 ? decodeFp8 : decode);
      const kernel = family[(headDim === 128 ? 4 : 0) + Math.log2(heads)];
      const fused = counted && parts > 1 && parts <= CHUNK;
      kernel(
        parts,
        headBlocks,
        batch,
        THREADS,
        1,
        1,
        0,
        stream,
        partOut,
        partMl,
        out,
        q,
        kCache,
        vCache,
        blockTables,
        contextLens,
        numHeads,
        numKvHeads,
        shape.blockSize,
        maxBlocks,
        maxContext,
        part,
        parts,
        numBlocks,
        shape.scale,
        ...(fused ? countersArg : noCountersArg),
        ...(fp8 ? fp8Scales(shape) : []),
      );
      if (parts > 1 && !fused) {
        reduce(
          numHeads,
          batch,
          1,
          REDUCE_THREADS,
          1,
          1,
          0,
          stream,
          out,
          partOut,
          partMl,
          contextLens,
          numHeads,
          headDim,
          maxContext,
          part,
          parts,
        );
      }
    },

    decodeWorkspaceBytes(batch, maxContext, shape) {
      gpuShape("decodeWorkspaceBytes", shape);
      checkDecodeWorkspaceSizes(batch, maxContext, shape);
      // Any call with batch' <= batch and maxContext' <= maxContext fits: a partition below
      // CHUNK is chosen only when the grid (batch' × headBlocks × parts) is within
      // targetBlocks, so its partial rows (batch' × numHeads × parts) are at most
      // targetBlocks × ratio / chunks; otherwise parts <= ceil(ctx' / 512), so they are at most
      // batch' × numHeads × ceil(ctx / 512), as are the ragged split's (raggedSplitParts).
      const ratio = shape.numHeads / shape.numKvHeads;
      const chunks = Math.ceil(ratio / decodeHeadsPerBlock(ratio));
      const rows = Math.max(
        Math.floor((targetBlocks * ratio) / chunks),
        batch * shape.numHeads * Math.ceil(maxContext / CHUNK),
      );
      return rows * (shape.headDim + 2) * 4;
    },

    prefillAttention(args, stream) {
      const op = "prefillAttention";
      const { seqs, tokens, shape } = args;
      gpuShape(op, shape);
      const numBlocks = checkPrefill(args);
      alignedQueryAndCache(op, args);
      aligned(op, "queryStarts", args.queryStarts, 4);
      aligned(op, "contextLens", args.contextLens, 4);
      aligned(op, "blockTables", args.blockTables, 4);
      if (shape.numHeads > GRID_YZ) {
        throw new RangeError(`${op}: shape.numHeads ${shape.numHeads} must be <= ${GRID_YZ}`);
      }
      // Σ ceil(n_s / 64) <= (tokens + 63 · seqs) / 64 tiles; blocks past the real count exit.
      const tiles = Math.floor((tokens + (PREFILL_ROWS - 1) * seqs) / PREFILL_ROWS);
      const wide = shape.headDim === 128;
      const fp8 = shape.kvDtype === "fp8";
      const kernels = fp8 ? prefillFp8 : prefill;
      const kernel = wide ? kernels.d128 : kernels.d64;
      kernel.launch(
        tiles,
        shape.numHeads,
        1,
        THREADS,
        1,
        1,
        wide ? kernels.shared128 : kernels.shared64,
        stream,
        args.out,
        args.q,
        args.kCache,
        args.vCache,
        args.queryStarts,
        args.contextLens,
        args.blockTables,
        seqs,
        shape.numHeads,
        shape.numKvHeads,
        shape.blockSize,
        args.maxBlocks,
        numBlocks,
        shape.scale,
        kernel.stages,
        ...(fp8 ? fp8Scales(shape) : []),
      );
    },
  };
}
