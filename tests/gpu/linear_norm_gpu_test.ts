/**
 * `linearRmsNorm` on a real NVIDIA GPU (`deno task test:gpu`, or DENALI_GPU_TESTS=1): the GEMVs
 * with the pre-norm step in their prologue, bf16 and FP8 weights, for M ∈ {1, 3, 8}, with and
 * without a residual, on Llama-3-8B's q/k/v product (6144 × 4096, 16-row groups) and a narrow one
 * (1000 × 1024, 8-row groups, a partial last group):
 * - the residual's sum (bf16(residual + x)) lands in residualOut bit for bit as the same GPU's
 *   `rmsNorm` leaves it in place, every chunk written by some block, and the residual itself is
 *   left as it was;
 * - the product within relative L2 1e-2 of the same GPU's `rmsNorm` + `linear` (the sum of
 *   squares is added in another order, which can move a normalised element by one bf16 ulp) and
 *   within 2e-2 of the CPU's (an independent reference);
 * - and that the call ran fused (true), and declines above 8 rows, writing nothing.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Backend, DeviceBuffer } from "../../backends/backend.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import { openCuda } from "../../backends/cuda.ts";
import { cpuOps } from "../../ops/cpu/index.ts";
import { loadGpuOps } from "../../ops/gpu/index.ts";
import { readBf16, readInto, upload } from "../support/device.ts";
import { withEnvAsync } from "../support/env.ts";
import { quantizedFp8Pair } from "../support/fp8_pair.ts";
import { GPU_TESTS_IGNORED } from "../support/gpu_linear.ts";
import { randomBf16Bits, relativeError } from "../support/numeric.ts";

const cpu = new CpuBackend();
const ref = cpuOps();
const cs = cpu.defaultStream;
const EPS = 1e-5;
const ROWS = [1, 3, 8];

function put(backend: Backend, buffer: DeviceBuffer, bits: Uint16Array): void {
  backend.copyToDevice(buffer, new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength));
}

/**
 * The same [n, k] weight on the CPU and the GPU: bf16, or FP8 codes and scales quantized on the
 * CPU and uploaded (the GEMV needs no scratch).
 */
function weights(gpu: Backend, format: string, bits: Uint16Array, n: number, k: number) {
  if (format === "bf16") return [upload(cpu, bits), upload(gpu, bits)];
  return quantizedFp8Pair(cpu, gpu, bits, n, k, 0);
}

const CASES = [
  { format: "bf16", n: 6144, k: 4096 },
  { format: "bf16", n: 1000, k: 1024 },
  { format: "fp8", n: 6144, k: 4096 },
  { format: "fp8", n: 1000, k: 1024 },
];

for (const { format, n, k } of CASES) {
  Deno.test({
    name:
      `gpu linearRmsNorm (${format}, ${n}x${k}): the fused GEMV against rmsNorm + linear and the CPU`,
    ignore: GPU_TESTS_IGNORED,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const gpu = openCuda();
      try {
        // The prologue whatever its default (the fused kernels are what this file checks).
        await withEnvAsync({ DENALI_NORM_GEMV: "1" }, async () => {
          const ops = await loadGpuOps(gpu);
          const s = gpu.createStream();
          const maxM = 9;
          const wBits = randomBf16Bits(n * k, 3, 1 / Math.sqrt(k));
          const xBits = randomBf16Bits(maxM * k, 5, 2);
          const rBits = randomBf16Bits(maxM * k, 7, 4);
          const gBits = randomBf16Bits(k, 9, 1.5);
          const [cw, gw] = weights(gpu, format, wBits, n, k);
          const [gx, gGamma] = [upload(gpu, xBits), upload(gpu, gBits)];
          const [cx, cGamma] = [upload(cpu, xBits), upload(cpu, gBits)];
          const fusedR = gpu.alloc(2 * maxM * k), plainR = gpu.alloc(2 * maxM * k);
          const sumOut = gpu.alloc(2 * maxM * k);
          // A pattern no sum of these inputs makes (a NaN), so a chunk no block wrote shows.
          const unwritten = new Uint16Array(maxM * k).fill(0x7fc1);
          const fused = gpu.alloc(2 * maxM * n), plain = gpu.alloc(2 * maxM * n);
          const normed = gpu.alloc(2 * maxM * k);
          const cR = cpu.alloc(2 * maxM * k), cNormed = cpu.alloc(2 * maxM * k);
          const cOut = cpu.alloc(2 * maxM * n);
          for (const m of ROWS) {
            for (const withResidual of [true, false]) {
              // Twice: a second launch of the same kernel must give the same again.
              for (let call = 0; call < 2; call++) {
                const what = `m=${m}${withResidual ? " with a residual" : ""}, call ${call}`;
                put(gpu, fusedR, rBits);
                put(gpu, plainR, rBits);
                put(gpu, sumOut, unwritten);
                const sum = withResidual ? fusedR : null, to = withResidual ? sumOut : null;
                assert.equal(
                  ops.linearRmsNorm(fused, gx, sum, to, gGamma, gw, m, n, k, EPS, s),
                  true,
                  `${what}: fused`,
                );
                ops.rmsNorm(normed, gx, gGamma, withResidual ? plainR : null, m, k, EPS, s);
                ops.linear(plain, normed, gw, m, n, k, s);
                s.synchronize();
                const kept = readInto(gpu, fusedR, new Uint16Array(m * k));
                assert.deepEqual(kept, rBits.subarray(0, m * k), `${what}: the residual is kept`);
                if (withResidual) {
                  const gotR = readInto(gpu, sumOut, new Uint16Array(m * k));
                  const wantR = readInto(gpu, plainR, new Uint16Array(m * k));
                  const differ = gotR.findIndex((v, i) => v !== wantR[i]);
                  assert.equal(differ, -1, `${what}: the sum, first differing element ${differ}`);
                }
                const got = readBf16(gpu, fused, m * n);
                const gpuError = relativeError(got, readBf16(gpu, plain, m * n));
                assert.ok(gpuError <= 1e-2, `${what}: relative L2 ${gpuError} against the GPU's`);
                put(cpu, cR, rBits);
                ref.rmsNorm(cNormed, cx, cGamma, withResidual ? cR : null, m, k, EPS, cs);
                ref.linear(cOut, cNormed, cw, m, n, k, cs);
                const cpuError = relativeError(got, readBf16(cpu, cOut, m * n));
                assert.ok(cpuError <= 2e-2, `${what}: relative L2 ${cpuError} against the CPU`);
              }
            }
          }
          // Above 8 rows it declines and writes nothing.
          const before = readInto(gpu, fused, new Uint16Array(maxM * n));
          assert.equal(
            ops.linearRmsNorm(fused, gx, fusedR, sumOut, gGamma, gw, maxM, n, k, EPS, s),
            false,
          );
          s.synchronize();
          assert.deepEqual(readInto(gpu, fused, new Uint16Array(maxM * n)), before);
          for (const b of [gx, gGamma, fusedR, plainR, sumOut, fused, plain, normed]) gpu.free(b);
        });
      } finally {
        gpu.close();
      }
    },
  });
}
