"""HF transformers continuous batching on bench/serve_bench.ts's workload (GPU machine, no network).

The side-by-side serving baseline: the same random Llama-3-8B (bf16) as bench/decode_hf.py, the
same requests as serve_bench.ts (prompt token ids and output lengths from its `--dump-workload`
file, so nothing is re-derived here), the same closed loop of C concurrent clients (a new request
goes in as soon as one finishes, in workload order), and output in serve_bench.ts's line format.

transformers' continuous batching is `model.generate_batch(...)`, a wrapper around the
ContinuousBatchingManager that it starts, feeds all requests at once with ONE max_new_tokens, and
stops. The workload needs a length per request and at most C requests in flight, so this drives
the same manager directly (init_continuous_batching -> warmup -> start -> add_request per request
with its own max_new_tokens -> get_result), with transformers' defaults for everything else (paged
cache sized from free memory, max_batch_tokens, attention implementation, CUDA graphs). EOS is
disabled (eos_token_id=-1), so every request generates exactly its output length; that is checked.

Measured in-process, so HF pays no HTTP/SSE cost (serve_bench.ts measures Denali through its HTTP
server): the comparison favours HF. First-token latency: from add_request to the first token's
timestamp (record_timestamps). Per-token latency: gaps between a request's token timestamps.
Throughput: tokens of finished requests over the wall time from the first add_request to the last
result. Warm-up (CUDA-graph capture where enabled) is before the clock starts.

Usage: python3 bench/serve_hf.py --workload FILE [--requests N] [--concurrency 256]
       [--deadline-s 0] [--max-batch-tokens T] [--num-blocks B] [--device cuda] [--tiny]
  FILE from: deno run -A bench/serve_bench.ts --dump-workload FILE --requests N (other flags as
  the Denali run). --requests takes the first N (a prefix is serve_bench's N-request workload).
`--tiny --device cpu` checks the code path here on a 2-layer model (dump with --vocab 1000).
"""
import time

STARTED = time.perf_counter()  # before the slow imports: --deadline-s counts from here

import argparse
import collections
import dataclasses
import inspect
import json
import os
import statistics
import sys

import torch
import transformers
from transformers import GenerationConfig

from decode_hf import build_model  # same directory: the same random model as the decode baseline


def log(line):
    print(line, flush=True)


def percentile(sorted_values, p):
    """serve_bench.ts's percentile: the element at floor(p * n)."""
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


def report(label, done, prompts, seconds, submitted):
    """Prints serve_bench.ts's lines for the finished requests `done` ({id: (output, end)})."""
    firsts, gaps = [], []
    completion = prompt = 0
    for rid, (output, _) in done.items():
        stamps = output.timestamps or []
        if stamps:
            firsts.append((stamps[0] - submitted[rid]) * 1000)
            gaps += [(b - a) * 1000 for a, b in zip(stamps, stamps[1:])]
        completion += len(output.generated_tokens)
        prompt += len(prompts[rid])
    gaps.sort()
    ms = lambda x: f"{x:.1f}"
    log(label)
    if firsts:
        log(f"first-token latency (ms): min {ms(min(firsts))}, max {ms(max(firsts))}, "
            f"avg {ms(statistics.fmean(firsts))}")
    log(f"per-token latency (ms): p50 {ms(percentile(gaps, 0.5))}, p75 {ms(percentile(gaps, 0.75))}, "
        f"p95 {ms(percentile(gaps, 0.95))}, p99 {ms(percentile(gaps, 0.99))}")
    log(f"completion tok/s: {completion / seconds:.1f}")
    log(f"total tok/s: {(completion + prompt) / seconds:.1f}")
    log(f"RPS: {len(done) / seconds:.2f}")


def allow_cpu_without_psutil():
    """transformers sizes the paged cache from free memory, which it reads through psutil on the
    CPU; without psutil it sees 0 bytes and refuses. For the --device cpu check only."""
    try:
        import psutil  # noqa: F401
    except ImportError:
        import transformers.generation.continuous_batching.cache as cb_cache
        cb_cache.get_device_and_memory_breakdown = lambda: (torch.device("cpu"), 1 << 30, 0, 0)


def continuous_batching_config(args):
    """transformers' defaults, plus any size given on the command line (fields filtered by name, so
    the script runs on transformers versions that lack one of them)."""
    from transformers.generation.configuration_utils import ContinuousBatchingConfig
    wanted = {"max_batch_tokens": args.max_batch_tokens, "num_blocks": args.num_blocks}
    fields = {f.name for f in dataclasses.fields(ContinuousBatchingConfig)}
    return ContinuousBatchingConfig(**{k: v for k, v in wanted.items() if v and k in fields})


def start_manager(model, generation_config, cb_config, requests, concurrency):
    """init_continuous_batching with workload hints where this transformers version takes them."""
    kwargs = {"generation_config": generation_config, "continuous_batching_config": cb_config}
    if "workload_hints" in inspect.signature(model.init_continuous_batching).parameters:
        from transformers.generation.continuous_batching.utils import WorkloadHints
        # At most `concurrency` requests are ever in flight: that is the batch's request bound.
        kwargs["workload_hints"] = WorkloadHints(
            max_prompt_length=max(len(r["prompt"]) for r in requests),
            max_generated_length=max(r["outputTokens"] for r in requests),
            num_requests=min(len(requests), concurrency))
    manager = model.init_continuous_batching(**kwargs)
    warm = time.perf_counter()
    manager.warmup()
    warm_s = time.perf_counter() - warm
    manager.start()
    return manager, warm_s


