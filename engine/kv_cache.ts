/**
 * The paged KV cache on the device: per layer one K and one V buffer of
 * [numBlocks + 1, numKvHeads, blockSize, headDim] bf16, or FP8 E4M3 with `--kv-cache-dtype fp8`
 * (the ModelOps layout), and the sizing rule — as many blocks as a fraction of the free device
 * memory holds, logged at start.
 *
 * The block after the usable ones is scratch: padded rows of a captured decode graph write no
 * K/V and read one position of it, so it is zeroed once to keep their discarded outputs finite.
 * Which sequence owns which block is the BlockManager's business (engine/block_manager.ts);
 * this file only holds the memory.
 *
 * @module
 */

import type { Backend, DeviceBuffer, Stream } from "../backends/backend.ts";
import type { KvCacheDtype } from "../ops/ops.ts";

/**
 * What `EngineOptions.kvCacheDtype` and `--kv-cache-dtype` accept, as vLLM names them: "auto"
 * is the model's dtype (bf16), "fp8_e4m3" an alias of "fp8".
 */
export type KvCacheDtypeOption = KvCacheDtype | "auto" | "fp8_e4m3";

/** The accepted spellings, for error messages and help. */
export const KV_CACHE_DTYPES: readonly KvCacheDtypeOption[] = ["auto", "bf16", "fp8", "fp8_e4m3"];

/**
 * The cache dtype `value` names; `what` is how the caller's user spelled the option (e.g.
 * "--kv-cache-dtype"), for the error. Throws a RangeError naming the accepted values otherwise.
 */
export function resolveKvCacheDtype(value: unknown, what: string): KvCacheDtype {
  if (value === undefined || value === "auto" || value === "bf16") return "bf16";
  if (value === "fp8" || value === "fp8_e4m3") return "fp8";
  // vLLM's other FP8 format: worth naming, since its users may try it.
  const why = value === "fp8_e5m2" ? " (Denali stores FP8 as E4M3 only)" : "";
  throw new RangeError(
    `${what} ${JSON.stringify(value)} is not supported${why}; use one of ` +
      KV_CACHE_DTYPES.join(", "),
  );
}

/** Shape of a model's KV cache, for sizing one block. */
export interface KvCacheShape {
  /** Transformer layers. */
  readonly numLayers: number;
  /** Key/value heads per layer. */
  readonly numKvHeads: number;
  /** Head dimension. */
  readonly headDim: number;
  /** Tokens per block. */
  readonly blockSize: number;
  /** Bytes per cached element (2 for bf16, the default). */
  readonly bytesPerElement?: number;
}

/** Device bytes one block takes across all layers: K and V, [numKvHeads, blockSize, headDim] each. */
export function kvBytesPerBlock(shape: KvCacheShape): number {
  const { numLayers, numKvHeads, headDim, blockSize, bytesPerElement = 2 } = shape;
  for (
    const [name, v] of Object.entries({
      numLayers,
      numKvHeads,
      headDim,
      blockSize,
      bytesPerElement,
    })
  ) {
    if (!Number.isInteger(v) || v < 1) {
      throw new RangeError(`kvBytesPerBlock: ${name} must be an integer >= 1, got ${v}`);
    }
  }
  return 2 * numLayers * numKvHeads * blockSize * headDim * bytesPerElement;
}

/** The KV-cache size chosen from free device memory. */
export interface KvCapacity {
  /** Blocks to allocate. */
  readonly numBlocks: number;
  /** Device bytes they take. */
  readonly bytes: number;
  /** One line for the startup log. */
  readonly description: string;
}

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
}

/**
 * How many blocks fit in `fraction` of `freeBytes` (the device's free memory after the weights
 * and workspaces are allocated), each `bytesPerBlock` bytes. Throws, naming the numbers and what
 * to change, when not even one block fits.
 *
 * @example
 * ```ts
 * import { capacityFromMemory, kvBytesPerBlock } from "./kv_cache.ts";
 * const perBlock = kvBytesPerBlock({ numLayers: 32, numKvHeads: 8, headDim: 128, blockSize: 16 });
 * const { numBlocks, description } = capacityFromMemory(40 * 2 ** 30, 0.9, perBlock, 16);
 * console.error(description); // KV cache: 18432 blocks × 16 tokens = 294912 tokens, ...
 * ```
 */
