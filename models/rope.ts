/**
 * RoPE inverse frequencies, computed once on the host as HF transformers does
 * (`_compute_default_rope_parameters` and `_compute_llama3_parameters` in modeling_rope_utils),
 * then uploaded as the f32 table the `rope` op reads.
 *
 * @module
 */

import type { Backend } from "../backends/backend.ts";
import type { RopeTable } from "../ops/ops.ts";

/** Llama 3.1 "llama3" frequency scaling, as in a config's `rope_scaling`. */
export interface Llama3RopeScaling {
  /** The scaling type; only "llama3" is supported. */
  readonly ropeType: "llama3";
  /** How much the low frequencies are stretched (8 for Llama 3.1). */
  readonly factor: number;
  /** Wavelengths above originalMaxPositionEmbeddings / lowFreqFactor are fully scaled. */
  readonly lowFreqFactor: number;
  /** Wavelengths below originalMaxPositionEmbeddings / highFreqFactor are left alone. */
  readonly highFreqFactor: number;
  /** The context length the model was pre-trained at (8192 for Llama 3.1). */
  readonly originalMaxPositionEmbeddings: number;
}

function positive(name: string, value: number): void {
  if (typeof value !== "number" || !(value > 0) || value === Infinity) {
    throw new RangeError(
      `ropeInverseFrequencies: ${name} must be a finite number > 0, got ${value}`,
    );
  }
}

/**
 * invFreq[i] = 1 / theta^(2i / headDim) for i < headDim / 2, with optional llama3 scaling:
 * wavelengths (2π / f) shorter than original / highFreqFactor are kept, longer than
 * original / lowFreqFactor are divided by `factor`, and those between are blended with
 * s = (original / wavelength − low) / (high − low): f' = (1 − s) · f / factor + s · f.
 * Computed in float64 and rounded once to f32 (HF computes in fp32; the two agree to ~1e-7).
 */
export function ropeInverseFrequencies(
  headDim: number,
  theta: number,
  scaling?: Llama3RopeScaling,
): Float32Array {
  if (!Number.isInteger(headDim) || headDim < 2 || headDim % 2 !== 0) {
    throw new RangeError(
      `ropeInverseFrequencies: headDim must be an even integer >= 2, got ${headDim}`,
    );
  }
  positive("theta", theta);
  if (scaling) {
    if (scaling.ropeType !== "llama3") {
      throw new RangeError(
        `ropeInverseFrequencies: unsupported rope scaling type '${scaling.ropeType}'`,
      );
    }
    positive("factor", scaling.factor);
    positive("lowFreqFactor", scaling.lowFreqFactor);
    positive("highFreqFactor", scaling.highFreqFactor);
    positive("originalMaxPositionEmbeddings", scaling.originalMaxPositionEmbeddings);
    if (!(scaling.highFreqFactor > scaling.lowFreqFactor)) {
      throw new RangeError(
        `ropeInverseFrequencies: highFreqFactor (${scaling.highFreqFactor}) must exceed ` +
          `lowFreqFactor (${scaling.lowFreqFactor})`,
      );
    }
  }
  const half = headDim / 2;
  const out = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    let f = 1 / theta ** ((2 * i) / headDim);
    if (scaling) {
      const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings } = scaling;
      const wavelength = (2 * Math.PI) / f;
      if (wavelength > originalMaxPositionEmbeddings / lowFreqFactor) {
        f /= factor;
      } else if (!(wavelength < originalMaxPositionEmbeddings / highFreqFactor)) {
        const s = (originalMaxPositionEmbeddings / wavelength - lowFreqFactor) /
          (highFreqFactor - lowFreqFactor);
        f = ((1 - s) * f) / factor + s * f;
      }
    }
    out[i] = f;
  }
  return out;
}

/**
 * Uploads `invFreq` (from ropeInverseFrequencies) to the device as the `rope` op's table.
 * The caller owns the buffer: release it with `backend.free(table.invFreq)`.
 */
export function createRopeTable(backend: Backend, invFreq: Float32Array): RopeTable {
  if (invFreq.length === 0) throw new RangeError("createRopeTable: invFreq is empty");
  const buffer = backend.alloc(invFreq.byteLength);
  backend.copyToDevice(buffer, invFreq);
  return { invFreq: buffer, headDim: 2 * invFreq.length };
}
