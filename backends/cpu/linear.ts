/**
 * CPU linear ops in TypeScript. (Placeholder until the reference lands.)
 *
 * @module
 */

import type { LinearOps } from "../ops.ts";

/** The linear ops on the CPU backend. */
export function cpuLinearOps(): LinearOps {
  throw new Error("the CPU linear ops are not written yet");
}
