#!/usr/bin/env bash
# L-BFGS against seed 003's gradient descent on configs/ng-digits.ini: 400 gradient-descent
# steps (the config) and 100 L-BFGS iterations, both at 2 ranks; bench/lbfgs_vs_gd.py
# compares the regularised cost J and the training cost per cost evaluation. About 15 s;
# not part of the tests. Usage: scripts/bench-lbfgs.sh [ranks, default 2]
set -euo pipefail
cd "$(dirname "$0")/.."
np=${1:-2}
source scripts/release-env.sh dataset-fashion-mnist python3-numpy python3-h5py >/dev/null
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mpirun --oversubscribe -np "$np" build/release/backprop train configs/ng-digits.ini \
    --set checkpoint.dir="$out/gd" --set log.progress=off | tail -1
mpirun --oversubscribe -np "$np" build/release/backprop train configs/ng-digits.ini \
    --set checkpoint.dir="$out/lbfgs" --set train.optimizer=lbfgs --set train.epochs=100 \
    --set checkpoint.every_epochs=1 --set checkpoint.keep=0 --set log.progress=off | tail -1
/usr/bin/python3 bench/lbfgs_vs_gd.py "$out/gd" "$out/lbfgs"
