/**
 * The libamdhip64 symbol table: every HIP entry point Denali binds.
 *
 * HIP's module API mirrors the CUDA driver API, so most entries reuse the shared signatures.
 *
 * @module
 */

import { driverTable } from "./driver_ffi.ts";

/** All libamdhip64 symbols: the shared driver roles plus the HIP-only device and error calls. */
export const HIP_SYMBOLS = {
  ...driverTable({
    // Initialisation.
    init: "hipInit",
    driverGetVersion: "hipDriverGetVersion",
    deviceGetCount: "hipGetDeviceCount",
    deviceGetName: "hipDeviceGetName",
    deviceGetAttribute: "hipDeviceGetAttribute",
    deviceSynchronize: "hipDeviceSynchronize",
    // Memory.
    memGetInfo: "hipMemGetInfo",
    memAlloc: "hipMalloc",
    memFree: "hipFree",
    hostAlloc: "hipHostMalloc",
    hostFree: "hipHostFree",
    memsetD8Async: "hipMemsetD8Async",
    memcpyHtoDAsync: "hipMemcpyHtoDAsync",
    memcpyDtoHAsync: "hipMemcpyDtoHAsync",
    memcpyDtoDAsync: "hipMemcpyDtoDAsync",
    // Streams and events.
    streamCreate: "hipStreamCreateWithFlags",
    streamDestroy: "hipStreamDestroy",
    streamSynchronize: "hipStreamSynchronize",
    eventCreate: "hipEventCreateWithFlags",
    eventRecord: "hipEventRecord",
    eventSynchronize: "hipEventSynchronize",
    eventQuery: "hipEventQuery",
    eventElapsedTime: "hipEventElapsedTime",
    eventDestroy: "hipEventDestroy",
    // Modules and kernels.
    moduleLoadDataEx: "hipModuleLoadDataEx",
    moduleUnload: "hipModuleUnload",
    moduleGetFunction: "hipModuleGetFunction",
    funcSetAttribute: "hipFuncSetAttribute",
    occupancyMaxActiveBlocksPerMultiprocessor: "hipModuleOccupancyMaxActiveBlocksPerMultiprocessor",
    launchKernel: "hipModuleLaunchKernel",
    // Bound where present, but unused: AMD GPUs have no programmatic dependent launch.
    launchKernelEx: "hipDrvLaunchKernelEx",
    // Graphs.
    streamBeginCapture: "hipStreamBeginCapture",
    streamEndCapture: "hipStreamEndCapture",
    graphInstantiateWithFlags: "hipGraphInstantiateWithFlags",
    graphLaunch: "hipGraphLaunch",
    graphExecDestroy: "hipGraphExecDestroy",
    graphDestroy: "hipGraphDestroy",
  }),
  // HIP-only: a device is selected per thread, and error text comes back as a C string.
  hipSetDevice: { parameters: ["i32"], result: "i32" },
  hipGetErrorName: { parameters: ["i32"], result: "pointer" },
  hipGetErrorString: { parameters: ["i32"], result: "pointer" },
  // The gfx arch name lives only in hipDeviceProp_t, whose layout changes between ROCm releases;
  // Denali scans the returned bytes for "gfx", so it binds the call without the struct.
  hipGetDeviceProperties: { parameters: ["buffer", "i32"], result: "i32", optional: true },
} as const satisfies Deno.ForeignLibraryInterface;

/** `hipDeviceAttribute_t` values Denali reads (HIP 5.x and 6.x headers agree on these). */
export const HIP_DEVICE_ATTRIBUTE = {
  COMPUTE_CAPABILITY_MAJOR: 23,
  COMPUTE_CAPABILITY_MINOR: 61,
  MULTIPROCESSOR_COUNT: 63,
} as const;
