/**
 * Builds and steers the fake GPU driver (`fake_driver.c`), so the CUDA and HIP backends can be
 * tested and benchmarked on machines without a GPU.
 *
 * The backend under test opens the built library as if it were libcuda or libamdhip64; the test
 * opens the same path with {@link openFakeControl}. Both `Deno.dlopen` calls get the same loaded
 * library, so the control sees the state the backend's calls produced.
 *
 * @module
 */

/** Which variant of the fake to build. */
export interface FakeDriverOptions {
  /** Export the libamdhip64 symbols (HIP_SYMBOLS) instead of the libcuda ones. */
  hip?: boolean;
  /** Leave out cuGraphLaunch / hipGraphLaunch, to test how a missing symbol is reported. */
  omitGraphLaunch?: boolean;
  /**
   * Export cuLaunchKernelEx (CUDA only). Without it the fake is a driver older than CUDA 11.8,
   * so every launch goes through cuLaunchKernel, as tests that count those expect.
   */
  launchEx?: boolean;
}

/** Byte size of a serialised launch record's fixed header; the argument bytes follow it. */
export const FAKE_LAUNCH_HEADER_BYTES = 112;

/** The most argument bytes the fake accepts for one launch (the classic CUDA limit). */
export const FAKE_MAX_ARG_BYTES = 4096;

/** One kernel launch as the fake recorded it. */
export interface FakeLaunch {
  /** Grid dimensions, in blocks. */
  grid: [number, number, number];
  /** Block dimensions, in threads. */
  block: [number, number, number];
  /** Dynamic shared memory bytes. */
  sharedMem: number;
  /** The stream handle's address; 0n for the default stream. */
  stream: bigint;
  /** The kernel's name as passed to moduleGetFunction (at most 63 bytes). */
  functionName: string;
  /** The packed argument bytes, exactly as the kernel would have received them. */
  args: Uint8Array;
  /** Whether it came through cuLaunchKernelEx. */
  launchEx: boolean;
  /** Whether it allowed programmatic stream serialization (programmatic dependent launch). */
  programmatic: boolean;
}

/** Typed access to the fake's `fake_*` control exports. */
export interface FakeControl {
  /** Sets how many devices the driver sees; 0 makes init fail with 100 (no device). */
  setDeviceCount(n: number): void;
  /** Sets the compute capability the device reports (default 9.0). */
  setComputeCapability(major: number, minor: number): void;
  /** Sets the version the driver reports, encoded as the driver does (default 12040). */
  setDriverVersion(version: number): void;
  /**
   * Declares the byte sizes (1, 2, 4, 8 or 16) of the parameters that the next kernelParams
   * launches pass, since the fake cannot read a kernel's signature.
   */
  setParamSizes(sizes: number[]): void;
  /** Makes the next call of `symbol` (exported name like "cuMemAlloc_v2", or role like
   * "memAlloc") return `code` without doing anything. Calls queue up. */
  failNext(symbol: string, code: number): void;
  /** What the occupancy query answers for kernels named `kernel` (default 2) until reset. */
  setBlocksPerSm(kernel: string, blocks: number): void;
  /** Moves the clock that events record forward by `ns` nanoseconds. */
  advanceClockNs(ns: number | bigint): void;
  /** Freezes (or thaws) the clock, so only advanceClockNs moves it and elapsed times are exact. */
  freezeClock(frozen: boolean): void;
  /** Kernel launches executed (not captured) since load or reset. */
  launchCount(): number;
  /** Kernel nodes run by graph launches since load or reset. */
  graphNodesReplayed(): number;
  /** Device bytes currently allocated (pinned host memory is not counted). */
  bytesAllocated(): number;
  /** Clears counters, capture state, injected failures, param sizes, occupancies, clock offset
   * and freeze, and sets the device count, compute capability and driver version back to their
   * defaults. Allocations and handles survive. */
  reset(): void;
  /** The last executed launch; throws if none was recorded since load or reset. */
  lastLaunch(): FakeLaunch;
  /** The last launch appended to a stream capture; throws if none since load or reset. */
  lastCapturedLaunch(): FakeLaunch;
  /** Closes this handle on the library (the backend's own handle stays open). */
  close(): void;
}

