/**
 * The vendor GEMM accelerators without a GPU: an absent library gives null and a reason, the
 * symbol tables bind what they should, and the Lt engine runs end to end against a fake
 * libcublasLt / libhipblaslt (fake_driver/fake_cublaslt.c) that really multiplies CpuBackend
 * memory from the layouts it is given, so the row-major to column-major mapping, the per-shape
 * planning, the workspace, the stream and the error wrapping are all checked here.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { DeviceBuffer, GemmAccelerator, ScaledFp8, Stream } from "../backends/backend.ts";
import { encodeBf16, fromBf16Bits, roundBf16 } from "../backends/bf16.ts";
import { CpuBackend } from "../backends/cpu.ts";
import { CUBLASLT_PATHS, type LtOptions, openCublasLt } from "../backends/cublaslt.ts";
import {
  CUBLASLT_SYMBOLS,
  LT_SIGNATURES,
  type LtBoundSymbols,
  ltSymbolNames,
  ltSymbols,
} from "../backends/cublaslt_ffi.ts";
import { CUDA_SYMBOLS } from "../backends/cuda_ffi.ts";
import { symbolNames } from "../backends/driver_ffi.ts";
import { cStringFrom } from "../backends/dlopen.ts";
import { DriverError, UnsupportedShapeError } from "../backends/errors.ts";
import { setFallbackSink } from "../backends/fallbacks.ts";
import { decodeE4m3, encodeE4m3, rowScale, toE4m3Bits } from "../backends/fp8.ts";
import { HIP_SYMBOLS } from "../backends/hip_ffi.ts";
import { HIPBLASLT_PATHS, openHipBlasLt } from "../backends/hipblaslt.ts";
import { HIPBLASLT_SYMBOLS } from "../backends/hipblaslt_ffi.ts";
import { buildFakeDriver, openFakeControl } from "./fake_driver/fake.ts";
import { randomArray, relativeError } from "./support/numeric.ts";

const MIB = 2 ** 20;

// ---- The fake Lt library -----------------------------------------------------------------------

const CONTROL_SYMBOLS = {
  fake_lt_fail_next: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  fake_lt_set_no_algorithm: { parameters: ["i32"], result: "void" },
  fake_lt_set_no_outer_vec: { parameters: ["i32"], result: "void" },
  fake_lt_set_candidates: { parameters: ["i32", "i32"], result: "void" },
  fake_lt_last_candidate: { parameters: [], result: "i32" },
  fake_lt_reset: { parameters: [], result: "void" },
  fake_lt_live_objects: { parameters: [], result: "u64" },
  fake_lt_heuristic_calls: { parameters: [], result: "u64" },
  fake_lt_matmul_calls: { parameters: [], result: "u64" },
  fake_lt_last_stream: { parameters: [], result: "u64" },
  fake_lt_last_workspace: { parameters: [], result: "u64" },
  fake_lt_last_workspace_bytes: { parameters: [], result: "u64" },
  fake_lt_pref_workspace_bytes: { parameters: [], result: "u64" },
  fake_lt_pref_alignment: { parameters: ["i32"], result: "u32" },
} as const satisfies Deno.ForeignLibraryInterface;

type Control = Deno.DynamicLibrary<typeof CONTROL_SYMBOLS>["symbols"];

let cacheDir: string | undefined;
const built = new Map<string, string>();

/** Compiles the fake Lt library once per flavour and process, as fake.ts does the driver. */
function buildFakeLt(hip: boolean): string {
  const name = hip ? "libfake_hipblaslt.so" : "libfake_cublaslt.so";
  const cached = built.get(name);
  if (cached) return cached;
  if (!cacheDir) {
    cacheDir = Deno.makeTempDirSync({ prefix: "denali-fake-lt-" });
    const dir = cacheDir;
    // Unlinking a loaded .so is safe on Linux, and the temp dir would otherwise pile up per run.
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch {
        // Best effort: a leftover temp dir is harmless.
      }
    });
  }
  const source = decodeURIComponent(
    new URL("./fake_driver/fake_cublaslt.c", import.meta.url).pathname,
  );
  const output = `${cacheDir}/${name}`;
  const args = ["-O2", "-shared", "-fPIC", "-std=c11", "-Wall", "-Wextra", "-o", output, source];
  if (hip) args.unshift("-DFAKE_HIP");
  const result = new Deno.Command("gcc", { args, stdout: "piped", stderr: "piped" }).outputSync();
  if (!result.success) {
    const stderr = new TextDecoder().decode(result.stderr);
    throw new Error(`gcc failed to build the fake Lt library (${name}):\n${stderr}`);
  }
  built.set(name, output);
  return output;
}

/** One Lt library as the tests drive it: how to open it and what it calls things. */
interface Flavour {
  readonly label: string;
  readonly hip: boolean;
  readonly open: (options?: LtOptions) => GemmAccelerator | null;
  readonly name: string;
  /** The exported name of a call, e.g. `cublasLtMatmul`. */
  readonly call: (suffix: string) => string;
  readonly executionFailed: { code: number; name: string; message: RegExp };
  readonly notInitialized: { code: number; name: string };
  readonly notSupported: { code: number; name: string };
}

const FLAVOURS: readonly Flavour[] = [
  {
    label: "cuBLASLt",
    hip: false,
    open: openCublasLt,
    name: "cuBLASLt 13.0.2",
    call: (suffix) => `cublasLt${suffix}`,
    executionFailed: {
      code: 13,
      name: "CUBLAS_STATUS_EXECUTION_FAILED",
      message: /^fake: the GPU program failed to execute$/,
    },
    notInitialized: { code: 1, name: "CUBLAS_STATUS_NOT_INITIALIZED" },
    notSupported: { code: 15, name: "CUBLAS_STATUS_NOT_SUPPORTED" },
  },
  {
    label: "hipBLASLt",
    hip: true,
    open: openHipBlasLt,
    name: "hipBLASLt 1.2.0",
    call: (suffix) => `hipblasLt${suffix}`,
    executionFailed: {
      code: 5,
      name: "HIPBLAS_STATUS_EXECUTION_FAILED",
      message: /GPU program failed to execute/,
    },
    notInitialized: { code: 1, name: "HIPBLAS_STATUS_NOT_INITIALIZED" },
    notSupported: { code: 7, name: "HIPBLAS_STATUS_NOT_SUPPORTED" },
  },
];

/** CpuBackend memory that counts workspace allocations, so leaks show. */
class CountingMemory {
  readonly cpu = new CpuBackend();
  allocs = 0;
  frees = 0;
  lastBytes = 0;
  lastPtr = 0;

  alloc = (bytes: number): DeviceBuffer => {
    this.allocs++;
    this.lastBytes = bytes;
    const buffer = this.cpu.alloc(bytes);
    this.lastPtr = buffer.ptr;
    return buffer;
  };

  free = (buffer: DeviceBuffer): void => {
    this.frees++;
    this.cpu.free(buffer);
  };
}

interface Fixture {
  readonly gemm: GemmAccelerator;
  readonly fake: Control;
  readonly memory: CountingMemory;
  readonly cpu: CpuBackend;
  readonly stream: Stream;
}

