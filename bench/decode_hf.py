"""HF transformers decode baselines for bench/decode_bench.ts (GPU machine, no network).

Builds the Llama-3-8B config with random bf16 weights and reports ms per decode step at the given
batch sizes with a 512-token context, for eager `generate` (dynamic cache) and for a static cache
with transformers' own torch.compile (`compile_config`). Prints lines in decode_bench.ts's format:

    DECODE hf_eager batch=B ms_per_step=X stamp_ms=Y cold_stamp_ms=Z ...
    DECODE hf_compiled batch=B ms_per_step=X stamp_ms=Y warmup_s=W ...
    SKIP hf_compiled batch=B reason=...

Method (ms_per_step), per mode and batch size:
  1. Warm-up: one generate of N2 new tokens at the same batch, context and cache size. This pays
     for compilation and CUDA-graph recording, and for every first-call cost that depends on the
     sequence length (see "cold" below), at exactly the lengths the timed runs visit.
  2. `--reps` times: generate N1 new tokens, then N2 new tokens, each between device syncs.
  3. ms_per_step = (median t(N2) - median t(N1)) / (N2 - N1): prefill and per-call setup cancel.
Every run asks for max_new_tokens = min_new_tokens = N2 (EOS cannot end it early) and a stopping
criterion ends the N1 runs after N1 tokens, so both runs do the same work per step. The compiled
mode decodes into one StaticCache of prompt + N2 tokens per batch size, reset before each call, so
the compiled forward sees one shape and one set of buffers in every run (an earlier version varied
max_new_tokens, resized the static cache and timed a recompile: 1497 ms/step).

Cross-check (stamp_ms): a logits processor records the host time at every generation step (no
extra sync: generate's stop check already waits for the device every step, so the gaps telescope
to the step time); stamp_ms is the median gap over the timed N2 runs. cold_stamp_ms is the same
median over the warm-up run, i.e. the first time this process decodes those sequence lengths.

Why two earlier methods disagreed (61.7 vs 22.9 ms/step at batch 1 on the H100): the 61.7 ms
method warmed up with 2-token runs only, then timed a 33-token run whose decode steps each reached
a KV length the process had never seen; the 22.9 ms method timed a repeat of its warm-up, where
every length had been seen. With a dynamic cache every decode step has a new key/value length,
and per-shape first-call costs land on every step of a cold run. The prime suspect is cuDNN
attention: torch 2.11 ships a cuDNN recent enough that SDPA prefers cuDNN on sm90, and cuDNN builds
an execution plan per new shape. The DIAG lines test this in the same run: they time cold runs at
unseen lengths with cuDNN SDPA on and off (and print the backend SDPA picks for a decode step).
Both figures are real; the warm one is the steady state a long-running HF process reaches, so it
is the baseline (the conservative choice: it is the faster HF figure).

Usage: python3 bench/decode_hf.py [--batches 1,8,64,256] [--compiled-batches 1,8,64,256]
       [--context 512] [--n1 8] [--n2 40] [--reps 3] [--deadline-s 0] [--compile-dynamic auto]
       [--device cuda] [--tiny] [--no-diagnose]
`--tiny --device cpu` runs the same code path on a 2-layer model (to check the script here).
"""
import time

STARTED = time.perf_counter()  # before the slow imports: --deadline-s counts from here

import argparse
import math
import statistics
import sys

import torch
import transformers
from transformers import (CompileConfig, LlamaConfig, LlamaForCausalLM, LogitsProcessor,
                          LogitsProcessorList, StaticCache, StoppingCriteria, StoppingCriteriaList)


def log(line):
    print(line, flush=True)


def llama_config(tiny):
    """The Llama-3-8B shape (what decode_bench.ts's llama3-8b preset builds), or a 2-layer toy."""
    if tiny:
        return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, vocab_size=1000,
                           max_position_embeddings=4096, rope_theta=500000.0, rms_norm_eps=1e-5,
                           tie_word_embeddings=False)
    return LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                       max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5,
                       tie_word_embeddings=False)


