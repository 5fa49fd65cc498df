/**
 * The CPU backend: "device" memory is host memory, streams run work in order at once, and
 * there are no device modules. It is the reference the GPU kernels are tested against and the
 * fallback when no GPU is found.
 *
 * @module
 */

import type {
  Backend,
  DeviceEvent,
  DeviceGraph,
  DeviceInfo,
  DeviceModule,
  HostBuffer,
  Stream,
} from "./backend.ts";
import { DeviceBuffer } from "./backend.ts";

const NO_MODULES = "the CPU backend runs built-in TypeScript operators, not device modules; " +
  "use --backend cuda or --backend hip for PTX, cubin or HSACO";
const NO_GRAPHS = "the CPU backend has no graphs; run the eager path instead";

/** A stream on the CPU: work runs as it is enqueued, so there is never anything to wait for. */
const CPU_STREAM: Stream = {
  native: null,
  synchronize() {},
  destroy() {},
};

/** The host CPU behind the Backend interface. */
export class CpuBackend implements Backend {
  /** Every op completes inside its call. */
  readonly asynchronous = false;
  readonly kind = "cpu" as const;
  readonly info: DeviceInfo;
  readonly defaultStream: Stream = CPU_STREAM;
  readonly launchAbi = null;
  readonly gemmAccelerator = null;
  readonly #allocations = new Map<number, Uint8Array>();

  constructor() {
    this.info = {
      backend: "cpu",
      name: `CPU (${Deno.build.arch}, ${navigator.hardwareConcurrency} threads)`,
      arch: "cpu",
      computeCapability: [0, 0],
      multiprocessors: navigator.hardwareConcurrency,
      totalMemory: Deno.systemMemoryInfo().total,
      driverVersion: 0,
    };
  }

  memoryInfo(): { free: number; total: number } {
    const { available, total } = Deno.systemMemoryInfo();
    return { free: available, total };
  }

  alloc(bytes: number): DeviceBuffer {
    if (!Number.isSafeInteger(bytes) || bytes <= 0) {
      throw new RangeError(`alloc(${bytes}): the size must be a positive integer of bytes`);
    }
    let host: Uint8Array;
    try {
      // An explicit ArrayBuffer is always off the V8 heap, so its address never moves; a small
      // `new Uint8Array(n)` may live on the heap and be moved by the GC.
      host = new Uint8Array(new ArrayBuffer(bytes));
      // A GPU commits an allocation at once; a fresh ArrayBuffer's pages are only mapped when
      // first written. Writing them now makes the KV cache resident at load, as on a device,
      // so the resident set does not creep up as blocks see their first use (which looked like
      // a leak in the soak) and an over-large cache fails here rather than mid-serving.
      host.fill(0);
    } catch {
      throw new RangeError(`alloc(${bytes}): the host is out of memory`);
    }
    // The real host address serves as the "device pointer", so pointer arithmetic and slices
    // behave exactly as on a GPU.
    const ptr = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(host)));
    this.#allocations.set(ptr, host);
    return new DeviceBuffer(ptr, bytes, null, host);
  }

  free(buffer: DeviceBuffer): void {
    if (buffer.base !== null) throw new TypeError("free() takes an allocation, not a slice of one");
    if (!this.#allocations.delete(buffer.ptr)) {
      throw new TypeError(`free(): 0x${buffer.ptr.toString(16)} is not a live allocation`);
    }
  }

  allocHost(bytes: number): HostBuffer {
    if (!Number.isSafeInteger(bytes) || bytes <= 0) {
      throw new RangeError(`allocHost(${bytes}): the size must be a positive integer of bytes`);
    }
    return { bytes: new Uint8Array(bytes), free() {} };
  }

  memset(dst: DeviceBuffer, value: number): void {
    if (!Number.isInteger(value) || value < 0 || value > 255) {
      throw new RangeError(`memset value ${value} is not a byte (0..255)`);
    }
    hostOf(dst).fill(value);
  }

  copyToDevice(dst: DeviceBuffer, src: ArrayBufferView): void {
    const bytes = new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
    if (bytes.length > dst.bytes) {
      throw new RangeError(`copyToDevice: ${bytes.length} host bytes exceed ${dst.bytes}`);
    }
    hostOf(dst).set(bytes);
  }

  copyToHost(dst: ArrayBufferView, src: DeviceBuffer): void {
    const bytes = new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength);
    if (bytes.length > src.bytes) {
      throw new RangeError(`copyToHost: ${bytes.length} host bytes exceed ${src.bytes}`);
    }
    bytes.set(hostOf(src).subarray(0, bytes.length));
  }

  copyDevice(dst: DeviceBuffer, src: DeviceBuffer): void {
    const bytes = Math.min(dst.bytes, src.bytes);
    hostOf(dst).set(hostOf(src).subarray(0, bytes));
  }

  createStream(): Stream {
    return CPU_STREAM;
  }

  createEvent(): DeviceEvent {
    return new CpuEvent();
  }

  synchronize(): void {}

  loadModule(): DeviceModule {
    throw new Error(NO_MODULES);
  }

  beginCapture(): void {
    throw new Error(NO_GRAPHS);
  }

  endCapture(): DeviceGraph {
    throw new Error(NO_GRAPHS);
  }

  close(): void {
    this.#allocations.clear();
  }
}

/** A host-clock timestamp; CPU work is done by the time it is recorded. */
class CpuEvent implements DeviceEvent {
  #time = 0;

  record(): void {
    this.#time = performance.now();
  }

  synchronize(): void {}

  query(): boolean {
    return true;
  }

  elapsedMsSince(start: DeviceEvent): number {
    if (!(start instanceof CpuEvent)) throw new TypeError("elapsedMsSince takes a CPU event");
    return this.#time - start.#time;
  }

  destroy(): void {}
}

function hostOf(buffer: DeviceBuffer): Uint8Array {
  if (!buffer.host) throw new TypeError("this buffer does not belong to the CPU backend");
  return buffer.host;
}
