#!/usr/bin/env bash
# GPU machine (or any machine with ptxas and cuobjdump): the SASS that ptxas makes of Denali's
# PTX, for counting what a kernel's inner loop issues before changing it (this repository's
# development machine has ptxas but no disassembler).
#   bash tools/sass_stats.sh <ptx file> <kernel-name regex> [arch, default sm_90a]
#   e.g. bash tools/sass_stats.sh kernels/ptx/attention.sm_90.ptx 'decode_attn_(fp8_)?d128_g4$' sm_90
# Writes $OUT/sass_<kernel>.txt (the listing) and prints, per kernel, its registers and an opcode
# histogram (the most frequent 25), so two kernels or two trees compare at a glance.
source "$(dirname "$0")/device_env.sh"
ptx="${1:?PTX file}"
regex="${2:?kernel-name regex}"
arch="${3:-sm_90a}"
cuobjdump_bin="$(command -v cuobjdump || ls /usr/local/cuda/bin/cuobjdump 2>/dev/null || true)"
if [ -z "$cuobjdump_bin" ]; then
  echo "no cuobjdump on this machine: SASS needs the CUDA toolkit's disassembler" >&2
  exit 1
fi
cubin="$(mktemp --suffix .cubin)"
src="$ptx"
if [[ "$ptx" == *.xz ]]; then
  src="$(mktemp --suffix .ptx)"
  xz -dc "$ptx" >"$src"
fi
ptxas -arch="$arch" -v "$src" -o "$cubin" 2>"$OUT/ptxas.txt" || {
  cat "$OUT/ptxas.txt" >&2
  exit 1
}
for kernel in $(grep -oE '^\.visible \.entry [A-Za-z0-9_]+' "$src" | awk '{print $3}' | grep -E "$regex"); do
  listing="$OUT/sass_${kernel}.txt"
  "$cuobjdump_bin" -sass -fun "$kernel" "$cubin" >"$listing" 2>&1
  echo "=== $kernel ($arch): $(grep -cE '^\s+/\*[0-9a-f]{4,}\*/' "$listing") instructions"
  grep -A3 "entry function '$kernel'" "$OUT/ptxas.txt" | grep -oE "Used [0-9]+ registers" | head -1
  # The opcode is the first word after the address comment; predicates (@P0) come before it.
  # Addresses past 0xfff0 have five hex digits (before session 24 the pattern took four, so a
  # kernel past 4096 instructions was counted to its 4096th).
  grep -E '^\s+/\*[0-9a-f]{4,}\*/' "$listing" | sed -E 's#^\s+/\*[0-9a-f]{4,}\*/\s+##; s#^@!?U?P[0-9T] ##' |
    awk '{print $1}' | sed 's/;$//' | sort | uniq -c | sort -rn | head -25
done
rm -f "$cubin"
[ "$src" != "$ptx" ] && rm -f "$src"
exit 0
