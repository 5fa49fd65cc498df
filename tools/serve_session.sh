#!/usr/bin/env bash
# GPU machine: start the server with random Llama-3-8B weights, run bench/serve_bench.ts at the
# given "requests:concurrency" pairs, stop the server. Logs under $OUT.
#   bash tools/serve_session.sh 1000:256 300:32 20:1
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/denali-out}"
mkdir -p "$OUT"
bash .device/gpu.sh deno run -A serve.ts --backend cuda --random-weights llama3-8b \
  --max-model-len 2048 --port 8000 >"$OUT/server.log" 2>&1 &
server=$!
for _ in $(seq 1 180); do
  curl -sf http://127.0.0.1:8000/health >/dev/null && break
  sleep 1
done
for pair in "$@"; do
  echo "=== requests ${pair%%:*}, concurrency ${pair##*:}"
  bash .device/gpu.sh deno run -A bench/serve_bench.ts --requests "${pair%%:*}" \
    --concurrency "${pair##*:}" --vocab 32000 --max-len 2048
done 2>&1 | tee "$OUT/serve_bench.log"
curl -s http://127.0.0.1:8000/metrics >"$OUT/metrics.txt"
kill -TERM "$server"
wait "$server"
echo "server exit: $?"
