/**
 * The one interface every device implements: memory, streams, events, modules, launches and
 * graphs, and nothing of any model. The operators (ops/), the runner and the engine see only these
 * types; `CUstream`, `hipStream_t` and friends stay inside the backend that owns them.
 *
 * @module
 */

/** The device families Denali can run on. */
export type BackendKind = "cuda" | "hip" | "cpu";

/** What a backend knows about its device. */
export interface DeviceInfo {
  /** Which backend serves the device. */
  readonly backend: BackendKind;
  /** Marketing name, e.g. "NVIDIA H100 80GB HBM3". */
  readonly name: string;
  /** Code-object target, e.g. "sm_90", "gfx90a" or "cpu". */
  readonly arch: string;
  /** Compute capability (CUDA) or the HIP-reported equivalent; [0, 0] on the CPU. */
  readonly computeCapability: readonly [number, number];
  /** Streaming multiprocessors (CUDA), compute units (HIP) or cores (CPU). */
  readonly multiprocessors: number;
  /** Device memory in bytes. */
  readonly totalMemory: number;
  /** Driver version as the driver encodes it (e.g. 13000 for CUDA 13.0); 0 on the CPU. */
  readonly driverVersion: number;
}

/**
 * A range of device memory. `ptr` is the device address as a plain number: addresses stay far
 * below 2^53, and numbers keep launches free of BigInt allocation.
 */
export class DeviceBuffer {
  /**
   * Wraps a device address (backends create buffers; use {@link DeviceBuffer.slice} for views).
   * @param ptr device address of the first byte
   * @param bytes length in bytes
   * @param base the allocation this buffer is a view into, or null when it is the allocation
   * @param host host bytes backing the buffer (CPU backend only), else null
   */
  constructor(
    readonly ptr: number,
    readonly bytes: number,
    readonly base: DeviceBuffer | null = null,
    readonly host: Uint8Array | null = null,
  ) {}

  /** A view of `bytes` bytes starting `offset` bytes in; it shares memory and is never freed. */
  slice(offset: number, bytes = this.bytes - offset): DeviceBuffer {
    if (!Number.isInteger(offset) || !Number.isInteger(bytes) || offset < 0 || bytes < 0) {
      throw new RangeError(`slice(${offset}, ${bytes}): offset and length must be integers >= 0`);
    }
    if (offset + bytes > this.bytes) {
      throw new RangeError(
        `slice(${offset}, ${bytes}) runs past the end of a ${this.bytes}-byte buffer`,
      );
    }
    const host = this.host ? this.host.subarray(offset, offset + bytes) : null;
    return new DeviceBuffer(this.ptr + offset, bytes, this.base ?? this, host);
  }
}

/** Page-locked host memory, which async copies can use without a staging copy. */
export interface HostBuffer {
  /** The pinned bytes, readable and writable from TypeScript. */
  readonly bytes: Uint8Array;
  /** Releases the memory; `bytes` must not be used afterwards. */
  free(): void;
}

/** An ordered queue of device work. */
export interface Stream {
  /** Driver handle, for launchers only; null is the driver's default stream. */
  readonly native: Deno.PointerValue;
  /** Blocks until all work queued so far has finished. */
  synchronize(): void;
  /** Releases the stream. The default stream cannot be destroyed. */
  destroy(): void;
}

/** A marker in a stream, for ordering and timing. */
export interface DeviceEvent {
  /** Enqueues the event on `stream`. */
  record(stream: Stream): void;
  /** Blocks until the event has completed. */
  synchronize(): void;
  /**
   * Whether the event has completed, without blocking: lets the engine keep serving the event
   * loop while the device works, instead of blocking the thread in `synchronize`.
   */
  query(): boolean;
  /** Milliseconds between `start` (recorded earlier) and this event; both must have completed. */
  elapsedMsSince(start: DeviceEvent): number;
  /** Releases the event. */
  destroy(): void;
}

/** A loaded kernel entry point. */
export interface KernelFunction {
  /** The kernel's symbol name in its module. */
  readonly name: string;
  /** Driver handle, for launchers only. */
  readonly native: Deno.PointerValue;
  /** Lets the kernel use up to `bytes` of dynamic shared memory (above the 48 KiB default). */
  setMaxDynamicSharedMemory(bytes: number): void;
  /**
   * How many blocks of `threads` threads and `dynamicSharedBytes` of dynamic shared memory one
   * SM holds at once (0 where the kernel cannot launch so), as the driver's occupancy calculator
   * says for the code the driver compiled: registers a thread are known only after that.
   */
  maxBlocksPerSm(threads: number, dynamicSharedBytes: number): number;
}

