/**
 * The linear family on a GPU: launchers over kernels/src/linear.cu, and the per-shape choice
 * between Denali's kernels and the backend's vendor library.
 *
 * Kernel choice (see linear.cu for the kernels themselves):
 * - K % 8 == 0 and x, W 16-byte aligned ("vector" shapes), M <= 16: the tensor-core GEMV,
 *   `linear_gemv_t{8,16}_r{16,8}[_s2]`: t8 for M <= 8, else t16; 16 W rows per warp group when
 *   that still gives at least one group per SM, else 8 (more blocks for small N); one step of W
 *   in flight per warp for M > 8, two (`_s2`) for M <= 8. 256 threads; warps
 *   split K in groups of `ksplit` = 8 (fewer when K has fewer than 8 steps of 128 or 256), so a
 *   block covers 8 · ROWS / ksplit rows; grid ceil(N / that). Where the backend offers
 *   programmatic dependent launch (CUDA, compute capability 9.0+, a CUDA 12.3+ driver), GEMVs
 *   use it: a GEMV may start while the kernel before it still runs, streaming its first weights,
 *   and waits for that kernel before it reads x or writes out. So a GEMV's weights must not be
 *   written by the kernels still running when it is launched (the engine writes them once, by
 *   copies, at load time). Every other linear kernel launches plainly.
 * - Vector shapes, M > 16, CUDA with the sm_90a image of linear_sm90.cu loaded (Hopper):
 *   `linear_wgmma_128x256` when its 128×256 tiles fill at least 0.9 of the SMs (one block per SM),
 *   else `linear_wgmma_128x128` when its tiles fill a quarter of them, or when splitting K over up
 *   to 16 blocks a tile (a ticket per tile; the last block sums the fp32 partials) makes ~0.9
 *   waves; 256 threads, 193 KiB dynamic shared memory. An unsplit one whose last wave would be
 *   under 0.8 full has a stream-K form, `linear_wgmma_sk_128x{256,128}`: one block an SM (never
 *   more than the shape's k iterations), each an equal share of all tiles' k iterations; it
 *   runs where LinearOptions.streamK (DENALI_STREAM_K) says: `timed` (where prepareLinear timed
 *   it faster), `always`, or `never` (the default).
 * - Vector shapes of 17-64 rows on the same image, where LinearOptions.swapAb (DENALI_SWAP_AB)
 *   says (`timed`, `always`, or `never`, the default: no faster than the library on an H100):
 *   `linear_wgmma_swap_128x{32,64}`, which compute outᵀ = W · xᵀ with W's rows as wgmma's M and
 *   the tokens as its N, so a 33-row batch pads to 64 tokens, not 128 rows; 128 W rows × 32 (up
 *   to 32 rows) or 64 tokens a tile, two blocks an SM, K split to fill about 2 blocks an SM.
 * - Other vector shapes, M > 16, CUDA: `linear_gemm_128x256` (256 threads, 144 KiB dynamic shared
 *   memory) for M >= 4096, else `linear_gemm_128x128` (128 threads, 96 KiB) when there are at
 *   least as many 128×128 tiles as SMs, else `linear_gemm_64x64` (128 threads, 64 KiB); 1-D grid
 *   of tiles.
 * - Everything else (K % 8 != 0, unaligned x or W, and M > 16 on HIP): `linear_gemm_fma`, 16×16
 *   threads, grid (ceil(N / 64), ceil(M / 64)).
 * - `linearSiluMul` (a gate/up weight [2N, K], out [M, N]): where `linear` would run a GEMV on
 *   the [2N, K] weight (CUDA), `linear_gemv_t8_r16_s2_silu` / `linear_gemv_t16_r16_silu`, the
 *   16-row GEMVs whose groups pair 8 gate rows with the 8 up rows of the same columns and apply
 *   SiLU-and-multiply before they store; FP8 and 4-bit weights likewise (ops/gpu/fp8.ts,
 *   ops/gpu/awq.ts). Elsewhere it returns false and the model runs `linear` and `siluMul`.
 * The choice is integer arithmetic on the arguments, so a call allocates nothing.
 *
 * @module
 */

import type { Backend, DeviceBuffer, Stream } from "../../backends/backend.ts";
import { isOutOfMemory, UnsupportedShapeError } from "../../backends/errors.ts";
import { reportFallback } from "../../backends/fallbacks.ts";
import {
  checkLinearArgs,
  checkLinearRmsNormArgs,
  checkLinearShapes,
  checkLinearSiluMulArgs,
} from "../checks/linear.ts";
import { type Fp8Weight, isFp8Weight } from "../linear_weight.ts";
import type { Fp8Ops, LinearOps } from "../ops.ts";
import { type Fp8Gemm, loadFp8Ops, type W8a8Via } from "./fp8.ts";
import {
  forcedGemvSplit,
  gemvGridBlocks,
  gemvSplitFor,
  gemvSplitOf16,
  gemvStagesFor,
  type LinearCall,
  NORM_GEMV_SHARED_MAX,
} from "./gemv_geometry.ts";
import { type AwqWeight, isAwqWeight } from "../linear_weight.ts";
import type { AwqOps } from "../ops.ts";
import { type AwqGemvVariant, loadAwqOps } from "./awq.ts";
import { choiceWanted, tunableWanted } from "./knobs.ts";
import type { Launcher } from "../../kernels/launcher.ts";
import {
  launcherWith,
  type LoadedKernels,
  loadKernels,
  programmaticWanted,
} from "../../kernels/modules.ts";

/**
 * Which Denali kernel `linear` runs. `auto` picks by shape; the others force one, for tests and
 * benchmarks, wherever it applies (the GEMVs need M <= 16, the mma GEMMs CUDA, the wgmma GEMMs the
 * sm_90a image, and all but `fma`
 * a vector shape); elsewhere `auto`'s choice stands.
 */
export type LinearKernel =
  | "auto"
  | "gemv16"
  | "gemv8"
  | "gemm128"
  | "gemm64"
  | "fma"
  | "gemm128x256"
  | "wgmma128x256"
  | "wgmma128x128"
  | "wgmmaSk128x256"
  | "wgmmaSk128x128"
  | "wgmmaSwap128x64"
  | "wgmmaSwap128x32";

/**
 * When the linear op runs an alternative form of a GEMM: `timed` where prepareLinear timed it
 * faster, `always` where it applies, or `never`.
 */
export type TimedMode = "timed" | "always" | "never";

/** When the linear op runs a GEMM's stream-K form (LinearOptions.streamK). */
export type StreamKMode = TimedMode;

/** The stream-K mode when neither the options nor DENALI_STREAM_K name one. */
export const STREAM_K_DEFAULT: StreamKMode = "never";

/**
 * When the linear op runs the swapped-operand wgmma GEMMs at 17-64 rows (LinearOptions.swapAb).
 * `timed`: prepareLinear races them beside the other forms and keeps them where they win. With
 * bf16 weights they changed no decode step on an H100 (batch 32: 0.998×, batch 64: 1.004×;
 * bench/results/2026-12-07-s18-swap-ab-serialization-h100.md); with FP8 weights timing them made
 * the step 0.977× and 0.975× at batch 32 and 0.998× and 0.995× at batch 64 in two alternated
 * rounds, the bf16 step within ±0.4% (bench/results/2026-12-07-s21-partitions-h100.md).
 */
export const SWAP_AB_DEFAULT: TimedMode = "timed";

/** A TimedMode knob: `requested`, else `variable` (1 always, 0 never, timed), else `fallback`. */
function timedModeWanted(
  requested: TimedMode | undefined,
  variable: string,
  fallback: TimedMode,
): TimedMode {
  return choiceWanted<TimedMode>(
    requested,
    variable,
    { 1: "always", 0: "never", timed: "timed" },
    fallback,
    (value) => `${variable}=${value} is not a mode; use 1 (always), 0 (never) or timed`,
  );
}

/** The stream-K mode asked for: `requested`, else DENALI_STREAM_K (1, 0 or timed), else the default. */
export function streamKModeWanted(requested?: StreamKMode): StreamKMode {
  return timedModeWanted(requested, "DENALI_STREAM_K", STREAM_K_DEFAULT);
}

