#!/usr/bin/env bash
# [data] placement (issue 16), measured by bench/data_placement.py: peak memory per rank
# at 4 ranks for replicated, node and stream; start-up at 2 and 4 ranks, replicated against
# node; a generated HDF5 set 5x larger than a rank's memory cgroup, streamed at 1, 2 and 4
# ranks against replicated; W2's throughput streamed against replicated, on this node and
# across 2 simulated hosts; what one row costs streamed and copied from memory; and eval of
# 512 MB read in place against loaded whole, out of the page cache and in it. Needs root
# (cgroups, network namespaces, drop_caches) for the big, hosts and cold eval parts.
# Writes its results at the end of docs/benchmarks.md (section "Data placement"). About 12
# minutes and 4 GB of disk in a temporary directory; not part of the tests.
# Usage: scripts/bench-data.sh [PARTS, default rss,startup,big,w2,hosts,rows,eval] [REPS, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/release-env.sh dataset-fashion-mnist python3-numpy python3-h5py iproute2 >/dev/null
cmake --build build/release -j "$(nproc)" --target backprop bench-rowread >/dev/null
out=$(mktemp -d)
trap 'scripts/cluster.sh down >/dev/null 2>&1 || true; rm -rf "$out"' EXIT
/usr/bin/python3 bench/data_placement.py build/release/backprop "$out" "${1:-rss,startup,big,w2,hosts,rows,eval}" "${2:-3}" \
    --doc docs/benchmarks.md