/** Runs `body` on a fresh accelerator over the fake, then closes it and checks nothing leaked. */
function withFake(
  flavour: Flavour,
  body: (f: Fixture) => void,
  options: Partial<LtOptions> = {},
): () => void {
  return () => {
    const libraryPath = buildFakeLt(flavour.hip);
    // Opened first and closed last, so the fake's state outlives the accelerator's dlclose.
    const control = Deno.dlopen(libraryPath, CONTROL_SYMBOLS);
    const fake = control.symbols;
    fake.fake_lt_reset();
    const memory = new CountingMemory();
    try {
      const gemm = flavour.open({ libraryPath, memory, ...options });
      assert.ok(gemm, "the fake library should open");
      try {
        body({ gemm, fake, memory, cpu: memory.cpu, stream: memory.cpu.defaultStream });
      } finally {
        gemm.close();
      }
      assert.equal(fake.fake_lt_live_objects(), 0n, "every handle, descriptor and layout freed");
      assert.equal(memory.frees, memory.allocs, "the workspace is freed");
    } finally {
      fake.fake_lt_reset();
      control.close();
    }
  };
}

/** A bf16 matrix on the CPU "device" (at least 256 bytes, so V8 keeps it off its moving heap). */
function upload(cpu: CpuBackend, values: Float32Array): DeviceBuffer {
  const buffer = cpu.alloc(Math.max(256, values.length * 2));
  cpu.copyToDevice(buffer, encodeBf16(values));
  return buffer;
}

/** out[M, N] = x[M, K] · W[N, K]ᵀ in f64 from bf16-rounded inputs, rounded to bf16. */
function reference(x: Float32Array, w: Float32Array, m: number, n: number, k: number) {
  const out = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let l = 0; l < k; l++) acc += x[i * k + l] * w[j * k + l];
      out[i * n + j] = roundBf16(acc);
    }
  }
  return out;
}

/** Random bf16-exact values. */
function bf16Random(n: number, seed: number): Float32Array {
  return randomArray(n, seed).map(roundBf16);
}

/** Reads `count` bf16 values from a CPU buffer. */
function readBf16(buffer: DeviceBuffer, count: number): Float32Array {
  const bits = new Uint16Array(buffer.host!.buffer, buffer.host!.byteOffset, count);
  return Float32Array.from(bits, fromBf16Bits);
}

/** Runs one gemm on fresh random inputs and returns its relative error against the reference. */
function gemmError(f: Fixture, m: number, n: number, k: number, seed: number): number {
  const xs = bf16Random(m * k, seed), ws = bf16Random(n * k, seed + 1);
  const x = upload(f.cpu, xs), w = upload(f.cpu, ws);
  const out = f.cpu.alloc(Math.max(256, m * n * 2));
  f.cpu.memset(out, 0xff); // NaN: an element the library does not write fails
  f.gemm.gemm(out, x, w, m, n, k, f.stream);
  const got = readBf16(out, m * n);
  assert.ok(got.every(Number.isFinite), `${m}x${n}x${k}: every output element is written`);
  return relativeError(got, reference(xs, ws, m, n, k));
}

/**
 * A tuning clock over the fake library for `tune`: a run of a candidate takes
 * `ms(candidate, first)` ms (first: the candidate's first timing), and `timed` records the
 * candidates in the order they ran.
 */
function fakeClock(f: Fixture, ms: (candidate: number, first: boolean) => number) {
  const timed: number[] = [];
  const time = (run: () => void) => {
    run();
    const candidate = f.fake.fake_lt_last_candidate();
    timed.push(candidate);
    return ms(candidate, timed.filter((c) => c === candidate).length === 1);
  };
  return { timed, time };
}

/** What `fn` threw; fails the test if it returned. */
function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  assert.fail("expected an error, but the call returned");
}

// ---- Absent libraries and symbol tables --------------------------------------------------------

for (const flavour of FLAVOURS) {
  const soname = flavour.hip ? "libhipblaslt.so.1" : "libcublasLt.so.13";

  Deno.test(`${flavour.label}: an absent library gives null and a reason naming it`, () => {
    const reasons: string[] = [];
    const path = `/nonexistent/${soname}`;
    const gemm = flavour.open({ libraryPath: path, onUnavailable: (r) => reasons.push(r) });
    assert.equal(gemm, null);
    assert.equal(reasons.length, 1);
    assert.ok(reasons[0].includes(path), reasons[0]);
    assert.ok(reasons[0].includes(flavour.label), reasons[0]);
    // Without a callback the absence is silent: it is a slower path, not an error.
    assert.equal(flavour.open({ libraryPath: path }), null);
  });

  Deno.test(`${flavour.label}: the environment variable names the library`, () => {
    const variable = flavour.hip ? "DENALI_LIBHIPBLASLT" : "DENALI_LIBCUBLASLT";
    const previous = Deno.env.get(variable);
    Deno.env.set(variable, `/elsewhere/${soname}`);
    try {
      let reason = "";
      assert.equal(flavour.open({ onUnavailable: (r) => reason = r }), null);
      assert.ok(reason.includes(`/elsewhere/${soname}`), reason);
    } finally {
      if (previous === undefined) Deno.env.delete(variable);
      else Deno.env.set(variable, previous);
    }
  });

  Deno.test(`${flavour.label}: a library without its symbols gives null naming one`, () => {
    let reason = "";
    const gemm = flavour.open({ libraryPath: "libc.so.6", onUnavailable: (r) => reason = r });
    assert.equal(gemm, null);
    assert.match(
      reason,
      flavour.hip ? /lacks the symbol hipblasLt\w+/ : /lacks the symbol cublasLt\w+/,
    );
  });
}

Deno.test("the search paths try the newest soname first, then the default install", () => {
  assert.deepEqual(CUBLASLT_PATHS.slice(0, 2), ["libcublasLt.so.13", "libcublasLt.so.12"]);
  assert.ok(CUBLASLT_PATHS.includes("/usr/local/cuda/lib64/libcublasLt.so.13"));
  assert.ok(CUBLASLT_PATHS.includes("/usr/local/cuda/lib64/libcublasLt.so.12"));
  assert.deepEqual(HIPBLASLT_PATHS.slice(0, 2), ["libhipblaslt.so.1", "libhipblaslt.so.0"]);
});

