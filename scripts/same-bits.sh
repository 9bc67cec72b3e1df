#!/usr/bin/env bash
# Did a change move a bit? Trains the same seeds with REV's build and this tree's: each
# optimizer (sgd, sgd with momentum and a step schedule, adam, adamw, lbfgs, bf16 products)
# on 3000 Fashion-MNIST rows with validation and test sets, at 1 rank and at 2 (small
# buckets, so the exchange overlaps), plus a resume mid-epoch, and compares every
# checkpoint and metrics row bit for bit but the timings (scripts/same-bits.py).
# Not part of the tests (it needs two builds). Usage: scripts/same-bits.sh REV
# OLD_BIN / NEW_BIN name prebuilt binaries instead of building REV / this tree.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: scripts/same-bits.sh REV}
scripts/deps.sh dataset-fashion-mnist python3-h5py python3-numpy
if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
old=${OLD_BIN:-}
new=${NEW_BIN:-}
if [ -z "$old" ]; then
    base=build/compare-$(git rev-parse --short "$rev")
    [ -d "$base" ] || git worktree add --detach "$base" "$rev" >/dev/null
    cmake -S "$base" -B "$base/build/compare" -DCMAKE_BUILD_TYPE=Release -DBACKPROP_TESTS=OFF >/dev/null
    cmake --build "$base/build/compare" -j "$(nproc)" --target backprop >/dev/null
    old=$base/build/compare/backprop
fi
if [ -z "$new" ]; then
    cmake -S . -B build/compare -DCMAKE_BUILD_TYPE=Release -DBACKPROP_TESTS=OFF >/dev/null
    cmake --build build/compare -j "$(nproc)" --target backprop >/dev/null
    new=build/compare/backprop
fi
F=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
config() { # NAME KEY=VALUE... ([train] keys)
    local name=$1
    shift
    {
        printf '[data]\ntrain = %s\ntrain_labels = %s\n' "$F/train-images-idx3-ubyte.gz" \
            "$F/train-labels-idx1-ubyte.gz"
        printf 'test = %s\ntest_labels = %s\n' "$F/t10k-images-idx3-ubyte.gz" \
            "$F/t10k-labels-idx1-ubyte.gz"
        printf 'limit = 3000\nvalidation_split = 500\n'
        printf '[network]\nlayers = 784, 64, 32, 10\nhidden = relu\noutput = softmax\n'
        printf 'cost = cross_entropy\n[train]\nepochs = 2\nbatch_size = 100\nlambda = 5\n'
        printf 'seed = 7\nthreads = 1\n'
        printf '%s\n' "$@"
        printf '[checkpoint]\nevery_steps = 7\nkeep = 0\n[comm]\nbucket_mb = 0.05\n'
        printf '[log]\nprogress = off\n'
    } | sed 's/^\([a-z_0-9]*\)=/\1 = /' | awk -F' = ' '{ if ($1 in seen) line[seen[$1]] = $0;
        else { seen[$1] = NR; line[NR] = $0 } } END { for (i = 1; i <= NR; i++)
        if (i in line) print line[i] }' >"$tmp/$name.ini" # a later KEY=VALUE replaces one above
}
config sgd learning_rate=0.1
config momentum learning_rate=0.05 momentum=0.9 lr_schedule=step lr_step_epochs=1
config adam optimizer=adam learning_rate=0.001
config adamw optimizer=adam learning_rate=0.001 weight_decay=decoupled
config lbfgs optimizer=lbfgs batch_size=2500 epochs=4
case $("$new" --version) in # bf16 products are refused by the double build
*double*) ;;
*) config bf16 learning_rate=0.1 precision=bf16 ;;
esac
fail=0
run() { # BIN DIR RANKS CONFIG [ARGS]: in $tmp/run, whose path the stored config names
    local bin=$1 dir=$2 np=$3 ini=$4
    shift 4
    rm -rf "$tmp/run"
    [ -d "$dir" ] && mv "$dir" "$tmp/run"
    mpirun --oversubscribe -np "$np" "$bin" train "$ini" --set "checkpoint.dir=$tmp/run" \
        --set "log.metrics=$tmp/run/metrics.csv" "$@" >>"$dir.log" 2>&1 ||
        { echo "FAILED: $bin $ini at $np ranks: $(tail -n 3 "$dir.log")"; fail=1; }
    mv "$tmp/run" "$dir"
}
for ini in "$tmp"/*.ini; do
    name=$(basename "$ini" .ini)
    for np in 1 2; do
        for side in old new; do
            bin=$old
            [ "$side" = new ] && bin=$new
            d=$tmp/$name-$np-$side
            if [ "$name" = sgd ] || [ "$name" = adam ]; then
                # stopped after 1 epoch, resumed to 2: the resume must add no bit either
                run "$bin" "$d" "$np" "$ini" --set train.epochs=1
                run "$bin" "$d" "$np" "$ini" --resume latest
            else
                run "$bin" "$d" "$np" "$ini"
            fi
        done
        echo "== $name at $np ranks"
        /usr/bin/python3 scripts/same-bits.py "$tmp/$name-$np-old" "$tmp/$name-$np-new" "$new" || fail=1
    done
done
[ "$fail" = 0 ] && echo "same bits" || { echo "DIFFERENT"; exit 1; }