const CONTROL_SYMBOLS = {
  fake_set_device_count: { parameters: ["i32"], result: "void" },
  fake_set_compute_capability: { parameters: ["i32", "i32"], result: "void" },
  fake_set_driver_version: { parameters: ["i32"], result: "void" },
  fake_set_param_sizes: { parameters: ["buffer", "u32"], result: "i32" },
  fake_fail_next: { parameters: ["buffer", "i32"], result: "i32" },
  fake_set_blocks_per_sm: { parameters: ["buffer", "i32"], result: "i32" },
  fake_advance_clock_ns: { parameters: ["u64"], result: "void" },
  fake_freeze_clock: { parameters: ["i32"], result: "void" },
  fake_launch_count: { parameters: [], result: "u64" },
  fake_graph_nodes_replayed: { parameters: [], result: "u64" },
  fake_bytes_allocated: { parameters: [], result: "u64" },
  fake_reset: { parameters: [], result: "void" },
  fake_last_launch: { parameters: ["buffer", "u32"], result: "i32" },
  fake_last_captured_launch: { parameters: ["buffer", "u32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

let cacheDir: string | undefined;
const built = new Map<string, string>();

/**
 * Compiles the fake driver (once per option set and process) and returns the shared library's
 * path. Throws with gcc's diagnostics if the compile fails.
 */
export function buildFakeDriver(options: FakeDriverOptions = {}): string {
  const hip = options.hip ?? false;
  const omitGraphLaunch = options.omitGraphLaunch ?? false;
  const launchEx = options.launchEx ?? false;
  if (hip && launchEx) throw new RangeError("buildFakeDriver: launchEx is a CUDA-only option");
  const name = `libfake_${hip ? "hip" : "cuda"}${omitGraphLaunch ? "_nograph" : ""}${
    launchEx ? "_ex" : ""
  }.so`;
  const cached = built.get(name);
  if (cached) return cached;

  if (!cacheDir) {
    cacheDir = Deno.makeTempDirSync({ prefix: "denali-fake-driver-" });
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
  const source = decodeURIComponent(new URL("./fake_driver.c", import.meta.url).pathname);
  const output = `${cacheDir}/${name}`;
  const args = ["-O2", "-shared", "-fPIC", "-std=c11", "-Wall", "-Wextra", "-o", output, source];
  if (hip) args.unshift("-DFAKE_HIP");
  if (omitGraphLaunch) args.unshift("-DFAKE_OMIT_GRAPH_LAUNCH");
  if (launchEx) args.unshift("-DFAKE_LAUNCH_EX");
  const result = new Deno.Command("gcc", { args, stdout: "piped", stderr: "piped" }).outputSync();
  if (!result.success) {
    const stderr = new TextDecoder().decode(result.stderr);
    throw new Error(`gcc failed to build the fake driver (${name}):\n${stderr}`);
  }
  built.set(name, output);
  return output;
}

/**
 * Opens the control exports of a fake driver built by {@link buildFakeDriver}. Open it on the
 * same path the backend loads, so both see one library state.
 */
export function openFakeControl(path: string): FakeControl {
  const lib = Deno.dlopen(path, CONTROL_SYMBOLS);
  const s = lib.symbols;
  // One scratch buffer, big enough for any record, so reading a launch allocates only the copy.
  const record = new Uint8Array(FAKE_LAUNCH_HEADER_BYTES + FAKE_MAX_ARG_BYTES);
  const view = new DataView(record.buffer);

  function decode(written: number, what: string): FakeLaunch {
    if (written === 0) throw new Error(`the fake driver recorded no ${what} since load or reset`);
    if (written < 0) throw new Error(`the fake driver's ${what} record did not fit`);
    const u32 = (offset: number) => view.getUint32(offset, true);
    const nameBytes = record.subarray(40, 104);
    const nul = nameBytes.indexOf(0);
    return {
      grid: [u32(0), u32(4), u32(8)],
      block: [u32(12), u32(16), u32(20)],
      sharedMem: u32(24),
      stream: view.getBigUint64(32, true),
      functionName: new TextDecoder().decode(nameBytes.subarray(0, nul < 0 ? 64 : nul)),
      args: record.slice(FAKE_LAUNCH_HEADER_BYTES, FAKE_LAUNCH_HEADER_BYTES + u32(28)),
      launchEx: (u32(104) & 1) !== 0,
      programmatic: (u32(104) & 2) !== 0,
    };
  }

  return {
    setDeviceCount: (n) => s.fake_set_device_count(n),
    setComputeCapability: (major, minor) => s.fake_set_compute_capability(major, minor),
    setDriverVersion: (version) => s.fake_set_driver_version(version),
    setParamSizes(sizes) {
      if (s.fake_set_param_sizes(new Uint32Array(sizes), sizes.length) !== 0) {
        throw new RangeError(`bad fake kernel parameter sizes: [${sizes.join(", ")}]`);
      }
    },
    failNext(symbol, code) {
      if (s.fake_fail_next(new TextEncoder().encode(`${symbol}\0`), code) !== 0) {
        throw new RangeError(`cannot queue a fake failure for ${symbol}`);
      }
    },
    setBlocksPerSm(kernel, blocks) {
      if (s.fake_set_blocks_per_sm(new TextEncoder().encode(`${kernel}\0`), blocks) !== 0) {
        throw new RangeError(`cannot set the fake occupancy of ${kernel} to ${blocks}`);
      }
    },
    advanceClockNs: (ns) => s.fake_advance_clock_ns(BigInt(ns)),
    freezeClock: (frozen) => s.fake_freeze_clock(frozen ? 1 : 0),
    launchCount: () => Number(s.fake_launch_count()),
    graphNodesReplayed: () => Number(s.fake_graph_nodes_replayed()),
    bytesAllocated: () => Number(s.fake_bytes_allocated()),
    reset: () => s.fake_reset(),
    lastLaunch: () => decode(s.fake_last_launch(record, record.length), "launch"),
    lastCapturedLaunch: () =>
      decode(s.fake_last_captured_launch(record, record.length), "captured launch"),
    close: () => lib.close(),
  };
}

/** Typed access to the fake run-time compiler's `fake_rtc_*` control exports. */
export interface FakeRtcControl {
  /** Compiles run since load or reset. */
  compileCount(): number;
  /** The target the last compile was asked for. */
  lastArch(): string;
  /** Makes the next createProgram return `code`. */
  failNextCreate(code: number): void;
  /** Clears the counter, the last target and a queued failure. */
  reset(): void;
  /** Closes this handle on the library. */
  close(): void;
}

/**
 * Compiles the fake NVRTC (`fake_nvrtc.c`; hipRTC with `hip`) once per process and returns the
 * library's path, with its control exports opened on the same path.
 */
export function buildFakeRtc(hip = false): { path: string; control: FakeRtcControl } {
  const name = hip ? "libfake_hiprtc.so" : "libfake_nvrtc.so";
  let path = built.get(name);
  if (!path) {
    // The driver's build makes the shared temp folder; reuse it.
    const driver = buildFakeDriver();
    path = `${driver.slice(0, driver.lastIndexOf("/"))}/${name}`;
    const source = decodeURIComponent(new URL("./fake_nvrtc.c", import.meta.url).pathname);
    const args = ["-O2", "-shared", "-fPIC", "-std=c11", "-Wall", "-Wextra", "-o", path, source];
    if (hip) args.unshift("-DFAKE_HIP");
    const result = new Deno.Command("gcc", { args, stdout: "piped", stderr: "piped" }).outputSync();
    if (!result.success) {
      throw new Error(`gcc failed to build ${name}:\n${new TextDecoder().decode(result.stderr)}`);
    }
    built.set(name, path);
  }
  const lib = Deno.dlopen(
    path,
    {
      fake_rtc_compile_count: { parameters: [], result: "u64" },
      fake_rtc_last_arch: { parameters: ["buffer", "i32"], result: "i32" },
      fake_rtc_fail_next_create: { parameters: ["i32"], result: "void" },
      fake_rtc_reset: { parameters: [], result: "void" },
    } as const,
  );
  const s = lib.symbols;
  return {
    path,
    control: {
      compileCount: () => Number(s.fake_rtc_compile_count()),
      lastArch() {
        const out = new Uint8Array(64);
        s.fake_rtc_last_arch(out, out.length);
        return new TextDecoder().decode(out.subarray(0, out.indexOf(0)));
      },
      failNextCreate: (code) => s.fake_rtc_fail_next_create(code),
      reset: () => s.fake_rtc_reset(),
      close: () => lib.close(),
    },
  };
}
