#!/usr/bin/env bash
# Sourced by the scripts that run on the GPU machine: the repository root becomes the working
# directory, $OUT exists, baseline PTX is unpacked (below), and the module cache is unpacked
# where it travelled packed (tar -cJf .device/deno_dir.txz -C .device deno_dir) because the
# working tree and .device together pass the device tool's 64 MiB carry limit.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-/tmp/denali-out}"
mkdir -p "$OUT"
if [ ! -d .device/deno_dir ] && [ -f .device/deno_dir.txz ]; then
  tar -xJf .device/deno_dir.txz -C .device
fi
# The tree's own PTX, where it travelled packed (PACK_PTX=1 bash tools/device_carry.sh prepare).
if [ -f .device/ptx.txz ] && ! ls kernels/ptx/*.sm_90.ptx >/dev/null 2>&1; then
  tar -xJf .device/ptx.txz
fi
# Baseline checkouts travel with their PTX xz-packed (tools/make_base.sh's trees beside .device
# pass the carry limit otherwise); the device tool copies them anew each call, so every script
# that may use one unpacks it here (session 21 lost a baseline run to a call that did not):
# .base, .prev and tools/decode_ab.sh's BASE.
for tree in .base .prev ${BASE:+"$BASE"}; do
  if ls "$tree"/kernels/ptx/*.xz >/dev/null 2>&1; then xz -d -f "$tree"/kernels/ptx/*.xz; fi
done
# .device/gpu.sh unpacks Deno on its first run on a fresh machine; two first runs at once lose
# that race ("Text file busy", session 23's parallel test processes), so it runs once here first.
if [ -f .device/gpu.sh ]; then bash .device/gpu.sh true; fi
