/**
 * The Llama operator set on the CPU backend, merged from its families.
 *
 * @module
 */

import type { LlamaOps } from "../ops.ts";
import { cpuAttentionOps } from "./attention.ts";
import { cpuElementwiseOps } from "./elementwise.ts";
import { cpuLinearOps } from "./linear.ts";
import { cpuSamplingOps } from "./sampling.ts";

/** Every CPU operator family as one LlamaOps. */
export function cpuOps(): LlamaOps {
  return { ...cpuElementwiseOps(), ...cpuLinearOps(), ...cpuAttentionOps(), ...cpuSamplingOps() };
}
