/**
 * Fallbacks the backends and operators take on an expected failure — a library that refuses a
 * shape, a device that refuses a shared-memory size, no memory for an optional scratch buffer —
 * reported once each, so a slower path is never silent and never floods the log. Anything else
 * those paths meet is a real error and propagates.
 *
 * @module
 */

let sink: (line: string) => void = (line) => console.error(line);
const reported = new Set<string>();

/**
 * Reports the fallback `what` (e.g. "cuBLASLt refused a shape") with the reason, the first time
 * it happens in this process; later ones are counted silently.
 */
export function reportFallback(what: string, why: string): void {
  if (reported.has(what)) return;
  reported.add(what);
  sink(`[denali] fallback: ${what}: ${why}`);
}

/**
 * Sends fallback lines to `next` (an engine's log, or a test's capture) and forgets what was
 * reported, so each fallback is reported again once; returns the previous sink.
 */
export function setFallbackSink(next: (line: string) => void): (line: string) => void {
  const previous = sink;
  sink = next;
  reported.clear();
  return previous;
}
