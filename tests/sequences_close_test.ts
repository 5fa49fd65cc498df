/**
 * The GPU tests' per-sequence comparison (tests/support/numeric.ts assertSequencesClose and
 * assertDecodeRowsClose): an error confined to one short sequence fails it, by name, where one
 * comparison over the whole output would pass.
 *
 * @module
 */

import assert from "node:assert/strict";
import { decodeBf16, encodeBf16 } from "../backends/bf16.ts";
import {
  assertClose,
  assertDecodeRowsClose,
  assertSequencesClose,
  randomArray,
} from "./support/numeric.ts";

const ROW = 8;

Deno.test("assertSequencesClose: one short sequence off fails by its name; the whole passes", () => {
  // Sequences of 1, 30 and 2 token rows; the first row is 20% off.
  const starts = [0, 1, 31, 33];
  const want = encodeBf16(randomArray(33 * ROW, 5, -2, 2));
  const got = Uint16Array.from(want);
  const first = encodeBf16(decodeBf16(want.subarray(0, ROW)).map((x) => x * 1.2));
  got.set(first, 0);
  assertClose(decodeBf16(got), decodeBf16(want), 0.05, "the whole output");
  assert.throws(
    () => assertSequencesClose(got, want, starts, ROW, 0.05, (s) => `prefill sequence ${s}`),
    /^AssertionError.*prefill sequence 0: relative error/,
  );
  assertSequencesClose(want, want, starts, ROW, 0, (s) => `sequence ${s}`);
});

Deno.test("assertDecodeRowsClose: one row a sequence, named by its context", () => {
  const want = encodeBf16(randomArray(3 * ROW, 7, -2, 2));
  const got = Uint16Array.from(want);
  got[2 * ROW + 3] = encodeBf16([decodeBf16(want.subarray(2 * ROW + 3, 2 * ROW + 4))[0] + 4])[0];
  assertDecodeRowsClose(want, want, [5, 900, 17], ROW, 0, "decode");
  assert.throws(
    () => assertDecodeRowsClose(got, want, [5, 900, 17], ROW, 0.05, "decode"),
    /decode: sequence 2 \(context 17\)/,
  );
});
