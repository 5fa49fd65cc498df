/**
 * CPU sampling ops in TypeScript. (Placeholder until the reference lands.)
 *
 * @module
 */

import type { SamplingOps } from "../ops.ts";

/** The sampling ops on the CPU backend. */
export function cpuSamplingOps(): SamplingOps {
  throw new Error("the CPU sampling ops are not written yet");
}