/** The swapped-operand mode asked for: `requested`, else DENALI_SWAP_AB, else the default. */
export function swapAbModeWanted(requested?: TimedMode): TimedMode {
  return timedModeWanted(requested, "DENALI_SWAP_AB", SWAP_AB_DEFAULT);
}

/**
 * Whether `linearSiluMul` runs the GEMVs with SiLU-and-multiply in their epilogue when neither the
 * options nor DENALI_SILU_EPILOGUE say. Off: correct on an H100 (bit for bit against the GEMV and
 * siluMul apart), but the Llama-3-8B step at batch 1 and 8 was no shorter with it (1.003×,
 * bench/results/2026-12-07-s16-silu-gemv-rows-h100.md). Worth timing again where launches cost
 * more (an H200's shorter steps).
 */
export const SILU_EPILOGUE_DEFAULT = false;

/** The SiLU epilogue asked for: `requested`, else DENALI_SILU_EPILOGUE (1 on, 0 off), else the default. */
export function siluEpilogueWanted(requested?: boolean): boolean {
  return choiceWanted(
    requested,
    "DENALI_SILU_EPILOGUE",
    { 1: true, 0: false },
    SILU_EPILOGUE_DEFAULT,
    (value) =>
      `DENALI_SILU_EPILOGUE=${value} is not a choice; use 1 (the GEMV applies SiLU-and-multiply) ` +
      "or 0 (the GEMV, then siluMul)",
  );
}

/**
 * Whether `linearRmsNorm` normalises in the GEMV prologue when neither the options nor
 * DENALI_NORM_GEMV say. Off until a GPU A/B of the decode step shows it shorter: it saves the two
 * rmsNorm launches a layer at up to 8 rows, but every GEMV block then reads and normalises the
 * whole input row itself before its first product.
 */
export const NORM_PROLOGUE_DEFAULT = false;

/** The norm prologue asked for: `requested`, else DENALI_NORM_GEMV (1 on, 0 off), else the default. */
export function normPrologueWanted(requested?: boolean): boolean {
  return choiceWanted(
    requested,
    "DENALI_NORM_GEMV",
    { 1: true, 0: false },
    NORM_PROLOGUE_DEFAULT,
    (value) =>
      `DENALI_NORM_GEMV=${value} is not a choice; use 1 (the GEMV normalises its input) or 0 ` +
      "(rmsNorm, then the GEMV)",
  );
}

/** The norm prologue's largest grid: `requested`, else DENALI_NORM_GEMV_BLOCKS, else 0 (any). */
export function normPrologueMaxBlocksWanted(requested?: number): number {
  return tunableWanted(
    requested,
    "normPrologueMaxBlocks",
    "DENALI_NORM_GEMV_BLOCKS",
    0,
    (blocks) => Number.isInteger(blocks) && blocks >= 0,
    "an integer >= 0 (the largest grid the norm-prologue GEMVs take; 0, the default, any)",
  );
}

/** Options of loadLinearOps, for tests and benchmarks; the engine uses the defaults. */
export interface LinearOptions {
  /** Forces a kernel (default `auto`). */
  readonly kernel?: LinearKernel;
  /** Forces the GEMV's K split (warps per row group): 1, 2, 4 or 8. */
  readonly gemvSplit?: 1 | 2 | 4 | 8;
  /** Forces the GEMV's steps of W in flight per warp: 1, or 2 (the `_s2` kernels). */
  readonly gemvStages?: 1 | 2;
  /**
   * Whether GEMVs use programmatic dependent launch where the backend offers it. Default true,
   * unless the environment sets DENALI_PDL=0.
   */
  readonly programmatic?: boolean;
  /**
   * Up to how many rows of x `linear` runs a 4-bit weight on the W4A16 GEMM (CUDA) instead of
   * dequantizing it; default 0 (off: slower than dequantizing on an H100, ops/gpu/awq.ts).
   */
  readonly awqGemmMaxM?: number;
  /** Forces the FP8 GEMVs' K split (benchmarks). */
  readonly fp8GemvSplit?: 1 | 2 | 4 | 8;
  /** Forces the 4-bit GEMVs' K split (benchmarks). */
  readonly awqGemvSplit?: 1 | 2 | 4 | 8;
  /** The 4-bit t8/16-row GEMV's variant (benchmarks; ops/gpu/awq.ts). */
  readonly awqGemvVariant?: AwqGemvVariant;
  /**
   * When `auto` runs a wgmma GEMM whose tiles leave its last wave mostly idle in its stream-K
   * form (one block an SM sharing out every tile's k iterations): `timed` where prepareLinear
   * timed it faster than the data-parallel form (with the vendor library in the race), `always`,
   * or `never`. Default {@link STREAM_K_DEFAULT}, or DENALI_STREAM_K (1 always, 0 never, timed).
   */
  readonly streamK?: StreamKMode;
  /**
   * When `auto` runs 17-64 rows on the swapped-operand wgmma GEMMs (W's rows as wgmma's M, the
   * tokens as its N: no 128-row tile mostly of zeros): `timed` where prepareLinear timed them
   * faster than the 128-row tiles and the library, `always`, or `never`. Default
   * {@link SWAP_AB_DEFAULT}, or DENALI_SWAP_AB (1 always, 0 never, timed).
   */
  readonly swapAb?: TimedMode;
  /**
   * Whether `linearSiluMul` runs its GEMVs with SiLU-and-multiply in the epilogue (else it
   * returns false and the caller runs linear and siluMul). Default {@link SILU_EPILOGUE_DEFAULT},
   * or DENALI_SILU_EPILOGUE (1 on, 0 off; for the A/B in one tree).
   */
  readonly siluEpilogue?: boolean;
  /**
   * Whether `linearRmsNorm` runs its GEMVs with the pre-norm step in the prologue (else it
   * returns false and the caller runs rmsNorm and linear). Default {@link NORM_PROLOGUE_DEFAULT},
   * or DENALI_NORM_GEMV (1 on, 0 off; for the A/B in one tree).
   */
  readonly normPrologue?: boolean;
  /**
   * With the norm prologue on, the largest grid it takes (0: any): every block normalises the
   * whole input itself, so a product of many blocks (gate/up: 1792 at Llama-3-8B's shape) reads
   * the input that many times. Default 0, or DENALI_NORM_GEMV_BLOCKS (for the A/B).
   */
  readonly normPrologueMaxBlocks?: number;
}

/** One GEMV launch, as `linear` would make it. */
export interface GemvLaunch {
  /** The kernel function, e.g. `linear_gemv_t8_r16_s2`. */
  readonly kernel: string;
  /** Warps per row group (the K split). */
  readonly split: number;
  /** Steps of W in flight per warp. */
  readonly stages: number;
  /** Blocks of 256 threads. */
  readonly blocks: number;
  /** Whether it launches programmatically. */
  readonly programmatic: boolean;
}

/**
 * The linear ops (with the FP8 weight ops of ops/gpu/fp8.ts), plus which kernel a call would run
 * (for benchmark labels).
 */