/** A loaded code object (PTX, cubin or HSACO). */
export interface DeviceModule {
  /** Looks up a kernel by its (unmangled, `extern "C"`) name. */
  getFunction(name: string): KernelFunction;
  /** Releases the module and every function looked up from it. */
  unload(): void;
}

/** A module image: PTX is text the driver JIT-compiles; cubin and HSACO are binaries. */
export type ModuleImage =
  | { readonly format: "ptx"; readonly text: string }
  | { readonly format: "cubin" | "hsaco"; readonly bytes: Uint8Array };

/** A captured sequence of device work that replays with one call. */
export interface DeviceGraph {
  /** Replays the whole graph on `stream`. */
  launch(stream: Stream): void;
  /** Releases the graph. */
  destroy(): void;
}

/**
 * The raw launch entry point and its conventions, which kernels/launcher.ts builds closures on.
 * cuLaunchKernel and hipModuleLaunchKernel share one C signature, so one shape fits both.
 */
export interface LaunchAbi {
  /** The bound launch call: function, grid xyz, block xyz, shared bytes, stream, params, extra. */
  readonly launchKernel: (
    fn: Deno.PointerValue,
    gridX: number,
    gridY: number,
    gridZ: number,
    blockX: number,
    blockY: number,
    blockZ: number,
    sharedMemBytes: number,
    stream: Deno.PointerValue,
    kernelParams: Deno.PointerValue,
    extra: Deno.PointerValue,
  ) => number;
  /** The launch call's C name, for errors: `cuLaunchKernel` or `hipModuleLaunchKernel`. */
  readonly launchCallName: string;
  /**
   * cuLaunchKernelEx, offered only where programmatic dependent launch works: CUDA, compute
   * capability 9.0 or newer, and a driver of CUDA 12.3 or newer (which also records such
   * launches into graphs). Null or absent elsewhere, and launchers then use `launchKernel`.
   * Arguments: a CUlaunchConfig (layout in kernels/launcher.ts), function, kernelParams, extra.
   */
  readonly launchKernelEx?:
    | ((
      config: Deno.PointerValue,
      fn: Deno.PointerValue,
      kernelParams: Deno.PointerValue,
      extra: Deno.PointerValue,
    ) => number)
    | null;
  /** launchKernelEx's C name, for errors: `cuLaunchKernelEx`. */
  readonly launchExCallName?: string;
  /** The marker that ends an `extra` array: 0 for CUDA, 3 for HIP. */
  readonly extraEnd: number;
  /** Throws the backend's typed error for a failed launch. */
  fail(code: number, call: string): never;
  /** Whether `ptr` lies inside a live allocation; used only by the deep argument check. */
  isDevicePointer(ptr: number): boolean;
}

/**
 * A vendor matrix library (cuBLASLt, hipBLASLt) the backend found beside the driver. The matrix
 * ops time it against Denali's own kernel once per shape and keep the faster; the engine never
 * knows which one ran.
 */
export interface GemmAccelerator {
  /** Which library, e.g. "cuBLASLt 13.0". */
  readonly name: string;
  /** out[M, N] = x[M, K] · W[N, K]ᵀ in bf16 with fp32 accumulation, ordered on `stream`. */
  gemm(
    out: DeviceBuffer,
    x: DeviceBuffer,
    weight: DeviceBuffer,
    m: number,
    n: number,
    k: number,
    stream: Stream,
  ): void;
  /**
   * Optional: tries each algorithm the library offers for this call shape, timed by `time`
   * (milliseconds of the calls its argument makes on `stream`), and keeps the fastest for later
   * `gemm` calls of the shape. Cold; for start-up tuning.
   */
  tune?(
    out: DeviceBuffer,
    x: DeviceBuffer,
    weight: DeviceBuffer,
    m: number,
    n: number,
    k: number,
    stream: Stream,
    time: (run: () => void) => number,
  ): void;
  /**
   * Optional, where the library multiplies FP8 on tensor cores with per-row scales (cuBLASLt 12.9
   * or newer on compute capability 9.0): out[M, N] = bf16(x.scales[m] · weight.scales[n] ·
   * Σ_k e4m3(x.data[m, k]) · e4m3(weight.data[n, k])), fp32 accumulation, ordered on `stream`.
   * Throws UnsupportedShapeError where the library has no algorithm for it (an older release, a
   * GPU without FP8 tensor cores), which callers treat as "use the dequantizing path".
   */
  gemmFp8?(
    out: DeviceBuffer,
    x: ScaledFp8,
    weight: ScaledFp8,
    m: number,
    n: number,
    k: number,
    stream: Stream,
  ): void;
  /** Optional: `tune` for `gemmFp8`'s call shape. Cold; for start-up tuning. */
  tuneFp8?(
    out: DeviceBuffer,
    x: ScaledFp8,
    weight: ScaledFp8,
    m: number,
    n: number,
    k: number,
    stream: Stream,
    time: (run: () => void) => number,
  ): void;
  /** Releases the library's handles. */
  close(): void;
}

