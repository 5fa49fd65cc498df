/**
 * The host E4M3 codec (backends/fp8.ts) against closed-form values, an exhaustive decode of all
 * 256 codes, and a brute-force nearest-code oracle for encoding.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  decodeE4m3,
  E4M3_MAX,
  e4m3Table,
  encodeE4m3,
  fromE4m3Bits,
  quantizeE4m3,
  rowScale,
  toE4m3Bits,
} from "../backends/fp8.ts";
import { rng } from "./support/numeric.ts";

/** The value of a code from its fields, written out from the format's definition. */
function closedForm(code: number): number {
  const s = code >> 7, e = (code >> 3) & 15, m = code & 7;
  if (e === 15 && m === 7) return NaN;
  const magnitude = e === 0 ? m / 8 * 2 ** -6 : (1 + m / 8) * 2 ** (e - 7);
  return s ? -magnitude : magnitude;
}

Deno.test("E4M3 decode: all 256 codes", () => {
  const table = e4m3Table();
  for (let code = 0; code < 256; code++) {
    const want = closedForm(code);
    if (Number.isNaN(want)) {
      assert.ok(Number.isNaN(fromE4m3Bits(code)), `code ${code} is NaN`);
      assert.ok(Number.isNaN(table[code]));
      continue;
    }
    assert.ok(Object.is(fromE4m3Bits(code), want), `code 0x${code.toString(16)}: ${want}`);
    assert.ok(Object.is(table[code], want));
  }
  // Landmarks (torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn)).
  const landmarks: [number, number][] = [
    [0x00, 0],
    [0x01, 2 ** -9],
    [0x07, 7 * 2 ** -9],
    [0x08, 2 ** -6],
    [0x38, 1],
    [0x39, 1.125],
    [0x40, 2],
    [0x77, 240],
    [0x78, 256],
    [0x7e, 448],
    [0xb8, -1],
    [0xfe, -448],
  ];
  for (const [code, value] of landmarks) assert.equal(fromE4m3Bits(code), value, `0x${code}`);
  assert.ok(Object.is(fromE4m3Bits(0x80), -0));
  assert.ok(Number.isNaN(fromE4m3Bits(0x7f)) && Number.isNaN(fromE4m3Bits(0xff)));
  // The 126 positive finite codes increase strictly, so each value has one code.
  for (let code = 1; code <= 0x7e; code++) assert.ok(table[code] > table[code - 1]);
  assert.deepEqual(Array.from(decodeE4m3(Uint8Array.of(0x38, 0xc0))), [1, -2]);
});

Deno.test("E4M3 encode: every finite code round-trips", () => {
  for (let code = 0; code < 256; code++) {
    if ((code & 0x7f) === 0x7f) continue;
    assert.equal(toE4m3Bits(fromE4m3Bits(code)), code, `code 0x${code.toString(16)}`);
  }
});

Deno.test("E4M3 encode: ties to even, subnormals, saturation, NaN", () => {
  const cases: [number, number][] = [
    [1.0625, 0x38], // tie between 1 and 1.125: even mantissa 0
    [1.1875, 0x3a], // tie between 1.125 and 1.25: even mantissa 2
    [1.0625 + 2 ** -20, 0x39], // just past the tie
    [2 ** -10, 0x00], // half the smallest subnormal: ties to 0
    [3 * 2 ** -10, 0x02], // tie between 1 and 2 subnormal steps: 2
    [15 * 2 ** -10, 0x08], // tie between the largest subnormal and the smallest normal: 8
    [2 ** -11, 0x00],
    [-0, 0x80],
    [448, 0x7e],
    [463.9, 0x7e], // rounds to 448 anyway
    [464, 0x7e], // torch's cast gives NaN here; Denali saturates, as CUDA's satfinite does
    [1e9, 0x7e],
    [Infinity, 0x7e],
    [-Infinity, 0xfe],
    [-500, 0xfe],
    [NaN, 0x7f],
    [1 + 2 ** -30, 0x38], // rounded to f32 first
    [240, 0x77],
  ];
  for (const [value, code] of cases) {
    assert.equal(toE4m3Bits(value), code, `${value} → 0x${code.toString(16)}`);
  }
  // -NaN keeps its sign, as torch writes it.
  const negativeNaN = new Float32Array(new Uint32Array([0xffc00000]).buffer)[0];
  assert.equal(toE4m3Bits(negativeNaN), 0xff);
  assert.deepEqual(Array.from(encodeE4m3([1, -2, 1000])), [0x38, 0xc0, 0x7e]);
});

/** The nearest finite code by search, ties to the even code: an oracle independent of the bit tricks. */
function nearestCode(value: number): number {
  const table = e4m3Table();
  const magnitude = Math.min(Math.abs(Math.fround(value)), E4M3_MAX);
  let best = 0;
  for (let code = 1; code <= 0x7e; code++) {
    const d = Math.abs(table[code] - magnitude), bestD = Math.abs(table[best] - magnitude);
    if (d < bestD || (d === bestD && (code & 1) === 0)) best = code;
  }
  return (Object.is(Math.fround(value), -0) || Math.fround(value) < 0 ? 0x80 : 0) | best;
}

Deno.test("E4M3 encode: random values and every midpoint match the nearest-code search", () => {
  const next = rng(13);
  const values: number[] = [];
  for (let i = 0; i < 20000; i++) values.push(next(-1, 1) * 2 ** Math.floor(next(-12, 10)));
  const table = e4m3Table();
  for (let code = 0; code < 0x7e; code++) {
    const mid = (table[code] + table[code + 1]) / 2;
    values.push(mid, -mid, mid * (1 + 2 ** -22), mid * (1 - 2 ** -22));
  }
  for (const value of values) {
    assert.equal(toE4m3Bits(value), nearestCode(value), `value ${value}`);
  }
});

Deno.test("E4M3 row quantization: scale amax/448 maps the largest magnitude to 448", () => {
  const scale = rowScale(3.5);
  assert.equal(scale, Math.fround(3.5 / 448));
  assert.equal(quantizeE4m3(-3.5, scale), 0xfe);
  assert.equal(quantizeE4m3(0, scale), 0);
  assert.equal(rowScale(0), 1, "an all-zero row gets scale 1, not 0 (no 0/0)");
  // A value 1/448 of the amax lands on code 1.0 (0x38).
  assert.equal(quantizeE4m3(3.5 / 448, scale), 0x38);
});