export interface GpuLinearOps extends LinearOps, Fp8Ops, AwqOps {
  /** The FP8 GEMV `linear` runs for an FP8 weight, or null where it dequantizes first. */
  fp8GemvKernel(
    m: number,
    n: number,
    k: number,
    x: DeviceBuffer,
    weight: Fp8Weight,
  ): string | null;
  /**
   * Runs `linear`'s W8A8 path on an FP8 weight directly (x quantized per token into the weight's
   * scratch, then the FP8 GEMM `via` names) and returns true, or false where it can't (no sm_90a
   * image or library FP8 matmul, K % 16 != 0, a scratch too small, the library refusing the
   * shape). For tests and benchmarks: `linear` takes it only where prepareLinear timed it faster.
   */
  fp8W8a8(
    out: DeviceBuffer,
    x: DeviceBuffer,
    weight: Fp8Weight,
    m: number,
    n: number,
    k: number,
    stream: Stream,
    via: W8a8Via,
  ): boolean;
  /**
   * How `linear` runs an FP8 weight of this shape with more rows than the GEMVs take: W8A8 `via`
   * Denali's wgmma GEMM or the library, or (up to 64 rows) the GEMV over 16-row chunks
   * ("gemvRows"), where prepareLinear timed it faster, else "dequantize".
   */
  fp8PrefillPath(m: number, n: number, k: number): Fp8PrefillPath;
  /**
   * Runs the FP8 GEMV over x's rows in 16-row chunks whatever prepareLinear chose, and returns
   * true, or false where it can't (16 or fewer rows, more than 64, x unaligned). For tests.
   */
  fp8GemvRows: LinearCall<Fp8Weight>;
  /**
   * Runs the W4A16 GEMM on a 4-bit weight directly, whatever M, and returns true, or false where
   * it can't (not CUDA, M within the GEMVs' rows, x or the codes unaligned). For tests and
   * benchmarks: `linear` takes it only up to LinearOptions.awqGemmMaxM rows (default none).
   */
  awqGemm(
    out: DeviceBuffer,
    x: DeviceBuffer,
    weight: AwqWeight,
    m: number,
    n: number,
    k: number,
    stream: Stream,
  ): boolean;
  /** The scratch bytes `fp8W8a8` needs for x of [m, k] (an FP8 weight's scratch holds both). */
  fp8W8a8ScratchBytes(m: number, k: number): number;
  /** The kernel `linear` runs for this shape and these buffers, or "accelerator". */
  kernelName(m: number, n: number, k: number, x: DeviceBuffer, weight: DeviceBuffer): string;
  /**
   * The GEMV launch `linear` makes for this shape and these buffers, or null when it runs no
   * GEMV (M > 16, a fallback shape, or the accelerator). For benchmark labels and tests.
   */
  gemvLaunch(
    m: number,
    n: number,
    k: number,
    x: DeviceBuffer,
    weight: DeviceBuffer,
  ): GemvLaunch | null;
}

const GEMV16 = 0, GEMV8 = 1, GEMM128 = 2, GEMM64 = 3, FMA = 4, AUTO = 5;
/** The most rows the GEMV kernels take; larger m runs a GEMM. */
const GEMV_MAX_M = 16;
const GEMM128X256 = 6, WGMMA256 = 7, WGMMA128 = 8, WGMMA_SK256 = 9, WGMMA_SK128 = 10;
const WGMMA_SWAP64 = 11, WGMMA_SWAP32 = 12;
/** The most rows the swapped-operand GEMMs take under `auto` (their widest token tile). */
const SWAP_MAX_M = 64;
const KERNEL_CODES: Record<LinearKernel, number> = {
  gemv16: GEMV16,
  gemv8: GEMV8,
  gemm128: GEMM128,
  gemm64: GEMM64,
  fma: FMA,
  auto: AUTO,
  gemm128x256: GEMM128X256,
  wgmma128x256: WGMMA256,
  wgmma128x128: WGMMA128,
  wgmmaSk128x256: WGMMA_SK256,
  wgmmaSk128x128: WGMMA_SK128,
  wgmmaSwap128x64: WGMMA_SWAP64,
  wgmmaSwap128x32: WGMMA_SWAP32,
};
/** Kernel names by code, for `kernelName`. */
const KERNEL_NAMES: string[] = [];
for (const [name, code] of Object.entries(KERNEL_CODES)) KERNEL_NAMES[code] = name;
/** The mma GEMMs by code: kernel, tile rows (M), tile columns (N), threads, shared bytes. */
interface MmaGemm {
  readonly name: string;
  readonly bm: number;
  readonly bn: number;
  readonly threads: number;
  readonly shared: number;
}

/** An mma GEMM; dynamic shared memory is stages (4 for 64×64, else 3) · (BM + BN) · 64 k · 2. */
function mmaGemm(name: string, bm: number, bn: number, threads: number): MmaGemm {
  return { name, bm, bn, threads, shared: (bm === 64 ? 4 : 3) * (bm + bn) * 64 * 2 };
}

const MMA_GEMMS: Record<number, MmaGemm> = {
  [GEMM128]: mmaGemm("linear_gemm_128x128", 128, 128, 128),
  [GEMM64]: mmaGemm("linear_gemm_64x64", 64, 64, 128),
  [GEMM128X256]: mmaGemm("linear_gemm_128x256", 128, 256, 256),
};
/**
 * The wgmma GEMMs of linear_sm90.cu by code: 256 threads, a ring of 4 (128×256) or 6 (128×128)
 * stages of (128 + BN) · 64 bf16, plus 1 KiB to align it for the 128-byte swizzle. The
 * swapped-operand ones tile 128 W rows (bn) by 64 or 32 tokens (bm), in 4 or 5 stages, two
 * blocks an SM.
 */
const WGMMA_GEMMS: Record<number, MmaGemm> = {
  [WGMMA256]: { name: "linear_wgmma_128x256", bm: 128, bn: 256, threads: 256, shared: 197632 },
  [WGMMA128]: { name: "linear_wgmma_128x128", bm: 128, bn: 128, threads: 256, shared: 197632 },
  [WGMMA_SK256]: {
    name: "linear_wgmma_sk_128x256",
    bm: 128,
    bn: 256,
    threads: 256,
    shared: 197632,
  },
  [WGMMA_SK128]: {
    name: "linear_wgmma_sk_128x128",
    bm: 128,
    bn: 128,
    threads: 256,
    shared: 197632,
  },
  [WGMMA_SWAP64]: {
    name: "linear_wgmma_swap_128x64",
    bm: 64,
    bn: 128,
    threads: 256,
    shared: 99328,
  },
  [WGMMA_SWAP32]: {
    name: "linear_wgmma_swap_128x32",
    bm: 32,
    bn: 128,
    threads: 256,
    shared: 103424,
  },
};
/**
 * The `kernel` options that force a wgmma GEMM (sm_90a): the data-parallel tiles, their stream-K
 * forms and the swapped-operand tiles, in that order.
 */
export const WGMMA_KERNELS: readonly LinearKernel[] = (
  Object.keys(KERNEL_CODES) as LinearKernel[]
).filter((kernel) => WGMMA_GEMMS[KERNEL_CODES[kernel]] !== undefined);
/** The swapped-operand GEMM for m rows: the 32-token tile up to 32, else the 64-token one. */
function swappedTile(m: number): number {
  return m <= 32 ? WGMMA_SWAP32 : WGMMA_SWAP64;
}
/** The swapped-operand GEMMs, which run two blocks an SM. */
const SWAPPED: Record<number, true> = { [WGMMA_SWAP64]: true, [WGMMA_SWAP32]: true };
/** The stream-K form of each data-parallel wgmma GEMM (same tiles, one block an SM). */
const STREAM_K: Record<number, number> = { [WGMMA256]: WGMMA_SK256, [WGMMA128]: WGMMA_SK128 };
/** The data-parallel form of each stream-K GEMM. */
const STREAM_K_OF: Record<number, number> = { [WGMMA_SK256]: WGMMA256, [WGMMA_SK128]: WGMMA128 };
/** Stream-K runs only shapes of at most this many tiles: one counter each in the scratch. */
const STREAM_K_MAX_TILES = 4096;
/**
 * prepareLinear's bf16 decisions: Denali's default form, the library, Denali's stream-K form,
 * Denali's swapped-operand form.
 */
const CHOSE_DENALI = 0, CHOSE_LIBRARY = 1, CHOSE_STREAM_K = 2, CHOSE_SWAP = 3;
/** What choose() takes while prepareLinear times a shape: as dispatched, or one form forced. */
const TIME_NORMAL = 0, TIME_DATA_PARALLEL = 1, TIME_STREAM_K = 2, TIME_SWAP = 3;
/**
 * The W8A8 twins of the 128×128 and swapped-operand GEMMs, by their bf16 codes (FP8 codes, 128 k
 * a tile promoted to fp32 each, per-row scales in the epilogue); the promotion's extra registers
 * leave no room for a 128×256 twin. prepareLinear races W8A8 as a whole (the swapped tiles at up
 * to 64 rows where swapAb is not never) against dequantizing, the GEMV rows and the library.
 */