export function capacityFromMemory(
  freeBytes: number,
  fraction: number,
  bytesPerBlock: number,
  blockSize?: number,
): KvCapacity {
  if (!Number.isFinite(freeBytes) || freeBytes < 0) {
    throw new RangeError(
      `capacityFromMemory: freeBytes must be a finite number >= 0, got ${freeBytes}`,
    );
  }
  if (!(fraction > 0 && fraction <= 1)) {
    throw new RangeError(
      `capacityFromMemory: the KV-cache memory fraction must be in (0, 1], got ${fraction}`,
    );
  }
  if (!Number.isInteger(bytesPerBlock) || bytesPerBlock < 1) {
    throw new RangeError(
      `capacityFromMemory: bytesPerBlock must be an integer >= 1, got ${bytesPerBlock}`,
    );
  }
  const numBlocks = Math.floor((freeBytes * fraction) / bytesPerBlock);
  if (numBlocks < 1) {
    throw new RangeError(
      `KV cache: ${fraction} of ${freeBytes} free bytes (${gib(freeBytes)}) is less than one ` +
        `block of ${bytesPerBlock} bytes; free device memory, raise the KV-cache memory ` +
        `fraction, or use a smaller block size or model`,
    );
  }
  const bytes = numBlocks * bytesPerBlock;
  const tokens = blockSize ? ` × ${blockSize} tokens = ${numBlocks * blockSize} tokens` : "";
  return {
    numBlocks,
    bytes,
    description: `KV cache: ${numBlocks} blocks${tokens}, ${gib(bytes)} ` +
      `(${fraction} of ${gib(freeBytes)} free, ${bytesPerBlock} bytes per block)`,
  };
}

/** The K and V buffers of every layer, allocated at once for a fixed number of blocks. */
export class KvCache {
  /** Usable blocks (the scratch block not counted). */
  readonly numBlocks: number;
  /** The scratch block's index (= numBlocks). */
  readonly scratchBlock: number;
  /** Device bytes of one block across all layers (K and V). */
  readonly bytesPerBlock: number;
  readonly #backend: Backend;
  readonly #k: DeviceBuffer[] = [];
  readonly #v: DeviceBuffer[] = [];

  /**
   * Allocates `numBlocks` usable blocks plus the scratch block for every layer and zeroes the
   * scratch block on `stream`, waiting for it. On failure (out of memory) it frees what it
   * allocated and rethrows, so the caller can retry with fewer blocks.
   */
  constructor(backend: Backend, shape: KvCacheShape, numBlocks: number, stream: Stream) {
    if (!Number.isSafeInteger(numBlocks) || numBlocks < 1) {
      throw new RangeError(`KvCache: numBlocks must be an integer >= 1, got ${numBlocks}`);
    }
    this.bytesPerBlock = kvBytesPerBlock(shape);
    this.numBlocks = numBlocks;
    this.scratchBlock = numBlocks;
    this.#backend = backend;
    const blockBytes = this.bytesPerBlock / (2 * shape.numLayers);
    try {
      for (let l = 0; l < shape.numLayers; l++) {
        for (const list of [this.#k, this.#v]) {
          const buffer = backend.alloc((numBlocks + 1) * blockBytes);
          list.push(buffer);
          backend.memset(buffer.slice(numBlocks * blockBytes, blockBytes), 0, stream);
        }
      }
      stream.synchronize();
    } catch (error) {
      this.free();
      throw error;
    }
  }

  /** Layer l's K buffer. */
  k(layer: number): DeviceBuffer {
    return this.#k[layer];
  }

  /** Layer l's V buffer. */
  v(layer: number): DeviceBuffer {
    return this.#v[layer];
  }

  /** Releases every buffer; safe to call twice. */
  free(): void {
    for (const buffer of [...this.#k, ...this.#v]) this.#backend.free(buffer);
    this.#k.length = 0;
    this.#v.length = 0;
  }
}
