#!/usr/bin/env bash
# A slow rank, seen: trains Fashion-MNIST on 3 ranks of this machine while rank 2 is
# stopped for 20 ms of every 40 (SIGSTOP, SIGCONT), so that straggler detection names it
# and the flight recorder's trace shows the others waiting for it; then draws the trace
# with backprop plot. Usage: scripts/straggler-demo.sh [RUN_DIR]   (default
# runs/straggler-demo, replaced). Writes RUN_DIR/trace.json, and its last 8 steps drawn
# alone in RUN_DIR/timeline/plot.png (docs/trace-timeline.png is one).
# Needs a build in build/ (scripts/demo.sh or the README's cmake commands).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-runs/straggler-demo}
bp=${BACKPROP:-$PWD/build/backprop} # BACKPROP: another build
[ -x "$bp" ] || { echo "no build/backprop: build first (README, Build and test)" >&2; exit 2; }
scripts/deps.sh dataset-fashion-mnist gnuplot-nox
if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
rm -rf "$dir"
F=/usr/share/datasets/fashion-mnist
# Steps of a few milliseconds: the net of tests/cli/test_straggler.sh.
mpirun --oversubscribe -np 3 "$bp" train configs/fashion-mnist.ini \
    --set data.limit=9600 --set data.validation_split=0 --set data.test= \
    --set 'network.layers=784, 512, 512, 10' --set train.batch_size=192 \
    --set train.learning_rate=0.05 --set train.epochs=5 --set train.threads=1 \
    --set checkpoint.every_epochs=0 --set checkpoint.dir="$dir" --set log.progress=off \
    --trace "$dir/trace.json" &
job=$!
victim=
# rank 2's process: its environment says which rank it is
for _ in $(seq 1000); do
    for p in $(pgrep -f "$bp train configs/fashion-mnist.ini" || true); do
        if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=2; then
            victim=$p
        fi
    done
    [ -n "$victim" ] && break
    sleep 0.01
done
trap 'kill -CONT "$victim" 2>/dev/null || true' EXIT
while kill -STOP "$victim" 2>/dev/null; do
    sleep 0.02
    kill -CONT "$victim" 2>/dev/null || break
    sleep 0.02
done &
wait "$job"
mkdir "$dir/timeline"
cp "$dir/trace.json" "$dir/timeline/"
"$bp" plot "$dir/timeline" --trace-steps 8
