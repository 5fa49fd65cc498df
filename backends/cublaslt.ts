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

import type { Backend, DeviceBuffer, GemmAccelerator, Stream } from "./backend.ts";
import {
  CUBLAS_COMPUTE_32F,
  CUBLAS_OP,
  CUBLAS_STATUS,
  CUBLASLT_HEURISTIC_RESULT,
  CUBLASLT_MATMUL_DESC,
  CUBLASLT_MATMUL_PREF,
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
  /** The library's name and description for a status code. */
  statusText(code: number): { name: string; message: string };
  /** The library's version as text; may call the library (the handle is live). */
  version(handle: Deno.PointerValue): string;
  /** Unloads the library. */
  closeLibrary(): void;
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
  // N → K → shape; number keys, so a lookup allocates nothing.
  readonly #shapes = new Map<number, Map<number, WeightShape>>();
  #handle: Deno.PointerValue = null;
  #desc: Deno.PointerValue = null;
  #pref: Deno.PointerValue = null;
  #workspace: Workspace = NO_WORKSPACE;
  #closed = false;

  constructor(lt: LtDialect, options: LtOptions) {
    this.#lt = lt;
    this.#sym = lt.symbols;
    try {
      this.#handle = this.#create(this.#sym.create(this.#out), "create");
      this.#desc = this.#create(
        this.#sym.matmulDescCreate(this.#out, lt.computeType, lt.scaleType),
        "matmulDescCreate",
      );
      this.#setDesc(lt.descTrans.A, lt.op.T);
      this.#setDesc(lt.descTrans.B, lt.op.N);
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
    this.#matmul(this.#planFor(out, x, weight, m, n, k), out, x, weight, stream);
  }

  /**
   * Times every algorithm the heuristic offered for this call shape with `time` (the caller's
   * clock: milliseconds of the calls its argument makes on `stream`) and keeps the fastest for
   * later calls; one the library refuses is skipped. The heuristic's first guess is often not the
   * fastest on small and skinny shapes, so another replaces it when clearly faster (by
   * REPLACE_MARGIN). Cold: call it at start, not per step.
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
    const plan = this.#planFor(out, x, weight, m, n, k);
    if (plan.candidates.length < 2) return;
    const run = () => this.#matmul(plan, out, x, weight, stream);
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
    this.#checkBytes(out, "out", m, n);
    this.#checkBytes(x, "x", m, k);
    this.#checkBytes(weight, "weight", n, k);
    // The low bits survive ToInt32, so this reads each address's alignment without BigInt.
    const low = (out.ptr | x.ptr | weight.ptr) & 15;
    if ((low & 1) !== 0) {
      throw new RangeError(`${this.name} gemm: bf16 buffers must start at even addresses`);
    }
    const align = low === 0 ? 16 : low & -low;
    const shape = this.#shape(n, k);
    return shape.plans.get(m * 32 + align) ?? this.#plan(shape, m, n, k, align);
  }

  #matmul(
    plan: Plan,
    out: DeviceBuffer,
    x: DeviceBuffer,
    weight: DeviceBuffer,
    stream: Stream,
  ): void {
    const ws = this.#workspace;
    const code = this.#sym.matmul(
      this.#handle,
      this.#desc,
      this.#alpha,
      weight.ptr,
      plan.a,
      x.ptr,
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

  #checkBytes(buffer: DeviceBuffer, what: string, rows: number, cols: number): void {
    if (buffer.bytes < rows * cols * 2) {
      throw new RangeError(
        `${this.name} gemm: ${what} [${rows}, ${cols}] bf16 needs ${rows * cols * 2} bytes, ` +
          `but the buffer has ${buffer.bytes}`,
      );
    }
  }

  #shape(n: number, k: number): WeightShape {
    let byK = this.#shapes.get(n);
    if (byK === undefined) {
      byK = new Map();
      this.#shapes.set(n, byK);
    }
    let shape = byK.get(k);
    if (shape === undefined) {
      shape = { a: this.#layout(k, n), plans: new Map() };
      byK.set(k, shape);
    }
    return shape;
  }

  /** Makes the layouts of x and out for one call shape and asks the heuristic for an algorithm. */
  #plan(shape: WeightShape, m: number, n: number, k: number, align: number): Plan {
    const lt = this.#lt;
    const b = this.#layout(k, m);
    let c: Deno.PointerValue = null;
    try {
      c = this.#layout(n, m);
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
          this.#desc,
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
            `in bf16 with ${align}-byte aligned buffers`,
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

  /** A bf16 column-major layout of `rows` × `cols`, packed (ld = rows). */
  #layout(rows: number, cols: number): Deno.PointerValue {
    return this.#create(
      this.#sym.matrixLayoutCreate(this.#out, this.#lt.dataType, rows, cols, rows),
      "matrixLayoutCreate",
    );
  }

  #setDesc(attribute: number, value: number): void {
    const buf = new Int32Array([value]);
    this.#check(
      this.#sym.matmulDescSetAttribute(this.#desc, attribute, buf, 4),
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
    for (const byK of this.#shapes.values()) {
      for (const shape of byK.values()) {
        for (const plan of shape.plans.values()) {
          attempt(() => this.#check(sym.matrixLayoutDestroy(plan.b), "matrixLayoutDestroy"));
          attempt(() => this.#check(sym.matrixLayoutDestroy(plan.c), "matrixLayoutDestroy"));
        }
        attempt(() => this.#check(sym.matrixLayoutDestroy(shape.a), "matrixLayoutDestroy"));
      }
    }
    this.#shapes.clear();
    const pref = this.#pref, desc = this.#desc, handle = this.#handle;
    this.#pref = this.#desc = this.#handle = null;
    if (pref) {
      attempt(() => this.#check(sym.matmulPreferenceDestroy(pref), "matmulPreferenceDestroy"));
    }
    if (desc) attempt(() => this.#check(sym.matmulDescDestroy(desc), "matmulDescDestroy"));
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