const WGMMA_FP8_GEMMS: Record<number, string> = {
  [WGMMA128]: "linear_wgmma_fp8_128x128",
  [WGMMA_SWAP64]: "linear_wgmma_fp8_swap_128x64",
  [WGMMA_SWAP32]: "linear_wgmma_fp8_swap_128x32",
};
/** How `linear` runs an FP8 weight past the GEMVs' 16 rows (see GpuLinearOps.fp8PrefillPath). */
export type Fp8PrefillPath = W8a8Via | "dequantize" | "gemvRows";
/** FP8 choices prepareLinear records per shape, as indices into FP8_PREFILL_PATHS. */
const VIA_WGMMA = 1, VIA_LIBRARY = 2, VIA_GEMV_ROWS = 3;
/** What each choice code means (0: dequantize and run bf16). */
const FP8_PREFILL_PATHS: readonly Fp8PrefillPath[] = ["dequantize", "wgmma", "library", "gemvRows"];
/** Timed launches per path and shape in prepareLinear. */
const PREPARE_SAMPLES = 5;
/** Bytes filled before each timed call in prepareLinear, to evict the operands from L2. */
const FLUSH_BYTES = 128 * 2 ** 20;

/**
 * The GEMV kernels, indexed by (M > 8 ? 4 : 0) + (8 rows ? 2 : 0) + (stages - 1): tokens per
 * tile, W rows per warp group, steps in flight per warp.
 */
const GEMV_KERNELS = [
  "linear_gemv_t8_r16",
  "linear_gemv_t8_r16_s2",
  "linear_gemv_t8_r8",
  "linear_gemv_t8_r8_s2",
  "linear_gemv_t16_r16",
  "linear_gemv_t16_r16_s2",
  "linear_gemv_t16_r8",
  "linear_gemv_t16_r8_s2",
];
/**
 * The GEMVs with SiLU-and-multiply in their epilogue (`linearSiluMul`), indexed by M > 8: 16-row
 * groups (8 gate rows and the 8 up rows of the same columns), with the steps in flight of the
 * plain GEMVs at those M.
 */
const SILU_GEMV_KERNELS = ["linear_gemv_t8_r16_s2_silu", "linear_gemv_t16_r16_silu"];
/** The GEMVs with the pre-norm step in their prologue (`linearRmsNorm`), M <= 8: 16-row, 8-row groups. */
const NORM_GEMV_KERNELS = ["linear_gemv_t8_r16_s2_norm", "linear_gemv_t8_r8_s2_norm"];

/** Whether `buffer` is given and does not start on a 16-byte boundary. */
function misaligned16(buffer: DeviceBuffer | null): boolean {
  return buffer !== null && buffer.ptr % 16 !== 0;
}

/**
 * Loads the linear kernels onto the backend's device and returns its ops.
 *
 * @example
 * ```ts ignore
 * const ops = await loadLinearOps(gpu);
 * ops.prepareLinear([{ m: 1, n: 4096, k: 4096 }], stream); // optional: vendor library vs Denali
 * ops.linear(out, x, weight, 1, 4096, 4096, stream);
 * ```
 */
