/**
 * The quantized linear benchmarks' shared command line (bench/kernels/quantized_linear.ts): the
 * forced split, the variant, `--gemv-only` and the rows past the GEMVs, `--ms`, each tagged or
 * refused as its usage says.
 *
 * @module
 */

import assert from "node:assert/strict";
import { parseQuantizedBenchArgs } from "../bench/kernels/quantized_linear.ts";

Deno.test("quantized bench args: defaults, a forced split and variant tag the labels", () => {
  assert.deepEqual(parseQuantizedBenchArgs([]), {
    split: undefined,
    variant: undefined,
    scope: { gemvOnly: false, gemmMs: undefined, suffix: "" },
  });
  const forced = parseQuantizedBenchArgs(["--split", "4", "--variant", "s2_p", "--gemv-only"]);
  assert.equal(forced.split, 4);
  assert.equal(forced.variant, "s2_p");
  assert.deepEqual(forced.scope, { gemvOnly: true, gemmMs: undefined, suffix: "_split4_s2_p" });
});

Deno.test("quantized bench args: --ms lists the rows past the GEMVs, in the order given", () => {
  assert.deepEqual(parseQuantizedBenchArgs(["--ms", "32,64,128,256"]).scope.gemmMs, [
    32,
    64,
    128,
    256,
  ]);
  assert.deepEqual(parseQuantizedBenchArgs(["--ms", "2048"]).scope.gemmMs, [2048]);
});

Deno.test("quantized bench args: a bad --ms or --split is refused, naming the flag", () => {
  for (const bad of ["", "32,", "abc", "64,-1", "1.5", "0"]) {
    assert.throws(
      () => parseQuantizedBenchArgs(["--ms", bad]),
      new Error(`--ms ${bad}: expected positive integers separated by commas`),
    );
  }
  // Rows 1-16 are the GEMV's, which always run: asking for them here is a mistake worth naming.
  assert.throws(
    () => parseQuantizedBenchArgs(["--ms", "16,32"]),
    new RangeError("--ms 16,32: the rows past the GEMVs start at 17 (1-16 always run)"),
  );
  assert.throws(
    () => parseQuantizedBenchArgs(["--split", "3"]),
    new RangeError("--split must be 1, 2, 4 or 8, got 3"),
  );
});
