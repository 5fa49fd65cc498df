/**
 * An i32 array in pinned host memory with a device twin of the same size, filled on the host and
 * copied over asynchronously each step. It grows (doubling, never shrinking) when a step needs
 * more, so steady-state steps allocate nothing.
 *
 * @module
 */

import type { Backend, DeviceBuffer, HostBuffer, Stream } from "../backends/backend.ts";

/** See the module doc. */
export class StagedWords {
  readonly #backend: Backend;
  #device: DeviceBuffer | null = null;
  #host: HostBuffer | null = null;
  #words: Int32Array = new Int32Array(0);

  /** Allocates room for `capacity` words; frees what it took if the second allocation fails. */
  constructor(backend: Backend, capacity: number) {
    this.#backend = backend;
    this.#allocate(capacity);
  }

  /** The host words to fill; valid until the next {@link reserve} that grows. */
  get words(): Int32Array {
    return this.#words;
  }

  /** The device copy. */
  get device(): DeviceBuffer {
    return this.#device!;
  }

  /**
   * Makes room for `count` words. Growing frees the old buffers at once, so call it only when
   * no copy or kernel of an earlier step still uses them (the engine finishes a step before it
   * launches the next).
   */
  reserve(count: number): void {
    if (count <= this.#words.length) return;
    const capacity = Math.max(count, 2 * this.#words.length);
    this.free();
    this.#allocate(capacity);
  }

  /** Enqueues the copy of words [0, count) to the device. */
  upload(count: number, stream: Stream): void {
    if (count === 0) return;
    this.#backend.copyToDevice(this.#device!, this.#host!.bytes.subarray(0, 4 * count), stream);
  }

  /** Releases both buffers; safe to call twice. */
  free(): void {
    if (this.#device !== null) this.#backend.free(this.#device);
    this.#host?.free();
    this.#device = null;
    this.#host = null;
    this.#words = new Int32Array(0);
  }

  #allocate(capacity: number): void {
    const device = this.#backend.alloc(4 * capacity);
    let host: HostBuffer;
    try {
      host = this.#backend.allocHost(4 * capacity);
    } catch (error) {
      this.#backend.free(device);
      throw error;
    }
    this.#device = device;
    this.#host = host;
    this.#words = new Int32Array(host.bytes.buffer, host.bytes.byteOffset, capacity);
  }
}
