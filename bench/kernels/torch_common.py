"""Timing and output shared by the PyTorch baselines (bench/kernels/*_torch.py), so each prints
the same BENCH line format as Denali's benchmarks (bench/kernels/measure.ts).

The scripts run as `python3 bench/kernels/<family>_torch.py`, which puts this folder on sys.path.
"""

import math
import statistics
import time

import torch


# The fill a dense sample is queued behind (median_us's `cover_bytes`), as in measure.ts.
COVER_BYTES = 512 * 2**20


def median_us(run, reps=30, warmup=5, device="cuda", interpolate=False, inner=1, cover_bytes=0):
    """Median time of run(rep) in microseconds: CUDA events on the GPU, perf_counter on the CPU.

    With an even `reps`, the upper of the two middle samples, or their mean when `interpolate`
    (statistics.median). On the GPU, `inner` and `cover_bytes` time as bench/kernels/measure.ts
    does: each sample is `inner` back-to-back runs between two events, queued behind a fill of
    `cover_bytes` that keeps the GPU busy while the host enqueues them, so there are no host
    launch gaps inside a sample and the GPU runs the calls as densely as Denali's are timed (same
    clocks, same power draw); the sample is their mean.
    """
    for i in range(warmup):
        run(i)
    times = []
    if device == "cuda":
        cover = torch.empty(cover_bytes, dtype=torch.uint8, device="cuda") if cover_bytes else None
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        for i in range(reps):
            if cover is not None:
                cover.fill_(i & 0xFF)
            start.record()
            for j in range(inner):
                run(i * inner + j)
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) * 1000.0 / inner)
        del cover
    else:
        for i in range(reps):
            t0 = time.perf_counter()
            run(i)
            times.append((time.perf_counter() - t0) * 1e6)
    if interpolate:
        return statistics.median(times)
    times.sort()
    return times[reps // 2]


def print_bench(op, shape, us, nbytes, flops=0):
    """Prints one `BENCH <op> <shape> time_us=... gbps=... [tflops=...]` line."""
    gbps = nbytes / (us * 1e3)
    tflops = f" tflops={flops / (us * 1e6):.1f}" if flops else ""
    print(f"BENCH {op} {shape} time_us={us:.2f} gbps={gbps:.0f}{tflops}", flush=True)


def copy_bandwidth_gbps(nbytes=2**30, device="cuda", interpolate=False):
    """Device-to-device copy bandwidth in GB/s (bytes read plus bytes written)."""
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    us = median_us(lambda _: dst.copy_(src), reps=10, warmup=2, device=device, interpolate=interpolate)
    return 2 * nbytes / (us * 1e3)


def print_copy_bandwidth(nbytes=2**30, device="cuda"):
    """Prints the `BENCH torch_copy_bandwidth gbps=...` line."""
    print(f"BENCH torch_copy_bandwidth gbps={copy_bandwidth_gbps(nbytes, device):.0f}", flush=True)


def set_count(nbytes, arena_bytes, max_sets):
    """Input sets of `nbytes` each that fill `arena_bytes`, at least 2 and at most `max_sets`."""
    return max(2, min(max_sets, math.ceil(arena_bytes / nbytes)))