def build_model(device, tiny=False, seed=0):
    """Random bf16 Llama on `device`. Parameters are created in bf16 directly (as from_pretrained
    with dtype=bfloat16 does), which keeps the RoPE inv_freq buffer in fp32 and avoids a 32 GB fp32
    copy of the 8B weights."""
    config = llama_config(tiny)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    # Random weights: keep generate from warning about (and guessing) a pad token every call.
    model.generation_config.pad_token_id = config.eos_token_id
    return model


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


class StepStamps(LogitsProcessor):
    """Records the host time at every generation step; the scores pass through unchanged."""

    def __init__(self):
        self.stamps = []

    def __call__(self, input_ids, scores):
        self.stamps.append(time.perf_counter())
        return scores

    def gaps_ms(self):
        return [(b - a) * 1000 for a, b in zip(self.stamps, self.stamps[1:])]


class StopAfter(StoppingCriteria):
    """Ends generation once every row holds `length` tokens (prompt included)."""

    def __init__(self, length):
        self.length = length

    def __call__(self, input_ids, scores, **kwargs):
        done = input_ids.shape[1] >= self.length
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def generate_timed(model, ids, new_tokens, max_new_tokens, device, **kwargs):
    """One generate call of `new_tokens` tokens; returns (seconds, stamp gaps in ms)."""
    stamps = StepStamps()
    sync(device)
    started = time.perf_counter()
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                         max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                         do_sample=False, logits_processor=LogitsProcessorList([stamps]),
                         stopping_criteria=StoppingCriteriaList([StopAfter(ids.shape[1] + new_tokens)]),
                         **kwargs)
    sync(device)
    seconds = time.perf_counter() - started
    produced = out.shape[1] - ids.shape[1]
    if produced != new_tokens:
        raise RuntimeError(f"asked for {new_tokens} new tokens, generate produced {produced}")
    return seconds, stamps.gaps_ms()


def prompt_ids(model, batch, context, device, seed):
    generator = torch.Generator(device="cpu").manual_seed(seed)
    vocab = model.config.vocab_size
    return torch.randint(100, min(32000, vocab), (batch, context), generator=generator).to(device)


def measure(model, batch, args, call_kwargs=dict):
    """The method in the module docstring; returns a dict of the figures. `call_kwargs()` gives
    the extra generate arguments of one call (it runs before the clock starts)."""
    ids = prompt_ids(model, batch, args.context, args.device, seed=batch)
    warm_s, cold_gaps = generate_timed(model, ids, args.n2, args.n2, args.device, **call_kwargs())
    t1, t2, gaps = [], [], []
    for _ in range(args.reps):
        t1.append(generate_timed(model, ids, args.n1, args.n2, args.device, **call_kwargs())[0])
        seconds, run_gaps = generate_timed(model, ids, args.n2, args.n2, args.device,
                                           **call_kwargs())
        t2.append(seconds)
        gaps += run_gaps
    per_step = (statistics.median(t2) - statistics.median(t1)) / (args.n2 - args.n1) * 1000
    return {
        "ms_per_step": per_step,
        "stamp_ms": statistics.median(gaps),
        "cold_stamp_ms": statistics.median(cold_gaps),
        "cold_mean_ms": statistics.fmean(cold_gaps),
        "warmup_s": warm_s,
        "t1_s": t1,
        "t2_s": t2,
    }


def static_cache_kwargs(model, args, compile_config):
    """generate arguments for the compiled mode: one StaticCache per batch size, reset before each
    call, so every call decodes into the same buffers (the compiled graph and its CUDA graphs see
    the same addresses; generate's own cache_implementation="static" allocates a fresh cache per
    call, 18 GB at batch 256). Falls back to cache_implementation="static" if this transformers
    version builds StaticCache differently."""
    try:
        cache = StaticCache(config=model.config, max_cache_len=args.context + args.n2)
    except TypeError:
        return lambda: {"cache_implementation": "static", "compile_config": compile_config}

    def fresh():
        cache.reset()
        return {"past_key_values": cache, "compile_config": compile_config}
    return fresh