def describe(model, manager):
    cfg = getattr(manager, "continuous_batching_config", None)
    cache = getattr(getattr(manager, "batch_processor", None), "cache", None)
    parts = [f"attn {model.config._attn_implementation}"]
    for name in ("use_cuda_graph", "max_batch_tokens", "max_requests_per_batch", "page_size"):
        if cfg is not None and hasattr(cfg, name):
            parts.append(f"{name} {getattr(cfg, name)}")
    if cache is not None and hasattr(cache, "num_blocks"):
        parts.append(f"cache blocks {cache.num_blocks}")
    return ", ".join(parts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", required=True, help="serve_bench.ts --dump-workload file")
    parser.add_argument("--requests", type=int, default=0, help="first N requests (0: all)")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--deadline-s", type=float, default=0,
                        help="stop and report the finished requests this many seconds after start")
    parser.add_argument("--max-batch-tokens", type=int, default=0, help="0: transformers' default")
    parser.add_argument("--num-blocks", type=int, default=0, help="0: sized from free memory")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="2-layer toy model (for checking here)")
    args = parser.parse_args()

    workload = json.load(open(args.workload))
    requests = workload["requests"][:args.requests or None]
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, gpu "
        f"{torch.cuda.get_device_name() if args.device == 'cuda' else 'none (cpu)'}")
    log(f"workload {args.workload}: seed {workload['seed']}, vocab {workload['vocab']}, max-len "
        f"{workload['maxLen']}; first {len(requests)} of {len(workload['requests'])} requests, "
        f"mean prompt {statistics.fmean(len(r['prompt']) for r in requests):.1f}, mean output "
        f"{statistics.fmean(r['outputTokens'] for r in requests):.1f} tokens")

    built = time.perf_counter()
    model = build_model(args.device, args.tiny)
    if args.device == "cpu":
        allow_cpu_without_psutil()
    top = max(max(r["prompt"]) for r in requests)
    if top >= model.config.vocab_size:
        sys.exit(f"workload token id {top} is outside the model's vocabulary "
                 f"({model.config.vocab_size}); dump the workload with a smaller --vocab")
    log(f"model: random bf16 weights, built in {time.perf_counter() - built:.1f} s")

    # eos_token_id=-1: no EOS, so each request runs to its own max_new_tokens (serve_bench.ts's
    # ignore_eos). Greedy, as serve_bench.ts's temperature 0.
    generation_config = GenerationConfig(do_sample=False, eos_token_id=-1, pad_token_id=0,
                                         max_new_tokens=max(r["outputTokens"] for r in requests))
    manager, warm_s = start_manager(model, generation_config, continuous_batching_config(args),
                                    requests, args.concurrency)
    log(f"continuous batching: {describe(model, manager)}; warm-up {warm_s:.1f} s")

    prompts, submitted, done, failed = {}, {}, {}, []
    queue = collections.deque(enumerate(requests))

    def submit():
        index, request = queue.popleft()
        rid = f"req{index}"
        prompts[rid] = request["prompt"]
        submitted[rid] = time.perf_counter()
        manager.add_request(request["prompt"], request_id=rid,
                            max_new_tokens=request["outputTokens"], record_timestamps=True)

    started = time.perf_counter()
    for _ in range(min(args.concurrency, len(queue))):
        submit()
    partial = None
    while len(done) + len(failed) < len(requests):
        output = manager.get_result(timeout=1.0)
        if args.deadline_s and time.perf_counter() - STARTED > args.deadline_s:
            partial = "deadline"
            break
        if output is None:
            if not manager.is_running():
                partial = "the generation thread stopped"
                break
            continue
        if not output.is_finished():
            continue
        if output.error is not None:
            failed.append((output.request_id, output.error))
        else:
            done[output.request_id] = (output, time.perf_counter())
        if queue:
            submit()
    seconds = time.perf_counter() - started

    wrong = [rid for rid, (output, _) in done.items()
             if len(output.generated_tokens) != requests[int(rid[3:])]["outputTokens"]]
    label = (f"model hf-transformers continuous batching (random-weights); {len(done)} requests, "
             f"concurrency {args.concurrency}")
    if partial:
        label = f"PARTIAL ({partial} after {seconds:.1f} s): " + label
    report(label, done, prompts, seconds, submitted)
    log(f"hf run: {seconds:.1f} s; {len(failed)} failed; {len(wrong)} finished with a length other "
        f"than asked")
    for rid, error in failed[:5]:
        log(f"FAILED {rid}: {str(error)[:300]}")
    if partial:
        # The manager may be mid-step with work queued; leave without waiting for it.
        sys.stdout.flush()
        os._exit(3)
    manager.stop(block=True, timeout=30)
    return 1 if failed or wrong else 0


if __name__ == "__main__":
    sys.exit(main())