Deno.test("the symbol tables bind every Lt call under each library's name", () => {
  const roles = Object.keys(LT_SIGNATURES).sort();
  const cuda = ltSymbolNames(CUBLASLT_SYMBOLS);
  const hip = ltSymbolNames(HIPBLASLT_SYMBOLS);
  const expected = {
    create: "Create",
    destroy: "Destroy",
    matmulDescCreate: "MatmulDescCreate",
    matmulDescDestroy: "MatmulDescDestroy",
    matmulDescSetAttribute: "MatmulDescSetAttribute",
    matrixLayoutCreate: "MatrixLayoutCreate",
    matrixLayoutDestroy: "MatrixLayoutDestroy",
    matmulPreferenceCreate: "MatmulPreferenceCreate",
    matmulPreferenceSetAttribute: "MatmulPreferenceSetAttribute",
    matmulPreferenceDestroy: "MatmulPreferenceDestroy",
    matmulAlgoGetHeuristic: "MatmulAlgoGetHeuristic",
    matmul: "Matmul",
  };
  assert.deepEqual(Object.keys(expected).sort(), roles);
  for (const [role, suffix] of Object.entries(expected)) {
    assert.equal(cuda[role as keyof typeof cuda], `cublasLt${suffix}`);
    assert.equal(hip[role as keyof typeof hip], `hipblasLt${suffix}`);
  }
  for (const extra of ["cublasLtGetVersion", "cublasLtGetStatusName", "cublasLtGetStatusString"]) {
    assert.ok(extra in CUBLASLT_SYMBOLS, extra);
  }
  assert.ok("hipblasLtGetVersion" in HIPBLASLT_SYMBOLS);
  // The argument counts of the C prototypes.
  assert.equal(LT_SIGNATURES.matmul.parameters.length, 16);
  assert.equal(LT_SIGNATURES.matmulAlgoGetHeuristic.parameters.length, 10);
  assert.equal(LT_SIGNATURES.matrixLayoutCreate.parameters.length, 5);
});

// ---- The engine on the fake --------------------------------------------------------------------

