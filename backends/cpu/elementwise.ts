/**
 * CPU elementwise ops in TypeScript. (Placeholder until the reference lands.)
 *
 * @module
 */

import type { ElementwiseOps } from "../ops.ts";

/** The elementwise ops on the CPU backend. */
export function cpuElementwiseOps(): ElementwiseOps {
  throw new Error("the CPU elementwise ops are not written yet");
}
