/**
 * The operator set on the CPU backend, merged from its families.
 *
 * @module
 */

import type { ModelOps } from "../ops.ts";
import { cpuAttentionOps } from "./attention.ts";
import { cpuElementwiseOps } from "./elementwise.ts";
import { cpuAwqOps } from "./awq.ts";
import { cpuFp8Ops } from "./fp8.ts";
import { cpuLinearOps } from "./linear.ts";
import { cpuSamplingOps } from "./sampling.ts";

/** Every CPU operator family as one ModelOps. */
export function cpuOps(): ModelOps {
  const attention = cpuAttentionOps();
  return {
    ...cpuElementwiseOps(attention.kvWrite),
    ...cpuLinearOps(),
    ...cpuFp8Ops(),
    ...cpuAwqOps(),
    ...attention,
    ...cpuSamplingOps(),
  };
}
