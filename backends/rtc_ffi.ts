/**
 * The symbol tables of the run-time compilers, NVRTC (libnvrtc.so) and hipRTC (libhiprtc.so, or
 * libamdhip64.so on ROCm 5.2, which carries it). Like the drivers (driver_ffi.ts), the two APIs
 * match call for call, so each signature is declared once under a role and each library's table
 * maps the roles to its own names. NVRTC's code is a cubin (`nvrtcGetCUBIN`, a real `sm_XY`
 * target loads without a JIT); hipRTC's a code object (`hiprtcGetCode`).
 *
 * @module
 */

/** Signatures of the compiler calls both libraries make, keyed by role. */
export const RTC_SIGNATURES = {
  version: { parameters: ["buffer", "buffer"], result: "i32" }, // int* major, int* minor
  createProgram: {
    parameters: [
      "buffer", // program* (out)
      "buffer", // const char* source
      "buffer", // const char* name
      "i32", // numHeaders
      "pointer", // const char** headers
      "pointer", // const char** includeNames
    ],
    result: "i32",
  },
  compileProgram: { parameters: ["pointer", "i32", "buffer"], result: "i32" }, // prog, n, options
  getProgramLogSize: { parameters: ["pointer", "buffer"], result: "i32" }, // prog, size_t*
  getProgramLog: { parameters: ["pointer", "buffer"], result: "i32" }, // prog, char*
  getCodeSize: { parameters: ["pointer", "buffer"], result: "i32" }, // prog, size_t*
  getCode: { parameters: ["pointer", "buffer"], result: "i32" }, // prog, char*
  destroyProgram: { parameters: ["buffer"], result: "i32" }, // program*
  getErrorString: { parameters: ["i32"], result: "pointer" }, // const char*
} as const satisfies Deno.ForeignLibraryInterface;

/** A compiler call's role, such as `compileProgram`. */
export type RtcRole = keyof typeof RTC_SIGNATURES;

/** The bound compiler calls, as the run-time compiler sees them. */
export type RtcSymbols = Deno.DynamicLibrary<typeof RTC_SIGNATURES>["symbols"];

/** One library's table: the shared signatures under that library's symbol names. */
export type RtcTable = { [R in RtcRole]: (typeof RTC_SIGNATURES)[R] & { name: string } };

function rtcTable(names: { readonly [R in RtcRole]: string }): RtcTable {
  const table = {} as Record<string, Deno.ForeignFunction>;
  for (const role of Object.keys(RTC_SIGNATURES) as RtcRole[]) {
    table[role] = { ...RTC_SIGNATURES[role], name: names[role] };
  }
  return table as RtcTable;
}

/** The libnvrtc symbols. */
export const NVRTC_SYMBOLS: RtcTable = rtcTable({
  version: "nvrtcVersion",
  createProgram: "nvrtcCreateProgram",
  compileProgram: "nvrtcCompileProgram",
  getProgramLogSize: "nvrtcGetProgramLogSize",
  getProgramLog: "nvrtcGetProgramLog",
  getCodeSize: "nvrtcGetCUBINSize",
  getCode: "nvrtcGetCUBIN",
  destroyProgram: "nvrtcDestroyProgram",
  getErrorString: "nvrtcGetErrorString",
});

/** The hipRTC symbols. */
export const HIPRTC_SYMBOLS: RtcTable = rtcTable({
  version: "hiprtcVersion",
  createProgram: "hiprtcCreateProgram",
  compileProgram: "hiprtcCompileProgram",
  getProgramLogSize: "hiprtcGetProgramLogSize",
  getProgramLog: "hiprtcGetProgramLog",
  getCodeSize: "hiprtcGetCodeSize",
  getCode: "hiprtcGetCode",
  destroyProgram: "hiprtcDestroyProgram",
  getErrorString: "hiprtcGetErrorString",
});

/** Where each compiler is looked for when no path is configured: newest first. */
export const RTC_PATHS = {
  cuda: [
    "libnvrtc.so.13",
    "libnvrtc.so.12",
    "libnvrtc.so",
    "/usr/local/cuda/lib64/libnvrtc.so.13",
    "/usr/local/cuda/lib64/libnvrtc.so.12",
    "/usr/local/cuda/lib64/libnvrtc.so",
  ],
  hip: [
    "libhiprtc.so.6",
    "libhiprtc.so.5",
    "libhiprtc.so",
    "/opt/rocm/lib/libhiprtc.so",
    // ROCm 5.2 (Debian 12) has hipRTC inside the HIP runtime.
    "libamdhip64.so.5",
  ],
} as const;
