/**
 * 4-bit group-quantized weights (AWQ, GPTQ) on the host: the checkpoint packings and Denali's
 * own device layout, which the loader converts to and the kernels and CPU reference read.
 *
 * AutoAWQ's "GEMM" packing (`WQLinear_GEMM`): a weight W[out, in] is stored transposed as
 * int4 q[in, out], eight columns to an int32, so `qweight` is int32 [in, out / 8]. Within a word
 * the columns are interleaved: nibble i (bits 4i .. 4i + 3) holds column {@link AWQ_PACK_ORDER}[i]
 * of its eight, i.e. columns 0, 2, 4, 6, 1, 3, 5, 7 from the low nibble up. `qzeros` (int32
 * [in / group, out / 8]) is packed the same way; `scales` is f16 [in / group, out]; and
 * W[n, k] = (q[k, n] - zeros[k / group, n]) · scales[k / group, n].
 *
 * Denali's layout keeps each output row's codes contiguous, so a row range (the q, k and v parts
 * of a fused projection) is a view and a GEMV reads a row with coalesced loads: codes u32
 * [out, in / 8] whose word j holds k = 8j .. 8j + 7 interleaved along k as AutoAWQ interleaves
 * columns (nibble {@link CODE_NIBBLE}[c] holds k = 8j + c: k 8j + 2i in nibble i, 8j + 2i + 1 in
 * nibble i + 4), zeros u8 [out, in / group], scales f32 [out, in / group]. The interleave puts
 * each natural pair (k 2i, 2i + 1) in the two 16-bit halves of `word >> 4i`, so a kernel widens
 * it to the bf16 pair x holds at those k with one mask, and multiplies without reordering x.
 *
 * @module
 */

/** AutoAWQ's nibble order: nibble i of a packed word holds column AWQ_PACK_ORDER[i] of its 8. */
export const AWQ_PACK_ORDER: readonly number[] = [0, 2, 4, 6, 1, 3, 5, 7];

/** The nibble that holds column c of a packed word: the inverse of {@link AWQ_PACK_ORDER}. */
export const AWQ_UNPACK_NIBBLE: readonly number[] = [0, 4, 1, 5, 2, 6, 3, 7];

/**
 * The nibble of a Denali code word that holds k offset c (0..7) of its eight: 0, 4, 1, 5, 2, 6,
 * 3, 7, i.e. AutoAWQ's column interleave ({@link AWQ_UNPACK_NIBBLE}) applied along k.
 */
export const CODE_NIBBLE: readonly number[] = AWQ_UNPACK_NIBBLE;

/** Group sizes Denali runs (the kernels take 32 k at a time within one group). */
export const AWQ_GROUP_SIZES: readonly number[] = [64, 128];

/**
 * Packs int4 values v[rows, cols] (each 0..15) the AutoAWQ way: int32 [rows, cols / 8], the
 * columns of each word interleaved in {@link AWQ_PACK_ORDER}. For tests and fixtures.
 */
export function packAwq(values: Uint8Array, rows: number, cols: number): Int32Array {
  const words = cols / 8;
  const out = new Int32Array(rows * words);
  for (let r = 0; r < rows; r++) {
    for (let w = 0; w < words; w++) {
      let word = 0;
      for (let i = 0; i < 8; i++) {
        word |= (values[r * cols + 8 * w + AWQ_PACK_ORDER[i]] & 15) << (4 * i);
      }
      out[r * words + w] = word;
    }
  }
  return out;
}

/** Unpacks AutoAWQ int32 [rows, cols / 8] into int4 values [rows, cols]. */
export function unpackAwq(packed: Int32Array, rows: number, cols: number): Uint8Array {
  const words = cols / 8;
  const out = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let w = 0; w < words; w++) {
      const word = packed[r * words + w];
      for (let c = 0; c < 8; c++) {
        out[r * cols + 8 * w + c] = (word >>> (4 * AWQ_UNPACK_NIBBLE[c])) & 15;
      }
    }
  }
  return out;
}

/**
 * Writes the AutoAWQ `qweight` of one part (int32 [k, nPart / 8]) into Denali's codes (u32
 * [n, k / 8], nibbles in {@link CODE_NIBBLE} order) at output rows rowOffset .. rowOffset + nPart.
 */
export function awqCodesToRows(
  qweight: Int32Array,
  k: number,
  nPart: number,
  codes: Uint32Array,
  rowOffset: number,
): void {
  const words = nPart / 8, perRow = k / 8;
  for (let kk = 0; kk < k; kk++) {
    const shift = 4 * CODE_NIBBLE[kk & 7], column = kk >>> 3;
    for (let w = 0; w < words; w++) {
      const word = qweight[kk * words + w];
      const base = (rowOffset + 8 * w) * perRow + column;
      for (let c = 0; c < 8; c++) {
        codes[base + c * perRow] |= ((word >>> (4 * AWQ_UNPACK_NIBBLE[c])) & 15) << shift;
      }
    }
  }
}

/**
 * Writes a per-group matrix of one part, [groups, nPart] in the checkpoint's orientation, into
 * Denali's [n, groups] at rows rowOffset .. rowOffset + nPart (zeros or scales).
 */
export function groupsToRows<T extends Uint8Array | Float32Array>(
  values: ArrayLike<number>,
  groups: number,
  nPart: number,
  out: T,
  rowOffset: number,
): void {
  for (let g = 0; g < groups; g++) {
    for (let j = 0; j < nPart; j++) out[(rowOffset + j) * groups + g] = values[g * nPart + j];
  }
}

/**
 * A word of eight codes in plain order (nibble c holds k offset c, as GPTQ packs along k) in
 * Denali's {@link CODE_NIBBLE} order.
 */
export function plainWordToCodes(word: number): number {
  let out = 0;
  for (let c = 0; c < 8; c++) out |= ((word >>> (4 * c)) & 15) << (4 * CODE_NIBBLE[c]);
  return out >>> 0;
}

/** Packs int4 values [n, k] (each 0..15, row-major) into Denali's codes u32 [n, k / 8]. */
export function packRows(values: Uint8Array, n: number, k: number): Uint32Array {
  const out = new Uint32Array(n * k / 8);
  for (let i = 0; i < n * k; i++) out[i >>> 3] |= (values[i] & 15) << (4 * CODE_NIBBLE[i & 7]);
  return out;
}

/** The int4 value at [row, col] of Denali's codes u32 [_, k / 8]. */
export function codeAt(codes: Uint32Array, k: number, row: number, col: number): number {
  return (codes[row * (k >>> 3) + (col >>> 3)] >>> (4 * CODE_NIBBLE[col & 7])) & 15;
}
