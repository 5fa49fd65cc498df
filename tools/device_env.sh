#!/usr/bin/env bash
# Sourced by the scripts that run on the GPU machine: the repository root becomes the working
# directory, $OUT exists, and the module cache is unpacked where it travelled packed
# (tar -cJf .device/deno_dir.txz -C .device deno_dir) because the working tree and .device
# together pass the device tool's 64 MiB carry limit.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-/tmp/denali-out}"
mkdir -p "$OUT"
if [ ! -d .device/deno_dir ] && [ -f .device/deno_dir.txz ]; then
  tar -xJf .device/deno_dir.txz -C .device
fi
