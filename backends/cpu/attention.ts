/**
 * CPU attention ops in TypeScript. (Placeholder until the reference lands.)
 *
 * @module
 */

import type { AttentionOps } from "../ops.ts";

/** The attention ops on the CPU backend. */
export function cpuAttentionOps(): AttentionOps {
  throw new Error("the CPU attention ops are not written yet");
}