def report(name, batch, r, seconds):
    t1 = ",".join(f"{t:.3f}" for t in r["t1_s"])
    t2 = ",".join(f"{t:.3f}" for t in r["t2_s"])
    log(f"DECODE {name} batch={batch} ms_per_step={r['ms_per_step']:.3f} "
        f"stamp_ms={r['stamp_ms']:.3f} cold_stamp_ms={r['cold_stamp_ms']:.3f} "
        f"cold_mean_ms={r['cold_mean_ms']:.3f} warmup_s={r['warmup_s']:.2f} "
        f"t_n1_s={t1} t_n2_s={t2} took_s={seconds:.1f}")


def sdpa_backend(batch, kv_length, config, device):
    """The backend SDPA picks for one decode step as transformers calls it (no mask, GQA)."""
    if not hasattr(torch, "_fused_sdp_choice"):
        return "unknown"
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = config.hidden_size // heads
    q = torch.zeros(batch, heads, 1, head_dim, dtype=torch.bfloat16, device=device)
    kv = torch.zeros(batch, kv_heads, kv_length, head_dim, dtype=torch.bfloat16, device=device)
    try:
        choice = torch._fused_sdp_choice(q, kv, kv, None, 0.0, False, scale=None, enable_gqa=True)
        return torch.nn.attention.SDPBackend(choice).name
    except Exception as error:  # diagnostics only: never stop the benchmark
        return f"unknown ({type(error).__name__})"


def diagnose(model, args):
    """Cold vs warm at batch 1, with cuDNN SDPA on and off, at lengths not seen before in this
    process (shorter contexts than the benchmark's): see the module docstring."""
    cudnn = torch.backends.cudnn.version() if args.device == "cuda" else None
    log(f"DIAG sdpa_backend decode_b1_kv{args.context}="
        f"{sdpa_backend(1, args.context, model.config, args.device)} cudnn={cudnn} "
        f"cudnn_sdp_enabled={torch.backends.cuda.cudnn_sdp_enabled()}")
    was_enabled = torch.backends.cuda.cudnn_sdp_enabled()
    plans = [(args.context - 2 * args.n2 - 16, True, "cold"),
             (args.context - 4 * args.n2 - 32, False, "cold"),
             (args.context - 2 * args.n2 - 16, True, "warm")]
    try:
        for context, cudnn_on, label in plans:
            if context < 8:
                continue
            torch.backends.cuda.enable_cudnn_sdp(cudnn_on)
            ids = prompt_ids(model, 1, context, args.device, seed=context)
            seconds, gaps = generate_timed(model, ids, args.n2, args.n2, args.device)
            log(f"DIAG hf_eager batch=1 context={context} cudnn_sdp={'on' if cudnn_on else 'off'} "
                f"{label} stamp_median_ms={statistics.median(gaps):.3f} "
                f"stamp_mean_ms={statistics.fmean(gaps):.3f} "
                f"backend={sdpa_backend(1, context, model.config, args.device)} run_s={seconds:.2f}")
    finally:
        torch.backends.cuda.enable_cudnn_sdp(was_enabled)


def time_left(args):
    if args.deadline_s <= 0:
        return math.inf
    return args.deadline_s - (time.perf_counter() - STARTED)


def run_mode(model, name, batches, args, needed_s, call_kwargs=lambda batch: dict):
    """Measures each batch size, skipping (with a SKIP line) what cannot run or has no time left.
    `needed_s(batch)` estimates the seconds a batch size takes; `call_kwargs(batch)` gives the
    per-call generate arguments (see measure)."""
    for batch in batches:
        left = time_left(args)
        if left < needed_s(batch):
            log(f"SKIP {name} batch={batch} reason=time: {left:.0f} s left, about "
                f"{needed_s(batch):.0f} s needed")
            continue
        started = time.perf_counter()
        try:
            result = measure(model, batch, args, call_kwargs(batch))
        except Exception as error:  # OOM or a compile failure: report it and go on
            message = str(error).splitlines()[0][:300] if str(error) else ""
            log(f"SKIP {name} batch={batch} reason={type(error).__name__}: {message}")
            if args.device == "cuda":
                torch.cuda.empty_cache()
            continue
        took = time.perf_counter() - started
        report(name, batch, result, took)
        if args.device == "cuda":
            torch.cuda.empty_cache()  # hand the dynamic cache's blocks back between batch sizes
        yield batch, result, took


