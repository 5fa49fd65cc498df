/**
 * A linear layer's weight as `linear` takes it: a bf16 [N, K] buffer, or FP8 E4M3 codes with
 * one f32 scale per output row (W8A16: the activations stay bf16). `linear` dispatches on the
 * form, so a model's forward pass is the same code for both.
 *
 * @module
 */

import type { DeviceBuffer } from "../backends/backend.ts";

/**
 * An FP8 (E4M3) weight: W[n, k] = scales[n] · e4m3(data[n, k]). Per-tensor checkpoints are
 * loaded with the one scale repeated per row, so a fused weight (q, k and v stacked) keeps each
 * part's own scale.
 */
export interface Fp8Weight {
  /** Marks the form. */
  readonly format: "fp8-e4m3";
  /** u8 [n, k]: E4M3 codes, row-major. */
  readonly data: DeviceBuffer;
  /** f32 [n]: each output row's scale. */
  readonly scales: DeviceBuffer;
  /**
   * bf16 workspace of at least `fp8ScratchBytes(n, k)` bytes, where calls with more rows than a
   * GEMV takes dequantize the weight before running the bf16 GEMM; null where the backend needs
   * none (the CPU). One buffer is shared by all of a model's FP8 weights, so calls that use it
   * must be ordered on one stream.
   */
  readonly scratch: DeviceBuffer | null;
}

/**
 * A 4-bit group-quantized weight (W4A16, from AWQ or GPTQ checkpoints; backends/awq.ts has the
 * layout): W[n, k] = (q[n, k] - zeros[n, k / groupSize]) · scales[n, k / groupSize].
 */
export interface AwqWeight {
  /** Marks the form. */
  readonly format: "awq-int4";
  /**
   * u32 [n, k / 8]: the 4-bit codes, row-major; word j of a row holds k = 8j .. 8j + 7, k 8j + c
   * in nibble CODE_NIBBLE[c] (backends/awq.ts: k 8j + 2i in nibble i, 8j + 2i + 1 in nibble i + 4).
   */
  readonly codes: DeviceBuffer;
  /** u8 [n, k / groupSize]: each group's zero point (0..15). */
  readonly zeros: DeviceBuffer;
  /** f32 [n, k / groupSize]: each group's scale. */
  readonly scales: DeviceBuffer;
  /** Input columns per group: 64 or 128. */
  readonly groupSize: number;
  /**
   * bf16 workspace of at least `awqScratchBytes(n, k)` bytes, where calls with more rows than a
   * GEMV takes dequantize the weight before running the bf16 GEMM; null where the backend needs
   * none (the CPU). Shared by all of a model's quantized weights, as an FP8 weight's scratch.
   */
  readonly scratch: DeviceBuffer | null;
}

/** The weight of a `linear` call. */
export type LinearWeight = DeviceBuffer | Fp8Weight | AwqWeight;

/** Whether `weight` is a 4-bit {@link AwqWeight}. */
export function isAwqWeight(weight: LinearWeight): weight is AwqWeight {
  return (weight as AwqWeight).format === "awq-int4";
}

/** Whether `weight` is an FP8 weight (else a bf16 buffer). */
export function isFp8Weight(weight: LinearWeight): weight is Fp8Weight {
  return (weight as Fp8Weight).format === "fp8-e4m3";
}

/**
 * Rows [row, row + rows) of a [_, cols] weight, in the same form: a view, no copy (the q, k and
 * v parts of a fused projection).
 */
export function weightRows(
  weight: LinearWeight,
  row: number,
  rows: number,
  cols: number,
): LinearWeight {
  if (isAwqWeight(weight)) {
    const groups = cols / weight.groupSize;
    return {
      ...weight,
      codes: weight.codes.slice(row * cols / 2, rows * cols / 2),
      zeros: weight.zeros.slice(row * groups, rows * groups),
      scales: weight.scales.slice(row * groups * 4, rows * groups * 4),
    };
  }
  if (!isFp8Weight(weight)) return weight.slice(row * cols * 2, rows * cols * 2);
  return {
    format: weight.format,
    data: weight.data.slice(row * cols, rows * cols),
    scales: weight.scales.slice(row * 4, rows * 4),
    scratch: weight.scratch,
  };
}
