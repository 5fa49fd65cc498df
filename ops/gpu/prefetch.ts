/**
 * `prefetchWeight` on a GPU: `l2_prefetch` (kernels/src/prefetch.cu) asks L2 for the first bytes
 * of the weight the next GEMV reads, while the kernels before that GEMV (attention, the
 * RMSNorms, SiLU) leave the memory idle. At batch 1 on an H100 the step took about 0.9 ms more
 * than its weight bytes at the read-only kernel's bandwidth (1.19× in
 * bench/results/2026-12-07-s19-pending-h100.md), and the GEMVs of 4096-6144 rows, which start
 * cold after such kernels, ran at 66-73% of it against 88-95% for the long ones. Untimed so far,
 * so off unless asked for:
 * - `mode` (DENALI_L2_PREFETCH): `off` (or 0; the default), `attention` (only the weight read
 *   after attention: the o projection's), or `all` (also those read after the elementwise
 *   kernels: gate/up, down, the next layer's q/k/v, the lm head);
 * - `maxBytes` (DENALI_L2_PREFETCH_MB, in MiB, 1 to 1024; default 24, half an H100's or H200's
 *   50 MB L2): how much of a weight's start a call asks for;
 * - `evict` (DENALI_L2_PREFETCH_EVICT): `last` (the default; the lines come in at evict_last
 *   priority, so the GEMV streaming by does not push them out first) or `normal`.
 *
 * Only steps of up to PREFETCH_MAX_TOKENS rows (the GEMVs' own limit) prefetch: past them the
 * GEMMs and attention keep the memory busy. Only CUDA devices of compute capability 9.0 or more
 * (the bulk prefetch instruction) with programmatic launch (DENALI_PDL unset or 1) take it: a
 * plainly launched prefetch would cost a kernel boundary for nothing in return.
 *
 * @module
 */

import type { Backend, DeviceBuffer } from "../../backends/backend.ts";
import { launcherWith, loadKernels, programmaticWanted } from "../../kernels/modules.ts";
import { checkPrefetch } from "../checks/prefetch.ts";
import { isAwqWeight, isFp8Weight, type LinearWeight } from "../linear_weight.ts";
import type { PrefetchOps } from "../ops.ts";
import { choiceWanted, tunableWanted } from "./knobs.ts";

/** Which prefetches run (see the module's comment). */
export type L2PrefetchMode = "off" | "attention" | "all";

/** The L2 priority of prefetched lines. */
export type L2PrefetchEvict = "last" | "normal";

/** How the prefetch op is set up; each field defaults to its environment variable's value. */
export interface PrefetchOptions {
  /** Which windows prefetch (DENALI_L2_PREFETCH; default `off`). */
  readonly mode?: L2PrefetchMode;
  /** Bytes of a weight's start a call asks for (DENALI_L2_PREFETCH_MB · 2^20; default 24 MiB). */
  readonly maxBytes?: number;
  /** The prefetched lines' L2 priority (DENALI_L2_PREFETCH_EVICT; default `last`). */
  readonly evict?: L2PrefetchEvict;
  /** Whether kernels launch programmatically (DENALI_PDL; default yes); without, no prefetch. */
  readonly programmatic?: boolean;
}

/** The most rows a prefetching step has: the GEMVs' limit (ops/gpu/linear.ts). */
export const PREFETCH_MAX_TOKENS = 16;
/** Threads of an l2_prefetch block, and bytes one of them asks for at a time (prefetch.cu). */
const THREADS = 32, CHUNK = 16384;

/** The prefetch windows asked for: `requested`, else DENALI_L2_PREFETCH, else `off`. */
export function l2PrefetchModeWanted(requested?: L2PrefetchMode): L2PrefetchMode {
  return choiceWanted<L2PrefetchMode>(
    requested,
    "DENALI_L2_PREFETCH",
    { 0: "off", off: "off", attention: "attention", all: "all" },
    "off",
    (value) =>
      `DENALI_L2_PREFETCH=${value} is not a prefetch mode; use off (or 0), attention or all`,
  );
}

/** Bytes a prefetch asks for: `requested`, else DENALI_L2_PREFETCH_MB MiB, else 24 MiB. */
export function l2PrefetchBytesWanted(requested?: number): number {
  const mib = tunableWanted(
    requested === undefined ? undefined : requested / 2 ** 20,
    "maxBytes",
    "DENALI_L2_PREFETCH_MB",
    24,
    (value) => Number.isInteger(value) && value >= 1 && value <= 1024,
    "a whole number of MiB from 1 to 1024 (the bytes of a weight the L2 prefetch asks for; " +
      "default 24)",
  );
  return mib * 2 ** 20;
}

/** The prefetched lines' priority: `requested`, else DENALI_L2_PREFETCH_EVICT, else `last`. */
export function l2PrefetchEvictWanted(requested?: L2PrefetchEvict): L2PrefetchEvict {
  return choiceWanted<L2PrefetchEvict>(
    requested,
    "DENALI_L2_PREFETCH_EVICT",
    { last: "last", normal: "normal" },
    "last",
    (value) => `DENALI_L2_PREFETCH_EVICT=${value} is not an L2 priority; use last or normal`,
  );
}

/** The buffer a weight's bulk lives in: bf16 values, FP8 codes or 4-bit codes. */
function weightBytes(weight: LinearWeight): DeviceBuffer {
  return isFp8Weight(weight) ? weight.data : isAwqWeight(weight) ? weight.codes : weight;
}

/** The GPU's prefetch op: `l2_prefetch` where the device and the options allow, else a no-op. */
export async function loadPrefetchOps(
  backend: Backend,
  options: PrefetchOptions = {},
): Promise<PrefetchOps> {
  const mode = l2PrefetchModeWanted(options.mode);
  const maxBytes = l2PrefetchBytesWanted(options.maxBytes);
  const evictLast = l2PrefetchEvictWanted(options.evict) === "last" ? 1 : 0;
  const declined: PrefetchOps = {
    prefetchWeight(_weight, tokens, window) {
      checkPrefetch(tokens, window);
      return false;
    },
  };
  const able = backend.kind === "cuda" && backend.info.computeCapability[0] >= 9 &&
    programmaticWanted(options.programmatic);
  if (mode === "off" || !able) return declined;
  const kernels = await loadKernels(backend, "prefetch");
  const prefetch = launcherWith(backend, kernels, "l2_prefetch", { programmatic: true });
  // A launcher that falls back to plain launches (a driver without cuLaunchKernelEx) would only
  // add a kernel boundary.
  if (!prefetch.programmatic) return declined;
  const sms = Math.max(1, backend.info.multiprocessors);
  return {
    prefetchWeight(weight, tokens, window, stream) {
      checkPrefetch(tokens, window);
      if (tokens > PREFETCH_MAX_TOKENS || (mode === "attention" && window !== "attention")) {
        return false;
      }
      const data = weightBytes(weight);
      // `|` and `&` read the low bits through ToInt32, exact for any address below 2^53.
      if ((data.ptr & 15) !== 0) return false;
      const bytes = Math.floor(Math.min(data.bytes, maxBytes) / 16) * 16;
      if (bytes === 0) return false;
      const perBlock = THREADS * CHUNK;
      const blocks = Math.min(sms, Math.ceil(bytes / perBlock));
      prefetch.launch(blocks, 1, 1, THREADS, 1, 1, 0, stream, data.ptr, bytes, evictLast);
      return true;
    },
  };
}