/**
 * A row-scaled FP8 E4M3 matrix as `GemmAccelerator.gemmFp8` reads it: value[r, c] =
 * scales[r] · e4m3(data[r, c]), data u8 [rows, cols] row-major, scales f32 [rows]. An FP8
 * weight (ops/linear_weight.ts) is one; so are activations quantized per token.
 */
export interface ScaledFp8 {
  /** u8 [rows, cols]: E4M3 codes, row-major. */
  readonly data: DeviceBuffer;
  /** f32 [rows]: each row's scale. */
  readonly scales: DeviceBuffer;
}

/** A device: memory, streams, events, modules, launches and graphs. */
export interface Backend {
  /** Which backend this is. */
  readonly kind: BackendKind;
  /** The device it drives. */
  readonly info: DeviceInfo;
  /** The driver's default stream. */
  readonly defaultStream: Stream;
  /** The launch entry point for generated launchers; null where kernels are not device code. */
  readonly launchAbi: LaunchAbi | null;
  /**
   * Whether enqueued work runs after the call that enqueues it returns (GPUs), so the host can
   * do other work meanwhile; false where every op completes inside its call (the CPU).
   */
  readonly asynchronous: boolean;

  /** Free and total device memory in bytes, as the driver reports them now. */
  memoryInfo(): { free: number; total: number };
  /** Allocates `bytes` of device memory; throws a DriverError naming the size if it can't. */
  alloc(bytes: number): DeviceBuffer;
  /** Frees an allocation made by `alloc` (not a slice of one). */
  free(buffer: DeviceBuffer): void;
  /** Allocates `bytes` of pinned host memory. */
  allocHost(bytes: number): HostBuffer;

  /** Sets every byte of `dst` to `value` (slice `dst` for part of a buffer), ordered on `stream`. */
  memset(dst: DeviceBuffer, value: number, stream?: Stream): void;
  /**
   * Copies host bytes to the device. Without a stream it returns when the copy is done; with one
   * it only enqueues, and `src` must stay untouched until the stream reaches the copy.
   */
  copyToDevice(dst: DeviceBuffer, src: ArrayBufferView, stream?: Stream): void;
  /** Copies device bytes to the host; the same stream rule as `copyToDevice`. */
  copyToHost(dst: ArrayBufferView, src: DeviceBuffer, stream?: Stream): void;
  /** Copies `src` into `dst` (the smaller of the two lengths), ordered on `stream`. */
  copyDevice(dst: DeviceBuffer, src: DeviceBuffer, stream?: Stream): void;

  /** Creates a stream that does not synchronise with the default stream. */
  createStream(): Stream;
  /** Creates a timing-capable event. */
  createEvent(): DeviceEvent;
  /** Blocks until all work on the device has finished. */
  synchronize(): void;

  /** Loads a code object; a failure throws ModuleLoadError carrying the JIT log. */
  loadModule(image: ModuleImage): DeviceModule;

  /** Starts recording the work enqueued on `stream` instead of running it. */
  beginCapture(stream: Stream): void;
  /** Stops recording and returns the instantiated graph, ready to replay. */
  endCapture(stream: Stream): DeviceGraph;

  /** The vendor matrix library, when one was found; null otherwise. */
  readonly gemmAccelerator: GemmAccelerator | null;

  /** Releases the device context; the backend must not be used afterwards. */
  close(): void;
}
