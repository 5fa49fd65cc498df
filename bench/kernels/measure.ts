/**
 * Shared GPU timing for the kernel benchmarks: device-event medians and the measured copy
 * bandwidth every memory-bound kernel is compared against, so all family benchmarks report in
 * one format (`BENCH <op> <shape> time_us=... gbps=... [tflops=...]`).
 *
 * @module
 */

import { encodeBf16 } from "../../backends/bf16.ts";
import type { Backend, DeviceBuffer, Stream } from "../../backends/backend.ts";
import { launcherWith, loadKernels } from "../../kernels/modules.ts";

/**
 * Median device time in microseconds of one `run` (which enqueues work on `stream`).
 *
 * Each sample is `inner` back-to-back runs between two events, queued behind a large memset.
 * The memset keeps the GPU busy while the host enqueues the runs, so the GPU then executes them
 * with no idle gaps: a short kernel's time is not inflated by host launch latency (a few µs per
 * launch), and L2 holds none of the inputs at the start. `run` gets a running index to rotate its
 * inputs by.
 */
export function medianUs(
  gpu: Backend,
  stream: Stream,
  run: (rep: number) => void,
  reps = 30,
  warmup = 5,
  inner = 10,
): number {
  for (let i = 0; i < warmup; i++) run(i);
  const start = gpu.createEvent();
  const stop = gpu.createEvent();
  const cover = gpu.alloc(COVER_BYTES);
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    gpu.memset(cover, i & 0xff, stream);
    start.record(stream);
    for (let j = 0; j < inner; j++) run(i * inner + j);
    stop.record(stream);
    stop.synchronize();
    times.push((stop.elapsedMsSince(start) * 1000) / inner);
  }
  gpu.free(cover);
  start.destroy();
  stop.destroy();
  times.sort((a, b) => a - b);
  return times[Math.floor(reps / 2)];
}

// About 0.2 ms of memset on an H100: longer than enqueuing a sample's runs on the host.
const COVER_BYTES = 512 * 2 ** 20;

/**
 * Device-to-device copy bandwidth in GB/s (bytes read plus bytes written), over a copy of
 * `bytes` (default 1 GiB) so caches don't flatter it.
 */
export function copyBandwidthGbps(gpu: Backend, stream: Stream, bytes = 2 ** 30): number {
  const src = gpu.alloc(bytes);
  const dst = gpu.alloc(bytes);
  gpu.memset(src, 1);
  const us = medianUs(gpu, stream, () => gpu.copyDevice(dst, src, stream), 10, 2, 2);
  gpu.free(src);
  gpu.free(dst);
  return (2 * bytes) / (us * 1e3);
}

/**
 * Measures the copy bandwidth (see copyBandwidthGbps), prints it as
 * `BENCH copy_bandwidth gbps=...` and returns it.
 */
export function printCopyBandwidth(gpu: Backend, stream: Stream, bytes = 2 ** 30): number {
  const gbps = copyBandwidthGbps(gpu, stream, bytes);
  console.log(`BENCH copy_bandwidth gbps=${gbps.toFixed(0)}`);
  return gbps;
}

/** How many copies of a `bytes`-sized working set fill `arenaBytes` (at least 2, at most `maxSets`). */
export function setCount(bytes: number, arenaBytes: number, maxSets: number): number {
  return Math.max(2, Math.min(maxSets, Math.ceil(arenaBytes / bytes)));
}

/**
 * Tracks the device buffers a benchmark allocates: `alloc` allocates and remembers one, `freeAll`
 * waits for `stream` and frees every buffer allocated since the last `freeAll`.
 */
export function benchBuffers(gpu: Backend, stream: Stream): {
  alloc(bytes: number): DeviceBuffer;
  freeAll(): void;
} {
  const allocated: DeviceBuffer[] = [];
  return {
    alloc(bytes) {
      const buffer = gpu.alloc(bytes);
      allocated.push(buffer);
      return buffer;
    },
    freeAll() {
      stream.synchronize();
      for (const buffer of allocated.splice(0)) gpu.free(buffer);
    },
  };
}

