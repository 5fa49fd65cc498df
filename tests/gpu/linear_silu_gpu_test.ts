/**
 * `linearSiluMul` on a real NVIDIA GPU (`deno task test:gpu`, or DENALI_GPU_TESTS=1): the GEMVs
 * with SiLU-and-multiply in their epilogue, for bf16, FP8 and 4-bit gate/up weights of [2n, k]
 * and M ∈ {1, 3, 8, 9, 16}:
 * - bit for bit against the same GPU's `linear` into [M, 2n] followed by `siluMul` (2n rows make
 *   the 16-row GEMV's groups, so both sum every row in the same order; a gate row paired with the
 *   wrong up row, a lost scale or a misplaced column changes the bits);
 * - within relative L2 2e-2 of the CPU's `linear` + `siluMul` (an independent reference: the GPU
 *   sums in another order, and a bf16 rounding of the gate/up values can move the product by a
 *   few ulps);
 * - and that the call ran fused (true) where it should, and declined above 16 rows.
 * n = 1500 (not a multiple of 8 or 64) covers the last block's partial groups.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Backend, DeviceBuffer } from "../../backends/backend.ts";
import { packRows } from "../../backends/awq.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import { openCuda } from "../../backends/cuda.ts";
import { cpuOps } from "../../ops/cpu/index.ts";
import { loadGpuOps } from "../../ops/gpu/index.ts";
import type { AwqWeight, LinearWeight } from "../../ops/linear_weight.ts";
import type { ModelOps } from "../../ops/ops.ts";
import { readBf16, readInto, upload } from "../support/device.ts";
import { quantizedFp8Pair } from "../support/fp8_pair.ts";
import { GPU_TESTS_IGNORED } from "../support/gpu_linear.ts";
import { randomBf16Bits, relativeError, rng } from "../support/numeric.ts";

const cpu = new CpuBackend();
const ref = cpuOps();
const cs = cpu.defaultStream;
const N = 1500, K = 1024, GROUP = 128;
const ROWS = [1, 3, 8, 9, 16];

/** The same gate/up weight of [2N, K] on the CPU and the GPU, in `format`. */
function weights(gpu: Backend, ops: ModelOps, format: string, seed: number): LinearWeight[] {
  const rows = 2 * N;
  if (format === "awq") {
    const next = rng(seed);
    const codes = packRows(
      Uint8Array.from({ length: rows * K }, () => Math.floor(next(0, 16))),
      rows,
      K,
    );
    const zeros = Uint8Array.from({ length: rows * K / GROUP }, () => Math.floor(next(0, 16)));
    const scales = Float32Array.from({ length: rows * K / GROUP }, () => next(0.002, 0.03));
    return [cpu, gpu].map((b): AwqWeight => ({
      format: "awq-int4",
      codes: upload(b, codes),
      zeros: upload(b, zeros),
      scales: upload(b, scales),
      groupSize: GROUP,
      scratch: b === gpu ? gpu.alloc(ops.awqScratchBytes(rows, K)) : null,
    }));
  }
  const bf16 = randomBf16Bits(rows * K, seed, 1 / Math.sqrt(K));
  if (format === "bf16") return [upload(cpu, bf16), upload(gpu, bf16)];
  // FP8: quantized on the CPU, the same codes and scales uploaded.
  return quantizedFp8Pair(cpu, gpu, bf16, rows, K, ops.fp8ScratchBytes(rows, K));
}

for (const format of ["bf16", "fp8", "awq"]) {
  Deno.test({
    name:
      `gpu linearSiluMul (${format}): the fused GEMV equals linear + siluMul bit for bit, and the CPU's`,
    ignore: GPU_TESTS_IGNORED,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const gpu = openCuda();
      // The epilogue whatever its default (the fused kernels are what this file checks).
      const previous = Deno.env.get("DENALI_SILU_EPILOGUE");
      Deno.env.set("DENALI_SILU_EPILOGUE", "1");
      try {
        const ops = await loadGpuOps(gpu);
        const s = gpu.createStream();
        const [cw, gw] = weights(gpu, ops, format, 7);
        const maxM = 17;
        const xBits = randomBf16Bits(maxM * K, 11, 1);
        const gx = upload(gpu, xBits), cx = upload(cpu, xBits);
        const fused = gpu.alloc(2 * maxM * N), act = gpu.alloc(2 * maxM * N);
        const gateUp = gpu.alloc(2 * maxM * 2 * N);
        const cGateUp = cpu.alloc(2 * maxM * 2 * N), cAct = cpu.alloc(2 * maxM * N);
        for (const m of ROWS) {
          const what = `${format} m=${m}`;
          assert.equal(ops.linearSiluMul(fused, gx, gw, m, N, K, s), true, `${what}: fused`);
          ops.linear(gateUp, gx, gw, m, 2 * N, K, s);
          ops.siluMul(act, gateUp, m, N, s);
          s.synchronize();
          const got = readInto(gpu, fused, new Uint16Array(m * N));
          const want = readInto(gpu, act, new Uint16Array(m * N));
          const differ = got.findIndex((v, i) => v !== want[i]);
          assert.equal(differ, -1, `${what}: first differing element ${differ}`);
          ref.linear(cGateUp, cx, cw, m, 2 * N, K, cs);
          ref.siluMul(cAct, cGateUp, m, N, cs);
          const error = relativeError(readBf16(gpu, fused, m * N), readBf16(cpu, cAct, m * N));
          assert.ok(error <= 2e-2, `${what}: relative L2 ${error} against the CPU`);
        }
        // Above the GEMVs' rows it declines and writes nothing.
        const before = readInto(gpu, fused, new Uint16Array(maxM * N));
        assert.equal(ops.linearSiluMul(fused, gx, gw, maxM, N, K, s), false);
        s.synchronize();
        assert.deepEqual(readInto(gpu, fused, new Uint16Array(maxM * N)), before);
        for (const b of [gx, fused, act, gateUp] as DeviceBuffer[]) gpu.free(b);
      } finally {
        if (previous === undefined) Deno.env.delete("DENALI_SILU_EPILOGUE");
        else Deno.env.set("DENALI_SILU_EPILOGUE", previous);
        gpu.close();
      }
    },
  });
}
