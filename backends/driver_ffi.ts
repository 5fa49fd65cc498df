/**
 * The FFI signatures shared by the CUDA driver API and HIP's module API.
 *
 * The two APIs are nearly isomorphic: `cuMemAlloc_v2` and `hipMalloc`, `cuLaunchKernel` and
 * `hipModuleLaunchKernel` take the same arguments. So each signature is declared once here, keyed
 * by its role, and each library's table (`cuda_ffi.ts`, `hip_ffi.ts`) maps the roles to its own
 * symbol names, overriding a signature only where the library really differs. The generic GPU
 * backend then calls `symbols.memAlloc(...)` and never knows which driver it is on.
 *
 * Conventions: out-parameters are `buffer` (a small preallocated typed array), device pointers
 * are `u64` passed as plain numbers, host memory is `buffer`, opaque handles (stream, event,
 * module, function, graph) are `pointer`.
 *
 * @module
 */

/** Signatures of the driver calls both backends make, keyed by role. */
export const DRIVER_SIGNATURES = {
  // Initialisation.
  init: { parameters: ["u32"], result: "i32" },
  driverGetVersion: { parameters: ["buffer"], result: "i32" },
  deviceGetCount: { parameters: ["buffer"], result: "i32" },
  deviceGetName: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  deviceGetAttribute: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  deviceSynchronize: { parameters: [], result: "i32" },

  // Device and pinned host memory.
  memGetInfo: { parameters: ["buffer", "buffer"], result: "i32" },
  memAlloc: { parameters: ["buffer", "usize"], result: "i32" },
  memFree: { parameters: ["u64"], result: "i32" },
  hostAlloc: { parameters: ["buffer", "usize", "u32"], result: "i32" },
  hostFree: { parameters: ["pointer"], result: "i32" },
  memsetD8Async: { parameters: ["u64", "u8", "usize", "pointer"], result: "i32" },
  memcpyHtoDAsync: { parameters: ["u64", "buffer", "usize", "pointer"], result: "i32" },
  memcpyDtoHAsync: { parameters: ["buffer", "u64", "usize", "pointer"], result: "i32" },
  memcpyDtoDAsync: { parameters: ["u64", "u64", "usize", "pointer"], result: "i32" },

  // Streams and events.
  streamCreate: { parameters: ["buffer", "u32"], result: "i32" },
  streamDestroy: { parameters: ["pointer"], result: "i32" },
  streamSynchronize: { parameters: ["pointer"], result: "i32" },
  eventCreate: { parameters: ["buffer", "u32"], result: "i32" },
  eventRecord: { parameters: ["pointer", "pointer"], result: "i32" },
  eventSynchronize: { parameters: ["pointer"], result: "i32" },
  eventQuery: { parameters: ["pointer"], result: "i32" },
  eventElapsedTime: { parameters: ["buffer", "pointer", "pointer"], result: "i32" },
  eventDestroy: { parameters: ["pointer"], result: "i32" },

  // Modules and kernels.
  moduleLoadDataEx: {
    parameters: ["buffer", "buffer", "u32", "buffer", "buffer"],
    result: "i32",
  },
  moduleUnload: { parameters: ["pointer"], result: "i32" },
  moduleGetFunction: { parameters: ["buffer", "pointer", "buffer"], result: "i32" },
  funcSetAttribute: { parameters: ["pointer", "i32", "i32"], result: "i32" },
  // Resident blocks an SM of a function at a block size and dynamic shared size (out: int).
  occupancyMaxActiveBlocksPerMultiprocessor: {
    parameters: ["buffer", "pointer", "i32", "usize"],
    result: "i32",
  },
  launchKernel: {
    parameters: [
      "pointer", // function
      "u32", // grid x
      "u32", // grid y
      "u32", // grid z
      "u32", // block x
      "u32", // block y
      "u32", // block z
      "u32", // dynamic shared memory bytes
      "pointer", // stream
      "pointer", // kernelParams (void**)
      "pointer", // extra (void**)
    ],
    result: "i32",
  },
  // cuLaunchKernelEx / hipDrvLaunchKernelEx: a launch described by a config struct (grid, block,
  // shared bytes, stream and launch attributes), then function, kernelParams and extra as above.
  // Optional: CUDA drivers before 11.8 and older ROCm lack it; launches then use launchKernel.
  launchKernelEx: {
    parameters: [
      "pointer", // config (const CUlaunchConfig*)
      "pointer", // function
      "pointer", // kernelParams (void**)
      "pointer", // extra (void**)
    ],
    result: "i32",
    optional: true,
  },

  // Stream capture and graphs.
  streamBeginCapture: { parameters: ["pointer", "i32"], result: "i32" },
  streamEndCapture: { parameters: ["pointer", "buffer"], result: "i32" },
  graphInstantiateWithFlags: { parameters: ["buffer", "pointer", "u64"], result: "i32" },
  graphLaunch: { parameters: ["pointer", "pointer"], result: "i32" },
  graphExecDestroy: { parameters: ["pointer"], result: "i32" },
  graphDestroy: { parameters: ["pointer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** A driver call's role, such as `memAlloc` or `launchKernel`. */
export type DriverRole = keyof typeof DRIVER_SIGNATURES;

/** The bound shared driver calls, as the generic GPU backend sees them. */
export type DriverSymbols = Deno.DynamicLibrary<typeof DRIVER_SIGNATURES>["symbols"];

/** Each role's symbol name in one library. */
export type DriverNames = { readonly [R in DriverRole]: string };

/** Builds one library's table: the shared signatures under that library's symbol names. */
export function driverTable<N extends DriverNames>(
  names: N,
): { [R in DriverRole]: (typeof DRIVER_SIGNATURES)[R] & { name: string } } {
  const table = {} as Record<string, Deno.ForeignFunction>;
  for (const role of Object.keys(DRIVER_SIGNATURES) as DriverRole[]) {
    table[role] = { ...DRIVER_SIGNATURES[role], name: names[role] };
  }
  return table as { [R in DriverRole]: (typeof DRIVER_SIGNATURES)[R] & { name: string } };
}

/** The real symbol name behind each role of a library table built with `driverTable`. */
export function symbolNames(table: Record<string, Deno.ForeignFunction>): DriverNames {
  const names: Record<string, string> = {};
  for (const [role, definition] of Object.entries(table)) {
    names[role] = typeof definition.name === "string" ? definition.name : role;
  }
  return names as DriverNames;
}