/** Prints one benchmark line in the shared format. */
export function printBench(
  op: string,
  shape: string,
  timeUs: number,
  bytes: number,
  flops = 0,
): void {
  const gbps = bytes / (timeUs * 1e3);
  const tflops = flops ? ` tflops=${(flops / (timeUs * 1e6)).toFixed(1)}` : "";
  console.log(`BENCH ${op} ${shape} time_us=${timeUs.toFixed(2)} gbps=${gbps.toFixed(0)}${tflops}`);
}

/**
 * 16-byte chunks a stream_read block reads, tried in turn (16, 32 and 64 KiB blocks: 4, 8 and 16
 * loads a thread); the fastest counts. On an H100 the best of these varies with the bytes
 * (bench/kernels/pdl_probe.cu).
 */
const READ_ONLY_BLOCK_CHUNKS = [1024, 2048, 4096];

/** Times a read-only kernel over a byte count; see readOnlyKernel. */
export interface ReadOnlyKernel {
  /**
   * Times one stream_read call over `bytes` of `sources[rep % sources.length]` (the median, for
   * the fastest of its block sizes), prints `BENCH read_only_same_size <shape> ...` (gbps counts
   * the bytes read once) and its fraction of `copyGbps`, and returns the µs.
   */
  print(shape: string, sources: readonly DeviceBuffer[], bytes: number, copyGbps: number): number;
}

/**
 * The read-only reference: the stream_read kernel (kernels/src/runtime_test.cu) only reads its
 * bytes, with every load issued before griddepcontrol.wait and launched programmatically where
 * the backend allows, as the GEMVs read weights, and is timed like the kernels under test
 * (medianUs, inputs rotated so L2 holds none), at several block sizes, keeping the fastest. It
 * shows what reading the bytes costs in that chain of back-to-back calls before any arithmetic;
 * it is a reference, not a proven ceiling (the GEMVs beat it by a few percent on small weights).
 */
export async function readOnlyKernel(gpu: Backend, stream: Stream): Promise<ReadOnlyKernel> {
  const kernels = await loadKernels(gpu, "runtime_test");
  const { launch } = launcherWith(gpu, kernels, "stream_read", { programmatic: true });
  const timeUs = (sources: readonly DeviceBuffer[], bytes: number): number => {
    const chunks = Math.floor(bytes / 16);
    const out = gpu.alloc(4 * Math.ceil(chunks / READ_ONLY_BLOCK_CHUNKS[0]));
    let best = Infinity;
    for (const perBlock of READ_ONLY_BLOCK_CHUNKS) {
      const blocks = Math.ceil(chunks / perBlock);
      const us = medianUs(gpu, stream, (rep) => {
        const src = sources[rep % sources.length];
        launch(blocks, 1, 1, 256, 1, 1, 0, stream, out, src, perBlock, chunks);
      });
      best = Math.min(best, us);
    }
    gpu.free(out);
    return best;
  };
  return {
    print(shape, sources, bytes, copyGbps) {
      const us = timeUs(sources, bytes);
      printBench("read_only_same_size", shape, us, bytes);
      console.log(
        `# read_only_same_size ${shape} of_copy=${(bytes / (us * 1e3) / copyGbps).toFixed(3)}`,
      );
      return us;
    },
  };
}

/**
 * Seeded shuffle of 0..n-1 (xorshift): scattered but the same every run, so KV block tables
 * built from it give every run the same layout.
 */
export function shuffled(n: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = i;
  let s = 0x9e3779b9;
  for (let i = n - 1; i > 0; i--) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    const j = (s >>> 0) % (i + 1);
    const t = out[i];
    out[i] = out[j];
    out[j] = t;
  }
  return out;
}

/**
 * `count` seeded values in [-0.5, 0.5) (xorshift) as bf16 bits, the same every run: bench
 * inputs whose values do not change a kernel's work.
 */
export function seededBf16(count: number, seed: number): Uint16Array {
  const values = new Float32Array(count);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < count; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    values[i] = (s >>> 0) / 2 ** 32 - 0.5;
  }
  return encodeBf16(values);
}
