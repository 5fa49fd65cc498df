/**
 * CPU attention ops in TypeScript: the reference the GPU kernels (kernels/src/attention.cu) are
 * tested against. Inputs are bf16; q·k, the softmax and p·v are computed in fp32 or wider (sums
 * accumulate in f64 and are stored as f32), and each output is rounded to bf16 once. The GPU
 * computes the same math in a different summation order (split-K partitions, lane butterflies,
 * tensor-core tiles), so the two agree to bf16 rounding, not bit for bit.
 *
 * An "fp8" cache holds E4M3 codes: kvWrite quantizes with backends/fp8.ts (the converter the FP8
 * weights use) and the gather decodes each code through its table times the layer's scale, so
 * the math after the gather is the bf16 path's.
 *
 * Both implementations take their argument checks from ops/checks/attention.ts, so they reject
 * the same calls with the same messages.
 *
 * @module
 */

import type { DeviceBuffer } from "../../backends/backend.ts";
import { toBf16Bits } from "../../backends/bf16.ts";
import { e4m3Table, quantizeE4m3 } from "../../backends/fp8.ts";
import {
  checkDecode,
  checkDecodeWorkspaceSizes,
  checkKvWrite,
  checkPrefill,
} from "../checks/attention.ts";
import type { AttentionOps, AttentionShape } from "../ops.ts";

function hostOf(op: string, name: string, buffer: DeviceBuffer): Uint8Array {
  if (!buffer.host) throw new TypeError(`${op}: ${name} is not a CPU-backend buffer`);
  return buffer.host;
}

function u16(op: string, name: string, buffer: DeviceBuffer): Uint16Array {
  const host = hostOf(op, name, buffer);
  if (host.byteOffset % 2 !== 0) {
    throw new RangeError(`${op}: ${name} must be 2-byte aligned for bf16 elements`);
  }
  return new Uint16Array(host.buffer, host.byteOffset, host.byteLength >> 1);
}

function i32(op: string, name: string, buffer: DeviceBuffer): Int32Array {
  const host = hostOf(op, name, buffer);
  if (host.byteOffset % 4 !== 0) {
    throw new RangeError(`${op}: ${name} must be 4-byte aligned for i32 elements`);
  }
  return new Int32Array(host.buffer, host.byteOffset, host.byteLength >> 2);
}

/** The cache's elements: bf16 bits, or E4M3 codes for an "fp8" cache. */
function cacheView(op: string, name: string, buffer: DeviceBuffer, shape: AttentionShape) {
  return shape.kvDtype === "fp8" ? hostOf(op, name, buffer) : u16(op, name, buffer);
}

/**
 * Scratch for one (sequence, KV head): its first `count` K and V rows as f32, gathered through
 * the block table. Block ids outside the cache read block 0, as the kernels do.
 */
class Gathered {
  readonly k: Float32Array;
  readonly v: Float32Array;
  readonly #kBits: Uint32Array;
  readonly #vBits: Uint32Array;

  constructor(readonly rows: number, readonly headDim: number) {
    this.k = new Float32Array(rows * headDim);
    this.v = new Float32Array(rows * headDim);
    this.#kBits = new Uint32Array(this.k.buffer);
    this.#vBits = new Uint32Array(this.v.buffer);
  }

  fill(
    kc: Uint16Array | Uint8Array,
    vc: Uint16Array | Uint8Array,
    tables: Int32Array,
    tableBase: number,
    count: number,
    kvh: number,
    shape: AttentionShape,
    numBlocks: number,
  ): void {
    const { numKvHeads, blockSize, headDim } = shape;
    const fp8 = shape.kvDtype === "fp8";
    const lut = e4m3Table(), kScale = shape.kScale ?? 1, vScale = shape.vScale ?? 1;
    for (let t = 0; t < count; t++) {
      let block = tables[tableBase + Math.floor(t / blockSize)];
      if (!(block >= 0 && block < numBlocks)) block = 0;
      const src = ((block * numKvHeads + kvh) * blockSize + (t % blockSize)) * headDim;
      const dst = t * headDim;
      if (fp8) {
        // Storing into the f32 array rounds the double product to the f32 one a kernel computes.
        for (let d = 0; d < headDim; d++) {
          this.k[dst + d] = lut[kc[src + d]] * kScale;
          this.v[dst + d] = lut[vc[src + d]] * vScale;
        }
      } else {
        for (let d = 0; d < headDim; d++) {
          this.#kBits[dst + d] = kc[src + d] << 16;
          this.#vBits[dst + d] = vc[src + d] << 16;
        }
      }
    }
  }
}

