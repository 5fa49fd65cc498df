/**
 * Philox4x32-10 (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as 1, 2, 3",
 * SC'11), the counter-based generator behind seeded sampling. The host implementation here and
 * the device one in kernels/src/sampling.cu compute the same function bit for bit, so a seeded
 * run samples the same tokens on the CPU backend and on a GPU.
 *
 * How the sampler uses it (one draw per row and step):
 * - key = the row's u64 seed as two u32 halves (k0 = low word, k1 = high word);
 * - counter = (step as u32, 0, 0, 0): the row index is not part of it, so a sequence's draws
 *   depend only on its own seed and step, wherever it sits in the batch;
 * - the first output word w0 gives u = (w0 >>> 8) · 2^-24, uniform on [0, 1) in steps of 2^-24.
 *
 * @module
 */

/** Round multipliers (Random123's PHILOX_M4x32_0 and _1). */
const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
/** Key schedule increments, the Weyl sequence (PHILOX_W32_0 and _1). */
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;

/** The high 32 bits of the 64-bit product of two u32 values (JS numbers are exact below 2^53). */
function mulhi(a: number, b: number): number {
  const aLo = a & 0xffff, aHi = a >>> 16;
  const bLo = b & 0xffff, bHi = b >>> 16;
  const lolo = aLo * bLo;
  const mid1 = aHi * bLo;
  const mid2 = aLo * bHi;
  const carry = ((lolo >>> 16) + (mid1 & 0xffff) + (mid2 & 0xffff)) >>> 16;
  return (aHi * bHi + (mid1 >>> 16) + (mid2 >>> 16) + carry) >>> 0;
}

/**
 * One Philox4x32-10 block: counter (c0..c3) under key (k0, k1), all u32, written to `out`
 * (4 words).
 */
export function philox4x32(
  c0: number,
  c1: number,
  c2: number,
  c3: number,
  k0: number,
  k1: number,
  out: Uint32Array = new Uint32Array(4),
): Uint32Array {
  let x0 = c0 >>> 0, x1 = c1 >>> 0, x2 = c2 >>> 0, x3 = c3 >>> 0;
  let key0 = k0 >>> 0, key1 = k1 >>> 0;
  for (let round = 0; round < 10; round++) {
    // Random123 bumps the key between rounds, never before the first.
    if (round > 0) {
      key0 = (key0 + W0) >>> 0;
      key1 = (key1 + W1) >>> 0;
    }
    const hi0 = mulhi(M0, x0), lo0 = Math.imul(M0, x0) >>> 0;
    const hi1 = mulhi(M1, x2), lo1 = Math.imul(M1, x2) >>> 0;
    x0 = (hi1 ^ x1 ^ key0) >>> 0;
    x1 = lo1;
    x2 = (hi0 ^ x3 ^ key1) >>> 0;
    x3 = lo0;
  }
  out[0] = x0;
  out[1] = x1;
  out[2] = x2;
  out[3] = x3;
  return out;
}

const scratch = new Uint32Array(4);

/**
 * The sampler's 24-bit uniform integer for (seed, step): the first Philox word of counter
 * (step, 0, 0, 0) under key (seedLo, seedHi), shifted right by 8. u = result · 2^-24.
 */
export function uniform24(seedLo: number, seedHi: number, step: number): number {
  return philox4x32(step >>> 0, 0, 0, 0, seedLo, seedHi, scratch)[0] >>> 8;
}
