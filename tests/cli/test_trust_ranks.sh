#!/usr/bin/env bash
# Numerical safety and rank agreement (issue 25, items 3 and 4): a run never ends well or
# writes a checkpoint on weights that are not finite, and ranks started with configs, data
# or checkpoints of their own (mpirun's MPMD form, -wdir per rank) stop at setup with one
# exit-2 line naming what differs, instead of training apart or waiting for the watchdog.
source "$(dirname "$0")/lib.sh"
$PY "$SRC/tests/cli/make_data.py" "$T" || exit 1

# finite_weights CKPT: every parameter in CKPT is finite (read by h5py, not by backprop).
finite_weights() {
    $PY - "$1" <<'EOF'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    bad = [f"{g}/{p}" for g in f["model"] for p in ("W", "b")
           if not np.isfinite(f["model"][g][p][()]).all()]
sys.exit(f"not finite: {bad}" if bad else 0)
EOF
}

# ---- 1. NaN weights never end a run well (item 3) ----
# A relu net streams its file, which is rewritten in place with NaN mid-run (truncation is
# caught by the reader; changed contents are not). relu turns the NaN pre-activations into
# zeros, so the cost stays finite while every layer-0 weight becomes NaN: the run used to
# go on to exit 0 with a latest.h5 of NaN. The update's own check ends it at that step.
cat >stream.ini <<INI
[data]
train = $T/s.h5
placement = stream

[network]
layers = 4, 64, 3
hidden = relu
output = softmax
cost = cross_entropy

[train]
epochs = 100000
batch_size = 16
learning_rate = 0.1

[checkpoint]
dir = $T/srun
every_epochs = 5

[log]
progress = off
INI
for np in 1 2; do
    cp good.h5 s.h5
    rm -rf srun
    timeout -k 5 120 mpirun --oversubscribe -np "$np" "$BP" train stream.ini >out 2>err &
    job=$!
    # Wait for a checkpoint or two, then the NaN; a run that ended already has failed.
    for _ in $(seq 600); do
        [ -f srun/metrics.csv ] && [ "$(wc -l <srun/metrics.csv)" -gt 10 ] && break
        sleep 0.1
    done
    $PY - s.h5 <<'EOF'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r+") as f:
    f["X"][...] = np.full(f["X"].shape, np.nan, dtype=f["X"].dtype)
EOF
    wait $job
    rc=$?
    if [ "$rc" -ne 1 ] || [ "$(grep -c 'backprop: error' err)" -ne 1 ] ||
        ! grep -qE "training diverged at epoch [0-9]+, step [0-9]+: [0-9]+ of layer 0's 256 weights are not finite" err; then
        bad "np$np NaN streamed mid-run: exit $rc (want 1), stderr:"
        sed 's/^/    /' err | head -5
    else
        ok
    fi
    if finite_weights srun/latest.h5 >check.out 2>&1; then ok; else bad "np$np latest.h5: $(cat check.out)"; fi
done

# ---- 2. Every rank runs rank 0's config, data and state (item 4) ----
# Two directories with their own c.ini and good.h5, started as one job. Paths are relative,
# so each rank reads its own files: they may be spelled alike and hold other things.
mkdir -p A B
for d in A B; do
    cp good.h5 $d/good.h5
    cat >$d/c.ini <<INI
[data]
train = good.h5
validation_split = 40

[network]
layers = 4, 8, 3
hidden = tanh
output = softmax

[train]
epochs = 3
batch_size = 16
learning_rate = 0.1

[checkpoint]
dir = run

[log]
progress = off
INI
done

# mpmd ARGS_A -- ARGS_B: rank 0 in A, rank 1 in B, each with its own arguments. Well under
# the watchdog's 300 s: a mismatch must end at setup, not when the watchdog fires.
mpmd() {
    local a=() b=()
    while [ "$1" != "--" ]; do a+=("$1"); shift; done
    shift
    b=("$@")
    [ -n "${KEEP:-}" ] || rm -rf "$T/A/run" "$T/B/run" # a fresh run each time
    timeout -k 5 60 mpirun --oversubscribe -np 1 -wdir "$T/A" "$BP" "${a[@]}" : \
        -np 1 -wdir "$T/B" "$BP" "${b[@]}"
}

check "identical configs in two directories train" mpmd train c.ini -- train c.ini
check "absolute and relative paths to the same data train" \
    mpmd train c.ini -- train c.ini --set data.train="$T/A/good.h5"

