#!/usr/bin/env bash
# What checkpoints cost training: W3 at 2 ranks without checkpoints, with one every 20
# steps written in the background, and (with the git history) the same with the build
# before background writes, where every rank waited for the write. Rewrites
# docs/checkpoints.md. Takes about 5 minutes; not part of the tests.
# Usage: scripts/bench-checkpoint.sh [REPEATS]   (runs of each kind, default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh dataset-fashion-mnist python3-numpy
if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DBACKPROP_TESTS=OFF >/dev/null
cmake --build build/bench -j "$(nproc)" --target backprop
before=()
BEFORE=f324f75 # the last commit whose checkpoints stalled every rank
if git cat-file -e "$BEFORE^{commit}" 2>/dev/null; then
    [ -d build/ckpt-before ] || git worktree add --detach build/ckpt-before "$BEFORE"
    cmake -S build/ckpt-before -B build/ckpt-before/build -DCMAKE_BUILD_TYPE=Release \
          -DBACKPROP_TESTS=OFF >/dev/null
    cmake --build build/ckpt-before/build -j "$(nproc)" --target backprop
    before=(--before build/ckpt-before/build/backprop)
fi
exec /usr/bin/python3 bench/checkpoint.py --backprop build/bench/backprop "${before[@]}" \
    --repeats "${1:-3}" --out docs/checkpoints.md
