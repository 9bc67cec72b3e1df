#!/usr/bin/env bash
# Did a change move the speed? Builds REV in a git worktree and this tree, then trains W2 of
# docs/benchmarks.md (784-256-256-10 relu/softmax, batch 128, Fashion-MNIST) for 2 epochs
# at 1 rank and at 2 ranks x 1 thread, the two builds alternating run by run so that a slow
# spell of the host falls on both. Prints each run's step time and the medians side by side.
# Not part of the tests. Usage: scripts/bench-compare.sh REV [REPS]   (default 5 reps)
# WORKLOAD=W3 trains W3 instead (784-2048-2048-10, batch 256, eta 0.05) for 1 epoch.
# OLD_ARGS and NEW_ARGS add arguments to REV's and this tree's runs, e.g. to time one
# setting against another in the same code:
#   OLD_ARGS="--set comm.timeout=0" scripts/bench-compare.sh HEAD
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: scripts/bench-compare.sh REV [REPS]}
reps=${2:-5}
scripts/deps.sh dataset-fashion-mnist
if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
base=build/compare-$(git rev-parse --short "$rev")
[ -d "$base" ] || git worktree add --detach "$base" "$rev" >/dev/null
for tree in "$base" .; do
    cmake -S "$tree" -B "$tree/build/compare" -DCMAKE_BUILD_TYPE=Release -DBACKPROP_TESTS=OFF >/dev/null
    cmake --build "$tree/build/compare" -j "$(nproc)" --target backprop >/dev/null
done
F=/usr/share/datasets/fashion-mnist
workload=${WORKLOAD:-W2}
case $workload in
W2) layers="784, 256, 256, 10" batch=128 eta=0.1 epochs=2 ;;
W3) layers="784, 2048, 2048, 10" batch=256 eta=0.05 epochs=1 ;;
*) echo "WORKLOAD is W2 or W3, not $workload" >&2 && exit 2 ;;
esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/w.ini" <<INI
[data]
train = $F/train-images-idx3-ubyte.gz
train_labels = $F/train-labels-idx1-ubyte.gz
[network]
layers = $layers
hidden = relu
output = softmax
cost = cross_entropy
[train]
epochs = $epochs
batch_size = $batch
learning_rate = $eta
lambda = 5
seed = 1
threads = 1
[checkpoint]
every_epochs = 0
[log]
progress = off
INI
# The shared-memory settings of bench/run.py (docs/benchmarks.md says why).
mca=(--mca btl_vader_single_copy_mechanism none --mca btl_vader_max_send_size 131072
     --mca btl_vader_eager_limit 32768)
step_ms() { sed -n 's/^step time: \([0-9.]*\) ms.*/\1/p'; }
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
for np in 1 2; do
    : >"$tmp/old" && : >"$tmp/new"
    for i in $(seq "$reps"); do
        for side in old new; do
            if [ "$side" = old ]; then bin=$base/build/compare/backprop extra=${OLD_ARGS:-}
            else bin=build/compare/backprop extra=${NEW_ARGS:-}; fi
            rm -rf "$tmp/run"
            # shellcheck disable=SC2086 # the extra arguments are words on purpose
            mpirun "${mca[@]}" --oversubscribe -np "$np" "$bin" train "$tmp/w.ini" \
                --set checkpoint.dir="$tmp/run" $extra | step_ms >>"$tmp/$side"
        done
        printf 'np %d, rep %d: %s %s ms, this tree %s ms\n' "$np" "$i" "$rev" \
            "$(tail -1 "$tmp/old")" "$(tail -1 "$tmp/new")"
    done
    o=$(median <"$tmp/old") n=$(median <"$tmp/new")
    printf '%s, %d rank(s) x 1 thread, median of %d: %s %s ms a step, this tree %s ms (%s)\n' \
        "$workload" "$np" "$reps" "$rev" "$o" "$n" "$(awk -v o="$o" -v n="$n" 'BEGIN {printf "%+.1f%%", 100 * (n - o) / o}')"
done