for (const flavour of FLAVOURS) {
  const t = (name: string, body: (f: Fixture) => void, options?: Partial<LtOptions>) =>
    Deno.test(`${flavour.label} (fake): ${name}`, withFake(flavour, body, options));

  t("names itself with its version", (f) => {
    assert.equal(f.gemm.name, flavour.name);
  });

  t("computes out = x · Wᵀ for assorted shapes", (f) => {
    const shapes = [[1, 1, 1], [1, 7, 5], [3, 16, 8], [5, 9, 33], [16, 24, 40], [17, 3, 64]];
    for (const [m, n, k] of shapes) {
      const error = gemmError(f, m, n, k, m * 1000 + n * 10 + k);
      // Both sides round the same fp32-or-better sum to bf16, so only ties may differ.
      assert.ok(error < 4e-3, `${m}x${n}x${k}: relative error ${error}`);
    }
  });

  t("tune times every offered algorithm, skips refused ones and keeps the fastest", (f) => {
    // Five candidates; the library refuses candidate 0 at matmul. The clock says 3 ms for
    // candidate 2 and 5 ms for the others, except candidate 4's first timing (1 ms, a fluke):
    // 4 makes the final round but 2 must win it, and later gemm calls must run 2.
    f.fake.fake_lt_set_candidates(5, 0);
    const m = 4, n = 8, k = 16;
    const xs = bf16Random(m * k, 3), ws = bf16Random(n * k, 4);
    const x = upload(f.cpu, xs), w = upload(f.cpu, ws);
    const out = f.cpu.alloc(256);
    const { timed, time } = fakeClock(f, (c, first) => c === 4 && first ? 1 : c === 2 ? 3 : 5);
    f.gemm.tune!(out, x, w, m, n, k, f.stream, time);
    // First every usable candidate in order; then the three fastest (4, 2, then 1 of the 5 ms
    // ties, in offer order) twice in turns.
    assert.deepEqual(timed, [1, 2, 3, 4, 4, 2, 1, 4, 2, 1]);
    f.cpu.memset(out, 0xff);
    f.gemm.gemm(out, x, w, m, n, k, f.stream);
    assert.equal(f.fake.fake_lt_last_candidate(), 2);
    assert.ok(relativeError(readBf16(out, m * n), reference(xs, ws, m, n, k)) < 4e-3);
    // Bad sizes are refused before anything runs, as in gemm.
    assert.throws(() => f.gemm.tune!(out, x, w, 0, n, k, f.stream, time), RangeError);
  });

  t("tune reports a refused algorithm once, and any other failure propagates", (f) => {
    const lines: string[] = [];
    const previous = setFallbackSink((line) => lines.push(line));
    try {
      f.fake.fake_lt_set_candidates(3, 0);
      const n = 8, k = 16;
      const x = upload(f.cpu, bf16Random(8 * k, 7)), w = upload(f.cpu, bf16Random(n * k, 8));
      const out = f.cpu.alloc(256);
      for (const m of [4, 5]) {
        const { time } = fakeClock(f, () => 1);
        f.gemm.tune!(out, x, w, m, n, k, f.stream, time);
      }
      assert.equal(lines.length, 1, lines.join("\n"));
      assert.match(
        lines[0],
        new RegExp(
          `^\\[denali\\] fallback: ${flavour.label} refused an algorithm its heuristic offered`,
        ),
      );
      assert.match(lines[0], new RegExp(flavour.notSupported.name));
      // A candidate that fails otherwise (the device, not the library's choice) is not skipped.
      const { code, name } = flavour.executionFailed;
      f.fake.fake_lt_set_candidates(3, -1);
      failNext(f.fake, flavour.call("Matmul"), code);
      const { time } = fakeClock(f, () => 1);
      const error = thrown(() => f.gemm.tune!(out, x, w, 6, n, k, f.stream, time));
      assert.ok(error instanceof DriverError && !(error instanceof UnsupportedShapeError));
      assert.equal(error.codeName, name);
    } finally {
      setFallbackSink(previous);
    }
  });

  t("tune keeps the heuristic's first guess unless another is clearly faster", (f) => {
    // Four usable candidates. The clock: 0 → 5 ms, 1 → 4.9 ms (2% faster: within the margin),
    // 2 → 4.95 ms, 3 → 4.8 ms (4% faster) at first, then 5.2 ms in the final rounds. Candidate 0
    // makes the final rounds though it was not among the three fastest, and keeps its place.
    f.fake.fake_lt_set_candidates(4, -1);
    const m = 4, n = 8, k = 16;
    const x = upload(f.cpu, bf16Random(m * k, 5)), w = upload(f.cpu, bf16Random(n * k, 6));
    const out = f.cpu.alloc(256);
    const { timed, time } = fakeClock(f, (c, first) => [5, 4.9, 4.95, first ? 4.8 : 5.2][c]);
    f.gemm.tune!(out, x, w, m, n, k, f.stream, time);
    assert.deepEqual(timed, [0, 1, 2, 3, 3, 1, 2, 0, 3, 1, 2, 0]);
    f.gemm.gemm(out, x, w, m, n, k, f.stream);
    assert.equal(f.fake.fake_lt_last_candidate(), 0);
  });

  t("plans once per shape and alignment, then only multiplies", (f) => {
    const calls = () => Number(f.fake.fake_lt_heuristic_calls());
    gemmError(f, 4, 8, 16, 1);
    gemmError(f, 4, 8, 16, 2);
    assert.equal(calls(), 1, "the same shape reuses its plan");
    gemmError(f, 5, 8, 16, 3);
    assert.equal(calls(), 2, "another M is another plan");
    gemmError(f, 4, 16, 8, 4);
    assert.equal(calls(), 3, "another weight shape is another plan");
    assert.equal(f.fake.fake_lt_matmul_calls(), 4n);
    if (!flavour.hip) {
      for (let which = 0; which < 4; which++) {
        assert.equal(f.fake.fake_lt_pref_alignment(which), 16, "CpuBackend buffers are aligned");
      }
    }
    // A view 2 bytes in is 2-byte aligned: a plan of its own, and cuBLASLt is told so.
    const [m, n, k] = [4, 8, 16];
    const xs = bf16Random(m * k + 1, 5), ws = bf16Random(n * k, 6);
    const x = upload(f.cpu, xs), w = upload(f.cpu, ws);
    const out = f.cpu.alloc(256);
    f.gemm.gemm(out, x.slice(2), w, m, n, k, f.stream);
    assert.equal(calls(), 4);
    if (!flavour.hip) assert.equal(f.fake.fake_lt_pref_alignment(1), 2);
    const error = relativeError(readBf16(out, m * n), reference(xs.subarray(1), ws, m, n, k));
    assert.ok(error < 4e-3, `offset view: relative error ${error}`);
    f.gemm.gemm(out, x.slice(2), w, m, n, k, f.stream);
    assert.equal(calls(), 4, "the 2-byte plan is reused");
  });

  t("passes the stream, the workspace and its size", (f) => {
    assert.equal(f.memory.allocs, 1);
    assert.equal(f.memory.lastBytes, 32 * MIB, "32 MiB by default");
    const stream: Stream = {
      native: Deno.UnsafePointer.create(0x5eedn),
      synchronize() {},
      destroy() {},
    };
    const x = upload(f.cpu, bf16Random(64, 1)), w = upload(f.cpu, bf16Random(64, 2));
    const out = f.cpu.alloc(256);
    f.gemm.gemm(out, x, w, 8, 8, 8, stream);
    assert.equal(f.fake.fake_lt_last_stream(), 0x5eedn);
    assert.equal(f.fake.fake_lt_last_workspace(), BigInt(f.memory.lastPtr));
    assert.equal(f.fake.fake_lt_last_workspace_bytes(), BigInt(32 * MIB));
    assert.equal(f.fake.fake_lt_pref_workspace_bytes(), BigInt(32 * MIB));
    f.gemm.gemm(out, x, w, 8, 8, 8, f.stream);
    assert.equal(f.fake.fake_lt_last_stream(), 0n, "the default stream is null");
  });

  t("runs without a workspace when asked to", (f) => {
    assert.equal(f.memory.allocs, 0);
    const error = gemmError(f, 3, 5, 7, 9);
    assert.ok(error < 4e-3);
    assert.equal(f.fake.fake_lt_last_workspace(), 0n);
    assert.equal(f.fake.fake_lt_last_workspace_bytes(), 0n);
    assert.equal(f.fake.fake_lt_pref_workspace_bytes(), 0n);
  }, { workspaceBytes: 0 });

  t("turns a failing matmul into a DriverError and carries on", (f) => {
    gemmError(f, 2, 8, 8, 1);
    const { code, name, message } = flavour.executionFailed;
    failNext(f.fake, flavour.call("Matmul"), code);
    const error = thrown(() => gemmError(f, 2, 8, 8, 1));
    assert.ok(error instanceof DriverError, String(error));
    assert.equal(error.backend, flavour.hip ? "hip" : "cuda");
    assert.equal(error.call, flavour.call("Matmul"));
    assert.equal(error.code, code);
    assert.equal(error.codeName, name);
    assert.match(error.driverMessage, message);
    assert.match(error.message, new RegExp(`^${flavour.call("Matmul")} failed: ${name}`));
    assert.ok(gemmError(f, 2, 8, 8, 1) < 4e-3, "the next call works");
  });

  t("reports a shape without an algorithm, naming the shape", (f) => {
    f.fake.fake_lt_set_no_algorithm(1);
    const error = thrown(() => gemmError(f, 2, 8, 16, 1));
    assert.ok(error instanceof UnsupportedShapeError, String(error));
    assert.equal(error.call, flavour.call("MatmulAlgoGetHeuristic"));
    assert.equal(error.code, flavour.notSupported.code);
    assert.equal(error.codeName, flavour.notSupported.name);
    assert.match(error.message, /no algorithm for out\[2, 8\] = x\[2, 16\] · W\[8, 16\]ᵀ/);
    f.fake.fake_lt_set_no_algorithm(0);
    assert.ok(gemmError(f, 2, 8, 16, 1) < 4e-3, "a failed plan is not cached");
  });

  t("a failure while planning leaks no layout", (f) => {
    const live = f.fake.fake_lt_live_objects();
    const x = upload(f.cpu, bf16Random(64, 1)), w = upload(f.cpu, bf16Random(64, 2));
    const out = f.cpu.alloc(256);
    f.gemm.gemm(out, x, w, 8, 8, 8, f.stream);
    const planned = f.fake.fake_lt_live_objects();
    assert.equal(planned, live + 3n, "one weight layout, and x's and out's for the plan");
    // A new M with the same weight: x's layout is made, out's fails.
    failNext(f.fake, flavour.call("MatrixLayoutCreate"), 3, 1);
    const error = thrown(() => f.gemm.gemm(out, x, w, 4, 8, 8, f.stream));
    assert.ok(error instanceof DriverError, String(error));
    assert.equal(error.call, flavour.call("MatrixLayoutCreate"));
    assert.equal(f.fake.fake_lt_live_objects(), planned, "x's layout was destroyed again");
    // And when the heuristic fails, both layouts go.
    failNext(f.fake, flavour.call("MatmulAlgoGetHeuristic"), 3);
    assert.ok(thrown(() => f.gemm.gemm(out, x, w, 4, 8, 8, f.stream)) instanceof DriverError);
    assert.equal(f.fake.fake_lt_live_objects(), planned);
    f.gemm.gemm(out, x, w, 4, 8, 8, f.stream);
    assert.equal(f.fake.fake_lt_live_objects(), planned + 2n);
  });

  t("checks its arguments before calling the library", (f) => {
    const x = upload(f.cpu, bf16Random(64, 1)), w = upload(f.cpu, bf16Random(64, 2));
    const out = f.cpu.alloc(256);
    const gemm = (m: number, n: number, k: number, o = out, a = x, b = w) =>
      thrown(() => f.gemm.gemm(o, a, b, m, n, k, f.stream));
    const range = (error: unknown, pattern: RegExp) => {
      assert.ok(error instanceof RangeError, String(error));
      assert.match(error.message, pattern);
      assert.match(error.message, new RegExp(`^${flavour.label} \\d+\\.\\d+\\.\\d+ gemm: `));
    };
    range(gemm(0, 8, 8), /m must be an integer in 1\.\.16777215, got 0/);
    range(gemm(2, 1.5, 8), /n must be an integer/);
    range(gemm(2, 8, -1), /k must be an integer/);
    range(gemm(2, 8, 2 ** 24), /k must be an integer/);
    range(gemm(8, 32, 8), /out \[8, 32\] bf16 needs 512 bytes, but the buffer has 256/);
    range(gemm(8, 8, 32), /x \[8, 32\] bf16 needs 512 bytes/);
    range(gemm(2, 32, 8), /weight \[32, 8\] bf16 needs 512 bytes/);
    range(gemm(2, 8, 8, out.slice(1)), /even addresses/);
    assert.equal(f.fake.fake_lt_heuristic_calls(), 0n);
    assert.equal(f.fake.fake_lt_matmul_calls(), 0n);
  });

  t("close releases everything once; a closed accelerator refuses work", (f) => {
    gemmError(f, 2, 8, 8, 1);
    gemmError(f, 3, 8, 8, 1);
    f.gemm.close();
    assert.equal(f.fake.fake_lt_live_objects(), 0n);
    assert.equal(f.memory.frees, 1);
    f.gemm.close(); // a second close does nothing (withFake closes a third time)
    const x = upload(f.cpu, bf16Random(64, 1));
    const error = thrown(() => f.gemm.gemm(x, x, x, 2, 2, 2, f.stream));
    assert.ok(error instanceof TypeError && /closed/.test(error.message), String(error));
  });

  Deno.test(`${flavour.label} (fake): a failing create throws and leaks nothing`, () => {
    const libraryPath = buildFakeLt(flavour.hip);
    const control = Deno.dlopen(libraryPath, CONTROL_SYMBOLS);
    const fake = control.symbols;
    try {
      fake.fake_lt_reset();
      const memory = new CountingMemory();
      for (const suffix of ["Create", "MatmulDescCreate", "MatmulPreferenceSetAttribute"]) {
        failNext(fake, flavour.call(suffix), flavour.notInitialized.code);
        const error = thrown(() => flavour.open({ libraryPath, memory }));
        assert.ok(error instanceof DriverError, String(error));
        assert.equal(error.call, flavour.call(suffix));
        assert.equal(error.codeName, flavour.notInitialized.name);
        assert.equal(fake.fake_lt_live_objects(), 0n, `after a failing ${suffix}`);
        assert.equal(memory.frees, memory.allocs, `no workspace left after a failing ${suffix}`);
      }
    } finally {
      fake.fake_lt_reset();
      control.close();
    }
  });

  Deno.test(`${flavour.label} (fake): the workspace can come from the driver's own calls`, () => {
    const ltPath = buildFakeLt(flavour.hip);
    const driverPath = buildFakeDriver({ hip: flavour.hip });
    const control = Deno.dlopen(ltPath, CONTROL_SYMBOLS);
    const driverFake = openFakeControl(driverPath);
    // The driver calls as the adapter in cuda.ts / hip.ts would hand them over.
    const table = flavour.hip ? HIP_SYMBOLS : CUDA_SYMBOLS;
    const driverLib = Deno.dlopen(driverPath, table);
    const errorText = (code: number) => ({ name: `fake driver error ${code}`, message: "fake" });
    const driver = { symbols: driverLib.symbols, names: symbolNames(table), errorText };
    try {
      control.symbols.fake_lt_reset();
      driverFake.reset();
      const before = driverFake.bytesAllocated();
      const gemm = flavour.open({ libraryPath: ltPath, driver });
      assert.ok(gemm);
      assert.equal(driverFake.bytesAllocated() - before, 32 * MIB);
      gemm.close();
      assert.equal(driverFake.bytesAllocated(), before);

      const alloc = flavour.hip ? "hipMalloc" : "cuMemAlloc_v2";
      driverFake.failNext(alloc, 2);
      const error = thrown(() => flavour.open({ libraryPath: ltPath, driver }));
      assert.ok(error instanceof DriverError, String(error));
      assert.equal(error.call, alloc);
      assert.equal(error.codeName, "fake driver error 2");
      assert.equal(control.symbols.fake_lt_live_objects(), 0n);
    } finally {
      control.symbols.fake_lt_reset();
      driverFake.reset();
      driverLib.close();
      driverFake.close();
      control.close();
    }
  });
}

