/**
 * The checks of `prefetchWeight`, shared by the CPU (ops/cpu/prefetch.ts) and the GPU launcher
 * (ops/gpu/prefetch.ts), so both reject the same calls with the same messages.
 *
 * @module
 */

import { checkCount } from "./elementwise.ts";
import type { PrefetchWindow } from "../ops.ts";

const WINDOWS: readonly PrefetchWindow[] = ["attention", "elementwise"];

/** Throws unless `tokens` is a row count and `window` a {@link PrefetchWindow}. */
export function checkPrefetch(tokens: number, window: PrefetchWindow): void {
  checkCount("prefetchWeight", "tokens", tokens);
  if (!WINDOWS.includes(window)) {
    throw new RangeError(
      `prefetchWeight: window must be "attention" or "elementwise", got ${JSON.stringify(window)}`,
    );
  }
}