def parse_batches(text):
    return [int(b) for b in text.split(",") if b.strip()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,8,64,256", help="eager batch sizes ('' for none)")
    parser.add_argument("--compiled-batches", default="1,8,64,256",
                        help="static cache + compile batch sizes ('' for none)")
    parser.add_argument("--context", type=int, default=512, help="prompt tokens")
    parser.add_argument("--n1", type=int, default=8, help="new tokens of the short runs")
    parser.add_argument("--n2", type=int, default=40, help="new tokens of the long runs")
    parser.add_argument("--reps", type=int, default=3, help="timed (N1, N2) pairs per batch")
    parser.add_argument("--deadline-s", type=float, default=0,
                        help="skip what would not finish this many seconds after start (0: none)")
    parser.add_argument("--compile-dynamic", choices=["auto", "false"], default="auto",
                        help="auto: transformers' default (static shapes, then a batch-dynamic graph "
                             "after the first recompile); false: one static graph per batch size "
                             "(a compile each, minutes)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="2-layer toy model (for checking here)")
    parser.add_argument("--no-diagnose", action="store_true", help="skip the DIAG cold/warm runs")
    args = parser.parse_args()
    if not 1 <= args.n1 < args.n2:
        parser.error("need 1 <= n1 < n2")
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "none (cpu)"
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, gpu {gpu}, "
        f"context {args.context}, n1 {args.n1}, n2 {args.n2}, reps {args.reps}")
    built = time.perf_counter()
    model = build_model(args.device, args.tiny)
    sync(args.device)
    log(f"model: {'tiny' if args.tiny else 'llama3-8b shape'}, random bf16 weights, "
        f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters, built in "
        f"{time.perf_counter() - built:.1f} s")

    with torch.inference_mode():
        # Rough H100 costs for the deadline: prefill grows with the batch (about 4 s per generate at
        # batch 256, context 512) and a compile takes a minute or two.
        eager_took = {}

        def eager_needed(batch):
            return eager_took.get(batch, 5 + 0.15 * batch * args.context / 512)

        for batch, _, took in run_mode(model, "hf_eager", parse_batches(args.batches), args,
                                       eager_needed):
            eager_took[batch] = took
            if batch == 1 and not args.no_diagnose:
                diagnose(model, args)

        # transformers compiles the decode forward itself when generate() uses a static cache
        # (wrapping model.forward in torch.compile by hand trips over its CUDA-graph output reuse).
        # Compile time lands in each batch's warm-up run and stays out of ms_per_step.
        dynamic = None if args.compile_dynamic == "auto" else False
        compile_config = CompileConfig(fullgraph=True, dynamic=dynamic)
        if args.device == "cpu":
            compile_config._compile_all_devices = True  # generate only compiles on GPUs otherwise
        for option in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, option):
                setattr(torch._dynamo.config, option, max(64, getattr(torch._dynamo.config, option)))
        compiles = []  # seconds of warm-up beyond a timed run: compilation and graph recording

        def compiled_needed(batch):
            # auto compiles twice (the first batch, then a batch-dynamic graph); false every batch.
            compiling = args.compile_dynamic == "false" or len(compiles) < 2
            return eager_needed(batch) + (max(compiles, default=90) if compiling else 5)

        for _, result, _ in run_mode(
                model, "hf_compiled", parse_batches(args.compiled_batches), args, compiled_needed,
                lambda batch: static_cache_kwargs(model, args, compile_config)):
            compiles.append(result["warmup_s"] - statistics.median(result["t2_s"]))
    log(f"hf done in {time.perf_counter() - STARTED:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
