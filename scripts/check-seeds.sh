#!/usr/bin/env bash
# Seeds 001 and 003 side by side: each seed's own algorithm (numpy references in
# bench/seeds/, over seeds 1, 2 and 3) and backprop's run of the matching config
# (configs/fashion-mnist-nielsen.ini, configs/ng-digits.ini) on the same Fashion-MNIST data
# and hyperparameters. Passes when backprop's final test accuracy lies within the
# references' range widened by 1 point and its training-cost curve tracks theirs
# (bench/seeds/compare.py says how). Takes about 5 minutes; not part of the tests.
# Usage: scripts/check-seeds.sh [mpirun ranks, default 2]
set -euo pipefail
cd "$(dirname "$0")/.."
np=${1:-2}
source scripts/release-env.sh dataset-fashion-mnist python3-numpy
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
for s in 1 2 3; do
    /usr/bin/python3 bench/seeds/nielsen.py --seed "$s" >"$out/nielsen-$s.json"
    /usr/bin/python3 bench/seeds/ng.py --seed "$s" >"$out/ng-$s.json"
done
for pair in nielsen:fashion-mnist-nielsen ng:ng-digits; do
    kind=${pair%%:*} name=${pair#*:}
    mpirun --oversubscribe -np "$np" build/release/backprop train "configs/$name.ini" \
        --set checkpoint.dir="$out/$name" --set log.progress=off | tail -2
    /usr/bin/python3 bench/seeds/compare.py "$kind" "$out/$name/metrics.csv" \
        "$out/$kind"-[123].json || status=1
done
exit $status
