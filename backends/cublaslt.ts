/**
 * cuBLASLt as Denali's GemmAccelerator, and the Lt GEMM engine hipblaslt.ts shares with it.
 *
 * Denali's matrices are row-major and cuBLASLt's column-major, so `out[M, N] = x[M, K] · W[N, K]ᵀ`
 * is handed over as the column-major `D[N, M] = op(A) · op(B)` with A = W read as a K×N matrix
 * (ld K) and transposed, B = x read as K×M (ld K) as is, and C = D = out read as N×M (ld N): no
 * data moves, only the reading changes.
 *
 * Everything that costs more than a call is done once: the handle, the matmul descriptor and the
 * heuristic preference at open; the workspace (32 MiB by default, NVIDIA's figure for Hopper) at
 * open; each weight shape's layout the first time the shape is seen; and each (M, N, K,
 * alignment) plan, with the algorithm the heuristic picked, the first time that is seen. A call
 * after that allocates nothing: it looks the plan up in number-keyed maps and passes prepared
 * pointers, the preallocated alpha = 1 and beta = 0, and the stream's handle.
 *
 * The workspace is shared by every call, so gemm calls on different streams must not overlap in
 * time; Denali drives a device from one thread, in order.
 *
 * @module
 */

import type { Backend, DeviceBuffer, GemmAccelerator, ScaledFp8, Stream } from "./backend.ts";
import {
  CUBLAS_COMPUTE_32F,
  CUBLAS_OP,
  CUBLAS_STATUS,
  CUBLASLT_HEURISTIC_RESULT,
  CUBLASLT_MATMUL_DESC,
  CUBLASLT_MATMUL_PREF,
  CUBLASLT_MATRIX_SCALE,
  CUBLASLT_SYMBOLS,
  CUDA_DATA_TYPE,
  type LtNames,
  type LtRole,
  ltSymbolNames,
  type LtSymbols,
  ltSymbols,
} from "./cublaslt_ffi.ts";
import { cStringFrom, openLibrary } from "./dlopen.ts";
import { DriverError, DriverNotFoundError, UnsupportedShapeError } from "./errors.ts";
import { reportFallback } from "./fallbacks.ts";
import type { DriverAdapter } from "./gpu_backend.ts";

/** Options for opening a vendor Lt library (cuBLASLt or hipBLASLt). */
export interface LtOptions {
  /**
   * Path of the library; default `$DENALI_LIBCUBLASLT` (`$DENALI_LIBHIPBLASLT` for hipBLASLt),
   * else the usual sonames, newest first.
   */
  readonly libraryPath?: string;
  /**
   * Device workspace the library may use for split-K and similar algorithms; default 32 MiB when
   * `memory` or `driver` is given to allocate it, else 0 (which rules those algorithms out).
   */
  readonly workspaceBytes?: number;
  /** Allocates the workspace, where a Backend already exists (tests, tools). */
  readonly memory?: Pick<Backend, "alloc" | "free">;
  /**
   * Allocates the workspace through the driver's own calls, for the `openAccelerator` hook, which
   * runs inside the GpuBackend constructor before any Backend exists.
   */
  readonly driver?: Pick<DriverAdapter, "symbols" | "names" | "errorText">;
  /** Told why, when the library is absent and the opener returns null. */
  readonly onUnavailable?: (reason: string) => void;
}