differs() { # NAME KEY_REGEX B's --set...: rank 1 differs from rank 0 by its --set
    local name=$1 re=$2
    shift 2
    local sets=()
    for s in "$@"; do sets+=(--set "$s"); done
    expect "$name" 2 "rank 1's config differs from rank 0's: $re" \
        mpmd train c.ini -- train c.ini "${sets[@]}"
}
differs "activation" '\[network\] hidden = relu on rank 1, tanh on rank 0' network.hidden=relu
differs "batch_size" '\[train\] batch_size = 32 on rank 1, 16 on rank 0' train.batch_size=32
differs "epochs" '\[train\] epochs = 5 on rank 1, 3 on rank 0' train.epochs=5
differs "validation_split" '\[data\] validation_split = 50 on rank 1, 40 on rank 0' \
    data.validation_split=50
differs "limit" '\[data\] limit = 100 on rank 1, 0 on rank 0' data.limit=100
differs "checkpoint cadence" '\[checkpoint\] every_steps = 3 on rank 1, 0 on rank 0' \
    checkpoint.every_steps=3
# No watchdog at all: the check does not rely on one.
expect "timeout = 0" 2 "\[train\] batch_size = 32 on rank 1, 16 on rank 0" \
    mpmd train c.ini --set comm.timeout=0 -- train c.ini --set comm.timeout=0 \
    --set train.batch_size=32

# The same file name, other contents: compared by contents, in memory and streamed.
$PY - B/good.h5 <<'EOF'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    f["X"][5, 1] += 0.25
EOF
# (replicated: with placement = node, the ranks of a node share what its rank 0 read.)
expect "data contents" 2 "rank 1's \[data\] train \(good.h5\) holds other values than rank 0's" \
    mpmd train c.ini --set data.placement=replicated -- train c.ini --set data.placement=replicated
$PY - B/good.h5 <<'EOF'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    f["X"][5, 1] -= 0.25
    f["X"][0, 3] += 1  # the first row: always among the rows a stream hashes
EOF
expect "streamed data contents" 2 "rank 1's \[data\] train \(good.h5\) holds other values" \
    mpmd train c.ini --set data.placement=stream -- train c.ini --set data.placement=stream
cp good.h5 B/good.h5
expect "a test set on one rank only" 2 "rank 1's config differs from rank 0's: \[data\] test = \(a file\) on rank 1, \(none\) on rank 0" \
    mpmd train c.ini -- train c.ini --set data.test=good.h5

# The state a run starts from: one rank resumes, the other starts afresh.
check "a run to resume" mpmd train c.ini -- train c.ini
cp -r A/run B/run
KEEP=1 expect "resume on one rank only" 2 "rank 1 starts from other weights than rank 0: a fresh start on rank 1, a checkpoint of global step [0-9]+ on rank 0" \
    mpmd train c.ini --set train.epochs=4 --resume latest -- train c.ini --set train.epochs=4
KEEP=1 check "resume on both, named differently" mpmd train c.ini --set train.epochs=4 --resume latest \
    -- train c.ini --set train.epochs=4 --resume "$T/B/run/latest.h5"

# eval and gradcheck run collectives too: one checkpoint, one data set.
rm -rf B/run
cp -r A/run B/run
cp B/good.h5 B/other.h5
$PY - B/other.h5 <<'EOF'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    f["X"][0, 0] += 1
EOF
KEEP=1 check "eval at 2 ranks, same files under other names" \
    mpmd eval --checkpoint run/latest.h5 --data good.h5 -- eval --checkpoint "$T/A/run/latest.h5" \
    --data "$T/A/good.h5"
KEEP=1 expect "eval with other data" 2 "rank 1's --data \(other.h5\) holds other values than rank 0's" \
    mpmd eval --checkpoint run/latest.h5 --data good.h5 -- eval --checkpoint run/latest.h5 \
    --data other.h5
KEEP=1 expect "eval with another checkpoint" 2 "rank 1's checkpoint \(.*\) holds other weights than rank 0's" \
    mpmd eval --checkpoint run/latest.h5 --data good.h5 -- eval --checkpoint "$(ls B/run/ckpt-*.h5 | head -1 | sed "s|^|$T/|")" \
    --data good.h5
expect "gradcheck with another config" 2 "rank 1's config differs from rank 0's: \[network\] layers = 4, 5, 3 on rank 1, 4, 8, 3 on rank 0" \
    mpmd gradcheck c.ini -- gradcheck c.ini --set network.layers=4,5,3

finish
