/**
 * The libhipblaslt symbol table: cuBLASLt's shared roles (cublaslt_ffi.ts) under hipBLASLt's
 * names, plus the enum values that differ.
 *
 * Values were checked against hipblaslt.h, hipblas-common.h and hip/library_types.h as shipped
 * with ROCm 6.x and 7.x (hipBLASLt 0.x, libhipblaslt.so.0; hipBLASLt 1.x, libhipblaslt.so.1),
 * which agree on every value below. hipBLASLt has no status-text call (that lives in libhipblas),
 * so the names and descriptions of `hipblasStatus_t` are kept here.
 *
 * @module
 */

import { ltTable } from "./cublaslt_ffi.ts";

/** All libhipblaslt symbols Denali binds: the shared Lt roles plus hipBLASLt's version call. */
export const HIPBLASLT_SYMBOLS = {
  ...ltTable({
    create: "hipblasLtCreate",
    destroy: "hipblasLtDestroy",
    matmulDescCreate: "hipblasLtMatmulDescCreate",
    matmulDescDestroy: "hipblasLtMatmulDescDestroy",
    matmulDescSetAttribute: "hipblasLtMatmulDescSetAttribute",
    matrixLayoutCreate: "hipblasLtMatrixLayoutCreate",
    matrixLayoutDestroy: "hipblasLtMatrixLayoutDestroy",
    matmulPreferenceCreate: "hipblasLtMatmulPreferenceCreate",
    matmulPreferenceSetAttribute: "hipblasLtMatmulPreferenceSetAttribute",
    matmulPreferenceDestroy: "hipblasLtMatmulPreferenceDestroy",
    matmulAlgoGetHeuristic: "hipblasLtMatmulAlgoGetHeuristic",
    matmul: "hipblasLtMatmul",
  }),
  // hipblasStatus_t hipblasLtGetVersion(hipblasLtHandle_t handle, int* version):
  // HIPBLASLT_VERSION_MAJOR * 100000 + MINOR * 100 + PATCH.
  hipblasLtGetVersion: { parameters: ["pointer", "buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** `hipDataType` values (hip/library_types.h, ROCm 6+; the same numbers as CUDA's). */
export const HIP_DATA_TYPE = {
  R_32F: 0,
  R_16BF: 14,
} as const;

/** `hipblasComputeType_t`: fp32 accumulation (hipblas-common.h). */
export const HIPBLAS_COMPUTE_32F = 2;

/** `hipblasOperation_t` values (hipblas-common.h; the cblas numbers, not CUDA's). */
export const HIPBLAS_OP = {
  N: 111,
  T: 112,
} as const;

/** `hipblasLtMatmulDescAttributes_t` values Denali sets; both are int32_t attributes. */
export const HIPBLASLT_MATMUL_DESC = {
  TRANSA: 0,
  TRANSB: 1,
} as const;

/**
 * `hipblasLtMatmulPreferenceAttributes_t`: only the workspace cap (uint64_t); hipBLASLt has no
 * alignment preferences.
 */
export const HIPBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1;

/**
 * `hipblasLtMatmulHeuristicResult_t` layout: `hipblasLtMatmulAlgo_t algo` (uint8_t data[16] and
 * size_t max_workspace_bytes) at 0, `size_t workspaceSize` at 24, `hipblasStatus_t state` at 32,
 * `float wavesCount` at 36 and `int reserved[4]`: 56 bytes.
 */
export const HIPBLASLT_HEURISTIC_RESULT = {
  BYTES: 56,
  WORKSPACE_SIZE_OFFSET: 24,
  STATE_OFFSET: 32,
} as const;

/** `hipblasStatus_t` codes Denali raises itself. */
export const HIPBLAS_STATUS = {
  SUCCESS: 0,
  NOT_SUPPORTED: 7,
} as const;

/** Name and description of every `hipblasStatus_t` (hipblas-common.h), indexed by code. */
export const HIPBLAS_STATUS_TEXT: readonly (readonly [string, string])[] = [
  ["HIPBLAS_STATUS_SUCCESS", "the function succeeded"],
  ["HIPBLAS_STATUS_NOT_INITIALIZED", "the hipBLAS library is not initialized"],
  ["HIPBLAS_STATUS_ALLOC_FAILED", "resource allocation failed"],
  ["HIPBLAS_STATUS_INVALID_VALUE", "an unsupported value was passed to the function"],
  ["HIPBLAS_STATUS_MAPPING_ERROR", "access to GPU memory space failed"],
  ["HIPBLAS_STATUS_EXECUTION_FAILED", "the GPU program failed to execute"],
  ["HIPBLAS_STATUS_INTERNAL_ERROR", "an internal hipBLAS operation failed"],
  ["HIPBLAS_STATUS_NOT_SUPPORTED", "the function is not implemented for these arguments"],
  ["HIPBLAS_STATUS_ARCH_MISMATCH", "the GPU architecture does not support the operation"],
  ["HIPBLAS_STATUS_HANDLE_IS_NULLPTR", "the hipBLAS handle is a null pointer"],
  ["HIPBLAS_STATUS_INVALID_ENUM", "an unsupported enum value was passed to the function"],
  ["HIPBLAS_STATUS_UNKNOWN", "the back end returned an unsupported status code"],
];
