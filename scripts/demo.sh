#!/usr/bin/env bash
# The main job: installs what is missing (Debian 12), builds backprop, trains
# configs/fashion-mnist.ini on Fashion-MNIST with 2 MPI ranks, and draws the run
# (backprop plot, with gnuplot) into runs/fashion-mnist/plot.png.
# Usage: scripts/demo.sh [RANKS]   (mpirun -np RANKS, default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
np=${1:-2}
source scripts/release-env.sh dataset-fashion-mnist gnuplot-nox
# The demo starts afresh each time: backprop refuses to train over an existing run.
rm -rf runs/fashion-mnist
mpirun --oversubscribe -np "$np" build/release/backprop train configs/fashion-mnist.ini
build/release/backprop plot runs/fashion-mnist
cat <<MSG

Picture:     runs/fashion-mnist/plot.png (cost, accuracy, step time, confusion matrix)
Checkpoints: runs/fashion-mnist/ckpt-<step>.h5 and runs/fashion-mnist/latest.h5
Metrics:     runs/fashion-mnist/metrics.csv
Next:        build/release/backprop inspect runs/fashion-mnist/latest.h5
             build/release/backprop eval --checkpoint runs/fashion-mnist/latest.h5 \\
                 --data /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz \\
                 --labels /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
MSG