Deno.test("a workspace with nowhere to come from is a usage error", () => {
  const libraryPath = buildFakeLt(false);
  const control = Deno.dlopen(libraryPath, CONTROL_SYMBOLS);
  try {
    const error = thrown(() => openCublasLt({ libraryPath, workspaceBytes: MIB }));
    assert.ok(
      error instanceof TypeError && /options\.memory or options\.driver/.test(error.message),
    );
    assert.equal(control.symbols.fake_lt_live_objects(), 0n);
  } finally {
    control.close();
  }
});

/** Makes the fake fail the call after the next `skip` calls of `symbol` with `status`. */
function failNext(fake: Control, symbol: string, status: number, skip = 0): void {
  const name = new TextEncoder().encode(`${symbol}\0`);
  assert.equal(fake.fake_lt_fail_next(name, skip, status), 0, `queue a failure of ${symbol}`);
}

Deno.test("cuBLASLt (fake): status names and text come from the library", () => {
  const libraryPath = buildFakeLt(false);
  const lib = Deno.dlopen(libraryPath, CUBLASLT_SYMBOLS);
  try {
    const s = lib.symbols;
    assert.equal(cStringFrom(s.cublasLtGetStatusName(7), ""), "CUBLAS_STATUS_INVALID_VALUE");
    assert.match(cStringFrom(s.cublasLtGetStatusString(7), ""), /unsupported value/);
  } finally {
    lib.close();
  }
});

// ---- FP8 with per-row scales (cuBLASLt) --------------------------------------------------------

/** A row-scaled FP8 matrix on the host: E4M3 codes [rows, cols] row-major, f32 scales [rows]. */
interface Fp8Host {
  readonly codes: Uint8Array;
  readonly scales: Float32Array;
}

/**
 * A random FP8 matrix quantized as Denali quantizes weights: rows whose magnitudes differ (by up
 * to 16× either way, so the scales differ row to row), each divided by rowScale(amax) and encoded.
 */
function randomFp8(rows: number, cols: number, seed: number): Fp8Host {
  const values = randomArray(rows * cols, seed);
  const magnitudes = randomArray(rows, seed + 7919, -4, 4);
  const codes = new Uint8Array(rows * cols), scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const row = values.subarray(r * cols, (r + 1) * cols).map((v) => v * 2 ** magnitudes[r]);
    const amax = row.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
    scales[r] = rowScale(amax);
    encodeE4m3(row.map((v) => v / scales[r]), codes.subarray(r * cols, (r + 1) * cols));
  }
  return { codes, scales };
}

/** An FP8 matrix on the CPU "device" (each buffer at least 256 bytes, as `upload`). */
function uploadFp8(cpu: CpuBackend, host: Fp8Host): ScaledFp8 {
  const data = cpu.alloc(Math.max(256, host.codes.length));
  cpu.copyToDevice(data, host.codes);
  const scales = cpu.alloc(Math.max(256, host.scales.length * 4));
  cpu.copyToDevice(scales, host.scales);
  return { data, scales };
}

/**
 * out[M, N] = scale(m, n) · Σ_k e4m3(x[m, k]) · e4m3(W[n, k]) in f64 from the decoded codes,
 * rounded to bf16; `scale` is x.scales[m] · W.scales[n] unless given.
 */
