"""torch.matmul(x, w.T) on the shapes of bench/kernels/linear_bench.ts, in the same BENCH format.

Usage (on the GPU machine): python3 bench/kernels/linear_torch.py

Prints `BENCH torch_copy_bandwidth gbps=...`, then `BENCH torch_linear_gemv ...` for M = 1, 8, 16
and `BENCH torch_linear_gemm ...` for M = 256, 1024, 4096 on each weight shape N×K; bytes are
x + W + out once each. Weights rotate over enough copies (>= 256 MiB together) that L2 never
holds the next call's weight; inputs are random bf16 (x uniform in ±1, W in ±1/sqrt(K)).
Times are medians of CUDA-event timings after warm-up: `torch_linear_*` lines time one call
per event pair (host launch latency included); `torch_linear_*_dense` lines time 10 back-to-back
calls behind a 512 MiB fill, exactly as bench/kernels/measure.ts times Denali's, so the GPU runs
both at the same density, clocks and power; ratios to Denali use the dense lines.
"""

import math

import torch

import torch_common
from torch_common import print_bench

SHAPES = [(4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336), (128256, 4096)]
GEMV_MS = [1, 8, 16]
GEMM_MS = [256, 1024, 4096]
ROTATION_BYTES = 256 * 2**20


def main():
    torch.manual_seed(0)
    print(f"# device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    copy = torch_common.copy_bandwidth_gbps(interpolate=True)
    print(f"BENCH torch_copy_bandwidth gbps={copy:.0f}", flush=True)
    max_m = GEMM_MS[-1]
    for n, k in SHAPES:
        w_bytes = 2 * n * k
        copies = max(1, math.ceil(ROTATION_BYTES / w_bytes))
        weights = [
            ((torch.rand(n, k, device="cuda") * 2 - 1) / math.sqrt(k)).to(torch.bfloat16)
            for _ in range(copies)
        ]
        x_all = (torch.rand(max_m, k, device="cuda") * 2 - 1).to(torch.bfloat16)
        for m in GEMV_MS + GEMM_MS:
            x = x_all[:m]
            shape = f"m{m}_n{n}_k{k}"
            nbytes = 2 * (m * k + n * k + m * n)
            flops = 2 * m * n * k
            reps = 10 if flops > 1e12 else 30
            us = torch_common.median_us(
                lambda i: torch.matmul(x, weights[i % copies].T), reps=reps, interpolate=True
            )
            op = "torch_linear_gemv" if m <= 16 else "torch_linear_gemm"
            print_bench(op, shape, us, nbytes, flops)
            # The same calls timed as Denali's are (measure.ts): the ratios use this line.
            dense = torch_common.median_us(
                lambda i: torch.matmul(x, weights[i % copies].T),
                reps=reps,
                inner=10,
                cover_bytes=torch_common.COVER_BYTES,
            )
            print_bench(op + "_dense", shape, dense, nbytes, flops)
            if m <= 16:
                print(f"# {op} {shape} of_copy={nbytes / (us * 1e3) / copy:.3f}")
        del weights, x_all
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
