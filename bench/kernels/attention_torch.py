#!/usr/bin/env python3
"""PyTorch baselines for bench/kernels/attention_bench.ts, in the same BENCH line format.

torch.nn.functional.scaled_dot_product_attention with enable_gqa=True on contiguous, non-paged
K/V ([batch, kv heads, context, head dim] bf16), at the same shapes:
  - torch_decode_attention: one query token per sequence, Llama-3-8B heads, batch 1/8/64 at
    contexts 512..32768 (at most 4 GiB of K+V per input set: batch 64 at 32k runs as 32);
    input sets rotate (at least 128 MiB in all) so L2 does not hold the next call's K/V.
    gbps counts the same bytes as Denali's line: K and V once + q + out.
  - torch_prefill_attention: one causal sequence of 512 and 2048 tokens; tflops counts
    4 * head_dim * heads per (query, visible key) pair, as Denali's line does.
Usage: python3 bench/kernels/attention_torch.py
"""

import math

import torch
import torch.nn.functional as F

import torch_common
from torch_common import median_us, print_bench

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
MAX_SET_BYTES = 4 * 2**30
MIN_ROTATION_BYTES = 128 * 2**20
MAX_SETS = 64


def bench_decode():
    per_token = KV_HEADS * HEAD_DIM * 2 * 2
    for requested in (1, 8, 64):
        for context in (512, 4096, 16384, 32768):
            batch = min(requested, MAX_SET_BYTES // (context * per_token))
            set_bytes = batch * context * per_token
            sets = min(MAX_SETS, max(2, math.ceil(MIN_ROTATION_BYTES / set_bytes)))
            ks = [torch.randn(batch, KV_HEADS, context, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
                  for _ in range(sets)]
            vs = [torch.randn_like(k) for k in ks]
            q = torch.randn(batch, HEADS, 1, HEAD_DIM, device="cuda", dtype=torch.bfloat16)

            def run(rep):
                F.scaled_dot_product_attention(q, ks[rep % sets], vs[rep % sets], enable_gqa=True)

            us = median_us(run)
            nbytes = set_bytes + 2 * batch * HEADS * HEAD_DIM * 2
            print_bench("torch_decode_attention", f"b{batch}_ctx{context}_h32kv8d128", us, nbytes)
            del ks, vs, q
            torch.cuda.empty_cache()


def bench_prefill():
    for tokens in (512, 2048):
        q = torch.randn(1, HEADS, tokens, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, KV_HEADS, tokens, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        us = median_us(
            lambda _: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), reps=20)
        flops = 4 * HEAD_DIM * HEADS * tokens * (tokens + 1) // 2
        nbytes = 2 * tokens * HEADS * HEAD_DIM * 2 + 2 * tokens * KV_HEADS * HEAD_DIM * 2
        print_bench("torch_prefill_attention", f"n{tokens}_h32kv8d128", us, nbytes, flops)


def main():
    print(f"# torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)
    with torch.no_grad():
        torch_common.print_copy_bandwidth()
        bench_decode()
        bench_prefill()


if __name__ == "__main__":
    main()
