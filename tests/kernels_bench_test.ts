/**
 * bench/kernels_bench.ts turns one run's BENCH lines into the kernel targets: the ratios must
 * come from the right lines (torch's dense timing over its single-call one, the faster of
 * Denali's kernel and the vendor library for the chosen path, only 4k+ attention contexts).
 *
 * @module
 */

import assert from "node:assert/strict";
import { parseBench, renderTargets, targetRows } from "../bench/kernels_bench.ts";

const LOG = `
BENCH copy_bandwidth gbps=3000
BENCH read_only_same_size n4096_k4096 time_us=11.00 gbps=2550
BENCH linear_gemv m1_n4096_k4096 time_us=12.00 gbps=2700 tflops=2.8
BENCH linear_gemm m1024_n4096_k4096 time_us=100.00 gbps=800 tflops=300.0
BENCH accel_linear_gemm m1024_n4096_k4096 time_us=55.00 gbps=900 tflops=600.0
BENCH decode_attention b1_ctx2048_h32kv8d128 time_us=9.00 gbps=900
BENCH decode_attention b1_ctx4096_h32kv8d128 time_us=8.00 gbps=2000
BENCH torch_linear_gemm m1024_n4096_k4096 time_us=40.00 gbps=2000 tflops=800.0
BENCH torch_linear_gemm_dense m1024_n4096_k4096 time_us=60.00 gbps=1300 tflops=500.0
`;

Deno.test("kernels_bench: targets take the right lines of one run", () => {
  const rows = targetRows(parseBench(LOG));
  const ratio = (what: string) => rows.find((r) => r.what === what)?.ratio;
  assert.equal(rows.length, 4);
  assert.equal(ratio("gemv m1_n4096_k4096 of copy"), 0.9);
  // The read-only kernel of the GEMV's weight shape; the run measured none of attention's shape.
  assert.equal(rows.find((r) => r.what.startsWith("gemv"))?.readOnly, 0.85);
  assert.equal(rows.find((r) => r.what.startsWith("decode"))?.readOnly, undefined);
  assert.equal(ratio("gemm m1024_n4096_k4096 own / torch"), 0.6);
  assert.equal(ratio("gemm m1024_n4096_k4096 chosen / torch"), 60 / 55);
  assert.equal(ratio("decode attention b1_ctx4096_h32kv8d128 of copy"), 2000 / 3000);
  const table = renderTargets(rows);
  assert.match(
    table,
    /decode attention b1_ctx4096_h32kv8d128 of copy \| 0\.667 \| 0\.7 \| \*\*no\*\* \| {2}\|/,
  );
  assert.match(table, /gemv m1_n4096_k4096 of copy \| 0\.900 \| 0\.85 \| yes \| 0\.850 \|/);
  assert.match(table, /3 of 4 targets met$/);
});
