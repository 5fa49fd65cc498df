#!/usr/bin/env bash
# This machine, around a device call: what the carry needs, and the tree put back after.
#   bash tools/device_carry.sh prepare   # before: .device/ packed, its commit, sm_80 PTX set aside
#   PACK_PTX=1 bash tools/device_carry.sh prepare   # the same, the other PTX packed into .device
#   bash tools/device_carry.sh restore   # after: the PTX back (never over a newer build)
# The device tool carries the working tree and the named ignored paths, 64 MiB in all. The tree's
# sm_80 PTX (~10 MB) is not needed on the sm_90 machines, so it waits in $ASIDE during the call;
# restore puts back only files the tree lacks (a kernel rebuilt meanwhile wrote its own), and a
# commit or test run while the files are aside would see them missing, so restore comes first.
# PACK_PTX=1 also sets the sm_90 PTX aside and carries it xz-packed in .device/ptx.txz (~7 MB
# less), so .base and .prev fit beside the tree; tools/device_env.sh unpacks it, so on the GPU
# machine every command must source it first (the scripts under tools/ do; a bare
# `bash .device/gpu.sh deno ...` would find no PTX).
set -euo pipefail
cd "$(dirname "$0")/.."
aside="${ASIDE:-/tmp/denali-sm80}"
limit=$((64 * 1024 * 1024))
case "${1:-}" in
  prepare)
    [ -f .device/gpu.sh ] || bash ../shared/tools/gpu-prep.sh
    if [ -d .device/deno_dir ]; then
      tar -cJf .device/deno_dir.txz -C .device deno_dir && rm -rf .device/deno_dir
    fi
    git diff --quiet HEAD || echo "note: uncommitted changes travel too; .device/commit names HEAD"
    git rev-parse --short HEAD >.device/commit
    mkdir -p "$aside"
    if ls kernels/ptx/*.sm_80.ptx >/dev/null 2>&1; then mv kernels/ptx/*.sm_80.ptx "$aside"/; fi
    rm -f .device/ptx.txz
    if [ "${PACK_PTX:-0}" = 1 ] && ls kernels/ptx/*.ptx >/dev/null 2>&1; then
      tar -cJf .device/ptx.txz kernels/ptx/*.ptx && mv kernels/ptx/*.ptx "$aside"/
    fi
    # Tracked and untracked-but-not-ignored files, as the tool copies them (the set-aside PTX,
    # still tracked, is absent and not counted).
    tree=$(git ls-files -co --exclude-standard -z | { du -cb --files0-from=- 2>/dev/null || true; } |
      tail -1 | cut -f1)
    total=$tree
    for extra in .device .base .prev; do
      if [ -d "$extra" ]; then total=$((total + $(du -sb "$extra" | cut -f1))); fi
    done
    echo "commit $(cat .device/commit); tree $((tree >> 20)) MiB, with .device/.base/.prev $((total >> 20)) MiB of 64"
    [ "$total" -lt "$limit" ] || { echo "over the carry limit: leave .base or .prev out of carry"; exit 1; }
    ;;
  restore)
    moved=0
    for f in "$aside"/*.ptx; do
      [ -e "$f" ] || continue
      if [ -e "kernels/ptx/$(basename "$f")" ]; then rm "$f"; else mv "$f" kernels/ptx/ && moved=$((moved + 1)); fi
    done
    rm -f .device/ptx.txz
    echo "restored $moved PTX files"
    git status --short kernels/ptx
    ;;
  *)
    echo "usage: bash tools/device_carry.sh prepare|restore" >&2
    exit 2
    ;;
esac
