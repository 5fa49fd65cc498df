/**
 * The same FP8 weight on the CPU and a GPU, for the GPU tests that compare the two: quantized by
 * the CPU's `quantizeFp8` and uploaded code for code, so both sides multiply by the same values.
 *
 * @module
 */

import type { Backend } from "../../backends/backend.ts";
import type { CpuBackend } from "../../backends/cpu.ts";
import { cpuOps } from "../../ops/cpu/index.ts";
import type { Fp8Weight } from "../../ops/linear_weight.ts";
import { upload } from "./device.ts";

/**
 * An FP8 weight [n, k] quantized on `cpu` from the bf16 `bits`, and the same codes and scales on
 * `gpu`, there with a scratch of `scratchBytes` (0: none): [cpu's, gpu's].
 */
export function quantizedFp8Pair(
  cpu: CpuBackend,
  gpu: Backend,
  bits: Uint16Array,
  n: number,
  k: number,
  scratchBytes: number,
): [Fp8Weight, Fp8Weight] {
  const c: Fp8Weight = {
    format: "fp8-e4m3",
    data: cpu.alloc(n * k),
    scales: cpu.alloc(4 * n),
    scratch: null,
  };
  cpuOps().quantizeFp8(c, upload(cpu, bits), n, k, cpu.defaultStream);
  const g: Fp8Weight = {
    format: "fp8-e4m3",
    data: upload(gpu, c.data.host!),
    scales: upload(gpu, c.scales.host!),
    scratch: scratchBytes > 0 ? gpu.alloc(scratchBytes) : null,
  };
  return [c, g];
}
