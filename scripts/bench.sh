#!/usr/bin/env bash
# Benchmarks backprop against PyTorch on the three workloads of docs/benchmarks.md and
# rewrites that file, with a bf16 section ([train] precision = bf16 against float and
# against PyTorch's bf16 autocast, where the CPU has bf16; skipped and said where not), and
# the large products on each library against the build's choice, and an any_scale section
# ([train] reproducible = any_scale against same_ranks). Takes about 35 minutes.
# Usage: scripts/bench.sh [SECONDS]   (measured training time per run, default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh dataset-fashion-mnist python3-torch python3-numpy python3-h5py time
if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DBACKPROP_TESTS=OFF >/dev/null
cmake --build build/bench -j "$(nproc)" --target backprop bench-gemm bench-allreduce
# Same seed, same metrics: this tree without oneDNN, and the last commit before the speed
# work (needs the git history; skipped in a tarball).
same=()
BEFORE=86984ce
if git cat-file -e "$BEFORE^{commit}" 2>/dev/null; then
    cmake -S . -B build/bench-plain -DCMAKE_BUILD_TYPE=Release -DBACKPROP_TESTS=OFF \
          -DBACKPROP_ONEDNN=OFF >/dev/null
    cmake --build build/bench-plain -j "$(nproc)" --target backprop
    [ -d build/bench-before ] || git worktree add --detach build/bench-before "$BEFORE"
    cmake -S build/bench-before -B build/bench-before/build -DCMAKE_BUILD_TYPE=Release \
          -DBACKPROP_TESTS=OFF >/dev/null
    cmake --build build/bench-before/build -j "$(nproc)" --target backprop
    same=(--same-seed build/bench-before/build/backprop build/bench-plain/backprop)
fi
exec /usr/bin/python3 bench/run.py --seconds "${1:-20}" --backprop build/bench/backprop \
    --gemm build/bench/bench-gemm --allreduce build/bench/bench-allreduce "${same[@]}" \
    --out docs/benchmarks.md --bf16
