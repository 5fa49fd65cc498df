#!/usr/bin/env bash
# This machine, before a throughput device call: the baseline checkout in .base/ (ignored), its
# PTX packed for the carry (below):
#   bash tools/make_base.sh [commit]        # default 4ce50e3, the throughput issue's baseline
#   DEST=.prev bash tools/make_base.sh 644cbf6   # another baseline beside it (e.g. the last commit)
# The baseline predates the models/ layer, so this tree's bench/engine_bench.ts (public Engine
# API only) is copied in with its one config import pointed at where the baseline kept it.
set -euo pipefail
cd "$(dirname "$0")/.."
commit="${1:-4ce50e3}"
dest="${DEST:-.base}"
rm -rf "$dest" && mkdir -p "$dest"
git archive "$commit" | tar -x -C "$dest" --exclude=bench/results --exclude=kernels/hsaco --exclude=tests
config=models/config.ts
[ -f "$dest/$config" ] || config=engine/config.ts
sed "s#\"\.\./models/config\.ts\"#\"../$config\"#" bench/engine_bench.ts >"$dest/bench/engine_bench.ts"
deno check "$dest/bench/engine_bench.ts" >/dev/null 2>&1 || echo "warning: $dest/bench/engine_bench.ts does not type-check (it runs with --no-check)"
git rev-parse --short "$commit" >"$dest/commit"
# Packed for the device tool's 64 MiB carry: no sm_80 PTX (the GPU machines are sm_90), the rest
# xz-compressed; tools/device_env.sh unpacks it on the GPU machine.
rm -f "$dest"/kernels/ptx/*.sm_80.ptx
xz -9 -f "$dest"/kernels/ptx/*.ptx
du -sh "$dest"
