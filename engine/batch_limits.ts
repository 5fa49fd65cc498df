/**
 * How many sequences one step runs and how many tokens it computes, when the caller does not
 * say: vLLM's V1 engine defaults on a large GPU (1024 sequences, an 8192-token chunked-prefill
 * budget), which Denali takes on a GPU with at least 64 GiB, and the small defaults (256, 2048)
 * elsewhere (smaller GPUs, where activations for 8192 tokens would crowd the KV cache, and the
 * CPU, where a batch of 1024 helps nothing). On an H100 the large limits served the offline
 * workload 13.5% faster than 256/2048 (bench/results/2026-12-05-s5-throughput-profile-h100.md).
 *
 * @module
 */

/** Batch limits of one step. */
export interface BatchLimits {
  /** Most sequences in one step. */
  readonly maxRunning: number;
  /** Most tokens in one step; >= maxRunning. */
  readonly maxBatchedTokens: number;
}

/** Devices with at least this much memory get the large defaults. */
export const LARGE_DEVICE_BYTES = 64 * 2 ** 30;

/** The limits on a large GPU. */
export const LARGE_DEVICE_LIMITS: BatchLimits = { maxRunning: 1024, maxBatchedTokens: 8192 };

/** The limits elsewhere. */
export const SMALL_DEVICE_LIMITS: BatchLimits = { maxRunning: 256, maxBatchedTokens: 2048 };

/**
 * The limits for the caller's choices (either may be undefined) on a device of `kind` with
 * `totalMemory` bytes. A given value is kept; a missing one takes the device's default, kept
 * consistent with the given one (maxBatchedTokens >= maxRunning).
 */
export function batchLimits(
  given: { readonly maxRunning?: number; readonly maxBatchedTokens?: number },
  device: { readonly kind: string; readonly totalMemory: number },
): BatchLimits {
  const large = device.kind !== "cpu" && device.totalMemory >= LARGE_DEVICE_BYTES;
  const defaults = large ? LARGE_DEVICE_LIMITS : SMALL_DEVICE_LIMITS;
  const maxRunning = given.maxRunning ??
    Math.min(defaults.maxRunning, given.maxBatchedTokens ?? Infinity);
  return {
    maxRunning,
    maxBatchedTokens: given.maxBatchedTokens ?? Math.max(defaults.maxBatchedTokens, maxRunning),
  };
}
