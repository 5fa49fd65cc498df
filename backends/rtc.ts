/**
 * Compiling CUDA C / HIP C++ source at run time, through NVRTC on NVIDIA and hipRTC on AMD: the
 * only place that knows which compiler serves which device. Callers get a module image the
 * backend loads (a cubin for NVRTC, a code object for hipRTC) and the compiler's log.
 *
 * @module
 */

import type { BackendKind, ModuleImage } from "./backend.ts";
import { cStringFrom, openLibrary } from "./dlopen.ts";
import {
  HIPRTC_SYMBOLS,
  NVRTC_SYMBOLS,
  RTC_PATHS,
  type RtcRole,
  type RtcSymbols,
} from "./rtc_ffi.ts";

/** A run-time compiler call failed for a reason other than the source (out of memory, bad option). */
export class RtcError extends Error {
  /**
   * Creates the error.
   * @param call the C function that failed, e.g. `nvrtcCreateProgram`
   * @param code the compiler's result code
   * @param compilerMessage the compiler's own text for the code
   */
  constructor(readonly call: string, readonly code: number, readonly compilerMessage: string) {
    super(`${call} failed: ${compilerMessage} (${code})`);
    this.name = "RtcError";
  }
}

/** The source did not compile; `log` holds the compiler's diagnostics. */
export class CompileError extends RtcError {
  /**
   * Creates the error.
   * @param cause the failed compile call
   * @param programName the name the source was compiled under (it prefixes the log's lines)
   * @param log the compiler's log
   */
  constructor(cause: RtcError, readonly programName: string, readonly log: string) {
    super(cause.call, cause.code, cause.compilerMessage);
    this.message = `${programName} did not compile (${cause.message}):\n${log.trimEnd()}`;
    this.name = "CompileError";
  }
}

/** What one compile produced. */
export interface RtcOutput {
  /** The image to load with `Backend.loadModule`. */
  readonly image: ModuleImage;
  /** The compiler's log (warnings), possibly empty. */
  readonly log: string;
}

/** Options of {@link openRuntimeCompiler}. */
export interface RuntimeCompilerOptions {
  /**
   * Path of the compiler library; default `$DENALI_LIBNVRTC` (`$DENALI_LIBHIPRTC` on HIP), else
   * the newest of RTC_PATHS that loads.
   */
  readonly libraryPath?: string;
}

/** A loaded run-time compiler for one kind of device. */
export class RuntimeCompiler {
  readonly #sym: RtcSymbols;
  readonly #names: Readonly<Record<RtcRole, string>>;
  readonly #library: Deno.DynamicLibrary<typeof NVRTC_SYMBOLS>;
  /** Which devices its code runs on. */
  readonly kind: "cuda" | "hip";
  /** The library that was loaded. */
  readonly path: string;
  /** The compiler's version, `major.minor`: part of every cache key. */
  readonly version: string;

  /** Wraps an opened library; use {@link openRuntimeCompiler}. */
  constructor(
    kind: "cuda" | "hip",
    library: Deno.DynamicLibrary<typeof NVRTC_SYMBOLS>,
    path: string,
  ) {
    this.kind = kind;
    this.#library = library;
    this.#sym = library.symbols;
    const table = kind === "cuda" ? NVRTC_SYMBOLS : HIPRTC_SYMBOLS;
    this.#names = Object.fromEntries(
      Object.entries(table).map(([role, f]) => [role, f.name]),
    ) as Record<RtcRole, string>;
    this.path = path;
    const major = new Int32Array(1), minor = new Int32Array(1);
    this.#check(this.#sym.version(major, minor), "version");
    this.version = `${major[0]}.${minor[0]}`;
  }

  /**
   * Compiles `source` for `arch` (`sm_90`, `gfx90a`, ...) with extra compiler `options`.
   * @throws CompileError with the compiler's log when the source does not compile; RtcError for
   * any other failing call
   */
  compile(source: string, name: string, arch: string, options: readonly string[] = []): RtcOutput {
    const sym = this.#sym;
    const out = new BigUint64Array(1);
    this.#check(
      sym.createProgram(out, cString(source), cString(name), 0, null, null),
      "createProgram",
    );
    const program = Deno.UnsafePointer.create(out[0]);
    try {
      const all = [this.kind === "cuda" ? `--gpu-architecture=${arch}` : `--offload-arch=${arch}`];
      all.push(...options);
      const strings = all.map(cString);
      const pointers = new BigUint64Array(
        strings.map((s) => BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(s)))),
      );
      const code = sym.compileProgram(program, all.length, pointers);
      const log = this.#log(program);
      if (code !== 0) throw new CompileError(this.#error(code, "compileProgram"), name, log);
      const size = new BigUint64Array(1);
      this.#check(sym.getCodeSize(program, size), "getCodeSize");
      const bytes = new Uint8Array(Number(size[0]));
      this.#check(sym.getCode(program, bytes), "getCode");
      return {
        image: { format: this.kind === "cuda" ? "cubin" : "hsaco", bytes },
        log,
      };
    } finally {
      sym.destroyProgram(out);
    }
  }

  /** Releases the library. */
  close(): void {
    this.#library.close();
  }

  #log(program: Deno.PointerValue): string {
    const size = new BigUint64Array(1);
    if (this.#sym.getProgramLogSize(program, size) !== 0 || size[0] <= 1n) return "";
    const text = new Uint8Array(Number(size[0]));
    if (this.#sym.getProgramLog(program, text) !== 0) return "";
    return new TextDecoder().decode(
      text.subarray(0, text.indexOf(0) < 0 ? text.length : text.indexOf(0)),
    );
  }

  #error(code: number, role: RtcRole): RtcError {
    const text = cStringFrom(this.#sym.getErrorString(code), `unknown result ${code}`);
    return new RtcError(this.#names[role], code, text);
  }

  #check(code: number, role: RtcRole): void {
    if (code !== 0) throw this.#error(code, role);
  }
}

/** A NUL-terminated copy of a string, for the C API. */
function cString(text: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(`${text}\0`);
}

/**
 * Opens the run-time compiler for devices of `kind`.
 * @throws DriverNotFoundError naming the library tried and the remedy when none loads
 */
export function openRuntimeCompiler(
  kind: BackendKind,
  options: RuntimeCompilerOptions = {},
): RuntimeCompiler {
  if (kind !== "cuda" && kind !== "hip") {
    throw new TypeError(
      `the ${kind} backend compiles no device code; run-time kernels need the cuda or hip backend`,
    );
  }
  const variable = kind === "cuda" ? "DENALI_LIBNVRTC" : "DENALI_LIBHIPRTC";
  const configured = options.libraryPath ?? Deno.env.get(variable);
  const paths = configured ? [configured] : RTC_PATHS[kind];
  const symbols = kind === "cuda" ? NVRTC_SYMBOLS : HIPRTC_SYMBOLS;
  const what = kind === "cuda" ? "NVRTC library" : "hipRTC library";
  const { library, path } = openLibrary(paths, symbols, {
    what,
    remedy: `set $${variable} to its path (it ships with the ${
      kind === "cuda" ? "CUDA toolkit, or pip's nvidia-cuda-nvrtc" : "ROCm runtime"
    }), or load precompiled ${kind === "cuda" ? "PTX" : "HSACO"} instead`,
  });
  return new RuntimeCompiler(
    kind,
    library as unknown as Deno.DynamicLibrary<typeof NVRTC_SYMBOLS>,
    path,
  );
}
