#!/usr/bin/env bash
# This machine, before a throughput device call: the baseline checkout in .base/ (ignored),
#   bash tools/make_base.sh [commit]        # default 4ce50e3, the throughput issue's baseline
# The baseline predates the models/ layer, so this tree's bench/engine_bench.ts (public Engine
# API only) is copied in with its one config import pointed at where the baseline kept it.
set -euo pipefail
cd "$(dirname "$0")/.."
commit="${1:-4ce50e3}"
rm -rf .base && mkdir -p .base
git archive "$commit" | tar -x -C .base --exclude=bench/results --exclude=kernels/hsaco --exclude=tests
config=models/config.ts
[ -f ".base/$config" ] || config=engine/config.ts
sed "s#\"\.\./models/config\.ts\"#\"../$config\"#" bench/engine_bench.ts >.base/bench/engine_bench.ts
deno check .base/bench/engine_bench.ts >/dev/null 2>&1 || echo "warning: .base/bench/engine_bench.ts does not type-check (it runs with --no-check)"
echo "$commit" >.base/commit
du -sh .base