/** Per-call scratch for one query row: its f32 copy, the scores and the p·v accumulator. */
class RowScratch {
  readonly q: Float32Array;
  readonly #qBits: Uint32Array;
  readonly scores: Float32Array;
  readonly acc: Float64Array;

  constructor(headDim: number, maxKeys: number) {
    this.q = new Float32Array(headDim);
    this.#qBits = new Uint32Array(this.q.buffer);
    this.scores = new Float32Array(maxKeys);
    this.acc = new Float64Array(headDim);
  }

  /**
   * out[outBase + d] = bf16(softmax(scale · q·K[0..count)) · V[0..count)) for the query row at
   * qBits[qBase..]; zeros when it sees no key.
   */
  attend(
    outBits: Uint16Array,
    outBase: number,
    qBits: Uint16Array,
    qBase: number,
    kv: Gathered,
    count: number,
    headDim: number,
    scale: number,
  ): void {
    if (count <= 0) {
      outBits.fill(0, outBase, outBase + headDim);
      return;
    }
    const q = this.q, scores = this.scores, acc = this.acc, k = kv.k, v = kv.v;
    for (let d = 0; d < headDim; d++) this.#qBits[d] = qBits[qBase + d] << 16;
    let max = -Infinity;
    for (let t = 0; t < count; t++) {
      let dot = 0;
      const row = t * headDim;
      for (let d = 0; d < headDim; d++) dot += q[d] * k[row + d];
      scores[t] = Math.fround(dot) * scale;
      if (scores[t] > max) max = scores[t];
    }
    let sum = 0;
    for (let t = 0; t < count; t++) {
      scores[t] = Math.exp(scores[t] - max);
      sum += scores[t];
    }
    acc.fill(0, 0, headDim);
    for (let t = 0; t < count; t++) {
      const p = scores[t];
      const row = t * headDim;
      for (let d = 0; d < headDim; d++) acc[d] += p * v[row + d];
    }
    const inv = 1 / Math.fround(sum);
    for (let d = 0; d < headDim; d++) {
      outBits[outBase + d] = toBf16Bits(Math.fround(acc[d]) * inv);
    }
  }
}

/**
 * The attention ops on the CPU backend. Their scratch lives as long as the ops and grows to the
 * longest context seen: a fresh half-megabyte per call made glibc's heap creep (its mmap
 * threshold rises after the first frees), which the soak's flat-memory check caught.
 */