/** What one Lt library supplies to the shared GEMM engine: its calls, enum values and text. */
export interface LtDialect {
  /** Which driver family it belongs to, for DriverError. */
  readonly backend: "cuda" | "hip";
  /** The library's name, e.g. "cuBLASLt". */
  readonly label: string;
  /** The bound shared calls, keyed by role. */
  readonly symbols: LtSymbols;
  /** Each role's real symbol name, so errors name the C call that failed. */
  readonly names: LtNames;
  /** The compute type for fp32 accumulation. */
  readonly computeType: number;
  /** The data type of alpha and beta (fp32). */
  readonly scaleType: number;
  /** The data type of A, B, C and D (bf16). */
  readonly dataType: number;
  /** The "no transpose" and "transpose" operation values. */
  readonly op: { readonly N: number; readonly T: number };
  /** The matmul-descriptor attributes for the A and B operations (int32_t each). */
  readonly descTrans: { readonly A: number; readonly B: number };
  /** The preference attribute for the workspace cap (uint64_t). */
  readonly prefMaxWorkspaceBytes: number;
  /** The preference attributes for A, B, C and D's minimum alignment, or null if it has none. */
  readonly prefMinAlignment: readonly number[] | null;
  /** Byte size of the heuristic result struct, and where its workspace size and state are. */
  readonly heuristicResult: {
    readonly BYTES: number;
    readonly WORKSPACE_SIZE_OFFSET: number;
    readonly STATE_OFFSET: number;
  };
  /** The status code for "no algorithm for this problem". */
  readonly notSupported: number;
  /**
   * What FP8 matmuls with per-row scales need, where the library has them (cuBLASLt); absent
   * where Denali does not use them (hipBLASLt), and the accelerator then has no `gemmFp8`.
   */
  readonly fp8?: LtFp8Dialect;
  /** The library's name and description for a status code. */
  statusText(code: number): { name: string; message: string };
  /** The library's version as text; may call the library (the handle is live). */
  version(handle: Deno.PointerValue): string;
  /** Unloads the library. */
  closeLibrary(): void;
}

/** The enum values of an Lt library's FP8 matmul with per-row (outer-vector) scales. */
export interface LtFp8Dialect {
  /** The data type of A and B (E4M3). */
  readonly dataType: number;
  /** The matmul-descriptor attributes for A's and B's scale pointers (a device address each). */
  readonly scalePointer: { readonly A: number; readonly B: number };
  /** The matmul-descriptor attributes for A's and B's scale modes (int32_t each). */
  readonly scaleMode: { readonly A: number; readonly B: number };
  /** The scale mode "one f32 per row of op(A), one per column of op(B)". */
  readonly outerVector: number;
}

/** Where cuBLASLt is looked for: the loader's path first, then the default CUDA install. */
export const CUBLASLT_PATHS: readonly string[] = [
  "libcublasLt.so.13",
  "libcublasLt.so.12",
  "/usr/local/cuda/lib64/libcublasLt.so.13",
  "/usr/local/cuda/lib64/libcublasLt.so.12",
];

const DEFAULT_WORKSPACE_BYTES = 32 * 2 ** 20;
// Keeps every map key a small integer (m * 32 + alignment < 2^29), which V8 looks up unboxed.
const MAX_DIM = 2 ** 24 - 1;
// Room beyond the 96-byte (cuBLASLt) or 56-byte (hipBLASLt) struct, should a release grow it.
const RESULT_BYTES = 256;
/** Algorithms asked of the heuristic per call shape; `tune` times them all, gemm runs the first. */
const CANDIDATES = 16;
/** How many of the fastest candidates `tune` times again before it picks. */
const FINALISTS = 3;
/**
 * How much faster than the heuristic's first guess another algorithm must time in the final
 * rounds to replace it: on shapes where that guess is already the fastest (large square GEMMs),
 * timing noise alone would otherwise now and then crown one a few percent slower.
 */
const REPLACE_MARGIN = 0.03;
const REMEDY = "let Denali use its own matrix kernels";

/**
 * Opens cuBLASLt as a GemmAccelerator, or returns null (telling `onUnavailable` why) when the
 * library is not installed. Once the library is found, any call that fails throws DriverError.
 *
 * @example
 * ```ts ignore
 * import { openCublasLt } from "./cublaslt.ts";
 * const gemm = openCublasLt({ onUnavailable: (reason) => console.log(reason) });
 * gemm?.close();
 * ```
 */
