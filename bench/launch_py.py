#!/usr/bin/env python3
"""Python baselines for the kernel-launch benchmark: Triton kernel launch, PyTorch eager op and,
where CuPy is installed, a CuPy RawKernel launch (the CuPy-style run-time compiled kernel).

    python3 bench/launch_py.py

Same method as bench/launch_c.c: warm-up, then R rounds of B calls on one non-default stream;
only the B host calls are timed, synchronization happens outside the timed region. Output:
    RESULT <name> mean_ns=<total ns / (R*B)> median_ns=<median over rounds of round ns / B>
"""
import statistics
import time

import torch
import triton
import triton.language as tl

WARMUP = 2000
R = 200
B = 200


@triton.jit
def args8(a, b, c, d, n, m, x, y, BLOCK: tl.constexpr):
    # Mirrors args8 in kernels/src/runtime_test.cu: 8 runtime args, no work (n >= 0 at runtime),
    # but every arg is used so none is dropped from the launch signature.
    if n < 0:
        offs = tl.arange(0, BLOCK)
        v = tl.load(b + offs) + tl.load(c + offs) * tl.load(d + offs) + x * y + m
        tl.store(a + offs, v)


def bench(name, one_round, sync=torch.cuda.synchronize):
    """one_round() issues exactly B calls; passing the whole loop keeps per-call wrapper cost out."""
    for _ in range(WARMUP // B):
        one_round()
    sync()
    per_round = []
    total = 0
    for _ in range(R):
        t0 = time.perf_counter_ns()
        one_round()
        dt = time.perf_counter_ns() - t0
        sync()
        total += dt
        per_round.append(dt / B)
    mean = total / (R * B)
    print(f"RESULT {name} mean_ns={mean:.1f} median_ns={statistics.median(per_round):.1f}", flush=True)


def main():
    print(f"torch {torch.__version__}, triton {triton.__version__}, "
          f"cuda {torch.version.cuda}, gpu {torch.cuda.get_device_name(0)}", flush=True)
    dev = torch.device("cuda")
    a, b, c, d = (torch.zeros(32, device=dev, dtype=torch.float32) for _ in range(4))
    n, m, x, y = 32, 7, 1.5, 2.5
    grid = (1,)

    def triton_round():
        for _ in range(B):
            args8[grid](a, b, c, d, n, m, x, y, BLOCK=32)

    def torch_round():
        for _ in range(B):
            torch.add(a, b, out=c)

    s = torch.cuda.Stream()
    with torch.cuda.stream(s):  # both Triton and torch launch on torch's current stream
        bench("triton_3_6", triton_round)
        bench("torch_eager_add", torch_round)
    cupy_launch(n, m, x, y)


CUPY_ARGS8 = r"""
extern "C" __global__ void args8(float* a, float* b, float* c, float* d, int n, int m, float x,
                                 float y) {
  if (n < 0) a[0] = b[0] + c[0] * d[0] + x * y + (float)m;
}
"""


def cupy_launch(n, m, x, y):
    """A CuPy RawKernel of args8's signature, launched on a non-blocking stream, if CuPy exists."""
    try:
        import cupy
        import numpy
    except ImportError:
        print("cupy: not installed, skipped", flush=True)
        return
    kernel = cupy.RawKernel(CUPY_ARGS8, "args8")
    a, b, c, d = (cupy.zeros(32, dtype=cupy.float32) for _ in range(4))
    args = (a, b, c, d, numpy.int32(n), numpy.int32(m), numpy.float32(x), numpy.float32(y))
    stream = cupy.cuda.Stream(non_blocking=True)

    def cupy_round():
        for _ in range(B):
            kernel((1,), (32,), args, stream=stream)

    bench("cupy_rawkernel", cupy_round, stream.synchronize)


if __name__ == "__main__":
    main()
