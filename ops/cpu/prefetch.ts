/**
 * `prefetchWeight` on the CPU: there is no separate cache to fill, so it checks the call and
 * does nothing (false), and the forward pass that asks for it computes the same as without.
 *
 * @module
 */

import { checkPrefetch } from "../checks/prefetch.ts";
import type { PrefetchOps } from "../ops.ts";

/** The CPU's prefetch op: checked, never run. */
export function cpuPrefetchOps(): PrefetchOps {
  return {
    prefetchWeight(_weight, tokens, window) {
      checkPrefetch(tokens, window);
      return false;
    },
  };
}