export function openCublasLt(options: LtOptions = {}): GemmAccelerator | null {
  const configured = options.libraryPath ?? Deno.env.get("DENALI_LIBCUBLASLT");
  const paths = configured ? [configured] : CUBLASLT_PATHS;
  const library = openLtLibrary(paths, CUBLASLT_SYMBOLS, "cuBLASLt library", options);
  if (!library) return null;
  const sym = library.symbols;
  try {
    return openLtAccelerator({
      backend: "cuda",
      label: "cuBLASLt",
      symbols: ltSymbols(sym),
      names: ltSymbolNames(CUBLASLT_SYMBOLS),
      computeType: CUBLAS_COMPUTE_32F,
      scaleType: CUDA_DATA_TYPE.R_32F,
      dataType: CUDA_DATA_TYPE.R_16BF,
      op: CUBLAS_OP,
      descTrans: { A: CUBLASLT_MATMUL_DESC.TRANSA, B: CUBLASLT_MATMUL_DESC.TRANSB },
      prefMaxWorkspaceBytes: CUBLASLT_MATMUL_PREF.MAX_WORKSPACE_BYTES,
      prefMinAlignment: [
        CUBLASLT_MATMUL_PREF.MIN_ALIGNMENT_A_BYTES,
        CUBLASLT_MATMUL_PREF.MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF.MIN_ALIGNMENT_C_BYTES,
        CUBLASLT_MATMUL_PREF.MIN_ALIGNMENT_D_BYTES,
      ],
      heuristicResult: CUBLASLT_HEURISTIC_RESULT,
      notSupported: CUBLAS_STATUS.NOT_SUPPORTED,
      fp8: {
        dataType: CUDA_DATA_TYPE.R_8F_E4M3,
        scalePointer: {
          A: CUBLASLT_MATMUL_DESC.A_SCALE_POINTER,
          B: CUBLASLT_MATMUL_DESC.B_SCALE_POINTER,
        },
        scaleMode: { A: CUBLASLT_MATMUL_DESC.A_SCALE_MODE, B: CUBLASLT_MATMUL_DESC.B_SCALE_MODE },
        outerVector: CUBLASLT_MATRIX_SCALE.OUTER_VEC_32F,
      },
      statusText: (code) => ({
        name: cStringFrom(sym.cublasLtGetStatusName(code), `cublasStatus_t ${code}`),
        message: cStringFrom(sym.cublasLtGetStatusString(code), "cuBLASLt has no text for it"),
      }),
      version: () => {
        // CUBLAS_VER_MAJOR * 10000 + CUBLAS_VER_MINOR * 100 + CUBLAS_VER_PATCH.
        const v = Number(sym.cublasLtGetVersion());
        return `${Math.floor(v / 10000)}.${Math.floor(v / 100) % 100}.${v % 100}`;
      },
      closeLibrary: () => library.close(),
    }, options);
  } catch (error) {
    library.close();
    throw error;
  }
}

/**
 * Opens the first of `paths` that loads, or returns null and tells `onUnavailable` why: a missing
 * vendor library is a slower path, not an error. Shared with hipblaslt.ts.
 */
export function openLtLibrary<S extends Deno.ForeignLibraryInterface>(
  paths: readonly string[],
  symbols: S,
  what: string,
  options: Pick<LtOptions, "onUnavailable">,
): Deno.DynamicLibrary<S> | null {
  try {
    return openLibrary(paths, symbols, { what, remedy: REMEDY }).library;
  } catch (error) {
    if (!(error instanceof DriverNotFoundError)) throw error;
    options.onUnavailable?.(error.message);
    return null;
  }
}

/**
 * Builds the accelerator on an opened Lt library. On failure it releases what it made and
 * throws; unloading the library is then the caller's job, as is closing the accelerator after.
 */
export function openLtAccelerator(lt: LtDialect, options: LtOptions): GemmAccelerator {
  return new LtGemm(lt, options);
}

/** One weight shape (N, K): its layout, and a plan per (M, alignment). */
interface WeightShape {
  /** A = W as a K×N column-major matrix (ld K). */
  readonly a: Deno.PointerValue;
  readonly plans: Map<number, Plan>;
}

/** Everything one (M, N, K, alignment) call passes besides the buffers and the stream. */
interface Plan {
  /** A = W's layout (its weight shape's). */
  readonly a: Deno.PointerValue;
  /** B = x as a K×M column-major matrix (ld K). */
  readonly b: Deno.PointerValue;
  /** C = D = out as an N×M column-major matrix (ld N). */
  readonly c: Deno.PointerValue;
  /** The algorithm matmul runs: one of `candidates` (a result struct starts with its algorithm). */
  algo: Uint8Array<ArrayBuffer>;
  /** The heuristic's usable results, best guess first; `tune` times them. */
  readonly candidates: readonly Uint8Array<ArrayBuffer>[];
}

/**
 * One kind of product the engine runs: bf16 × bf16, or FP8 × FP8 with per-row scales. Each has
 * its own matmul descriptor (the FP8 one carries the scale modes) and its own plans, since the
 * heuristic's algorithms are per operand type.
 */