function fp8Reference(
  x: Fp8Host,
  w: Fp8Host,
  m: number,
  n: number,
  k: number,
  scale = (i: number, j: number) => x.scales[i] * w.scales[j],
): Float32Array {
  const xv = decodeE4m3(x.codes), wv = decodeE4m3(w.codes);
  const out = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let l = 0; l < k; l++) acc += xv[i * k + l] * wv[j * k + l];
      out[i * n + j] = roundBf16(scale(i, j) * acc);
    }
  }
  return out;
}

/** Runs gemmFp8 into a fresh NaN-filled output and returns what it wrote. */
function runFp8(f: Fixture, x: ScaledFp8, w: ScaledFp8, m: number, n: number, k: number) {
  const out = f.cpu.alloc(Math.max(256, m * n * 2));
  f.cpu.memset(out, 0xff); // NaN: an element the library does not write fails
  f.gemm.gemmFp8!(out, x, w, m, n, k, f.stream);
  return readBf16(out, m * n);
}

/** Runs one gemmFp8 on fresh random inputs and returns its relative error against the reference. */
function fp8Error(f: Fixture, m: number, n: number, k: number, seed: number): number {
  const xs = randomFp8(m, k, seed), ws = randomFp8(n, k, seed + 1);
  const got = runFp8(f, uploadFp8(f.cpu, xs), uploadFp8(f.cpu, ws), m, n, k);
  assert.ok(got.every(Number.isFinite), `${m}x${n}x${k}: every output element is written`);
  return relativeError(got, fp8Reference(xs, ws, m, n, k));
}

const CUBLASLT = FLAVOURS.find((flavour) => !flavour.hip)!;
const fp8Test = (name: string, body: (f: Fixture) => void, options?: Partial<LtOptions>) =>
  Deno.test(`cuBLASLt (fake): ${name}`, withFake(CUBLASLT, body, options));

fp8Test("gemmFp8 computes x.scales[m] · W.scales[n] · Σ_k e4m3(x) · e4m3(W)", (f) => {
  assert.equal(typeof f.gemm.gemmFp8, "function");
  assert.equal(typeof f.gemm.tuneFp8, "function");
  const shapes = [[5, 24, 48], [17, 9, 33], [1, 1, 1], [3, 40, 16]];
  for (const [m, n, k] of shapes) {
    const error = fp8Error(f, m, n, k, m * 1000 + n * 10 + k);
    // Both sides round the same fp32-or-better value to bf16, so only ties may differ.
    assert.ok(error < 4e-3, `${m}x${n}x${k}: relative error ${error}`);
  }
});

fp8Test("gemmFp8 scales each output row by x's scale and each column by W's", (f) => {
  // Square, so the other reading (x.scales along N, W's along M) would read in bounds, and
  // scales far apart (2^-4 .. 2^3 and 1.5^0 .. 1.5^-7), so it would be far off.
  const m = 8, n = 8, k = 32;
  const xs = randomFp8(m, k, 11), ws = randomFp8(n, k, 12);
  for (let i = 0; i < m; i++) xs.scales[i] = 2 ** (i - 4);
  for (let j = 0; j < n; j++) ws.scales[j] = Math.fround(1.5 ** -j);
  const got = runFp8(f, uploadFp8(f.cpu, xs), uploadFp8(f.cpu, ws), m, n, k);
  const right = fp8Reference(xs, ws, m, n, k);
  const swapped = fp8Reference(xs, ws, m, n, k, (i, j) => xs.scales[j] * ws.scales[i]);
  assert.ok(relativeError(got, right) < 4e-3, `relative error ${relativeError(got, right)}`);
  const off = relativeError(got, swapped);
  assert.ok(off > 0.1, `the swapped reading should be far off, but is within ${off}`);
});

fp8Test("gemmFp8 decodes every E4M3 code as fp8.ts does, subnormals and NaN included", (f) => {
  // k = 1 and the other operand 1.0: out is each code's value, exact in bf16 (4 significant bits).
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  const one = new Uint8Array([toE4m3Bits(1)]);
  const expected = decodeE4m3(all);
  const ones = (count: number) => new Float32Array(count).fill(1);
  for (const codesOnX of [true, false]) {
    const codes = { codes: all, scales: ones(256) }, unit = { codes: one, scales: ones(1) };
    const [x, w] = codesOnX ? [codes, unit] : [unit, codes];
    const [m, n] = codesOnX ? [256, 1] : [1, 256];
    const got = runFp8(f, uploadFp8(f.cpu, x), uploadFp8(f.cpu, w), m, n, 1);
    for (let code = 0; code < 256; code++) {
      const want = expected[code];
      const where = `code 0x${code.toString(16)} on ${codesOnX ? "x" : "W"}`;
      if (Number.isNaN(want)) assert.ok(Number.isNaN(got[code]), `${where}: NaN, got ${got[code]}`);
      // === rather than Object.is: a sum that starts at +0 turns 0x80's -0 into +0.
      else assert.ok(got[code] === want, `${where}: ${want}, got ${got[code]}`);
    }
  }
});

fp8Test("FP8 has plans of its own: one heuristic call per new shape, and bf16 still works", (f) => {
  const calls = () => Number(f.fake.fake_lt_heuristic_calls());
  const live = f.fake.fake_lt_live_objects();
  assert.ok(gemmError(f, 4, 8, 16, 1) < 4e-3);
  assert.equal(calls(), 1);
  assert.equal(f.fake.fake_lt_live_objects(), live + 3n, "bf16: W's layout, x's and out's");
  // The same shape in FP8 is another plan, on a descriptor made now.
  assert.ok(fp8Error(f, 4, 8, 16, 2) < 4e-3);
  assert.equal(calls(), 2, "the FP8 call plans for itself");
  assert.equal(f.fake.fake_lt_live_objects(), live + 7n, "FP8: a descriptor and three layouts");
  // Other buffers with other scales, on the same plan: each call passes its own scale addresses.
  assert.ok(fp8Error(f, 4, 8, 16, 3) < 4e-3);
  assert.equal(calls(), 2, "the same FP8 shape reuses its plan");
  assert.ok(fp8Error(f, 5, 8, 16, 4) < 4e-3);
  assert.equal(calls(), 3, "another M is another FP8 plan");
  assert.ok(fp8Error(f, 4, 16, 8, 5) < 4e-3);
  assert.equal(calls(), 4, "another weight shape is another FP8 plan");
  assert.equal(f.fake.fake_lt_live_objects(), live + 7n + 2n + 3n, "x's and out's; then W's too");
  // bf16 after FP8, on its own descriptor and plan.
  assert.ok(gemmError(f, 4, 8, 16, 6) < 4e-3, "bf16 after FP8");
  assert.ok(gemmError(f, 4, 16, 8, 7) < 4e-3, "a bf16 shape FP8 has planned");
  assert.equal(calls(), 5, "only the bf16 shape not planned in bf16 yet plans");
  assert.equal(f.fake.fake_lt_matmul_calls(), 7n);
  // Closing releases the FP8 descriptor and plans too; a closed accelerator refuses FP8.
  f.gemm.close();
  assert.equal(f.fake.fake_lt_live_objects(), 0n);
  const x = uploadFp8(f.cpu, randomFp8(4, 16, 8)), w = uploadFp8(f.cpu, randomFp8(8, 16, 9));
  const error = thrown(() => runFp8(f, x, w, 4, 8, 16));
  assert.ok(error instanceof TypeError && /closed/.test(error.message), String(error));
});