export function cpuAttentionOps(): AttentionOps {
  let kv = new Gathered(0, 0);
  let row = new RowScratch(0, 0);
  const scratch = (rows: number, headDim: number): void => {
    if (kv.rows < rows || kv.headDim !== headDim) {
      kv = new Gathered(Math.max(rows, 2 * kv.rows), headDim);
      row = new RowScratch(headDim, kv.rows);
    }
  };
  // One f32 whose bits a bf16 element is widened into, for the fp8 kvWrite's quantization.
  const widened = new Float32Array(1), widenedBits = new Uint32Array(widened.buffer);
  const quantize = (bits: number, scale: number): number => {
    widenedBits[0] = bits << 16;
    return quantizeE4m3(widened[0], scale);
  };
  return {
    kvWrite(kCache, vCache, k, v, slots, tokens, shape) {
      const numBlocks = checkKvWrite(kCache, vCache, k, v, slots, tokens, shape);
      const op = "kvWrite";
      const kc = cacheView(op, "kCache", kCache, shape);
      const vc = cacheView(op, "vCache", vCache, shape);
      const ks = u16(op, "k", k), vs = u16(op, "v", v), slot = i32(op, "slots", slots);
      const { numKvHeads, headDim, blockSize } = shape;
      const fp8 = shape.kvDtype === "fp8", kScale = shape.kScale ?? 1, vScale = shape.vScale ?? 1;
      for (let t = 0; t < tokens; t++) {
        const s = slot[t];
        if (s < 0 || s >= numBlocks * blockSize) continue; // padding, or past the cache
        const block = Math.floor(s / blockSize), offset = s % blockSize;
        for (let h = 0; h < numKvHeads; h++) {
          const dst = ((block * numKvHeads + h) * blockSize + offset) * headDim;
          const src = (t * numKvHeads + h) * headDim;
          if (fp8) {
            for (let d = 0; d < headDim; d++) {
              kc[dst + d] = quantize(ks[src + d], kScale);
              vc[dst + d] = quantize(vs[src + d], vScale);
            }
          } else {
            for (let d = 0; d < headDim; d++) {
              kc[dst + d] = ks[src + d];
              vc[dst + d] = vs[src + d];
            }
          }
        }
      }
    },

    decodeAttention(args) {
      const numBlocks = checkDecode(args);
      const op = "decodeAttention";
      const { batch, maxBlocks, maxContext, shape } = args;
      const kc = cacheView(op, "kCache", args.kCache, shape);
      const vc = cacheView(op, "vCache", args.vCache, shape);
      const qs = u16(op, "q", args.q), os = u16(op, "out", args.out);
      const tables = i32(op, "blockTables", args.blockTables);
      const lens = i32(op, "contextLens", args.contextLens);
      const { numHeads, numKvHeads, headDim } = shape;
      const ratio = numHeads / numKvHeads;
      scratch(maxContext, headDim);
      for (let b = 0; b < batch; b++) {
        // The kernels clamp contexts to maxContext, which the caller promises bounds them.
        const ctx = Math.max(0, Math.min(lens[b], maxContext));
        for (let kvh = 0; kvh < numKvHeads; kvh++) {
          kv.fill(kc, vc, tables, b * maxBlocks, ctx, kvh, shape, numBlocks);
          for (let g = 0; g < ratio; g++) {
            const at = (b * numHeads + kvh * ratio + g) * headDim;
            row.attend(os, at, qs, at, kv, ctx, headDim, shape.scale);
          }
        }
      }
    },

    decodeWorkspaceBytes(batch, maxContext, shape) {
      checkDecodeWorkspaceSizes(batch, maxContext, shape);
      // The CPU needs no partials; a small positive size keeps `alloc(bytes)` valid for callers.
      return 16;
    },

    prefillAttention(args) {
      const numBlocks = checkPrefill(args);
      const op = "prefillAttention";
      const { seqs, tokens, maxBlocks, shape } = args;
      const kc = cacheView(op, "kCache", args.kCache, shape);
      const vc = cacheView(op, "vCache", args.vCache, shape);
      const qs = u16(op, "q", args.q), os = u16(op, "out", args.out);
      const starts = i32(op, "queryStarts", args.queryStarts);
      const lens = i32(op, "contextLens", args.contextLens);
      const tables = i32(op, "blockTables", args.blockTables);
      const { numHeads, numKvHeads, headDim, blockSize } = shape;
      const ratio = numHeads / numKvHeads;
      const cacheTokens = maxBlocks * blockSize;
      let longest = 0;
      for (let s = 0; s < seqs; s++) {
        longest = Math.max(longest, Math.min(Math.max(lens[s], 0), cacheTokens));
      }
      scratch(longest, headDim);
      for (let s = 0; s < seqs; s++) {
        const first = starts[s], count = Math.max(0, starts[s + 1] - first);
        if (first < 0 || first + count > tokens) {
          throw new RangeError(
            `${op}: sequence ${s} covers tokens [${first}, ${first + count}), outside ${tokens}`,
          );
        }
        const ctx = Math.max(0, Math.min(lens[s], cacheTokens));
        const prefix = Math.max(0, ctx - count);
        for (let kvh = 0; kvh < numKvHeads; kvh++) {
          kv.fill(kc, vc, tables, s * maxBlocks, ctx, kvh, shape, numBlocks);
          for (let j = 0; j < count; j++) {
            // New token j sits at position prefix + j and sees keys 0..prefix + j.
            const visible = Math.min(prefix + j + 1, ctx);
            for (let g = 0; g < ratio; g++) {
              const at = ((first + j) * numHeads + kvh * ratio + g) * headDim;
              row.attend(os, at, qs, at, kv, visible, headDim, shape.scale);
            }
          }
        }
      }
    },
  };
}
