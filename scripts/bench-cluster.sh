#!/usr/bin/env bash
# Scaling across simulated hosts: backprop with overlap on and off, and PyTorch DDP (gloo),
# on 1-3 hosts (scripts/cluster.sh) with links limited to 4 and 1 Gbit/s, plus the model of
# the step checked against the runs; rewrites docs/scaling.md. Needs root (network
# namespaces). Takes about 10 minutes; not part of the tests.
# Usage: scripts/bench-cluster.sh [--report]   (--report: rewrite docs/scaling.md from the
# last run's build/bench/cluster.json without measuring again)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench-cluster.sh: needs root (network namespaces)" >&2; exit 2; }
scripts/deps.sh dataset-fashion-mnist python3-torch python3-numpy iproute2 util-linux
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DBACKPROP_TESTS=OFF >/dev/null
cmake --build build/bench -j "$(nproc)" --target backprop bench-allreduce
trap 'scripts/cluster.sh down' EXIT
/usr/bin/python3 bench/cluster.py --backprop build/bench/backprop \
    --allreduce build/bench/bench-allreduce --json build/bench/cluster.json --out docs/scaling.md "$@"
