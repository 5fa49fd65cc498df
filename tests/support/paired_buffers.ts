/**
 * Buffers that hold the same bytes on a GPU backend and on the CPU backend, for GPU tests that
 * run an op on both and compare: made in pairs, read back in pairs, freed together.
 *
 * @module
 */

import type { Backend, DeviceBuffer, Stream } from "../../backends/backend.ts";
import { CpuBackend } from "../../backends/cpu.ts";

/** One buffer on each device: `g` on the GPU, `c` on the CPU. */
export interface Pair {
  readonly g: DeviceBuffer;
  readonly c: DeviceBuffer;
}

/** One side of a record of pairs: each pair's `g` or `c` buffer, under the same key. */
export function sideOf<K extends string>(
  pairs: Record<K, Pair>,
  side: "g" | "c",
): Record<K, DeviceBuffer> {
  const buffers = {} as Record<K, DeviceBuffer>;
  for (const key of Object.keys(pairs) as K[]) buffers[key] = pairs[key][side];
  return buffers;
}

/** A GPU backend beside a CPU one, with one stream and every buffer made kept for `release`. */
export class PairedBuffers {
  readonly cpu = new CpuBackend();
  readonly stream: Stream;
  #gpuBuffers: DeviceBuffer[] = [];
  #cpuBuffers: DeviceBuffer[] = [];

  constructor(readonly gpu: Backend) {
    this.stream = gpu.createStream();
  }

  /** The same bytes on both devices (zero-filled when `data` is a length). */
  pair(data: ArrayBufferView | number): Pair {
    const bytes = typeof data === "number" ? data : data.byteLength;
    const { g, c } = this.#both(bytes);
    if (typeof data === "number") {
      this.gpu.memset(g, 0);
      this.cpu.memset(c, 0);
    } else {
      this.gpu.copyToDevice(g, data);
      this.cpu.copyToDevice(c, data);
    }
    return { g, c };
  }

  /** An output pair of `bytes`: the GPU's poisoned with NaN bytes (0xff), the CPU's zeroed. */
  output(bytes: number): Pair {
    const { g, c } = this.#both(bytes);
    this.gpu.memset(g, 0xff);
    this.cpu.memset(c, 0);
    return { g, c };
  }

  /** A GPU-only buffer of `bytes`, poisoned with NaN bytes (0xff). */
  poisoned(bytes: number): DeviceBuffer {
    const g = this.gpu.alloc(Math.max(16, bytes));
    this.#gpuBuffers.push(g);
    this.gpu.memset(g, 0xff);
    return g;
  }

  /** The first `count` bytes of both sides of a pair, the GPU's after the stream. */
  bytesOf(p: Pair, count: number): { g: Uint8Array; c: Uint8Array } {
    this.stream.synchronize();
    const g = new Uint8Array(count), c = new Uint8Array(count);
    this.gpu.copyToHost(g, p.g);
    this.cpu.copyToHost(c, p.c);
    return { g, c };
  }

  /** Frees every buffer made so far, after the stream's work. */
  release(): void {
    this.stream.synchronize();
    for (const b of this.#gpuBuffers) this.gpu.free(b);
    for (const b of this.#cpuBuffers) this.cpu.free(b);
    this.#gpuBuffers = [];
    this.#cpuBuffers = [];
  }

  // At least 16 bytes each, as the kernels' 16-byte loads may read a short buffer's first chunk.
  #both(bytes: number): Pair {
    const g = this.gpu.alloc(Math.max(16, bytes)), c = this.cpu.alloc(Math.max(16, bytes));
    this.#gpuBuffers.push(g);
    this.#cpuBuffers.push(c);
    return { g, c };
  }
}
