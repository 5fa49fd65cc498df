"""HF transformers decode baselines for bench/decode_bench.ts (GPU machine, no network).

Builds the Llama-3-8B config with random bf16 weights and reports ms per decode step at the
given batch sizes with a 512-token context, for eager `generate` and for a static cache with
transformers' own torch.compile. A logits processor stamps the time of every generation step
(after a device synchronise), so the per-step figure is the median gap between steps: prefill
and any recompilation fall outside it. Prints `DECODE <name> batch=B ms_per_step=X` lines.

Usage: python3 bench/decode_hf.py [--batches 1,8] [--compiled-batches 1] [--steps 32]
"""
import argparse
import statistics
import time

import torch
import transformers
from transformers import CompileConfig, LlamaConfig, LlamaForCausalLM, LogitsProcessor, LogitsProcessorList


class StepTimer(LogitsProcessor):
    """Records a timestamp at every generation step; the logits pass through unchanged."""

    def __init__(self):
        self.stamps = []

    def __call__(self, input_ids, scores):
        torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())
        return scores


def build():
    config = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                         max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.eval()
    return model


def ms_per_step(model, batch, context, steps, **generate_kwargs):
    ids = torch.randint(100, 32000, (batch, context), device="cuda")
    mask = torch.ones_like(ids)
    def run():
        timer = StepTimer()
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps,
                       min_new_tokens=steps, do_sample=False,
                       logits_processor=LogitsProcessorList([timer]), **generate_kwargs)
        return timer.stamps
    run()  # warm-up (and compilation, where enabled), at the same shapes
    stamps = run()
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return statistics.median(gaps) * 1000


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--compiled-batches", default="1")
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--steps", type=int, default=32)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"gpu {torch.cuda.get_device_name()}", flush=True)
    model = build()
    with torch.inference_mode():
        for batch in [int(b) for b in args.batches.split(",") if b]:
            ms = ms_per_step(model, batch, args.context, args.steps)
            print(f"DECODE hf_eager batch={batch} ms_per_step={ms:.3f}", flush=True)
        # transformers compiles the forward itself when generate() uses a static cache (wrapping
        # model.forward in torch.compile by hand trips over its CUDA-graph output reuse).
        for batch in [int(b) for b in args.compiled_batches.split(",") if b]:
            ms = ms_per_step(model, batch, args.context, args.steps, cache_implementation="static",
                             compile_config=CompileConfig(fullgraph=True))
            print(f"DECODE hf_compiled batch={batch} ms_per_step={ms:.3f}", flush=True)


if __name__ == "__main__":
    main()