interface Precision {
  readonly desc: Deno.PointerValue;
  /** The data type of A and B; C and D are bf16 in both. */
  readonly inputType: number;
  /** Bytes per element of A and B. */
  readonly inputBytes: 1 | 2;
  /** How errors name the product. */
  readonly label: string;
  /** N → K → shape; number keys, so a lookup allocates nothing. */
  readonly shapes: Map<number, Map<number, WeightShape>>;
}

/** A device workspace and how to give it back. */
interface Workspace {
  readonly ptr: number;
  readonly bytes: number;
  release(): void;
}

const NO_WORKSPACE: Workspace = { ptr: 0, bytes: 0, release() {} };

/** The GEMM engine on one Lt library. */
class LtGemm implements GemmAccelerator {
  readonly name: string;
  readonly #lt: LtDialect;
  readonly #sym: LtSymbols;
  // One out-parameter slot for every create call (all cold).
  readonly #out = new BigUint64Array(1);
  readonly #alpha = new Float32Array([1]);
  readonly #beta = new Float32Array([0]);
  // A device address as the 8 bytes a scale-pointer attribute takes, written as two 32-bit
  // halves so that setting it per call allocates no BigInt.
  readonly #address = new Uint32Array(2);
  #handle: Deno.PointerValue = null;
  #pref: Deno.PointerValue = null;
  #bf16: Precision | null = null;
  #fp8: Precision | null = null;
  // Why the FP8 descriptor could not be made, so later calls refuse at once.
  #fp8Refusal: UnsupportedShapeError | null = null;
  #workspace: Workspace = NO_WORKSPACE;
  #closed = false;

  // Assigned only where the dialect has an FP8 matmul; `declare` keeps them off the instance
  // otherwise, so `"gemmFp8" in accelerator` tells the truth.
  /** Present only where the dialect has an FP8 matmul (see GemmAccelerator). */
  declare readonly gemmFp8?: GemmAccelerator["gemmFp8"];
  /** Present only where the dialect has an FP8 matmul (see GemmAccelerator). */
  declare readonly tuneFp8?: GemmAccelerator["tuneFp8"];

  constructor(lt: LtDialect, options: LtOptions) {
    this.#lt = lt;
    this.#sym = lt.symbols;
    try {
      this.#handle = this.#create(this.#sym.create(this.#out), "create");
      this.#bf16 = this.#precision(lt.dataType, 2, "bf16");
      this.#pref = this.#create(
        this.#sym.matmulPreferenceCreate(this.#out),
        "matmulPreferenceCreate",
      );
      this.#workspace = allocateWorkspace(lt.backend, options);
      const cap = new BigUint64Array([BigInt(this.#workspace.bytes)]);
      this.#check(
        this.#sym.matmulPreferenceSetAttribute(this.#pref, lt.prefMaxWorkspaceBytes, cap, 8),
        "matmulPreferenceSetAttribute",
      );
      this.name = `${lt.label} ${lt.version(this.#handle)}`;
    } catch (error) {
      this.#release();
      throw error;
    }
    if (lt.fp8) {
      this.gemmFp8 = (out, x, weight, m, n, k, stream) => {
        const plan = this.#fp8PlanFor(out, x, weight, m, n, k);
        this.#matmulFp8(plan, out, x, weight, stream);
      };
      this.tuneFp8 = (out, x, weight, m, n, k, stream, time) => {
        const plan = this.#fp8PlanFor(out, x, weight, m, n, k);
        this.#tune(plan, () => this.#matmulFp8(plan, out, x, weight, stream), time);
      };
    }
  }

  gemm(
    out: DeviceBuffer,
    x: DeviceBuffer,
    weight: DeviceBuffer,
    m: number,
    n: number,
    k: number,
    stream: Stream,
  ): void {
    const plan = this.#planFor(this.#bf16!, out, x, weight, m, n, k);
    this.#matmul(this.#bf16!.desc, plan, out, x.ptr, weight.ptr, stream);
  }

  /**
   * Times every algorithm the heuristic offered for this call shape with `time` (the caller's
   * clock: milliseconds of the calls its argument makes on `stream`) and keeps the fastest for
   * later calls; one the library refuses is skipped. Cold: call it at start, not per step.
   */
  tune(
    out: DeviceBuffer,
    x: DeviceBuffer,
    weight: DeviceBuffer,
    m: number,
    n: number,
    k: number,
    stream: Stream,
    time: (run: () => void) => number,
  ): void {
    const bf16 = this.#bf16!;
    const plan = this.#planFor(bf16, out, x, weight, m, n, k);
    this.#tune(plan, () => this.#matmul(bf16.desc, plan, out, x.ptr, weight.ptr, stream), time);
  }

  /**
   * The heuristic's first guess is often not the fastest on small and skinny shapes, so another
   * replaces it when clearly faster (by REPLACE_MARGIN).
   */
  #tune(plan: Plan, run: () => void, time: (run: () => void) => number): void {
    if (plan.candidates.length < 2) return;
    const timed: { algo: typeof plan.algo; ms: number }[] = [];
    for (const candidate of plan.candidates) {
      plan.algo = candidate;
      try {
        timed.push({ algo: candidate, ms: time(run) });
      } catch (error) {
        // Refused for this problem: not a choice. Any other failure is real.
        if (!(error instanceof UnsupportedShapeError)) throw error;
        reportFallback(
          `${this.#lt.label} refused an algorithm its heuristic offered`,
          `${error.message}; tuning skips it`,
        );
      }
    }
    if (timed.length === 0) return;
    // One short timing each is noisy (clocks move under a dense GEMM): the best few, and the
    // heuristic's first usable guess, race again, twice in turns, and the pick goes by those
    // times alone, so a lucky first timing cannot crown one. The first guess keeps its place
    // unless beaten by REPLACE_MARGIN.
    const first = timed[0];
    const finalists = [...timed].sort((a, b) => a.ms - b.ms).slice(0, FINALISTS);
    if (!finalists.includes(first)) finalists.push(first);
    for (const f of finalists) f.ms = Infinity;
    for (let round = 0; round < 2; round++) {
      for (const f of finalists) {
        plan.algo = f.algo;
        f.ms = Math.min(f.ms, time(run));
      }
    }
    const best = finalists.reduce((a, b) => (b.ms < a.ms ? b : a));
    plan.algo = best.ms < first.ms * (1 - REPLACE_MARGIN) ? best.algo : first.algo;
  }

