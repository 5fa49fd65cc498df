"""PyTorch equivalents of bench/kernels/sampling_bench.ts, in the same BENCH line format (ops
named torch_<op>), at the same shapes (vocab 128256, batch 1, 64, 256) with the same byte
counts and the same rotation of the logits through >= 128 MiB arenas (over twice the H100's
50 MB L2).

Usage (GPU machine): python3 bench/kernels/sampling_torch.py
--smoke runs tiny shapes on the CPU, only to check the script itself.

torch_argmax is torch.argmax; torch_log_softmax is torch.log_softmax (out of place). The samplers
are HF's warpers written out, as HF generate() runs them: logits / T; top-k by torch.topk and a
masked fill; top-p by softmax of the ascending sort, cumsum, the mask scattered back; then
softmax and torch.multinomial. sample_plain is softmax(logits / T) and multinomial.
"""

import argparse
import functools

import torch

import torch_common

parser = argparse.ArgumentParser()
parser.add_argument("--smoke", action="store_true")
args = parser.parse_args()

SMOKE = args.smoke
DEVICE = "cpu" if SMOKE else "cuda"
ARENA_BYTES = 2**20 if SMOKE else 128 * 2**20
MAX_SETS = 1024
VOCAB = 1000 if SMOKE else 128256
BATCHES = [1, 4] if SMOKE else [1, 64, 256]
SAMPLE_CONFIGS = [
    ("sample_topk_topp", 0.7, 50, 0.9),
    ("sample_topp", 1.0, 0, 0.95),
    ("sample_plain", 1.0, 0, 1.0),
]

median_us = functools.partial(torch_common.median_us, device=DEVICE)
print_bench = torch_common.print_bench


def set_count(nbytes):
    return torch_common.set_count(nbytes, ARENA_BYTES, MAX_SETS)


def sample(logits, temperature, top_k, top_p, generator):
    """HF's TemperatureLogitsWarper, TopKLogitsWarper and TopPLogitsWarper, then multinomial."""
    x = logits / temperature
    if top_k > 0:
        kth = torch.topk(x, top_k, dim=-1).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = torch.sort(x, dim=-1, descending=False)
        cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - top_p)
        remove[:, -1] = False
        x = x.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    return torch.multinomial(x.softmax(dim=-1), 1, generator=generator)


def main():
    torch_common.print_copy_bandwidth(2**24 if SMOKE else 2**30, DEVICE)
    generator = torch.Generator(device=DEVICE).manual_seed(1)
    for batch in BATCHES:
        shape = f"batch={batch},vocab={VOCAB}"
        logit_bytes = 4 * batch * VOCAB
        host = torch.rand(batch, VOCAB, generator=torch.Generator().manual_seed(17 + batch)) * 16 - 8
        sets = set_count(logit_bytes)
        logits = host.to(DEVICE).unsqueeze(0).repeat(sets, 1, 1)

        us = median_us(lambda rep: torch.argmax(logits[rep % sets], dim=-1))
        print_bench("torch_argmax", shape, us, logit_bytes + 8 * batch)

        del logits
        sets = set_count(2 * logit_bytes)
        logits = host.to(DEVICE).unsqueeze(0).repeat(sets, 1, 1)
        us = median_us(lambda rep: torch.log_softmax(logits[rep % sets], dim=-1))
        print_bench("torch_log_softmax", shape, us, 2 * logit_bytes)

        del logits
        sets = set_count(logit_bytes)
        logits = host.to(DEVICE).unsqueeze(0).repeat(sets, 1, 1)
        for op, temperature, top_k, top_p in SAMPLE_CONFIGS:
            us = median_us(
                lambda rep: sample(logits[rep % sets], temperature, top_k, top_p, generator)
            )
            print_bench(f"torch_{op}", shape, us, logit_bytes + 8 * batch)
        del logits
        if DEVICE == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