fp8Test("tuneFp8 times the FP8 candidates and keeps the fastest, apart from bf16", (f) => {
  // As the bf16 tune test: five candidates, 0 refused at matmul, 2 the fastest, 4 lucky once.
  f.fake.fake_lt_set_candidates(5, 0);
  const m = 4, n = 8, k = 16;
  const xs = randomFp8(m, k, 3), ws = randomFp8(n, k, 4);
  const x = uploadFp8(f.cpu, xs), w = uploadFp8(f.cpu, ws);
  const out = f.cpu.alloc(256);
  const { timed, time } = fakeClock(f, (c, first) => c === 4 && first ? 1 : c === 2 ? 3 : 5);
  f.gemm.tuneFp8!(out, x, w, m, n, k, f.stream, time);
  assert.deepEqual(timed, [1, 2, 3, 4, 4, 2, 1, 4, 2, 1]);
  const got = runFp8(f, x, w, m, n, k);
  assert.equal(f.fake.fake_lt_last_candidate(), 2);
  assert.ok(relativeError(got, fp8Reference(xs, ws, m, n, k)) < 4e-3);
  assert.throws(() => f.gemm.tuneFp8!(out, x, w, 0, n, k, f.stream, time), RangeError);
  // The bf16 plan of the same shape is another one, planned now with the heuristic's first.
  f.fake.fake_lt_set_candidates(5, -1);
  assert.ok(gemmError(f, m, n, k, 5) < 4e-3);
  assert.equal(f.fake.fake_lt_last_candidate(), 0);
  runFp8(f, x, w, m, n, k);
  assert.equal(f.fake.fake_lt_last_candidate(), 2, "the FP8 plan keeps its tuned pick");
});