  /** Checks a call's arguments and returns its plan (made on first use). */
  #planFor(
    precision: Precision,
    out: DeviceBuffer,
    x: DeviceBuffer,
    weight: DeviceBuffer,
    m: number,
    n: number,
    k: number,
  ): Plan {
    if (this.#closed) throw new TypeError(`${this.name} gemm: the accelerator is closed`);
    this.#checkDim(m, "m");
    this.#checkDim(n, "n");
    this.#checkDim(k, "k");
    const bytes = precision.inputBytes;
    this.#checkBytes(out, "out", m, n, 2, "bf16");
    this.#checkBytes(x, "x", m, k, bytes, precision.label);
    this.#checkBytes(weight, "weight", n, k, bytes, precision.label);
    // The low bits survive ToInt32, so this reads each address's alignment without BigInt.
    const low = (out.ptr | x.ptr | weight.ptr) & 15;
    if ((out.ptr & 1) !== 0 || (bytes === 2 && (low & 1) !== 0)) {
      throw new RangeError(`${this.name} gemm: bf16 buffers must start at even addresses`);
    }
    const align = low === 0 ? 16 : low & -low;
    const shape = this.#shape(precision, n, k);
    return shape.plans.get(m * 32 + align) ?? this.#plan(precision, shape, m, n, k, align);
  }

  #matmul(
    desc: Deno.PointerValue,
    plan: Plan,
    out: DeviceBuffer,
    x: number,
    weight: number,
    stream: Stream,
  ): void {
    const ws = this.#workspace;
    const code = this.#sym.matmul(
      this.#handle,
      desc,
      this.#alpha,
      weight,
      plan.a,
      x,
      plan.b,
      this.#beta,
      out.ptr,
      plan.c,
      out.ptr,
      plan.c,
      plan.algo,
      ws.ptr,
      ws.bytes,
      stream.native,
    );
    if (code !== 0) this.#fail(code, "matmul");
  }

  /**
   * Checks an FP8 call, sets its scale addresses (the heuristic of a per-row scale mode wants
   * them in the descriptor: without them it answers INVALID_VALUE) and returns its plan. A
   * heuristic that rejects the problem as invalid has no FP8 algorithm for it: that is a refusal
   * (UnsupportedShapeError), so callers dequantize instead.
   */
  #fp8PlanFor(
    out: DeviceBuffer,
    x: ScaledFp8,
    weight: ScaledFp8,
    m: number,
    n: number,
    k: number,
  ): Plan {
    const fp8 = this.#fp8Precision();
    this.#checkScales(weight.scales, "weight", n);
    this.#checkScales(x.scales, "x", m);
    const scales = this.#lt.fp8!.scalePointer;
    this.#setAddress(fp8.desc, scales.A, weight.scales.ptr);
    this.#setAddress(fp8.desc, scales.B, x.scales.ptr);
    try {
      return this.#planFor(fp8, out, x.data, weight.data, m, n, k);
    } catch (error) {
      const heuristic = this.#lt.names.matmulAlgoGetHeuristic;
      if (!(error instanceof DriverError) || error instanceof UnsupportedShapeError) throw error;
      if (error.call !== heuristic) throw error;
      throw new UnsupportedShapeError(
        error,
        `${this.name} takes no FP8 matmul with per-row scales for out[${m}, ${n}] = ` +
          `x[${m}, ${k}] · W[${n}, ${k}]ᵀ`,
      );
    }
  }

  /**
   * The FP8 matmul: A = W's codes scaled per row of op(A) (an output column n), B = x's codes
   * scaled per column of op(B) (a token m). The scale addresses live in the descriptor, where
   * #fp8PlanFor has just set them; cuBLASLt reads them when the call is made.
   */
  #matmulFp8(
    plan: Plan,
    out: DeviceBuffer,
    x: ScaledFp8,
    weight: ScaledFp8,
    stream: Stream,
  ): void {
    this.#matmul(this.#fp8!.desc, plan, out, x.data.ptr, weight.data.ptr, stream);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const error = this.#release();
    this.#lt.closeLibrary();
    if (error) throw error;
  }

  #checkDim(value: number, what: string): void {
    if (!Number.isInteger(value) || value < 1 || value > MAX_DIM) {
      throw new RangeError(
        `${this.name} gemm: ${what} must be an integer in 1..${MAX_DIM}, got ${value}`,
      );
    }
  }

  #checkBytes(
    buffer: DeviceBuffer,
    what: string,
    rows: number,
    cols: number,
    bytes: number,
    type: string,
  ): void {
    if (buffer.bytes < rows * cols * bytes) {
      throw new RangeError(
        `${this.name} gemm: ${what} [${rows}, ${cols}] ${type} needs ${rows * cols * bytes} ` +
          `bytes, but the buffer has ${buffer.bytes}`,
      );
    }
  }

  #checkScales(buffer: DeviceBuffer, what: string, rows: number): void {
    if (buffer.bytes < rows * 4 || (buffer.ptr & 3) !== 0) {
      throw new RangeError(
        `${this.name} gemmFp8: ${what}'s scales need ${rows} f32 (${rows * 4} bytes, 4-byte ` +
          `aligned), but the buffer has ${buffer.bytes} bytes at an address ending in ` +
          `${buffer.ptr & 3} mod 4`,
      );
    }
  }

  #shape(precision: Precision, n: number, k: number): WeightShape {
    let byK = precision.shapes.get(n);
    if (byK === undefined) {
      byK = new Map();
      precision.shapes.set(n, byK);
    }
    let shape = byK.get(k);
    if (shape === undefined) {
      shape = { a: this.#layout(precision.inputType, k, n), plans: new Map() };
      byK.set(k, shape);
    }
    return shape;
  }

  /** Makes the layouts of x and out for one call shape and asks the heuristic for an algorithm. */
  #plan(
    precision: Precision,
    shape: WeightShape,
    m: number,
    n: number,
    k: number,
    align: number,
  ): Plan {
    const lt = this.#lt;
    const b = this.#layout(precision.inputType, k, m);
    let c: Deno.PointerValue = null;
    try {
      c = this.#layout(lt.dataType, n, m);
      if (lt.prefMinAlignment) {
        const bytes = new Uint32Array([align]);
        for (const attribute of lt.prefMinAlignment) {
          this.#check(
            this.#sym.matmulPreferenceSetAttribute(this.#pref, attribute, bytes, 4),
            "matmulPreferenceSetAttribute",
          );
        }
      }
      const bytes = lt.heuristicResult.BYTES;
      const results = new Uint8Array(CANDIDATES * bytes + RESULT_BYTES);
      const count = new Int32Array(1);
      this.#check(
        this.#sym.matmulAlgoGetHeuristic(
          this.#handle,
          precision.desc,
          shape.a,
          b,
          c,
          c,
          this.#pref,
          CANDIDATES,
          results,
          count,
        ),
        "matmulAlgoGetHeuristic",
      );
      const view = new DataView(results.buffer);
      const candidates: Uint8Array<ArrayBuffer>[] = [];
      let state = lt.notSupported;
      for (let i = 0; i < Math.min(count[0], CANDIDATES); i++) {
        const s = view.getInt32(i * bytes + lt.heuristicResult.STATE_OFFSET, true);
        if (i === 0) state = s;
        // A copy with room to spare: matmul reads the algorithm at the start.
        if (s === 0) candidates.push(results.slice(i * bytes, i * bytes + RESULT_BYTES));
      }
      if (state !== 0) {
        this.#fail(
          state,
          "matmulAlgoGetHeuristic",
          `${lt.label} has no algorithm for out[${m}, ${n}] = x[${m}, ${k}] · W[${n}, ${k}]ᵀ ` +
            `in ${precision.label} with ${align}-byte aligned buffers`,
        );
      }
      const plan: Plan = { a: shape.a, b, c, algo: candidates[0], candidates };
      shape.plans.set(m * 32 + align, plan);
      return plan;
    } catch (error) {
      // The heuristic's failure is what matters; a failing destroy must not mask it.
      this.#sym.matrixLayoutDestroy(b);
      if (c !== null) this.#sym.matrixLayoutDestroy(c);
      throw error;
    }
  }

  /** A packed column-major layout of `rows` × `cols` (ld = rows). */
  #layout(type: number, rows: number, cols: number): Deno.PointerValue {
    return this.#create(
      this.#sym.matrixLayoutCreate(this.#out, type, rows, cols, rows),
      "matrixLayoutCreate",
    );
  }

  /**
   * A descriptor computing op(A) = Aᵀ, op(B) = B in fp32, with `attributes` (int32_t each) set
   * and its plans to come; destroyed again if an attribute is refused.
   */
  #precision(
    inputType: number,
    inputBytes: 1 | 2,
    label: string,
    attributes: readonly (readonly [number, number])[] = [],
  ): Precision {
    const lt = this.#lt;
    const desc = this.#create(
      this.#sym.matmulDescCreate(this.#out, lt.computeType, lt.scaleType),
      "matmulDescCreate",
    );
    try {
      this.#setDesc(desc, lt.descTrans.A, lt.op.T);
      this.#setDesc(desc, lt.descTrans.B, lt.op.N);
      for (const [attribute, value] of attributes) this.#setDesc(desc, attribute, value);
    } catch (error) {
      // The refused attribute is what matters; a failing destroy must not mask it.
      this.#sym.matmulDescDestroy(desc);
      throw error;
    }
    return { desc, inputType, inputBytes, label, shapes: new Map() };
  }

  /**
   * The FP8 product's descriptor, made on first use. A release without per-row scale modes
   * (cuBLASLt before 12.8 rejects the attribute) refuses here, now and on every later call, with
   * UnsupportedShapeError, which callers read as "dequantize and run bf16".
   */
  #fp8Precision(): Precision {
    if (this.#closed) throw new TypeError(`${this.name} gemm: the accelerator is closed`);
    if (this.#fp8Refusal) throw this.#fp8Refusal;
    if (this.#fp8) return this.#fp8;
    const dialect = this.#lt.fp8!;
    try {
      this.#fp8 = this.#precision(dialect.dataType, 1, "FP8 E4M3 with per-row scales", [
        [dialect.scaleMode.A, dialect.outerVector],
        [dialect.scaleMode.B, dialect.outerVector],
      ]);
      return this.#fp8;
    } catch (error) {
      // Only a refused attribute or operation means "this release has no per-row FP8"; anything
      // else (an allocation that failed) is reported as it is, and a later call tries again.
      const refused = error instanceof DriverError &&
        error.call === this.#lt.names.matmulDescSetAttribute;
      if (!refused) throw error;
      this.#fp8Refusal = error instanceof UnsupportedShapeError ? error : new UnsupportedShapeError(
        error,
        `${this.name} has no FP8 matmul with per-row scales (cuBLASLt 12.9 or newer has)`,
      );
      throw this.#fp8Refusal;
    }
  }

  #setDesc(desc: Deno.PointerValue, attribute: number, value: number): void {
    const buf = new Int32Array([value]);
    this.#check(
      this.#sym.matmulDescSetAttribute(desc, attribute, buf, 4),
      "matmulDescSetAttribute",
    );
  }

  /** Sets a device-address attribute without allocating. */
  #setAddress(desc: Deno.PointerValue, attribute: number, address: number): void {
    const slot = this.#address;
    slot[0] = address % 0x100000000;
    slot[1] = Math.floor(address / 0x100000000);
    this.#check(
      this.#sym.matmulDescSetAttribute(desc, attribute, slot, 8),
      "matmulDescSetAttribute",
    );
  }

  /** Checks a create call's status and returns the handle it wrote into the out-slot. */
  #create(code: number, role: LtRole): Deno.PointerValue {
    this.#check(code, role);
    return Deno.UnsafePointer.create(this.#out[0]);
  }

  #check(code: number, role: LtRole): void {
    if (code !== 0) this.#fail(code, role);
  }

  #fail(code: number, role: LtRole, hint = ""): never {
    const { name, message } = this.#lt.statusText(code);
    const error = new DriverError(
      this.#lt.backend,
      this.#lt.names[role],
      code,
      name,
      message,
      hint,
    );
    throw code === this.#lt.notSupported ? new UnsupportedShapeError(error) : error;
  }

  /** Destroys everything made so far, each once; returns the first failure instead of throwing. */
  #release(): unknown {
    let first: unknown = null;
    const attempt = (release: () => void) => {
      try {
        release();
      } catch (error) {
        first ??= error;
      }
    };
    const sym = this.#sym;
    const precisions = [this.#bf16, this.#fp8];
    this.#bf16 = this.#fp8 = null;
    for (const precision of precisions) {
      if (!precision) continue;
      for (const byK of precision.shapes.values()) {
        for (const shape of byK.values()) {
          for (const plan of shape.plans.values()) {
            attempt(() => this.#check(sym.matrixLayoutDestroy(plan.b), "matrixLayoutDestroy"));
            attempt(() => this.#check(sym.matrixLayoutDestroy(plan.c), "matrixLayoutDestroy"));
          }
          attempt(() => this.#check(sym.matrixLayoutDestroy(shape.a), "matrixLayoutDestroy"));
        }
      }
      precision.shapes.clear();
      attempt(() => this.#check(sym.matmulDescDestroy(precision.desc), "matmulDescDestroy"));
    }
    const pref = this.#pref, handle = this.#handle;
    this.#pref = this.#handle = null;
    if (pref) {
      attempt(() => this.#check(sym.matmulPreferenceDestroy(pref), "matmulPreferenceDestroy"));
    }
    if (handle) attempt(() => this.#check(sym.destroy(handle), "destroy"));
    const workspace = this.#workspace;
    this.#workspace = NO_WORKSPACE;
    attempt(() => workspace.release());
    return first;
  }
}

/** Allocates the workspace `options` asks for, through `memory` or the driver's calls. */
function allocateWorkspace(backend: "cuda" | "hip", options: LtOptions): Workspace {
  const { memory, driver } = options;
  const bytes = options.workspaceBytes ?? (memory || driver ? DEFAULT_WORKSPACE_BYTES : 0);
  if (!Number.isSafeInteger(bytes) || bytes < 0) {
    throw new RangeError(`workspaceBytes must be a whole number of bytes >= 0, got ${bytes}`);
  }
  if (bytes === 0) return NO_WORKSPACE;
  if (memory) {
    const buffer = memory.alloc(bytes);
    return { ptr: buffer.ptr, bytes, release: () => memory.free(buffer) };
  }
  if (!driver) {
    throw new TypeError(`a ${bytes}-byte workspace needs options.memory or options.driver`);
  }
  const check = (code: number, role: "memAlloc" | "memFree") => {
    if (code === 0) return;
    const { name, message } = driver.errorText(code);
    throw new DriverError(backend, driver.names[role], code, name, message);
  };
  const out = new BigUint64Array(1);
  check(driver.symbols.memAlloc(out, BigInt(bytes)), "memAlloc");
  const address = out[0];
  return {
    ptr: Number(address),
    bytes,
    release: () => check(driver.symbols.memFree(address), "memFree"),
  };
}
