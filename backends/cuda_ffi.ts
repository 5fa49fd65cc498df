/**
 * The libcuda.so.1 symbol table: every CUDA driver entry point Denali binds.
 *
 * Versioned names (`_v2`) are the ones cuda.h maps the plain names to, which is what a C program
 * built against the headers calls.
 *
 * @module
 */

import { driverTable } from "./driver_ffi.ts";

/** All libcuda symbols: the shared driver roles plus the CUDA-only context and error calls. */
export const CUDA_SYMBOLS = {
  ...driverTable({
    // Initialisation.
    init: "cuInit",
    driverGetVersion: "cuDriverGetVersion",
    deviceGetCount: "cuDeviceGetCount",
    deviceGetName: "cuDeviceGetName",
    deviceGetAttribute: "cuDeviceGetAttribute",
    deviceSynchronize: "cuCtxSynchronize",
    // Memory.
    memGetInfo: "cuMemGetInfo_v2",
    memAlloc: "cuMemAlloc_v2",
    memFree: "cuMemFree_v2",
    hostAlloc: "cuMemHostAlloc",
    hostFree: "cuMemFreeHost",
    memsetD8Async: "cuMemsetD8Async",
    memcpyHtoDAsync: "cuMemcpyHtoDAsync_v2",
    memcpyDtoHAsync: "cuMemcpyDtoHAsync_v2",
    memcpyDtoDAsync: "cuMemcpyDtoDAsync_v2",
    // Streams and events.
    streamCreate: "cuStreamCreate",
    streamDestroy: "cuStreamDestroy_v2",
    streamSynchronize: "cuStreamSynchronize",
    eventCreate: "cuEventCreate",
    eventRecord: "cuEventRecord",
    eventSynchronize: "cuEventSynchronize",
    eventQuery: "cuEventQuery",
    eventElapsedTime: "cuEventElapsedTime",
    eventDestroy: "cuEventDestroy_v2",
    // Modules and kernels.
    moduleLoadDataEx: "cuModuleLoadDataEx",
    moduleUnload: "cuModuleUnload",
    moduleGetFunction: "cuModuleGetFunction",
    funcSetAttribute: "cuFuncSetAttribute",
    occupancyMaxActiveBlocksPerMultiprocessor: "cuOccupancyMaxActiveBlocksPerMultiprocessor",
    launchKernel: "cuLaunchKernel",
    launchKernelEx: "cuLaunchKernelEx",
    // Graphs.
    streamBeginCapture: "cuStreamBeginCapture_v2",
    streamEndCapture: "cuStreamEndCapture",
    graphInstantiateWithFlags: "cuGraphInstantiateWithFlags",
    graphLaunch: "cuGraphLaunch",
    graphExecDestroy: "cuGraphExecDestroy",
    graphDestroy: "cuGraphDestroy",
  }),
  // CUDA-only: the driver API needs a current context, and returns error text by out-pointer.
  cuDeviceGet: { parameters: ["buffer", "i32"], result: "i32" },
  cuDevicePrimaryCtxRetain: { parameters: ["buffer", "i32"], result: "i32" },
  cuDevicePrimaryCtxRelease_v2: { parameters: ["i32"], result: "i32" },
  cuCtxSetCurrent: { parameters: ["pointer"], result: "i32" },
  cuGetErrorName: { parameters: ["i32", "buffer"], result: "i32" },
  cuGetErrorString: { parameters: ["i32", "buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** `CUdevice_attribute` values Denali reads (from cuda.h). */
export const CU_DEVICE_ATTRIBUTE = {
  MULTIPROCESSOR_COUNT: 16,
  COMPUTE_CAPABILITY_MAJOR: 75,
  COMPUTE_CAPABILITY_MINOR: 76,
  MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: 97,
} as const;

/** `CUjit_option` values used to get the JIT log when PTX fails to load (from cuda.h). */
export const CU_JIT = {
  ERROR_LOG_BUFFER: 5,
  ERROR_LOG_BUFFER_SIZE_BYTES: 6,
} as const;

/** `CUfunction_attribute` for raising a kernel's dynamic shared memory limit. */
export const CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;

/** `CUresult` codes Denali treats specially. */
export const CU_RESULT = {
  SUCCESS: 0,
  ERROR_NO_DEVICE: 100,
} as const;