export async function loadLinearOps(
  backend: Backend,
  options: LinearOptions = {},
): Promise<GpuLinearOps> {
  // Options first: a bad one throws before anything is allocated.
  const streamK = streamKModeWanted(options.streamK);
  const swapAb = swapAbModeWanted(options.swapAb);
  for (const [option, mode] of [["streamK", streamK], ["swapAb", swapAb]]) {
    if (!["timed", "always", "never"].includes(mode)) {
      throw new RangeError(`loadLinearOps: ${option} must be timed, always or never, got ${mode}`);
    }
  }
  const forced = KERNEL_CODES[options.kernel ?? "auto"];
  if (forced === undefined) throw new RangeError(`loadLinearOps: unknown kernel ${options.kernel}`);
  const linearKernels = await loadKernels(backend, "linear");
  const { launchers } = linearKernels;
  const cuda = backend.kind === "cuda";
  // The wgmma kernels exist only in the sm_90a image; elsewhere the module's copies trap.
  const sm90 = cuda ? await loadKernels(backend, "linear_sm90") : null;
  const wgmma = sm90 !== null && sm90.target === "sm_90a";
  // Split-K and stream-K scratch of the wgmma GEMMs, allocated once: fp32 tile slots (a 128×128
  // one per block of a split grid, which wgmmaSplit keeps to one per SM, or two 128×64 ones per
  // SM for the swapped-operand GEMMs, two blocks an SM; where stream-K may run,
  // two 128×256 ones per block of its grid, one block an SM) and a ticket counter per tile,
  // zeroed here and left zeroed by the kernels. Like a vendor library's workspace, it is shared by
  // every call of these ops, so split calls on different streams must not overlap.
  const sms = backend.info.multiprocessors;
  const streamKMayRun = streamK !== "never" || STREAM_K_OF[forced] !== undefined;
  const slotFloats = streamKMayRun ? 2 * 128 * 256 : 128 * 128;
  const partials = wgmma ? backend.alloc(sms * slotFloats * 4) : null;
  const counters = wgmma ? backend.alloc(Math.max(sms, STREAM_K_MAX_TILES) * 4) : null;
  if (counters !== null) backend.memset(counters, 0);
  // The mma GEMMs need more than the default 48 KiB of dynamic shared memory. The limit is an
  // attribute of a function handle, so their launchers are built here over the very handles it
  // was raised on (the driver need not hand out the same handle twice). HIP never runs them.
  const bigShared = (kernels: LoadedKernels, name: string, bytes: number): Launcher => {
    if (!cuda) return kernels.launchers[name].launch;
    return launcherWith(backend, kernels, name, {}, (fn) => fn.setMaxDynamicSharedMemory(bytes))
      .launch;
  };
  // The GEMVs wait for the previous kernel before they touch x or out (griddepcontrol.wait), so
  // they, and only they, may launch programmatically.
  const programmatic = programmaticWanted(options.programmatic);
  // Blocks an SM of each GEMV (256 threads, static shared memory only), as the driver compiled
  // it: gemvStagesFor weighs the two-step kernel's waves against the one-step kernel's.
  const gemvPerSm = GEMV_KERNELS.map(() => 0);
  const gemvs = GEMV_KERNELS.map((name, i) =>
    launcherWith(backend, linearKernels, name, { programmatic }, (fn) => {
      const blocks = fn.maxBlocksPerSm(256, 0);
      gemvPerSm[i] = gemvPerSm[i] === 0 ? blocks : Math.min(gemvPerSm[i], blocks);
    })
  );
  const gemv = gemvs.map((l) => l.launch);
  // The GEMVs with SiLU-and-multiply in their epilogue (CUDA; their HIP copies trap).
  const siluEpilogue = cuda && siluEpilogueWanted(options.siluEpilogue);
  const siluGemv = siluEpilogue
    ? SILU_GEMV_KERNELS.map((name) =>
      launcherWith(backend, linearKernels, name, { programmatic }).launch
    )
    : null;
  // The GEMVs that normalise their input in the prologue (CUDA; their HIP copies trap).
  const normMaxBlocks = normPrologueMaxBlocksWanted(options.normPrologueMaxBlocks);
  const normGemv = cuda && normPrologueWanted(options.normPrologue)
    ? NORM_GEMV_KERNELS.map((name) =>
      launcherWith(
        backend,
        linearKernels,
        name,
        { programmatic },
        (fn) => fn.setMaxDynamicSharedMemory(NORM_GEMV_SHARED_MAX),
      ).launch
    )
    : null;
  // Indexed by kernel code; the non-mma codes stay empty.
  const mma: (Launcher | undefined)[] = [];
  for (const [code, g] of Object.entries(MMA_GEMMS)) {
    mma[Number(code)] = bigShared(linearKernels, g.name, g.shared);
  }
  for (const [code, g] of Object.entries(wgmma ? WGMMA_GEMMS : {})) {
    mma[Number(code)] = bigShared(sm90!, g.name, g.shared);
  }
  const gemmFma = launchers.linear_gemm_fma.launch;
  // Denali's W8A8 GEMMs (sm_90a): the bf16 wgmma tiles and split-K scratch over FP8 codes.
  // Up to 64 rows, unless swapAb is never, its swapped-operand twins (indexed by bf16 code).
  const wgmmaFp8: Launcher[] = [];
  for (const [code, name] of wgmma ? Object.entries(WGMMA_FP8_GEMMS) : []) {
    wgmmaFp8[Number(code)] = bigShared(sm90!, name, WGMMA_GEMMS[Number(code)].shared);
  }
  const runWgmmaFp8: Fp8Gemm = (out, xq, w, m, n, k, stream) => {
    const code = swapAb !== "never" && m <= SWAP_MAX_M ? swappedTile(m) : WGMMA128;
    // A tile holds 128 codes of k, the k extent of 64 bf16, so the split is the bf16 one at k / 2:
    // small shapes split K to fill the SMs.
    const split = wgmmaSplit(code, m, n, k / 2);
    const g = WGMMA_GEMMS[code], grid = Math.ceil(m / g.bm) * Math.ceil(n / g.bn) * split;
    wgmmaFp8[code](
      grid,
      1,
      1,
      g.threads,
      1,
      1,
      g.shared,
      stream,
      out,
      xq.data,
      w.data,
      xq.scales,
      w.scales,
      m,
      n,
      k,
      split,
      partials!,
      counters!,
    );
  };
  // FP8 weights: the W8A16 GEMV for M <= 16; above, W8A8 where prepareLinear timed it faster,
  // else dequantize to bf16 and run as below.
  const fp8 = await loadFp8Ops(backend, {
    programmatic,
    wgmma: wgmma ? runWgmmaFp8 : null,
    siluEpilogue,
    normPrologue: normGemv !== null,
    gemvSplit: options.fp8GemvSplit,
  });
  // 4-bit weights: the W4A16 GEMV for M <= 16 (4 on HIP), the W4A16 GEMM up to awqGemmMaxM
  // rows where asked, else dequantize to bf16 and run as below.
  const awq = await loadAwqOps(backend, {
    programmatic,
    gemmMaxM: options.awqGemmMaxM,
    gemvSplit: options.awqGemvSplit,
    gemvVariant: options.awqGemvVariant,
    siluEpilogue,
  });

  // While prepareLinear times a shape's forms: 0 normal dispatch, else which form choose() takes.
  let timing = TIME_NORMAL;
  // Whether prepareLinear is timing a bf16 shape (see swapFor).
  let racing = false;
  const forcedSplit = forcedGemvSplit("loadLinearOps: gemvSplit", options.gemvSplit);
  const forcedStages = options.gemvStages ?? 0;
  if (![0, 1, 2].includes(forcedStages)) {
    throw new RangeError(`loadLinearOps: gemvStages must be 1 or 2, got ${forcedStages}`);
  }

  /**
   * K slices of a wgmma call: 1, unless its tiles leave most SMs idle; then enough for about one
   * block per SM (two for the swapped-operand GEMMs, which fit two an SM), each slice at least 4
   * k tiles (256 k) long, at most 16. Only the 128×128 and swapped-operand tiles split.
   */
  function wgmmaSplit(kernel: number, m: number, n: number, k: number): number {
    const g = WGMMA_GEMMS[kernel];
    const perSm = SWAPPED[kernel] ? 2 : 1;
    const tiles = Math.ceil(m / g.bm) * Math.ceil(n / g.bn);
    if ((kernel !== WGMMA128 && !SWAPPED[kernel]) || tiles * 2 > sms * perSm) return 1;
    const kTiles = Math.ceil(k / 64);
    return Math.max(1, Math.min(Math.floor(sms * perSm / tiles), Math.floor(kTiles / 4), 16));
  }

  /** Whether `auto` runs this 17-64-row shape on the swapped-operand GEMMs (see swapAb). */
  function swapFor(m: number, n: number, k: number): boolean {
    if (m > SWAP_MAX_M) return false;
    // While prepareLinear times a shape, its swapped form swaps, and so does Denali's form as
    // dispatched where swapAb is always (it then races the library alone, as stream-K's does); a
    // neighbour's recorded choice must not make the form a swapped one races against swap too.
    if (racing || timing !== TIME_NORMAL) {
      return timing === TIME_SWAP || (timing === TIME_NORMAL && swapAb === "always");
    }
    return modeRuns(swapAb, CHOSE_SWAP, m, n, k);
  }

  /** Whether `mode` runs a shape's alternative form: always, or where prepareLinear chose it. */
  function modeRuns(mode: TimedMode, choice: number, m: number, n: number, k: number): boolean {
    return mode === "always" || (mode === "timed" && bf16Choices.choice(m, n, k) === choice);
  }

  /**
   * Whether a data-parallel wgmma GEMM of `tiles` tiles may run stream-K: its last wave would
   * be under 0.8 full (224 tiles on 132 SMs: 0.7), and the scratch has a counter for each tile.
   */
  function streamKCandidate(tiles: number): boolean {
    const lastWave = tiles - (Math.ceil(tiles / sms) - 1) * sms;
    return tiles <= STREAM_K_MAX_TILES && lastWave * 10 < sms * 8;
  }

  /** The form of a data-parallel wgmma GEMM of `tiles` tiles this shape runs (see streamK). */
  function streamKFor(kernel: number, tiles: number, m: number, n: number, k: number): number {
    if (!streamKCandidate(tiles)) return kernel;
    // While prepareLinear times a form it is the one taken; else as streamK says.
    const sk = timing !== TIME_NORMAL
      ? timing === TIME_STREAM_K
      : modeRuns(streamK, CHOSE_STREAM_K, m, n, k);
    return sk ? STREAM_K[kernel] : kernel;
  }

  /** The kernel code for a call; integer arithmetic only. */
  function choose(m: number, n: number, k: number, x: DeviceBuffer, weight: DeviceBuffer) {
    // `|` reads the low bits through ToInt32, exact for any address below 2^53.
    const vector = (k & 7) === 0 && ((x.ptr | weight.ptr) & 15) === 0;
    if (!vector || forced === FMA) return FMA;
    const forcedMma = forced !== AUTO && forced !== GEMV16 && forced !== GEMV8;
    if (m <= GEMV_MAX_M && !forcedMma) {
      if (forced === GEMV16 || forced === GEMV8) return forced;
      return Math.ceil(n / 16) >= sms ? GEMV16 : GEMV8;
    }
    if (!cuda) return FMA;
    if (forcedMma && (wgmma || WGMMA_GEMMS[forced] === undefined)) {
      // A forced stream-K call with more tiles than counters runs the data-parallel form.
      if (STREAM_K_OF[forced] !== undefined) {
        const g = WGMMA_GEMMS[forced];
        if (Math.ceil(m / g.bm) * Math.ceil(n / g.bn) > STREAM_K_MAX_TILES) {
          return STREAM_K_OF[forced];
        }
      }
      return forced;
    }
    if (wgmma) {
      if (swapFor(m, n, k)) return swappedTile(m);
      // One block per SM. 128×256 tiles need ~0.9 waves, or the idle SMs cost more than the
      // wider tile saves; 128×128 beats the 64×64 mma.sync tiles from a quarter wave up
      // (bench/results/2026-11-25-s3-wgmma-h100.md: M = 256 with N = 4096, M = 1024 with N = 1024).
      const wide = Math.ceil(m / 128) * Math.ceil(n / 256);
      if (wide * 10 >= sms * 9) return streamKFor(WGMMA256, wide, m, n, k);
      const tiles = Math.ceil(m / 128) * Math.ceil(n / 128);
      const split = wgmmaSplit(WGMMA128, m, n, k);
      // Split over K, fewer tiles still make ~0.9 waves (M = 256 with N = 1024).
      if (tiles * 4 >= sms || tiles * split * 10 >= sms * 9) {
        return split > 1 ? WGMMA128 : streamKFor(WGMMA128, tiles, m, n, k);
      }
    }
    if (m >= 4096) return GEMM128X256;
    return Math.ceil(m / 128) * Math.ceil(n / 128) >= sms ? GEMM128 : GEMM64;
  }

  /** The GEMV's K split: forced, else 8 or fewer when K has fewer warp steps than that. */
  function gemvSplit(kernel: number, k: number): number {
    if (forcedSplit !== 0) return forcedSplit;
    // A warp step covers 128 k (16 rows) or 256 k (8 rows); more warps than steps would idle.
    return gemvSplitFor(Math.ceil(k / (kernel === GEMV16 ? 128 : 256)));
  }

  /** A plain GEMV's K split: gemvSplit, but for 9-16 tokens 4 where gemvSplitOf16 says so. */
  function plainGemvSplit(kernel: number, m: number, n: number, k: number): number {
    const split = gemvSplit(kernel, k);
    if (forcedSplit !== 0 || split !== 8 || m <= 8) return split;
    const index = gemvKernelIndex(kernel, m, forcedStages || 1);
    return gemvSplitOf16(gemvBlocks(kernel, n, 8), gemvPerSm[index] * sms);
  }

  /** Blocks of a GEMV launch: 8 / split row groups of 16 or 8 rows each. */
  function gemvBlocks(kernel: number, n: number, split: number): number {
    return gemvGridBlocks(n, kernel === GEMV16 ? 16 : 8, split);
  }

  /** Index into GEMV_KERNELS of `kernel` (GEMV16 or GEMV8) at M = m with `stages` in flight. */
  function gemvKernelIndex(kernel: number, m: number, stages: number): number {
    return (m > 8 ? 4 : 0) + (kernel === GEMV8 ? 2 : 0) + stages - 1;
  }

  /**
   * Index into GEMV_KERNELS. One step in flight above 8 tokens, where the larger x tiles need the
   * registers; two for up to 8 (bench/results/2026-11-25-s3-gemv-pdl-h100.md), unless one step
   * fills the waves of a grid of `blocks` strictly fuller (gemvStagesFor).
   */
  function gemvIndex(kernel: number, m: number, blocks: number): number {
    if (forcedStages !== 0) return gemvKernelIndex(kernel, m, forcedStages);
    if (m > 8) return gemvKernelIndex(kernel, m, 1);
    const one = gemvKernelIndex(kernel, m, 1), two = gemvKernelIndex(kernel, m, 2);
    return gemvStagesFor(blocks, sms, gemvPerSm[one], gemvPerSm[two]) === 1 ? one : two;
  }

  function runDenali(
    out: DeviceBuffer,
    x: DeviceBuffer,
    weight: DeviceBuffer,
    m: number,
    n: number,
    k: number,
    stream: Stream,
  ): void {
    const kernel = choose(m, n, k, x, weight);
    if (kernel === GEMV16 || kernel === GEMV8) {
      const split = plainGemvSplit(kernel, m, n, k), blocks = gemvBlocks(kernel, n, split);
      const launch = gemv[gemvIndex(kernel, m, blocks)];
      launch(blocks, 1, 1, 256, 1, 1, 0, stream, out, x, weight, m, n, k, split);
    } else if (kernel !== FMA) {
      const g = MMA_GEMMS[kernel] ?? WGMMA_GEMMS[kernel];
      const tiles = Math.ceil(m / g.bm) * Math.ceil(n / g.bn);
      if (WGMMA_GEMMS[kernel] !== undefined) {
        const streamK = STREAM_K_OF[kernel] !== undefined;
        const split = streamK ? 1 : wgmmaSplit(kernel, m, n, k);
        // Stream-K: one block an SM, never more blocks than k iterations (each owns at least one).
        const grid = streamK ? Math.min(sms, tiles * Math.ceil(k / 64)) : tiles * split;
        mma[kernel]!(
          grid,
          1,
          1,
          g.threads,
          1,
          1,
          g.shared,
          stream,
          out,
          x,
          weight,
          m,
          n,
          k,
          split,
          partials!,
          counters!,
        );
        return;
      }
      mma[kernel]!(
        tiles,
        1,
        1,
        g.threads,
        1,
        1,
        g.shared,
        stream,
        out,
        x,
        weight,
        m,
        n,
        k,
      );
    } else {
      const gy = Math.ceil(m / 64);
      if (gy > 65535) {
        throw new RangeError(`linear: m = ${m} exceeds the fallback kernel's ${65535 * 64} rows`);
      }
      gemmFma(Math.ceil(n / 64), gy, 1, 16, 16, 1, 0, stream, out, x, weight, m, n, k);
    }
  }

  // Shapes prepareLinear timed, as parallel arrays of small integers: a lookup compares numbers
  // and allocates nothing (a Map keyed by m·2^40 + n·2^20 + k would box each key as a double).
  const accel = backend.gemmAccelerator;
  const bf16Choices = new ShapeChoices();
  // FP8-weight shapes: VIA_WGMMA or VIA_LIBRARY where W8A8 beat dequantizing and running bf16.
  const w8a8Choices = new ShapeChoices();

  /** Whether the accelerator runs this bf16 shape (see ShapeChoices.choice). */
  function useAccelerator(m: number, n: number, k: number): boolean {
    return bf16Choices.choice(m, n, k) === CHOSE_LIBRARY;
  }

  /** How an FP8 weight of this shape runs above the GEMVs' rows (0: dequantize). */
  function w8a8Choice(m: number, n: number, k: number): number {
    return m > GEMV_MAX_M && w8a8Choices.size !== 0 ? w8a8Choices.choice(m, n, k) : 0;
  }

  /** The bf16 product as `linear` runs it: the accelerator where it won, else Denali's kernel. */
  function runBf16(
    out: DeviceBuffer,
    x: DeviceBuffer,
    weight: DeviceBuffer,
    m: number,
    n: number,
    k: number,
    stream: Stream,
  ): void {
    if (accel !== null && bf16Choices.size !== 0 && useAccelerator(m, n, k)) {
      accel.gemm(out, x, weight, m, n, k, stream);
    } else {
      runDenali(out, x, weight, m, n, k, stream);
    }
  }

  /**
   * Allocates buffers of `sizes` bytes, runs `race` with them and a clock, and frees them; null
   * when there was no room, so a later prepareLinear may retry. Each sample the clock takes is
   * one call behind a fill that evicts the operands from L2, as a step meets each layer's
   * weights: back-to-back calls on one weight would time it from L2 (a 4096×4096 weight fits)
   * and crown algorithms that lose on weights fresh from memory.
   */
  function raceOn<R>(
    sizes: readonly number[],
    stream: Stream,
    evictor: () => DeviceBuffer | null,
    race: (buffers: DeviceBuffer[], time: (run: () => void) => number) => R,
  ): R | null {
    const buffers: DeviceBuffer[] = [];
    const free = () => {
      stream.synchronize();
      for (const buffer of buffers) backend.free(buffer);
    };
    try {
      for (const bytes of sizes) buffers.push(backend.alloc(bytes));
    } catch (error) {
      free();
      if (!isOutOfMemory(error)) throw error;
      reportFallback(
        "no memory to time linear shapes",
        `${error.message}; such a shape keeps its default path until a later prepareLinear`,
      );
      return null;
    }
    const flush = evictor();
    const start = backend.createEvent(), stop = backend.createEvent();
    const time = (run: () => void): number => {
      run();
      let best = Infinity;
      for (let i = 0; i < PREPARE_SAMPLES; i++) {
        if (flush !== null) backend.memset(flush, i & 0xff, stream);
        start.record(stream);
        run();
        stop.record(stream);
        stop.synchronize();
        best = Math.min(best, stop.elapsedMsSince(start));
      }
      return best;
    };
    try {
      return race(buffers, time);
    } finally {
      free();
      start.destroy();
      stop.destroy();
    }
  }

  /**
   * The fastest way to run this bf16 shape: CHOSE_DENALI (Denali's kernel as dispatched, its
   * data-parallel form where it has a stream-K one), CHOSE_LIBRARY (the accelerator; not when it
   * refuses the shape) or CHOSE_STREAM_K (where streamK is `timed` and the shape has that form);
   * null when there was no room to time it. A failure of Denali's own kernel is a bug, and
   * propagates.
   */
  function timeShape(
    m: number,
    n: number,
    k: number,
    stream: Stream,
    evictor: () => DeviceBuffer | null,
  ): number | null {
    racing = true;
    try {
      return raceOn([2 * m * k, 2 * n * k, 2 * m * n], stream, evictor, ([x, w, out], time) => {
        // 0x3c3c ≈ 0.0115: finite sums of realistic size for any k.
        backend.memset(x, 0x3c, stream);
        backend.memset(w, 0x3c, stream);
        const runAs = (form: number) => () => {
          timing = form;
          try {
            runDenali(out, x, w, m, n, k, stream);
          } finally {
            timing = TIME_NORMAL;
          }
        };
        // `timed` races the data-parallel form against the stream-K one; otherwise Denali's kernel
        // runs as dispatched (stream-K where `always` makes it so).
        const own = runAs(streamK === "timed" ? TIME_DATA_PARALLEL : TIME_NORMAL);
        const lib = () => accel!.gemm(out, x, w, m, n, k, stream);
        // An alternative form races where its mode leaves it to timing and the shape has it:
        // where choose(), taking that form, picks one of its kernels (`kernels`).
        const alternative = (form: number, kernels: Record<number, unknown>) => {
          timing = form;
          const kernel = choose(m, n, k, x, w);
          timing = TIME_NORMAL;
          return kernels[kernel] !== undefined ? runAs(form) : null;
        };
        const sk = streamK === "timed" ? alternative(TIME_STREAM_K, STREAM_K_OF) : null;
        const swap = swapAb === "timed" && m <= SWAP_MAX_M ? alternative(TIME_SWAP, SWAPPED) : null;
        // Alternate them and keep each one's best, so a clock ramp favours none.
        let ownMs = time(own), libMs = Infinity, skMs = sk ? time(sk) : Infinity;
        let swapMs = swap ? time(swap) : Infinity;
        try {
          accel!.tune?.(out, x, w, m, n, k, stream, time);
          libMs = time(lib);
        } catch (error) {
          // The library has no algorithm for the shape: it leaves the race. Anything else (a
          // failed launch, a broken stream) is a real error.
          if (!(error instanceof UnsupportedShapeError)) throw error;
          reportFallback(
            `${accel!.name} refused a linear shape`,
            `${error.message}; Denali's kernel runs it`,
          );
        }
        ownMs = Math.min(ownMs, time(own));
        if (sk) skMs = Math.min(skMs, time(sk));
        if (swap) swapMs = Math.min(swapMs, time(swap));
        if (libMs < Infinity) libMs = Math.min(libMs, time(lib));
        // The first of the fastest: Denali's default form, then the library, stream-K, swapped.
        let best = CHOSE_DENALI, bestMs = ownMs;
        const others: [number, number][] = [
          [CHOSE_LIBRARY, libMs],
          [CHOSE_STREAM_K, skMs],
          [CHOSE_SWAP, swapMs],
        ];
        for (const [choice, ms] of others) {
          if (ms < bestMs) [best, bestMs] = [choice, ms];
        }
        return best;
      });
    } finally {
      racing = false;
    }
  }

  /**
   * The fastest way to run an FP8 weight of this shape: VIA_WGMMA or VIA_LIBRARY (W8A8: x
   * quantized per token, then Denali's or the library's FP8 GEMM) or VIA_GEMV_ROWS (up to 64
   * rows: the W8A16 GEMV over 16-row chunks) where one beat dequantizing the weight and running
   * the bf16 product as `linear` would, else 0; null when there was no room to time it.
   */
  function timeFp8Shape(
    m: number,
    n: number,
    k: number,
    stream: Stream,
    evictor: () => DeviceBuffer | null,
  ): number | null {
    const scratchBytes = Math.max(fp8.fp8ScratchBytes(n, k), fp8.w8a8ScratchBytes(m, k));
    const sizes = [2 * m * k, n * k, 4 * n, scratchBytes, 2 * m * n];
    return raceOn(sizes, stream, evictor, ([x, data, scales, scratch, out], time) => {
      const weight: Fp8Weight = { format: "fp8-e4m3", data, scales, scratch };
      // Codes 0x38 are 1.0 and scales 0x3c3c3c3c ≈ 0.0115: finite sums for any k.
      backend.memset(x, 0x3c, stream);
      backend.memset(data, 0x38, stream);
      backend.memset(scales, 0x3c, stream);
      const dequantized = () =>
        runBf16(out, x, fp8.toScratch(weight, n, k, stream), m, n, k, stream);
      const viaWgmma = () => {
        fp8.w8a8(out, x, weight, m, n, k, stream, "wgmma");
      };
      const viaLibrary = () => {
        fp8.w8a8(out, x, weight, m, n, k, stream, "library");
      };
      const viaGemvRows = () => {
        fp8.gemvRows(out, x, weight, m, n, k, stream);
      };
      const candidates: [number, () => void][] = [];
      if (fp8.w8a8Possible(m, k, weight, "wgmma")) candidates.push([VIA_WGMMA, viaWgmma]);
      // A few passes of the GEMV at batch sizes just past its rows (this first call is also the
      // warm-up; false where it does not apply).
      if (fp8.gemvRows(out, x, weight, m, n, k, stream)) {
        candidates.push([VIA_GEMV_ROWS, viaGemvRows]);
      }
      // A refusal (no per-row FP8 scaling in this release, no algorithm for the shape) was
      // reported by tuneW8a8; the library is then no candidate.
      if (
        fp8.w8a8Possible(m, k, weight, "library") &&
        fp8.tuneW8a8(out, x, weight, m, n, k, stream, time)
      ) {
        candidates.push([VIA_LIBRARY, viaLibrary]);
      }
      if (candidates.length === 0) return 0;
      // Each path twice, in turns, keeping its best, so a clock ramp favours none.
      let best = 0, bestMs = time(dequantized);
      const ms = candidates.map(([, run]) => time(run));
      bestMs = Math.min(bestMs, time(dequantized));
      candidates.forEach(([via, run], i) => {
        const t = Math.min(ms[i], time(run));
        if (t < bestMs) {
          best = via;
          bestMs = t;
        }
      });
      return best;
    });
  }

  return {
    linear(out, x, linearWeight, m, n, k, stream) {
      checkLinearArgs("linear", out, x, linearWeight, m, n, k);
      let weight: DeviceBuffer;
      if (isFp8Weight(linearWeight)) {
        if (fp8.gemv(out, x, linearWeight, m, n, k, stream)) return;
        const path = FP8_PREFILL_PATHS[w8a8Choice(m, n, k)];
        if (path === "gemvRows") {
          if (fp8.gemvRows(out, x, linearWeight, m, n, k, stream)) return;
        } else if (path !== "dequantize") {
          if (fp8.w8a8(out, x, linearWeight, m, n, k, stream, path)) return;
        }
        weight = fp8.toScratch(linearWeight, n, k, stream);
      } else if (isAwqWeight(linearWeight)) {
        if (awq.gemv(out, x, linearWeight, m, n, k, stream)) return;
        if (awq.gemm(out, x, linearWeight, m, n, k, stream)) return;
        if (awq.gemvRows(out, x, linearWeight, m, n, k, stream)) return;
        weight = awq.toScratch(linearWeight, n, k, stream);
      } else {
        weight = linearWeight;
      }
      runBf16(out, x, weight, m, n, k, stream);
    },

    linearSiluMul(out, x, linearWeight, m, n, k, stream) {
      checkLinearSiluMulArgs("linearSiluMul", out, x, linearWeight, m, n, k);
      if (siluGemv === null) return false;
      if (isFp8Weight(linearWeight)) return fp8.gemvSiluMul(out, x, linearWeight, m, n, k, stream);
      if (isAwqWeight(linearWeight)) return awq.gemvSiluMul(out, x, linearWeight, m, n, k, stream);
      // bf16: where linear would run a GEMV (not the library) on the [2n, k] weight.
      if (accel !== null && bf16Choices.size !== 0 && useAccelerator(m, 2 * n, k)) return false;
      const kernel = choose(m, 2 * n, k, x, linearWeight);
      if (kernel !== GEMV16 && kernel !== GEMV8) return false;
      const split = gemvSplit(GEMV16, k);
      siluGemv[m > 8 ? 1 : 0](
        gemvBlocks(GEMV16, 2 * n, split),
        1,
        1,
        256,
        1,
        1,
        0,
        stream,
        out,
        x,
        linearWeight,
        m,
        n,
        k,
        split,
      );
      return true;
    },

    linearRmsNorm(out, x, res, resOut, gamma, w, m, n, k, eps, stream) {
      checkLinearRmsNormArgs("linearRmsNorm", out, x, res, resOut, gamma, w, m, n, k, eps);
      // bf16 and FP8 weights up to 8 rows, where linear would run a GEMV (not the library) and
      // the normalised rows fit the kernels' shared memory.
      if (normGemv === null || isAwqWeight(w)) return false;
      if (m > 8 || m * k * 2 > NORM_GEMV_SHARED_MAX) return false;
      // The prologue reads the residual and the norm's weight, and writes the sum, 16 bytes at a
      // time (x's alignment is the GEMV's to check).
      if (misaligned16(gamma) || misaligned16(res) || misaligned16(resOut)) return false;
      if (isFp8Weight(w)) {
        return fp8.gemvNorm(out, x, w, m, n, k, res, resOut, gamma, eps, normMaxBlocks, stream);
      }
      if (accel !== null && bf16Choices.size !== 0 && useAccelerator(m, n, k)) return false;
      const kernel = choose(m, n, k, x, w);
      if (kernel !== GEMV16 && kernel !== GEMV8) return false;
      const split = plainGemvSplit(kernel, m, n, k), blocks = gemvBlocks(kernel, n, split);
      if (normMaxBlocks !== 0 && blocks > normMaxBlocks) return false;
      normGemv[kernel === GEMV8 ? 1 : 0](
        blocks,
        1,
        1,
        256,
        1,
        1,
        m * k * 2,
        stream,
        out,
        x,
        w,
        m,
        n,
        k,
        split,
        res ?? 0, // no residual: null addresses, which the kernels test for
        resOut ?? 0,
        gamma,
        eps,
      );
      return true;
    },

    prepareLinear(shapes, stream) {
      checkLinearShapes("prepareLinear", shapes);
      if (accel === null) return;
      // The L2-evicting fill of every timed call, allocated once, after the first shape's scratch
      // buffers. Optional: without room for it, calls are timed with whatever L2 holds.
      let flush: DeviceBuffer | null | undefined;
      const evictor = () => {
        if (flush === undefined) {
          try {
            flush = backend.alloc(FLUSH_BYTES);
          } catch (error) {
            if (!isOutOfMemory(error)) throw error;
            reportFallback(
              "no memory for the L2-evicting fill",
              `${error.message}; linear shapes are timed with whatever L2 holds`,
            );
            flush = null;
          }
        }
        return flush;
      };
      try {
        for (const { m, n, k, fp8: quantized } of shapes) {
          if (!bf16Choices.has(m, n, k)) {
            const choice = timeShape(m, n, k, stream, evictor);
            if (choice !== null) bf16Choices.record(m, n, k, choice);
          }
          // The GEMVs take FP8 weights at M <= 16 whatever was timed.
          if (!quantized || m <= GEMV_MAX_M || w8a8Choices.has(m, n, k)) continue;
          const via = timeFp8Shape(m, n, k, stream, evictor);
          if (via !== null) w8a8Choices.record(m, n, k, via);
        }
      } finally {
        if (flush) {
          stream.synchronize();
          backend.free(flush);
        }
      }
    },

    quantizeFp8: fp8.quantizeFp8,
    dequantizeFp8: fp8.dequantizeFp8,
    fp8ScratchBytes: fp8.fp8ScratchBytes,
    fp8GemvKernel: fp8.gemvKernel,
    awqGemm(out, x, weight, m, n, k, stream) {
      checkLinearArgs("awqGemm", out, x, weight, m, n, k);
      return awq.gemm(out, x, weight, m, n, k, stream, true);
    },

    fp8W8a8(out, x, weight, m, n, k, stream, via) {
      checkLinearArgs("fp8W8a8", out, x, weight, m, n, k);
      return fp8.w8a8(out, x, weight, m, n, k, stream, via);
    },
    fp8W8a8ScratchBytes: fp8.w8a8ScratchBytes,
    fp8PrefillPath: (m, n, k) => FP8_PREFILL_PATHS[w8a8Choice(m, n, k)],
    fp8GemvRows(out, x, weight, m, n, k, stream) {
      checkLinearArgs("fp8GemvRows", out, x, weight, m, n, k);
      return fp8.gemvRows(out, x, weight, m, n, k, stream);
    },
    dequantizeAwq: awq.dequantizeAwq,
    awqScratchBytes: awq.awqScratchBytes,

    kernelName(m, n, k, x, weight) {
      if (accel !== null && useAccelerator(m, n, k)) return "accelerator";
      return KERNEL_NAMES[choose(m, n, k, x, weight)];
    },

    gemvLaunch(m, n, k, x, weight) {
      if (accel !== null && useAccelerator(m, n, k)) return null;
      const kernel = choose(m, n, k, x, weight);
      if (kernel !== GEMV16 && kernel !== GEMV8) return null;
      const split = plainGemvSplit(kernel, m, n, k), blocks = gemvBlocks(kernel, n, split);
      const index = gemvIndex(kernel, m, blocks);
      return {
        kernel: GEMV_KERNELS[index],
        split,
        stages: (index & 1) + 1,
        blocks,
        programmatic: gemvs[index].programmatic,
      };
    },
  };
}

