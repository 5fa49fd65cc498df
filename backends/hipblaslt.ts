/**
 * hipBLASLt as Denali's GemmAccelerator on AMD GPUs: the Lt engine of cublaslt.ts over
 * libhipblaslt, whose API mirrors cuBLASLt's call for call.
 *
 * There is no AMD GPU where Denali is developed, so beyond "library absent → null" this path is
 * checked only against a fake libhipblaslt built from the headers' values (tests/cublaslt_test.ts).
 *
 * @module
 */

import type { GemmAccelerator } from "./backend.ts";
import { type LtOptions, openLtAccelerator, openLtLibrary } from "./cublaslt.ts";
import { ltSymbolNames, ltSymbols } from "./cublaslt_ffi.ts";
import { DriverError } from "./errors.ts";
import {
  HIP_DATA_TYPE,
  HIPBLAS_COMPUTE_32F,
  HIPBLAS_OP,
  HIPBLAS_STATUS,
  HIPBLAS_STATUS_TEXT,
  HIPBLASLT_HEURISTIC_RESULT,
  HIPBLASLT_MATMUL_DESC,
  HIPBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
  HIPBLASLT_SYMBOLS,
} from "./hipblaslt_ffi.ts";

/** Where hipBLASLt is looked for: ROCm 7's soname, then ROCm 6's, then the default ROCm install. */
export const HIPBLASLT_PATHS: readonly string[] = [
  "libhipblaslt.so.1",
  "libhipblaslt.so.0",
  "libhipblaslt.so",
  "/opt/rocm/lib/libhipblaslt.so.1",
  "/opt/rocm/lib/libhipblaslt.so.0",
];

/**
 * Opens hipBLASLt as a GemmAccelerator, or returns null (telling `onUnavailable` why) when the
 * library is not installed. Once the library is found, any call that fails throws DriverError.
 *
 * @example
 * ```ts ignore
 * import { openHipBlasLt } from "./hipblaslt.ts";
 * const gemm = openHipBlasLt({ onUnavailable: (reason) => console.log(reason) });
 * gemm?.close();
 * ```
 */
export function openHipBlasLt(options: LtOptions = {}): GemmAccelerator | null {
  const configured = options.libraryPath ?? Deno.env.get("DENALI_LIBHIPBLASLT");
  const paths = configured ? [configured] : HIPBLASLT_PATHS;
  const library = openLtLibrary(paths, HIPBLASLT_SYMBOLS, "hipBLASLt library", options);
  if (!library) return null;
  const sym = library.symbols;
  const statusText = (code: number) => {
    const known = HIPBLAS_STATUS_TEXT[code];
    return known
      ? { name: known[0], message: known[1] }
      : { name: `hipblasStatus_t ${code}`, message: "hipBLASLt has no text for it" };
  };
  try {
    return openLtAccelerator({
      backend: "hip",
      label: "hipBLASLt",
      symbols: ltSymbols(sym),
      names: ltSymbolNames(HIPBLASLT_SYMBOLS),
      computeType: HIPBLAS_COMPUTE_32F,
      scaleType: HIP_DATA_TYPE.R_32F,
      dataType: HIP_DATA_TYPE.R_16BF,
      op: HIPBLAS_OP,
      descTrans: { A: HIPBLASLT_MATMUL_DESC.TRANSA, B: HIPBLASLT_MATMUL_DESC.TRANSB },
      prefMaxWorkspaceBytes: HIPBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
      prefMinAlignment: null,
      heuristicResult: HIPBLASLT_HEURISTIC_RESULT,
      notSupported: HIPBLAS_STATUS.NOT_SUPPORTED,
      statusText,
      version: (handle) => {
        const out = new Int32Array(1);
        const code = sym.hipblasLtGetVersion(handle, out);
        if (code !== 0) {
          const { name, message } = statusText(code);
          throw new DriverError("hip", "hipblasLtGetVersion", code, name, message);
        }
        // HIPBLASLT_VERSION_MAJOR * 100000 + HIPBLASLT_VERSION_MINOR * 100 + PATCH.
        const v = out[0];
        return `${Math.floor(v / 100000)}.${Math.floor(v / 100) % 1000}.${v % 100}`;
      },
      closeLibrary: () => library.close(),
    }, options);
  } catch (error) {
    library.close();
    throw error;
  }
}
