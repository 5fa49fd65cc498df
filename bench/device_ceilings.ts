/**
 * The two ceilings the roofline bound (engine/roofline.ts) divides by, measured on the device in
 * the same process as the run they judge: the bandwidth a read-only kernel reaches over 1 GiB
 * (bench/kernels/measure.ts `readOnlyKernel`), and the rate the device's linear op reaches on a
 * large bf16 GEMM of a prefill's shape (4096 tokens through Llama-3-8B's gate/up projection).
 *
 * @module
 */

import { loadOps } from "../ops/load.ts";
import type { Backend, Stream } from "../backends/backend.ts";
import type { DeviceCeilings } from "../engine/roofline.ts";
import { medianUs, printBench, readOnlyKernel } from "./kernels/measure.ts";

/**
 * What the read-only kernel reaches over 1 GiB on `backend` (a GPU), GB/s, printing its `BENCH`
 * line: the bandwidth a step that only reads its bytes could reach.
 */
export async function measureReadGbps(backend: Backend, stream: Stream): Promise<number> {
  const bytes = 2 ** 30;
  const sources = [backend.alloc(bytes), backend.alloc(bytes)];
  try {
    for (const s of sources) backend.memset(s, 1, stream);
    const reader = await readOnlyKernel(backend, stream);
    const us = reader.print("bytes=1GiB", sources, bytes, NaN);
    return bytes / (us * 1e3);
  } finally {
    stream.synchronize();
    for (const s of sources) backend.free(s);
  }
}

/** Measures both ceilings on `backend` (a GPU), printing the `BENCH` lines of each. */
export async function measureCeilings(backend: Backend, stream: Stream): Promise<DeviceCeilings> {
  const readGbps = await measureReadGbps(backend, stream);

  const ops = await loadOps(backend);
  const m = 4096, n = 28672, k = 4096;
  const a = backend.alloc(m * k * 2), w = backend.alloc(n * k * 2), c = backend.alloc(m * n * 2);
  let peakTflops: number;
  try {
    ops.fillRandom(a, m * k, 1, 0.05, stream);
    ops.fillRandom(w, n * k, 2, 0.05, stream);
    ops.prepareLinear([{ m, n, k }], stream);
    const us = medianUs(backend, stream, () => ops.linear(c, a, w, m, n, k, stream), 10, 3, 3);
    peakTflops = (2 * m * n * k) / (us * 1e6);
    printBench("gemm_peak", `m${m}_n${n}_k${k}`, us, (m * k + n * k + m * n) * 2, 2 * m * n * k);
  } finally {
    stream.synchronize();
    for (const b of [a, w, c]) backend.free(b);
  }
  return { readGbps, peakTflops };
}
