#!/usr/bin/env bash
# Host cost of serving, with the GPU's work taken out: the fake CUDA driver (tests/fake_driver,
# built with 8 GiB of pretend device memory) runs every kernel as a no-op, so what is left is the
# engine's and the server's own time. Runs on any machine with gcc (no GPU):
#   bash tools/host_cost.sh [preset] [concurrency]      # default llama3.2-1b 256
# Prints the engine-only run (bench/engine_bench.ts: tokens/s and host gap per step), then the
# HTTP run (bench/serve_bench.ts against serve.ts on this machine) and the server process's CPU
# seconds and CPU time per streamed token (utime + stime from /proc, all its threads). The client
# shares the machine's cores with the server, so read the HTTP tokens/s as a floor.
# TARGET host_server_us_per_token: that CPU time must fit in the GPU's time per token, or the
# server, not the device, sets the pace. The goal is session 13's H200 Llama-3-8B figure at
# concurrency 256 (ITL p50 16.8 ms, bench/results/2026-12-06-s13-throughput-final-h200.md) over
# the 256 tokens a step then streams: 65 µs.
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-llama3.2-1b}"
concurrency="${2:-256}"
port="${PORT:-8177}"
work="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
sed 's/#define TOTAL_MEMORY ((uint64_t)1 << 30)/#define TOTAL_MEMORY ((uint64_t)1 << 33)/' \
  tests/fake_driver/fake_driver.c >"$work/fake.c"
grep -q "1 << 33" "$work/fake.c" || { echo "host_cost.sh: fake_driver.c's TOTAL_MEMORY moved" >&2; exit 1; }
gcc -O2 -shared -fPIC -std=c11 -DFAKE_LAUNCH_EX -o "$work/libfake.so" "$work/fake.c"
export DENALI_LIBCUDA="$work/libfake.so"

echo "=== engine only: $preset, 1000 requests, concurrency $concurrency"
deno run -A bench/engine_bench.ts --preset "$preset" --requests 1000 --concurrency "$concurrency" \
  --max-num-seqs "$concurrency" --profile 2>&1 | tee "$work/engine.log" |
  grep -E "^(engine-only|completion|PROFILE steps)"
# The same seeded workload as serve_bench.ts's: its generated tokens are the HTTP run's too.
tokens=$(grep -o '"generatedTokens":[0-9]*' "$work/engine.log" | cut -d: -f2)
echo "generated tokens: $tokens"

echo "=== HTTP: serve.ts + serve_bench.ts, 1000 requests, concurrency $concurrency"
deno run -A serve.ts --backend cuda --random-weights "$preset" --port "$port" \
  --max-num-seqs "$concurrency" >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 120); do
  grep -q "serving on" "$work/serve.log" 2>/dev/null && break
  sleep 1
done
grep -q "serving on" "$work/serve.log" || { cat "$work/serve.log" >&2; exit 1; }
ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
before=$(ticks)
deno run -A bench/serve_bench.ts --url "http://127.0.0.1:$port" --requests 1000 \
  --concurrency "$concurrency" 2>&1 | tee "$work/bench.log" | grep -E "latency|tok/s"
after=$(ticks)
hz=$(getconf CLK_TCK)
awk -v t="$((after - before))" -v hz="$hz" -v tok="$tokens" -v goal=65 'BEGIN {
  us = 1e6 * t / hz / tok
  printf "server CPU: %.2f s, %.1f us per streamed token (%d tokens)\n", t / hz, us, tok
  printf "TARGET host_server_us_per_token value=%.1f goal=%d %s\n", us, goal, us <= goal ? "met" : "MISSED"
}'
