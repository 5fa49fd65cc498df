/**
 * The libcublasLt symbol table, and the signatures it shares with hipBLASLt.
 *
 * hipBLASLt copies cuBLASLt's API call for call (`cublasLtMatmul` and `hipblasLtMatmul` take the
 * same arguments), so, as in driver_ffi.ts, each shared signature is declared once here keyed by
 * its role, and each library's table maps the roles to its own symbol names. The GEMM engine in
 * cublaslt.ts then calls `symbols.matmul(...)` without knowing which library it is on.
 *
 * Conventions (those of driver_ffi.ts): out-parameters and host scalars are `buffer`, device
 * pointers are `u64` passed as plain numbers, opaque handles (library handle, descriptors,
 * layouts, preferences, stream) are `pointer`. C enums and status codes are `i32`.
 *
 * Every signature and enum value below was checked against NVIDIA's cublasLt.h / cublas_api.h
 * (CUDA 11.x to 13 agree on all of them) and library_types.h from the local CUDA 13 toolkit.
 *
 * @module
 */

/** Signatures of the Lt calls both libraries export, keyed by role. */
export const LT_SIGNATURES = {
  // (cublasLtHandle_t* handle)
  create: { parameters: ["buffer"], result: "i32" },
  // (cublasLtHandle_t handle)
  destroy: { parameters: ["pointer"], result: "i32" },
  // (cublasLtMatmulDesc_t* desc, cublasComputeType_t computeType, cudaDataType_t scaleType)
  matmulDescCreate: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  // (cublasLtMatmulDesc_t desc)
  matmulDescDestroy: { parameters: ["pointer"], result: "i32" },
  // (cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const void* buf, size_t size)
  matmulDescSetAttribute: { parameters: ["pointer", "i32", "buffer", "usize"], result: "i32" },
  // (cublasLtMatrixLayout_t* layout, cudaDataType type, uint64_t rows, uint64_t cols, int64_t ld)
  matrixLayoutCreate: { parameters: ["buffer", "i32", "u64", "u64", "i64"], result: "i32" },
  // (cublasLtMatrixLayout_t layout)
  matrixLayoutDestroy: { parameters: ["pointer"], result: "i32" },
  // (cublasLtMatmulPreference_t* pref)
  matmulPreferenceCreate: { parameters: ["buffer"], result: "i32" },
  // (cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr,
  //  const void* buf, size_t size)
  matmulPreferenceSetAttribute: {
    parameters: ["pointer", "i32", "buffer", "usize"],
    result: "i32",
  },
  // (cublasLtMatmulPreference_t pref)
  matmulPreferenceDestroy: { parameters: ["pointer"], result: "i32" },
  matmulAlgoGetHeuristic: {
    parameters: [
      "pointer", // handle
      "pointer", // operationDesc
      "pointer", // Adesc
      "pointer", // Bdesc
      "pointer", // Cdesc
      "pointer", // Ddesc
      "pointer", // preference
      "i32", // requestedAlgoCount
      "buffer", // heuristicResultsArray[]
      "buffer", // int* returnAlgoCount
    ],
    result: "i32",
  },
  matmul: {
    parameters: [
      "pointer", // handle
      "pointer", // computeDesc
      "buffer", // const void* alpha (host, as the default pointer mode reads it)
      "u64", // const void* A (device)
      "pointer", // Adesc
      "u64", // const void* B (device)
      "pointer", // Bdesc
      "buffer", // const void* beta (host)
      "u64", // const void* C (device)
      "pointer", // Cdesc
      "u64", // void* D (device)
      "pointer", // Ddesc
      "buffer", // const cublasLtMatmulAlgo_t* algo
      "u64", // void* workspace (device)
      "usize", // size_t workspaceSizeInBytes
      "pointer", // cudaStream_t / hipStream_t
    ],
    result: "i32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** An Lt call's role, such as `matmul` or `matrixLayoutCreate`. */
export type LtRole = keyof typeof LT_SIGNATURES;

/** The shared Lt calls as Deno binds them, with 64-bit integer parameters typed `bigint`. */
export type LtBoundSymbols = Deno.DynamicLibrary<typeof LT_SIGNATURES>["symbols"];

/** A bound call whose 64-bit integer parameters also take plain numbers. */
type TakingNumbers<F> = F extends (...args: infer A) => infer R
  ? (...args: { [I in keyof A]: bigint extends A[I] ? A[I] | number : A[I] }) => R
  : never;

/**
 * The bound shared Lt calls, as the GEMM engine sees them: device pointers and sizes go in as
 * plain numbers, so a matmul call allocates no BigInt.
 */
export type LtSymbols = { readonly [R in LtRole]: TakingNumbers<LtBoundSymbols[R]> };

/**
 * Views bound symbols as {@link LtSymbols}. Deno's FFI converts a number passed for a `u64`,
 * `i64` or `usize` parameter exactly (below 2^53, which device addresses are); only its type
 * declarations insist on bigint.
 */
export function ltSymbols(symbols: LtBoundSymbols): LtSymbols {
  return symbols as unknown as LtSymbols;
}

/** Each role's symbol name in one library. */
export type LtNames = { readonly [R in LtRole]: string };

/** Builds one library's table: the shared signatures under that library's symbol names. */
export function ltTable<N extends LtNames>(
  names: N,
): { [R in LtRole]: (typeof LT_SIGNATURES)[R] & { name: string } } {
  const table = {} as Record<string, Deno.ForeignFunction>;
  for (const role of Object.keys(LT_SIGNATURES) as LtRole[]) {
    table[role] = { ...LT_SIGNATURES[role], name: names[role] };
  }
  return table as { [R in LtRole]: (typeof LT_SIGNATURES)[R] & { name: string } };
}

/** The real symbol name behind each shared role of a table built with `ltTable`. */
export function ltSymbolNames(table: Record<string, Deno.ForeignFunction>): LtNames {
  const names: Record<string, string> = {};
  for (const role of Object.keys(LT_SIGNATURES)) {
    const name = table[role]?.name;
    names[role] = typeof name === "string" ? name : role;
  }
  return names as LtNames;
}

/** All libcublasLt symbols Denali binds: the shared roles plus cuBLASLt's version and status text. */
export const CUBLASLT_SYMBOLS = {
  ...ltTable({
    create: "cublasLtCreate",
    destroy: "cublasLtDestroy",
    matmulDescCreate: "cublasLtMatmulDescCreate",
    matmulDescDestroy: "cublasLtMatmulDescDestroy",
    matmulDescSetAttribute: "cublasLtMatmulDescSetAttribute",
    matrixLayoutCreate: "cublasLtMatrixLayoutCreate",
    matrixLayoutDestroy: "cublasLtMatrixLayoutDestroy",
    matmulPreferenceCreate: "cublasLtMatmulPreferenceCreate",
    matmulPreferenceSetAttribute: "cublasLtMatmulPreferenceSetAttribute",
    matmulPreferenceDestroy: "cublasLtMatmulPreferenceDestroy",
    matmulAlgoGetHeuristic: "cublasLtMatmulAlgoGetHeuristic",
    matmul: "cublasLtMatmul",
  }),
  // size_t cublasLtGetVersion(void): CUBLAS_VER_MAJOR * 10000 + MINOR * 100 + PATCH.
  cublasLtGetVersion: { parameters: [], result: "usize" },
  // const char* cublasLtGetStatusName(cublasStatus_t status), e.g. "CUBLAS_STATUS_INVALID_VALUE".
  cublasLtGetStatusName: { parameters: ["i32"], result: "pointer" },
  // const char* cublasLtGetStatusString(cublasStatus_t status): a sentence describing it.
  cublasLtGetStatusString: { parameters: ["i32"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** `cudaDataType_t` values (library_types.h). */
export const CUDA_DATA_TYPE = {
  R_32F: 0,
  R_16BF: 14,
  R_8F_E4M3: 28,
} as const;

/** `cublasComputeType_t`: fp32 accumulation with default (tensor-core) math (cublas_api.h). */
export const CUBLAS_COMPUTE_32F = 68;

/** `cublasOperation_t` values (cublas_api.h). */
export const CUBLAS_OP = {
  N: 0,
  T: 1,
} as const;

/** `cublasStatus_t` codes Denali raises itself (cublas_api.h). */
export const CUBLAS_STATUS = {
  SUCCESS: 0,
  NOT_SUPPORTED: 15,
} as const;

/**
 * `cublasLtMatmulDescAttributes_t` values Denali sets: the operations and scale modes are int32_t,
 * the scale pointers a device address (8 bytes). The scale modes exist from cuBLASLt 12.8; an
 * older release refuses them, which reads as "no FP8 path".
 */
export const CUBLASLT_MATMUL_DESC = {
  TRANSA: 3,
  TRANSB: 4,
  A_SCALE_POINTER: 17,
  B_SCALE_POINTER: 18,
  A_SCALE_MODE: 31,
  B_SCALE_MODE: 32,
} as const;

/**
 * `cublasLtMatmulMatrixScale_t`: OUTER_VEC_32F scales each row of op(A) and each column of op(B)
 * by its own f32 (cuBLASLt 12.9 on compute capability 9.0 and newer).
 */
export const CUBLASLT_MATRIX_SCALE = {
  SCALAR_32F: 0,
  OUTER_VEC_32F: 3,
} as const;

/**
 * `cublasLtMatmulPreferenceAttributes_t` values Denali sets: the workspace cap is uint64_t, the
 * minimum alignments (bytes, which the heuristic otherwise assumes to be 256) are uint32_t.
 */
export const CUBLASLT_MATMUL_PREF = {
  MAX_WORKSPACE_BYTES: 1,
  MIN_ALIGNMENT_A_BYTES: 5,
  MIN_ALIGNMENT_B_BYTES: 6,
  MIN_ALIGNMENT_C_BYTES: 7,
  MIN_ALIGNMENT_D_BYTES: 8,
} as const;

/**
 * `cublasLtMatmulHeuristicResult_t` layout: `cublasLtMatmulAlgo_t algo` (uint64_t data[8]) at 0,
 * `size_t workspaceSize` at 64, `cublasStatus_t state` at 72, `float wavesCount` at 76 and
 * `int reserved[4]`: 96 bytes.
 */
export const CUBLASLT_HEURISTIC_RESULT = {
  BYTES: 96,
  WORKSPACE_SIZE_OFFSET: 64,
  STATE_OFFSET: 72,
} as const;
