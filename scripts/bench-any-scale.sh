#!/usr/bin/env bash
# What [train] reproducible = any_scale costs the trainer (docs/reproducibility.md): W2
# (784-256-256-10, batch 128) and W3 (784-2048-2048-10, batch 256) on Fashion-MNIST at
# 1 rank and 2 ranks x 1 thread, and the main job at 2 ranks x 1 thread, same_ranks
# against any_scale at micro_batch 32, 64 and 128,
# the settings alternating run by run so that a slow spell of the host falls on all.
# Prints each run's step time (the trainer's `step time` line) and the medians side by side.
# Not part of the tests. Usage: scripts/bench-any-scale.sh [REPS]   (default 3)
# BIN names the binary (default build/f/backprop).
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3}
bin=${BIN:-build/f/backprop}
if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
F=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
config() { # FILE LAYERS BATCH LIMIT
    cat >"$1" <<INI
[data]
train = $F/train-images-idx3-ubyte.gz
train_labels = $F/train-labels-idx1-ubyte.gz
limit = $4
[network]
layers = $2
hidden = relu
output = softmax
cost = cross_entropy
[train]
epochs = 1
batch_size = $3
learning_rate = 0.05
momentum = 0.9
lambda = 5
seed = 1
threads = 1
[checkpoint]
every_epochs = 0
[log]
progress = off
INI
}
config "$tmp/W2.ini" "784, 256, 256, 10" 128 30720
config "$tmp/W3.ini" "784, 2048, 2048, 10" 256 15360
# The shared-memory settings of bench/run.py (docs/benchmarks.md says why).
mca=(--mca btl_vader_single_copy_mechanism none --mca btl_vader_max_send_size 131072
     --mca btl_vader_eager_limit 32768)
step_ms() { sed -n 's/^step time: \([0-9.]*\) ms.*/\1/p'; }
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
# The main job (configs/fashion-mnist.ini: 784-256-10, batch 64), 2 epochs, as W2 and W3.
sed -e 's/^epochs = .*/epochs = 2/' -e 's/^threads = .*/threads = 1/' \
    -e 's/^every_epochs = .*/every_epochs = 0/' -e 's/^progress = .*/progress = off/' \
    configs/fashion-mnist.ini >"$tmp/main.ini"
modes=(same_ranks any_scale:32 any_scale:64 any_scale:128)
for w in W2 W3 main; do
    for np in 1 2; do
        [ "$w" = main ] && [ "$np" = 1 ] && continue # the main job runs at 2 ranks
        for m in "${modes[@]}"; do : >"$tmp/$m"; done
        for i in $(seq "$reps"); do
            for m in "${modes[@]}"; do
                args=(--set train.reproducible="${m%%:*}")
                [ "$m" = same_ranks ] || args+=(--set train.micro_batch="${m#*:}")
                rm -rf "$tmp/run"
                mpirun "${mca[@]}" --oversubscribe -np "$np" "$bin" train "$tmp/$w.ini" \
                    --set checkpoint.dir="$tmp/run" "${args[@]}" | step_ms >>"$tmp/$m"
            done
        done
        s=$(median <"$tmp/same_ranks")
        line="$w, $np rank(s) x 1 thread, median of $reps: same_ranks $s ms"
        for m in "${modes[@]:1}"; do
            a=$(median <"$tmp/$m")
            line+=", micro_batch ${m#*:} $a ms ($(awk -v s="$s" -v a="$a" 'BEGIN {printf "%.2fx", s / a}'))"
        done
        echo "$line"
    done
done
