/**
 * The Backend implementation shared by CUDA and HIP. Both drivers expose the same calls under
 * different names (see driver_ffi.ts), so this class is written once against the role-keyed
 * symbols, and cuda.ts / hip.ts only supply the library, device discovery and error text.
 *
 * @module
 */

import type {
  Backend,
  DeviceEvent,
  DeviceGraph,
  DeviceInfo,
  DeviceModule,
  GemmAccelerator,
  HostBuffer,
  KernelFunction,
  LaunchAbi,
  ModuleImage,
  Stream,
} from "./backend.ts";
import { DeviceBuffer } from "./backend.ts";
import type { DriverNames, DriverRole, DriverSymbols } from "./driver_ffi.ts";
import { DriverError, ModuleLoadError } from "./errors.ts";

/** What a concrete driver (CUDA or HIP) supplies to the shared GPU backend. */
export interface DriverAdapter {
  /** Which driver this is. */
  readonly kind: "cuda" | "hip";
  /** The bound calls, keyed by role. */
  readonly symbols: DriverSymbols;
  /** Each role's real symbol name, so errors name the C call that failed. */
  readonly names: DriverNames;
  /** The device, already initialised and made current. */
  readonly info: DeviceInfo;
  /** The driver's name and description for a result code. */
  errorText(code: number): { name: string; message: string };
  /** Opens the vendor matrix library, if the driver has one beside it; null otherwise. */
  openAccelerator?(): GemmAccelerator | null;
  /** Releases the context and closes the library. */
  close(): void;
}

// Capture only this thread's work: Denali drives each device from one thread.
const CAPTURE_MODE_THREAD_LOCAL = 1;
// Non-blocking: our streams must not serialise behind the legacy default stream.
const STREAM_NON_BLOCKING = 1;
const JIT_ERROR_LOG_BUFFER = 5;
const JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6;
const JIT_LOG_BYTES = 16384;
const FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
const ERROR_OUT_OF_MEMORY = 2;
// cuEventQuery's and hipEventQuery's "not yet" (CUDA_ERROR_NOT_READY, hipErrorNotReady).
const NOT_READY = 600;
// Programmatic dependent launch: compute capability 9.0 (griddepcontrol), and a CUDA 12.3 driver,
// the first to record such launches into graphs as programmatic edges.
const PDL_MIN_MAJOR = 9;
const PDL_MIN_DRIVER = 12030;

/** A CUDA or HIP device behind the Backend interface. */
export class GpuBackend implements Backend {
  /** Launches and copies on a stream return before the device has done them. */
  readonly asynchronous = true;
  readonly kind: "cuda" | "hip";
  readonly info: DeviceInfo;
  readonly defaultStream: Stream;
  readonly launchAbi: LaunchAbi;
  readonly gemmAccelerator: GemmAccelerator | null;
  readonly #driver: DriverAdapter;
  readonly #sym: DriverSymbols;
  // One out-parameter slot reused by every cold-path call, so none of them allocates.
  readonly #out = new BigUint64Array(1);
  readonly #allocations = new Map<number, number>();
  #closed = false;

  /**
   * Wraps an initialised driver (use `openCuda` or `openHip`).
   * @param driver the initialised driver this backend runs on
   */
  constructor(driver: DriverAdapter) {
    this.#driver = driver;
    this.#sym = driver.symbols;
    this.kind = driver.kind;
    this.info = driver.info;
    this.defaultStream = new GpuStream(this, null, false);
    this.gemmAccelerator = driver.openAccelerator?.() ?? null;
    const launchKernel = this.#sym.launchKernel;
    const pdl = driver.kind === "cuda" && driver.info.computeCapability[0] >= PDL_MIN_MAJOR &&
      driver.info.driverVersion >= PDL_MIN_DRIVER;
    this.launchAbi = {
      launchKernel,
      launchCallName: driver.names.launchKernel,
      launchKernelEx: pdl ? this.#sym.launchKernelEx ?? null : null,
      launchExCallName: driver.names.launchKernelEx,
      extraEnd: driver.kind === "hip" ? 3 : 0,
      fail: (code, call) => this.fail(code, call),
      isDevicePointer: (ptr) => this.#ownsPointer(ptr),
    };
  }

  /**
   * Throws the typed error for result `code` of the call made in `role`, unless it is 0.
   * @internal for the backend's own driver calls
   */
  check(code: number, role: DriverRole, hint = ""): void {
    if (code !== 0) this.fail(code, this.#driver.names[role], hint);
  }

  /** Throws the typed error for a failed driver call named `call`. */
  fail(code: number, call: string, hint = ""): never {
    const { name, message } = this.#driver.errorText(code);
    throw new DriverError(this.kind, call, code, name, message, hint);
  }

  /** Reads the pointer a driver call just wrote into the shared out-slot. */
  #outPointer(): Deno.PointerValue {
    return Deno.UnsafePointer.create(this.#out[0]);
  }

  #ownsPointer(ptr: number): boolean {
    for (const [base, bytes] of this.#allocations) {
      if (ptr >= base && ptr <= base + bytes) return true;
    }
    return false;
  }

