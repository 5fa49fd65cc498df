"""PyTorch equivalents of bench/kernels/elementwise_bench.ts, in the same BENCH line format
(ops named torch_<op>), at the same Llama-3-8B shapes with the same byte counts and the same
rotation of every buffer through >= 128 MiB arenas (over twice the H100's 50 MB L2).

Usage (GPU machine): python3 bench/kernels/elementwise_torch.py
--smoke runs tiny shapes on the CPU, only to check the script itself.

torch_rms_norm is F.rms_norm (fused where torch has a fused kernel); torch_rms_norm_hf is HF's
LlamaRMSNorm written out (several kernels), which is what HF models run. torch_rope is HF's
apply_rotary_pos_emb including the cos/sin computation from positions, out of place.
"""

import argparse
import functools
import math

import torch
import torch.nn.functional as F

import torch_common

parser = argparse.ArgumentParser()
parser.add_argument("--smoke", action="store_true")
args = parser.parse_args()

SMOKE = args.smoke
DEVICE = "cpu" if SMOKE else "cuda"
ARENA_BYTES = 2**20 if SMOKE else 128 * 2**20
MAX_SETS = 8192
HIDDEN = 256 if SMOKE else 4096
INTER = 512 if SMOKE else 14336
HEADS, KV_HEADS, HEAD_DIM = (4, 2, 64) if SMOKE else (32, 8, 128)
VOCAB = 1000 if SMOKE else 128256
TOKENS = [1, 4] if SMOKE else [1, 64, 4096]
BF16 = torch.bfloat16

median_us = functools.partial(torch_common.median_us, device=DEVICE)
print_bench = torch_common.print_bench


def set_count(nbytes):
    return torch_common.set_count(nbytes, ARENA_BYTES, MAX_SETS)


def bf16_sets(sets, *shape):
    return torch.full((sets, *shape), 0.0115, dtype=BF16, device=DEVICE)


def hf_rms_norm(x, weight, eps):
    h = x.to(torch.float32)
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return weight * h.to(BF16)


def bench_rms_norm():
    rms_norm = getattr(F, "rms_norm", None)
    for tokens in TOKENS:
        act = 2 * tokens * HIDDEN
        sets = set_count(2 * act + 2 * HIDDEN)
        x, w = bf16_sets(sets, tokens, HIDDEN), bf16_sets(sets, HIDDEN)
        residual = bf16_sets(sets, tokens, HIDDEN)
        shape = f"tokens={tokens},hidden={HIDDEN}"
        if rms_norm is not None:
            us = median_us(lambda i: rms_norm(x[i % sets], (HIDDEN,), w[i % sets], 1e-5))
            print_bench("torch_rms_norm", shape, us, 2 * act + 2 * HIDDEN)

        def fused(i):
            r = residual[i % sets]
            r.add_(x[i % sets])
            if rms_norm is not None:
                return rms_norm(r, (HIDDEN,), w[i % sets], 1e-5)
            return hf_rms_norm(r, w[i % sets], 1e-5)

        us = median_us(fused)
        print_bench("torch_rms_norm_residual", shape, us, 4 * act + 2 * HIDDEN)
        us = median_us(lambda i: hf_rms_norm(x[i % sets], w[i % sets], 1e-5))
        print_bench("torch_rms_norm_hf", shape, us, 2 * act + 2 * HIDDEN)
        del x, w, residual


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def hf_rope(q, k, positions, inv_freq):
    """HF LlamaRotaryEmbedding.forward + apply_rotary_pos_emb, q/k as [tokens, heads, dim]."""
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos = emb.cos().to(BF16)[:, None, :]
    sin = emb.sin().to(BF16)[:, None, :]
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def llama3_inv_freq():
    inv = []
    for i in range(HEAD_DIM // 2):
        f = 1.0 / 500000.0 ** (2 * i / HEAD_DIM)
        wavelen = 2 * math.pi / f
        if wavelen > 8192:
            f /= 8
        elif wavelen >= 2048:
            s = (8192 / wavelen - 1) / 3
            f = (1 - s) * f / 8 + s * f
        inv.append(f)
    return torch.tensor(inv, dtype=torch.float32, device=DEVICE)


def bench_rope():
    inv_freq = llama3_inv_freq()
    for tokens in TOKENS:
        q_bytes, k_bytes = 2 * tokens * HEADS * HEAD_DIM, 2 * tokens * KV_HEADS * HEAD_DIM
        sets = set_count(q_bytes + k_bytes)
        q, k = bf16_sets(sets, tokens, HEADS, HEAD_DIM), bf16_sets(sets, tokens, KV_HEADS, HEAD_DIM)
        gen = torch.Generator(device="cpu").manual_seed(1)
        positions = torch.randint(0, 32768, (sets, tokens), generator=gen, dtype=torch.int32).to(DEVICE)
        us = median_us(lambda i: hf_rope(q[i % sets], k[i % sets], positions[i % sets], inv_freq))
        shape = f"tokens={tokens},heads={HEADS}/{KV_HEADS},head_dim={HEAD_DIM}"
        print_bench("torch_rope", shape, us, 2 * (q_bytes + k_bytes) + 4 * tokens + 2 * HEAD_DIM)
        del q, k, positions


def bench_silu_mul():
    for tokens in TOKENS:
        out_bytes = 2 * tokens * INTER
        sets = set_count(3 * out_bytes)
        gate_up = bf16_sets(sets, tokens, 2 * INTER)

        def run(i):
            gu = gate_up[i % sets]
            return F.silu(gu[:, :INTER]) * gu[:, INTER:]

        us = median_us(run)
        print_bench("torch_silu_mul", f"tokens={tokens},inter={INTER}", us, 3 * out_bytes)
        del gate_up


def bench_embedding():
    tokens = TOKENS[-1]
    table = torch.full((VOCAB, HIDDEN), 0.0115, dtype=BF16, device=DEVICE)
    act = 2 * tokens * HIDDEN
    sets = set_count(2 * act)
    gen = torch.Generator(device="cpu").manual_seed(2)
    ids = torch.randint(0, VOCAB, (sets, tokens), generator=gen, dtype=torch.int64).to(DEVICE)
    us = median_us(lambda i: F.embedding(ids[i % sets], table))
    print_bench("torch_embedding", f"tokens={tokens},hidden={HIDDEN},vocab={VOCAB}", us, 2 * act + 4 * tokens)
    del table, ids


def bench_casts():
    count = 4096 if SMOKE else 4096 * 4096
    sets = set_count(6 * count)
    f32 = torch.full((sets, count), 0.0115, dtype=torch.float32, device=DEVICE)
    bf16 = bf16_sets(sets, count)
    us = median_us(lambda i: f32[i % sets].to(BF16))
    print_bench("torch_cast_f32_to_bf16", f"count={count}", us, 6 * count)
    us = median_us(lambda i: bf16[i % sets].to(torch.float32))
    print_bench("torch_cast_bf16_to_f32", f"count={count}", us, 6 * count)
    del f32, bf16


if __name__ == "__main__":
    print(f"# torch {torch.__version__} on {torch.cuda.get_device_name() if DEVICE == 'cuda' else 'cpu'}")
    torch_common.print_copy_bandwidth(2**24 if SMOKE else 2**30, DEVICE)
    bench_rms_norm()
    bench_rope()
    bench_silu_mul()
    bench_embedding()
    bench_casts()
