#!/usr/bin/env bash
# backprop against scikit-learn's MLPClassifier (Debian's python3-sklearn) for each solver
# it shares with backprop -- sgd, adam, lbfgs -- with the same network, data, L2 term,
# batch and epochs (bench/sklearn_compare.py says how the two spell one run). Prints each
# run and a table of medians; exits 1 unless every solver's accuracies are within 1 point
# and backprop is faster. About a minute per repetition on 2 cores; not part of the tests.
# Usage: scripts/bench-sklearn.sh [REPS]   (default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/release-env.sh dataset-fashion-mnist python3-numpy python3-sklearn >/dev/null
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "# $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
/usr/bin/python3 bench/sklearn_compare.py build/release/backprop "$out" "${1:-1}"
