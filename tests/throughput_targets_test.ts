/**
 * The throughput targets read from logs shaped like the benchmarks' output.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  logFigures,
  rooflineTokPerS,
  targetLine,
  throughputTargets,
} from "../bench/throughput_targets.ts";

const ENGINE_LOG = `engine-only new: 1000 requests, offline, 10.00 s
first-token latency (ms): avg 3000.0
per-token latency (ms): p50 30.5, p99 80.0
completion tok/s: 21000.5
total tok/s: 44000.0
PROFILE steps=900 device_ms=9700.0 idle_ms=300.0 busy=0.970 mean_decode_batch=700.0 mean_host_gap_ms=0.100 graph_steps=600
PROFILE kind=decode steps=600 device_ms=5000.0 bound_ms=4000.0 of_bound=1.25 phased_ms=4500.0 of_phased=1.11 decode_rows=1 prefill_tokens=0
PROFILE kind=mixed steps=290 device_ms=4500.0 bound_ms=3500.0 of_bound=1.29 phased_ms=3600.0 of_phased=1.25 decode_rows=1 prefill_tokens=9
PROFILE kind=prefill steps=10 device_ms=200.0 bound_ms=500.0 of_bound=0.40 phased_ms=500.0 of_phased=0.40 decode_rows=0 prefill_tokens=9
PROFILE kind=decode_b128 steps=500 device_ms=4000.0 bound_ms=3200.0 of_bound=1.25 phased_ms=3400.0 of_phased=1.18
`;

const SERVE_LOG = (tokS: number, p50: number) =>
  `first-token latency (ms): min 1, max 2, avg 3
per-token latency (ms): p50 ${p50}, p75 1, p95 1, p99 1
completion tok/s: ${tokS}
`;

Deno.test("throughput targets: figures from the logs, ratios against the baseline", () => {
  const f = logFigures(ENGINE_LOG, null);
  assert.equal(f.completionTokPerS, 21000.5);
  assert.equal(f.itlP50Ms, 30.5);
  assert.equal(f.busy, 0.97);
  assert.equal(f.bigDecodeOfBound, 1.25);
  assert.ok(Number.isNaN(f.batch1StepMs));
  assert.equal(f.seconds, 10);
  // decode + mixed + prefill; decode_b128 is a subset of decode and not added again.
  assert.equal(f.boundMs, 8000);
  // 21000.5 tok/s for 10 s is 210005 tokens; over 8 s of bounds, 26250.625 tok/s.
  assert.ok(Math.abs(rooflineTokPerS(f) - 26250.625) < 1e-9);
  // The phased bounds sum apart from the roofline's (8600 ms), and decode_b128's own ratio.
  assert.equal(f.phasedMs, 8600);
  assert.equal(f.bigDecodeOfPhased, 1.18);
  assert.ok(Math.abs(rooflineTokPerS(f, f.phasedMs) - 210005 / 8.6) < 1e-9);
  // A log from before the phased bound (session 13's) still gives its roofline figures.
  const old = logFigures(ENGINE_LOG.replace(/ phased_ms=\S+ of_phased=\S+/g, ""), null);
  assert.equal(old.boundMs, 8000);
  assert.equal(old.bigDecodeOfBound, 1.25);
  assert.ok(Number.isNaN(old.phasedMs) && Number.isNaN(old.bigDecodeOfPhased));
  // Batch-1 decode steps only: the mixed step (prefill rows) and the batch-2 step are left out.
  const c1 = logFigures(SERVE_LOG(100, 6.3), {
    decodeRows: [1, 1, 2, 1],
    prefillRows: [0, 0, 0, 1],
    deviceMs: [6, 6.2, 9, 20],
  });
  assert.ok(Math.abs(c1.batch1StepMs - 6.1) < 1e-12);
  const lines = throughputTargets({
    newOffline: f,
    baseOffline: logFigures(SERVE_LOG(10000, 20), null),
    newC256: logFigures(SERVE_LOG(9000, 25), null),
    baseC256: logFigures(SERVE_LOG(6000, 24), null),
    newC1: c1,
    newOfflineFp8: logFigures(SERVE_LOG(27000, 20), null),
  });
  assert.deepEqual(lines, [
    "TARGET serve_offline_1000 value=21000.500 goal=20000 met",
    "TARGET serve_offline_vs_4ce50e3 value=2.100 goal=2 met",
    "TARGET serve_c256_vs_4ce50e3 value=1.500 goal=1.8 MISSED",
    "TARGET serve_c256_itl_p50_vs_4ce50e3 value=1.042 goal=1 MISSED",
    "TARGET serve_busy value=0.970 goal=0.95 met",
    "TARGET decode_roofline_b128 value=1.250 goal=1.3 met",
    "TARGET serve_c1_itl value=1.033 goal=1.05 met",
    "TARGET serve_offline_fp8 value=1.286 goal=1.3 MISSED",
  ]);
});

Deno.test("throughput targets: a figure the run did not show is MISSED, never met", () => {
  assert.equal(targetLine("x", NaN, 1, true), "TARGET x value=NaN goal=1 MISSED");
  assert.equal(targetLine("x", NaN, 1, false), "TARGET x value=NaN goal=1 MISSED");
  const empty = logFigures("", null);
  assert.ok(Object.values(empty).every(Number.isNaN));
});
