/**
 * tests/support/fp8_pair.ts, with a second CPU backend standing in for the GPU: both sides hold
 * the CPU's quantization of the same bits, code for code and scale for scale.
 */

import assert from "node:assert/strict";
import { CpuBackend } from "../backends/cpu.ts";
import { cpuOps } from "../ops/cpu/index.ts";
import type { Fp8Weight } from "../ops/linear_weight.ts";
import { quantizedFp8Pair } from "./support/fp8_pair.ts";
import { upload } from "./support/device.ts";
import { randomBf16Bits } from "./support/numeric.ts";

Deno.test("quantizedFp8Pair: the other backend gets the CPU's codes and scales, and the scratch asked for", () => {
  const cpu = new CpuBackend(), other = new CpuBackend();
  const n = 24, k = 64, bits = randomBf16Bits(n * k, 3, 0.5);
  const [c, g] = quantizedFp8Pair(cpu, other, bits, n, k, 1000);
  // An independent quantization of the same bits.
  const want: Fp8Weight = {
    format: "fp8-e4m3",
    data: cpu.alloc(n * k),
    scales: cpu.alloc(4 * n),
    scratch: null,
  };
  cpuOps().quantizeFp8(want, upload(cpu, bits), n, k, cpu.defaultStream);
  assert.deepEqual(c.data.host, want.data.host);
  assert.deepEqual(c.scales.host, want.scales.host);
  assert.deepEqual(g.data.host, c.data.host);
  assert.deepEqual(g.scales.host, c.scales.host);
  assert.notEqual(g.data, c.data, "a buffer of the other backend's own");
  assert.ok(c.data.host!.some((code) => code !== 0), "codes, not zeros");
  assert.equal(c.scratch, null);
  assert.equal(g.scratch?.bytes, 1000);
  assert.equal(quantizedFp8Pair(cpu, other, bits, n, k, 0)[1].scratch, null);
});