  memoryInfo(): { free: number; total: number } {
    const free = new BigUint64Array(1);
    const total = new BigUint64Array(1);
    this.check(this.#sym.memGetInfo(free, total), "memGetInfo");
    return { free: Number(free[0]), total: Number(total[0]) };
  }

  alloc(bytes: number): DeviceBuffer {
    if (!Number.isSafeInteger(bytes) || bytes <= 0) {
      throw new RangeError(`alloc(${bytes}): the size must be a positive integer of bytes`);
    }
    const code = this.#sym.memAlloc(this.#out, BigInt(bytes));
    if (code !== 0) {
      const hint = code === ERROR_OUT_OF_MEMORY ? this.#oomHint(bytes) : "";
      this.check(code, "memAlloc", hint);
    }
    const ptr = Number(this.#out[0]);
    this.#allocations.set(ptr, bytes);
    return new DeviceBuffer(ptr, bytes);
  }

  #oomHint(bytes: number): string {
    let state = "";
    try {
      const { free, total } = this.memoryInfo();
      state = ` with ${mib(free)} free of ${mib(total)}`;
    } catch { /* the OOM is what matters; a failing query must not mask it */ }
    return `Asked for ${mib(bytes)}${state}; free memory or lower the KV-cache fraction`;
  }

  free(buffer: DeviceBuffer): void {
    if (buffer.base !== null) {
      throw new TypeError("free() takes an allocation, not a slice of one");
    }
    if (!this.#allocations.delete(buffer.ptr)) {
      throw new TypeError(`free(): 0x${buffer.ptr.toString(16)} is not a live allocation`);
    }
    this.check(this.#sym.memFree(BigInt(buffer.ptr)), "memFree");
  }

  allocHost(bytes: number): HostBuffer {
    if (!Number.isSafeInteger(bytes) || bytes <= 0) {
      throw new RangeError(`allocHost(${bytes}): the size must be a positive integer of bytes`);
    }
    this.check(this.#sym.hostAlloc(this.#out, BigInt(bytes), 0), "hostAlloc");
    const ptr = this.#outPointer();
    const view = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(ptr!, bytes));
    let freed = false;
    return {
      bytes: view,
      free: () => {
        if (freed) return;
        freed = true;
        this.check(this.#sym.hostFree(ptr), "hostFree");
      },
    };
  }

  memset(dst: DeviceBuffer, value: number, stream?: Stream): void {
    if (!Number.isInteger(value) || value < 0 || value > 255) {
      throw new RangeError(`memset value ${value} is not a byte (0..255)`);
    }
    const s = stream ?? this.defaultStream;
    this.check(
      this.#sym.memsetD8Async(BigInt(dst.ptr), value, BigInt(dst.bytes), s.native),
      "memsetD8Async",
    );
    if (!stream) s.synchronize();
  }

  copyToDevice(dst: DeviceBuffer, src: ArrayBufferView, stream?: Stream): void {
    const bytes = asBytes(src);
    checkFits(bytes.byteLength, dst.bytes, "copyToDevice");
    const s = stream ?? this.defaultStream;
    this.check(
      this.#sym.memcpyHtoDAsync(BigInt(dst.ptr), bytes, BigInt(bytes.byteLength), s.native),
      "memcpyHtoDAsync",
    );
    if (!stream) s.synchronize();
  }

  copyToHost(dst: ArrayBufferView, src: DeviceBuffer, stream?: Stream): void {
    const bytes = asBytes(dst);
    checkFits(bytes.byteLength, src.bytes, "copyToHost");
    const s = stream ?? this.defaultStream;
    this.check(
      this.#sym.memcpyDtoHAsync(bytes, BigInt(src.ptr), BigInt(bytes.byteLength), s.native),
      "memcpyDtoHAsync",
    );
    if (!stream) s.synchronize();
  }

  copyDevice(dst: DeviceBuffer, src: DeviceBuffer, stream?: Stream): void {
    const s = stream ?? this.defaultStream;
    const bytes = Math.min(dst.bytes, src.bytes);
    this.check(
      this.#sym.memcpyDtoDAsync(BigInt(dst.ptr), BigInt(src.ptr), BigInt(bytes), s.native),
      "memcpyDtoDAsync",
    );
    if (!stream) s.synchronize();
  }

  createStream(): Stream {
    this.check(this.#sym.streamCreate(this.#out, STREAM_NON_BLOCKING), "streamCreate");
    return new GpuStream(this, this.#outPointer(), true);
  }

  /** Blocks on one stream's work; used by GpuStream. */
  synchronizeStream(native: Deno.PointerValue): void {
    this.check(this.#sym.streamSynchronize(native), "streamSynchronize");
  }

  /** Releases one stream; used by GpuStream. */
  destroyStream(native: Deno.PointerValue): void {
    this.check(this.#sym.streamDestroy(native), "streamDestroy");
  }

  createEvent(): DeviceEvent {
    this.check(this.#sym.eventCreate(this.#out, 0), "eventCreate");
    return new GpuEvent(this, this.#sym, this.#outPointer());
  }

  synchronize(): void {
    this.check(this.#sym.deviceSynchronize(), "deviceSynchronize");
  }

  loadModule(image: ModuleImage): DeviceModule {
    const data = image.format === "ptx" ? cString(image.text) : image.bytes;
    const log = new Uint8Array(JIT_LOG_BYTES);
    const options = new Int32Array([JIT_ERROR_LOG_BUFFER, JIT_ERROR_LOG_BUFFER_SIZE_BYTES]);
    const values = new BigUint64Array([
      Deno.UnsafePointer.value(Deno.UnsafePointer.of(log)) as bigint,
      BigInt(JIT_LOG_BYTES),
    ]);
    const code = this.#sym.moduleLoadDataEx(this.#out, data, 2, options, values);
    if (code !== 0) {
      try {
        this.check(code, "moduleLoadDataEx");
      } catch (error) {
        throw new ModuleLoadError(error as DriverError, cStringAt(log));
      }
    }
    return new GpuModule(this, this.#outPointer());
  }

  /** Looks up a kernel in a loaded module; used by GpuModule. */
  moduleFunction(module: Deno.PointerValue, name: string): KernelFunction {
    this.check(this.#sym.moduleGetFunction(this.#out, module, cString(name)), "moduleGetFunction");
    const native = this.#outPointer();
    return {
      name,
      native,
      setMaxDynamicSharedMemory: (bytes) =>
        this.check(
          this.#sym.funcSetAttribute(native, FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes),
          "funcSetAttribute",
        ),
      maxBlocksPerSm: (threads, dynamicSharedBytes) => {
        const blocks = new Int32Array(1);
        this.check(
          this.#sym.occupancyMaxActiveBlocksPerMultiprocessor(
            blocks,
            native,
            threads,
            BigInt(dynamicSharedBytes),
          ),
          "occupancyMaxActiveBlocksPerMultiprocessor",
        );
        return blocks[0];
      },
    };
  }

  /** Unloads a module; used by GpuModule. */
  unloadModule(module: Deno.PointerValue): void {
    this.check(this.#sym.moduleUnload(module), "moduleUnload");
  }

  beginCapture(stream: Stream): void {
    this.check(
      this.#sym.streamBeginCapture(stream.native, CAPTURE_MODE_THREAD_LOCAL),
      "streamBeginCapture",
    );
  }

  endCapture(stream: Stream): DeviceGraph {
    this.check(this.#sym.streamEndCapture(stream.native, this.#out), "streamEndCapture");
    const graph = this.#outPointer();
    this.check(
      this.#sym.graphInstantiateWithFlags(this.#out, graph, 0n),
      "graphInstantiateWithFlags",
    );
    const exec = this.#outPointer();
    const sym = this.#sym;
    return {
      launch: (s) => this.check(sym.graphLaunch(exec, s.native), "graphLaunch"),
      destroy: onlyOnce(() => {
        this.check(sym.graphExecDestroy(exec), "graphExecDestroy");
        this.check(sym.graphDestroy(graph), "graphDestroy");
      }),
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.gemmAccelerator?.close();
    this.#driver.close();
  }
}

/** A driver stream owned by a GpuBackend. */
class GpuStream implements Stream {
  constructor(
    readonly backend: GpuBackend,
    readonly native: Deno.PointerValue,
    readonly destroyable: boolean,
  ) {}

  synchronize(): void {
    this.backend.synchronizeStream(this.native);
  }

  readonly #release = onlyOnce(() => this.backend.destroyStream(this.native));

  destroy(): void {
    if (!this.destroyable) throw new TypeError("the default stream cannot be destroyed");
    this.#release();
  }
}

/** A driver event owned by a GpuBackend. */
class GpuEvent implements DeviceEvent {
  static readonly #elapsed = new Float32Array(1);

  constructor(
    readonly backend: GpuBackend,
    readonly sym: DriverSymbols,
    readonly native: Deno.PointerValue,
  ) {}

  record(stream: Stream): void {
    this.backend.check(this.sym.eventRecord(this.native, stream.native), "eventRecord");
  }

  synchronize(): void {
    this.backend.check(this.sym.eventSynchronize(this.native), "eventSynchronize");
  }

  query(): boolean {
    const rc = this.sym.eventQuery(this.native);
    if (rc === NOT_READY) return false;
    this.backend.check(rc, "eventQuery");
    return true;
  }

  elapsedMsSince(start: DeviceEvent): number {
    if (!(start instanceof GpuEvent)) {
      throw new TypeError("elapsedMsSince takes an event of the same backend");
    }
    const elapsed = GpuEvent.#elapsed;
    this.backend.check(
      this.sym.eventElapsedTime(elapsed, start.native, this.native),
      "eventElapsedTime",
    );
    return elapsed[0];
  }

  readonly destroy = onlyOnce(() =>
    this.backend.check(this.sym.eventDestroy(this.native), "eventDestroy")
  );
}

/** A loaded driver module owned by a GpuBackend. */
class GpuModule implements DeviceModule {
  constructor(readonly backend: GpuBackend, readonly native: Deno.PointerValue) {}

  getFunction(name: string): KernelFunction {
    return this.backend.moduleFunction(this.native, name);
  }

  readonly unload = onlyOnce(() => this.backend.unloadModule(this.native));
}

/** Wraps a release call so a second call does nothing: drivers must never see a freed handle. */
function onlyOnce(release: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    release();
  };
}

/** A view of any typed array or DataView as bytes, for `buffer` FFI parameters. */
function asBytes(view: ArrayBufferView): Uint8Array {
  return view instanceof Uint8Array
    ? view
    : new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

function checkFits(hostBytes: number, deviceBytes: number, call: string): void {
  if (hostBytes > deviceBytes) {
    throw new RangeError(
      `${call}: the host side has ${hostBytes} bytes but the device buffer only ${deviceBytes}`,
    );
  }
}

/** Encodes `text` as a NUL-terminated C string. */
export function cString(text: string): Uint8Array {
  const encoded = new TextEncoder().encode(text);
  const out = new Uint8Array(encoded.length + 1);
  out.set(encoded);
  return out;
}

/** Decodes a NUL-terminated C string held in `bytes`. */
export function cStringAt(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return new TextDecoder().decode(end < 0 ? bytes : bytes.subarray(0, end)).trim();
}

function mib(bytes: number): string {
  return bytes < 2 ** 20 ? `${bytes} bytes` : `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** Where a driver keeps the three device attributes Denali reads. */
export interface InfoAttributes {
  /** Compute capability major (or HIP's equivalent). */
  readonly major: number;
  /** Compute capability minor. */
  readonly minor: number;
  /** Multiprocessor (compute unit) count. */
  readonly multiprocessors: number;
}

/**
 * Reads a device's DeviceInfo through the shared driver calls. `archOf` names the code-object
 * target, which is the one thing the drivers report differently.
 */
export function readDeviceInfo(
  kind: "cuda" | "hip",
  sym: DriverSymbols,
  names: DriverNames,
  check: (code: number, call: string) => void,
  device: number,
  attributes: InfoAttributes,
  archOf: (major: number, minor: number) => string,
): DeviceInfo {
  const out = new Int32Array(1);
  const attribute = (attr: number) => {
    check(sym.deviceGetAttribute(out, attr, device), names.deviceGetAttribute);
    return out[0];
  };
  const nameBytes = new Uint8Array(256);
  check(sym.deviceGetName(nameBytes, nameBytes.length, device), names.deviceGetName);
  const free = new BigUint64Array(1);
  const total = new BigUint64Array(1);
  check(sym.memGetInfo(free, total), names.memGetInfo);
  check(sym.driverGetVersion(out), names.driverGetVersion);
  const driverVersion = out[0];
  const major = attribute(attributes.major);
  const minor = attribute(attributes.minor);
  return {
    backend: kind,
    name: cStringAt(nameBytes),
    arch: archOf(major, minor),
    computeCapability: [major, minor],
    multiprocessors: attribute(attributes.multiprocessors),
    totalMemory: Number(total[0]),
    driverVersion,
  };
}

/** A result-code check for calls made before the backend exists (device discovery). */
export function driverCheck(
  kind: "cuda" | "hip",
  errorText: DriverAdapter["errorText"],
): (code: number, call: string) => void {
  return (code, call) => {
    if (code === 0) return;
    const { name, message } = errorText(code);
    throw new DriverError(kind, call, code, name, message);
  };
}
