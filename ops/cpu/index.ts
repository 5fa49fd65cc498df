/**
 * The operator set on the CPU backend, merged from its families.
 *
 * @module
 */

import { checkQkvRopeCache } from "../checks/elementwise.ts";
import type { ModelOps } from "../ops.ts";
import { cpuAttentionOps } from "./attention.ts";
import { cpuElementwiseOps } from "./elementwise.ts";
import { cpuAwqOps } from "./awq.ts";
import { cpuFp8Ops } from "./fp8.ts";
import { cpuLinearOps } from "./linear.ts";
import { cpuSamplingOps } from "./sampling.ts";

/** Every CPU operator family as one ModelOps. */
export function cpuOps(): ModelOps {
  const elementwise = cpuElementwiseOps(), attention = cpuAttentionOps();
  return {
    ...elementwise,
    ...cpuLinearOps(),
    ...cpuFp8Ops(),
    ...cpuAwqOps(),
    ...attention,
    ...cpuSamplingOps(),
    // The fused cache write is, by definition, kvWrite after the unfused op.
    qkvRope(a, stream) {
      const cache = a.cache ?? null;
      if (cache === null) return elementwise.qkvRope(a, stream);
      checkQkvRopeCache(a, cache);
      a.cache = null;
      try {
        elementwise.qkvRope(a, stream);
      } finally {
        a.cache = cache;
      }
      const { kCache, vCache, slots, shape } = cache;
      attention.kvWrite(kCache, vCache, a.k, a.v, slots, a.tokens, shape, stream);
    },
  };
}