fp8Test("gemmFp8 checks its buffers, and a shape without an algorithm is unsupported", (f) => {
  const m = 5, n = 24, k = 48;
  const xs = randomFp8(m, k, 21), ws = randomFp8(n, k, 22);
  const x = uploadFp8(f.cpu, xs), w = uploadFp8(f.cpu, ws);
  const out = f.cpu.alloc(256);
  const range = (fn: () => void, pattern: RegExp) => {
    const error = thrown(fn);
    assert.ok(error instanceof RangeError, String(error));
    assert.match(error.message, pattern);
    assert.match(error.message, /^cuBLASLt \d+\.\d+\.\d+ gemm(Fp8)?: /);
  };
  const gemmFp8 = (o: DeviceBuffer, a: ScaledFp8, b: ScaledFp8, mm = m) => () =>
    f.gemm.gemmFp8!(o, a, b, mm, n, k, f.stream);
  const small = f.cpu.alloc(16); // four f32
  range(gemmFp8(out, { ...x, scales: small }, w), /x's scales need 5 f32 \(20 bytes/);
  range(gemmFp8(out, x, { ...w, scales: small }), /weight's scales need 24 f32 \(96 bytes/);
  range(gemmFp8(out, { ...x, scales: x.scales.slice(2) }, w), /4-byte aligned/);
  range(
    gemmFp8(out, { ...x, data: f.cpu.alloc(m * k - 1) }, w),
    /x \[5, 48\] FP8 E4M3 with per-row scales needs 240 bytes, but the buffer has 239/,
  );
  range(gemmFp8(out, x, { ...w, data: x.data }), /weight \[24, 48\] FP8 E4M3 .*needs 1152 bytes/);
  range(gemmFp8(f.cpu.alloc(m * n * 2 - 2), x, w), /out \[5, 24\] bf16 needs 240 bytes/);
  range(gemmFp8(out.slice(1), x, w), /even addresses/);
  assert.equal(f.fake.fake_lt_matmul_calls(), 0n, "nothing ran");
  // The call with good buffers runs, and reads the scales just refused no more.
  assert.ok(relativeError(runFp8(f, x, w, m, n, k), fp8Reference(xs, ws, m, n, k)) < 4e-3);

  // No algorithm for a shape: UnsupportedShapeError naming it, and nothing cached.
  f.fake.fake_lt_set_no_algorithm(1);
  const none = thrown(gemmFp8(out, x, w, 4));
  assert.ok(none instanceof UnsupportedShapeError, String(none));
  assert.equal(none.call, "cublasLtMatmulAlgoGetHeuristic");
  assert.equal(none.code, 15);
  assert.equal(none.codeName, "CUBLAS_STATUS_NOT_SUPPORTED");
  assert.match(
    none.message,
    /no algorithm for out\[4, 24\] = x\[4, 48\] · W\[24, 48\]ᵀ in FP8 E4M3 with per-row scales/,
  );
  f.fake.fake_lt_set_no_algorithm(0);
  // The heuristic's own NOT_SUPPORTED status alike.
  failNext(f.fake, "cublasLtMatmulAlgoGetHeuristic", 15);
  const refused = thrown(gemmFp8(out, x, w, 4));
  assert.ok(refused instanceof UnsupportedShapeError, String(refused));
  assert.equal(refused.call, "cublasLtMatmulAlgoGetHeuristic");
  // INVALID_VALUE from the FP8 heuristic (cuBLASLt 13.1 on an H100 answered so) is a refusal
  // too, naming the shape; the bf16 heuristic's INVALID_VALUE stays a plain DriverError.
  failNext(f.fake, "cublasLtMatmulAlgoGetHeuristic", 7);
  const invalid = thrown(gemmFp8(out, x, w, 4));
  assert.ok(invalid instanceof UnsupportedShapeError, String(invalid));
  assert.equal(invalid.code, 7);
  assert.match(invalid.message, /takes no FP8 matmul with per-row scales for out\[4, 24\]/);
  const xs4 = { codes: xs.codes.subarray(0, 4 * k), scales: xs.scales.subarray(0, 4) };
  const got = runFp8(f, x, w, 4, n, k);
  assert.ok(relativeError(got, fp8Reference(xs4, ws, 4, n, k)) < 4e-3, "a failed plan is retried");
});

fp8Test("without per-row scale modes (before cuBLASLt 12.8) FP8 is refused for good", (f) => {
  f.fake.fake_lt_set_no_outer_vec(1);
  const live = f.fake.fake_lt_live_objects();
  const m = 4, n = 8, k = 16;
  const x = uploadFp8(f.cpu, randomFp8(m, k, 31)), w = uploadFp8(f.cpu, randomFp8(n, k, 32));
  const error = thrown(() => runFp8(f, x, w, m, n, k));
  assert.ok(error instanceof UnsupportedShapeError, String(error));
  assert.equal(error.call, "cublasLtMatmulDescSetAttribute");
  assert.equal(error.code, 7);
  assert.equal(error.codeName, "CUBLAS_STATUS_INVALID_VALUE");
  assert.match(error.message, /cuBLASLt 12\.9 or newer/);
  assert.equal(f.fake.fake_lt_live_objects(), live, "the half-made descriptor is destroyed");
  // Refused for good: the library is not asked again, even once it would agree.
  f.fake.fake_lt_set_no_outer_vec(0);
  const again = thrown(() => runFp8(f, x, w, m, n, k));
  assert.ok(again instanceof UnsupportedShapeError, String(again));
  assert.match(again.message, /cuBLASLt 12\.9 or newer/);
  const tuned = thrown(() => f.gemm.tuneFp8!(f.cpu.alloc(256), x, w, m, n, k, f.stream, () => 1));
  assert.ok(tuned instanceof UnsupportedShapeError, String(tuned));
  assert.equal(f.fake.fake_lt_live_objects(), live, "no descriptor was made");
  assert.equal(f.fake.fake_lt_heuristic_calls(), 0n);
  assert.equal(f.fake.fake_lt_matmul_calls(), 0n);
  // bf16 is untouched.
  assert.ok(gemmError(f, m, n, k, 33) < 4e-3);
  assert.equal(f.fake.fake_lt_live_objects(), live + 3n);
});

Deno.test("hipBLASLt (fake): the accelerator has no gemmFp8 or tuneFp8", () => {
  const hip = FLAVOURS.find((flavour) => flavour.hip)!;
  withFake(hip, (f) => {
    assert.equal(f.gemm.gemmFp8, undefined);
    assert.equal(f.gemm.tuneFp8, undefined);
  })();
});

for (const flavour of FLAVOURS) {
  Deno.test(`${flavour.label} (fake): the fake's FP8 rules are cuBLASLt's`, () => {
    // The engine's FP8 tests mean something only if the fake refuses what cuBLASLt refuses:
    // FP8 other than TN, mixed inputs, bad scale attributes; and hipBLASLt all of it.
    const libraryPath = buildFakeLt(flavour.hip);
    const control = Deno.dlopen(libraryPath, CONTROL_SYMBOLS);
    const lib = Deno.dlopen(libraryPath, flavour.hip ? HIPBLASLT_SYMBOLS : CUBLASLT_SYMBOLS);
    const s = ltSymbols(lib.symbols as unknown as LtBoundSymbols);
    const fake = control.symbols;
    const invalid = flavour.hip ? 3 : 7, notSupported = flavour.notSupported.code;
    const [compute, opN, opT] = flavour.hip ? [2, 111, 112] : [68, 0, 1];
    const slot = new BigUint64Array(1);
    const made = (code: number) => {
      assert.equal(code, 0);
      return Deno.UnsafePointer.create(slot[0]);
    };
    const i32 = (v: number) => new Int32Array([v]);
    try {
      fake.fake_lt_reset();
      const handle = made(s.create(slot));
      const desc = made(s.matmulDescCreate(slot, compute, 0));
      const pref = made(s.matmulPreferenceCreate(slot));
      const m = 2, n = 3, k = 4;
      const layouts = [
        made(s.matrixLayoutCreate(slot, 28, k, n, k)), // A: E4M3, read transposed
        made(s.matrixLayoutCreate(slot, 28, k, m, k)), // B: E4M3
        made(s.matrixLayoutCreate(slot, 14, k, m, k)), // B: bf16
        made(s.matrixLayoutCreate(slot, 14, n, m, n)), // C = D: bf16
        made(s.matrixLayoutCreate(slot, 28, n, k, n)), // A: E4M3, as is
        made(s.matrixLayoutCreate(slot, 14, k, n, k)), // A: bf16, read transposed
        made(s.matrixLayoutCreate(slot, 14, n, k, n)), // A: bf16, as is
      ];
      const [a8, b8, b16, c, a8n, a16, a16n] = layouts;
      const results = new Uint8Array(4096), count = new Int32Array(1);
      const heuristic = (a: Deno.PointerValue, b: Deno.PointerValue) =>
        s.matmulAlgoGetHeuristic(handle, desc, a, b, c, c, pref, 1, results, count);
      const pointer = new BigUint64Array([0x1000n]);
      const attrs = [17, 18, 31, 32];
      if (flavour.hip) {
        // hipBLASLt: neither the attributes nor E4M3 (as Denali does not use them there).
        for (const attr of attrs) assert.equal(s.matmulDescSetAttribute(desc, attr, i32(3), 4), 3);
        assert.equal(s.matmulDescSetAttribute(desc, 0, i32(opT), 4), 0);
        assert.equal(heuristic(a8, b8), notSupported, "E4M3 is not the hipBLASLt fake's");
      } else {
        assert.equal(s.matmulDescSetAttribute(desc, 3, i32(opT), 4), 0);
        assert.equal(s.matmulDescSetAttribute(desc, 17, pointer, 4), invalid, "8-byte pointer");
        assert.equal(s.matmulDescSetAttribute(desc, 18, pointer, 8), 0);
        assert.equal(s.matmulDescSetAttribute(desc, 31, i32(2), 4), invalid, "mode 2: no");
        assert.equal(s.matmulDescSetAttribute(desc, 31, i32(3), 8), invalid, "4-byte mode");
        assert.equal(s.matmulDescSetAttribute(desc, 33, i32(0), 4), invalid, "unknown attr");
        fake.fake_lt_set_no_outer_vec(1);
        assert.equal(s.matmulDescSetAttribute(desc, 31, i32(3), 4), invalid, "before 12.8");
        fake.fake_lt_set_no_outer_vec(0);
        assert.equal(s.matmulDescSetAttribute(desc, 31, i32(3), 4), 0);
        assert.equal(s.matmulDescSetAttribute(desc, 32, i32(3), 4), 0);
        assert.equal(heuristic(a8, b8), 0, "FP8 TN");
        assert.equal(count[0], 1);
        assert.equal(heuristic(a8, b16), notSupported, "mixed E4M3 and bf16");
        assert.equal(heuristic(a16, b8), notSupported, "mixed bf16 and E4M3");
        assert.equal(s.matmulDescSetAttribute(desc, 3, i32(opN), 4), 0);
        assert.equal(heuristic(a8n, b8), notSupported, "FP8 NN");
        // Outer-vector modes are for FP8; bf16 with them is refused.
        assert.equal(heuristic(a16n, b16), notSupported, "bf16 with per-row scale modes");
        assert.equal(s.matmulDescSetAttribute(desc, 31, i32(0), 4), 0);
        assert.equal(s.matmulDescSetAttribute(desc, 32, i32(0), 4), 0);
        assert.equal(heuristic(a16n, b16), 0, "bf16 with scalar scale modes");
      }
      for (const layout of layouts) assert.equal(s.matrixLayoutDestroy(layout), 0);
      assert.equal(s.matmulPreferenceDestroy(pref), 0);
      assert.equal(s.matmulDescDestroy(desc), 0);
      assert.equal(s.destroy(handle), 0);
      assert.equal(fake.fake_lt_live_objects(), 0n);
    } finally {
      fake.fake_lt_reset();
      lib.close();
      control.close();
    }
  });
}
