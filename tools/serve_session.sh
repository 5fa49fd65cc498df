#!/usr/bin/env bash
# GPU machine, ONE device call (carry [".device"]): start the server with random Llama-3-8B
# weights, run bench/serve_bench.ts at the given "requests:concurrency" pairs (default 1000:256
# 16:1) and at the HF comparison pair, stop the server, then put the HF pair's requests through
# HF transformers' continuous batching (bench/serve_hf.py, same model shape, same prompts and
# output lengths from serve_bench.ts --dump-workload) and print both side by side. Logs under $OUT:
#   server.log, serve_bench.log, metrics.txt, workload.json, serve_hf.log, serve_summary.txt
#   bash tools/serve_session.sh 1000:256 16:1
# Environment knobs: HF (200:256: requests:concurrency of the comparison; empty to skip it),
# HF_SEED (1: the comparison's workload seed; the other runs use seed 0, and a seed the server has
# not served yet keeps its prefix cache from skipping the comparison's prefills), BUDGET_S (560:
# the whole script stays inside a 10-minute device call), SERVER_FLAGS (extra serve.ts flags,
# e.g. "--max-num-batched-tokens 8192"), TREE (.: the checkout whose serve.ts runs, e.g. a baseline
# in .base/ made by tools/make_base.sh; the benchmark client is always this tree's).
# Expected wall time on an H100: server start under a minute, 1000:256 about 40 s, 200:256 about
# 15 s, 16:1 about 30 s, HF about 1-3 min (Python start and model build about 30 s, then the run,
# cut off by its deadline with a PARTIAL report if it would pass the budget).
source "$(dirname "$0")/device_env.sh"
root="$PWD"
HF="${HF-200:256}"
HF_SEED="${HF_SEED:-1}"
BUDGET_S="${BUDGET_S:-560}"
started=$SECONDS
left() { echo $((BUDGET_S - (SECONDS - started))); }
limit() { local l; l=$(left); echo $((l < 5 ? 5 : l)); }  # timeout 0 would mean no limit
pairs=("$@")
[ ${#pairs[@]} -eq 0 ] && pairs=(1000:256 16:1)
# Denali runs the comparison right after the first pair ("requests:concurrency:seed").
[ -n "$HF" ] && pairs=("${pairs[0]}" "$HF:$HF_SEED" "${pairs[@]:1}")
bench_flags=(--vocab 32000 --max-len 2048)

# shellcheck disable=SC2086 # SERVER_FLAGS is a list of flags
(cd "${TREE:-.}" && exec bash "$root/.device/gpu.sh" deno run -A serve.ts --backend cuda \
  --random-weights llama3-8b --max-model-len 2048 --port 8000 ${SERVER_FLAGS:-}) \
  >"$OUT/server.log" 2>&1 &
server=$!
for _ in $(seq 1 180); do
  curl -sf http://127.0.0.1:8000/health >/dev/null && break
  sleep 1
done
echo "server up after $((SECONDS - started)) s"
for pair in "${pairs[@]}"; do
  IFS=: read -r requests concurrency seed <<<"$pair"
  echo "=== requests $requests, concurrency $concurrency${seed:+, seed $seed}"
  timeout -k 5 "$(limit)" bash .device/gpu.sh deno run -A bench/serve_bench.ts \
    --requests "$requests" --concurrency "$concurrency" --seed "${seed:-0}" "${bench_flags[@]}"
  echo "(done after $((SECONDS - started)) s)"
done 2>&1 | tee "$OUT/serve_bench.log"
curl -s http://127.0.0.1:8000/metrics >"$OUT/metrics.txt"
kill -TERM "$server"
# The HF run needs the GPU memory the server holds (most of it is KV cache): wait for the exit.
for _ in $(seq 1 30); do kill -0 "$server" 2>/dev/null || break; sleep 1; done
kill -KILL "$server" 2>/dev/null
wait "$server"
echo "server exit: $? after $((SECONDS - started)) s"

if [ -z "$HF" ]; then exit 0; fi
n="${HF%%:*}"
c="${HF##*:}"
bash .device/gpu.sh deno run -A bench/serve_bench.ts --dump-workload "$OUT/workload.json" \
  --requests "$n" --seed "$HF_SEED" "${bench_flags[@]}"
hf_limit=$(($(left) - 10))
echo "=== hf transformers continuous batching: requests $n, concurrency $c (limit ${hf_limit} s)"
if [ "$hf_limit" -gt 60 ]; then
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 timeout -k 10 "$hf_limit" \
    python3 bench/serve_hf.py --workload "$OUT/workload.json" --requests "$n" --concurrency "$c" \
    --deadline-s $((hf_limit - 15)) 2>&1 | tee "$OUT/serve_hf.log"
  echo "hf rc=${PIPESTATUS[0]} after $((SECONDS - started)) s"
else
  echo "SKIP hf: only ${hf_limit} s left" | tee "$OUT/serve_hf.log"
fi

python3 - "$OUT/serve_bench.log" "$OUT/serve_hf.log" "$n" "$c" "$HF_SEED" <<'EOF' | tee "$OUT/serve_summary.txt"
import re
import sys

bench_log, hf_log, n, c, seed = sys.argv[1:]

def metrics(lines):
    text = "".join(lines)
    found = {}
    patterns = {
        "completion tok/s": r"completion tok/s: (\S+)", "total tok/s": r"total tok/s: (\S+)",
        "RPS": r"RPS: (\S+)", "TTFT avg ms": r"first-token latency \(ms\):.*avg (\S+)",
        "TTFT max ms": r"first-token latency \(ms\):.*max ([^,\s]+)",
        "ITL p50 ms": r"per-token latency \(ms\): p50 ([^,\s]+)",
        "ITL p99 ms": r"per-token latency \(ms\):.*p99 (\S+)",
    }
    for key, pattern in patterns.items():
        match = re.search(pattern, text)
        found[key] = float(match.group(1)) if match else None
    return found

denali, block = None, None
for line in open(bench_log, errors="replace"):
    if line.startswith("=== "):
        block = [] if line.strip() == f"=== requests {n}, concurrency {c}, seed {seed}" else None
        if block is not None:
            denali = block
    elif block is not None:
        block.append(line)
hf_lines = open(hf_log, errors="replace").readlines()
partial = [line.strip() for line in hf_lines if line.startswith("PARTIAL")]
d, h = metrics(denali or []), metrics(hf_lines)
print(f"=== side by side: the {n} requests of serve_bench.ts's seed-{seed} workload, "
      f"concurrency {c}")
print("Denali through its HTTP server (serve_bench.ts); HF in-process (serve_hf.py, no HTTP).")
print("denali / hf: above 1 is better for throughput rows, below 1 is better for latency rows")
if partial:
    print("HF did not finish: " + partial[0])
print("| metric | denali | hf transformers | denali / hf |")
print("|---|---:|---:|---:|")
for key in d:
    a, b = d[key], h[key]
    ratio = "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"
    cell = lambda x: "-" if x is None else f"{x:g}"
    print(f"| {key} | {cell(a)} | {cell(b)} | {ratio} |")
EOF
echo "session wall: $((SECONDS - started)) s"