/**
 * Per-shape decisions prepareLinear timed, as parallel arrays of small integers: a lookup
 * compares numbers and allocates nothing (a Map keyed by m·2^40 + n·2^20 + k would box each key
 * as a double). A decision is a small integer; 0 is the default path.
 */
class ShapeChoices {
  readonly #m: number[] = [];
  readonly #n: number[] = [];
  readonly #k: number[] = [];
  readonly #choice: number[] = [];

  /** How many shapes are recorded. */
  get size(): number {
    return this.#m.length;
  }

  /** Whether this exact shape was recorded. */
  has(m: number, n: number, k: number): boolean {
    for (let i = 0; i < this.#m.length; i++) {
      if (this.#m[i] === m && this.#n[i] === n && this.#k[i] === k) return true;
    }
    return false;
  }

  /** Records the decision for this shape. */
  record(m: number, n: number, k: number, choice: number): void {
    this.#m.push(m);
    this.#n.push(n);
    this.#k.push(k);
    this.#choice.push(choice);
  }

  /**
   * The decision for this shape: as timed, for a recorded shape; for a GEMM-sized m
   * (> GEMV_MAX_M) that was not recorded (a mixed step's token count), as timed for the nearest
   * recorded m of the same n and k, the smallest above it or else the largest below; 0 for
   * GEMV-sized calls of an unrecorded shape.
   */
  choice(m: number, n: number, k: number): number {
    let above = -1, below = -1;
    const ms = this.#m;
    for (let i = 0; i < ms.length; i++) {
      if (this.#n[i] !== n || this.#k[i] !== k) continue;
      const pm = ms[i];
      if (pm === m) return this.#choice[i];
      if (m <= GEMV_MAX_M || pm <= GEMV_MAX_M) continue;
      if (pm > m && (above < 0 || pm < ms[above])) above = i;
      if (pm < m && (below < 0 || pm > ms[below])) below = i;
    }
    const nearest = above >= 0 ? above : below;
    return nearest >= 0 ? this.#choice[nearest] : 0;
  }
}
