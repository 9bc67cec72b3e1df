#!/usr/bin/env bash
# Numerical safety and rank agreement (issue 25, items 3 and 4, and its follow-up): a run
# never ends well or writes a checkpoint on weights or optimizer state that are not finite,
# nor resumes from one; values a streamed file gains mid-run are checked as they are read;
# ranks started with configs, data, checkpoints or options of their own (mpirun's MPMD
# form, -wdir per rank) stop at setup with one exit-2 line naming what differs, instead of
# training apart or waiting for the watchdog; and /X and /y are the data file's own, never
# links that another file (a FIFO, a checkpoint) stands behind.
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

# finite_state CKPT: every parameter and every optimizer value in CKPT is finite.
finite_state() {
    $PY - "$1" <<'EOF'
import sys, h5py, numpy as np
bad = []
with h5py.File(sys.argv[1], "r") as f:
    for top in ("model", "optimizer"):
        if top in f:
            f[top].visititems(lambda n, o: bad.append(f"{top}/{n}") if isinstance(o, h5py.Dataset)
                              and o.dtype.kind == "f" and not np.isfinite(o[()]).all() else None)
sys.exit(f"not finite: {bad}" if bad else 0)
EOF
}

# ranks NP ARGS...: backprop ARGS alone (NP 1: a failing mpirun takes 2 s more to end) or
# under mpirun with NP ranks.
ranks() {
    local np=$1
    shift
    if [ "$np" -gt 1 ]; then mpi "$np" "$@"; else timeout -k 5 120 "$BP" "$@"; fi
}

# ---- 1. NaN in a streamed file mid-run never trains, nor scores (item 3, F7) ----
# A relu net streams its files, which are rewritten in place with NaN mid-run (truncation
# is caught by the reader). relu turns the NaN pre-activations into zeros, so the cost
# stays finite: the run used to go on to exit 0 with a latest.h5 of NaN (until the update's
# check caught the weights), and NaN in the validation set gave val_cost and val_acc as if
# real. The rows a step or an evaluation reads are checked as they are copied: exit 1, as
# for a file cut short mid-run, naming the file, row and column.
write_config stream.ini '[data]' "train=$T/s.h5" placement=stream \
    '[network]' 'layers=4, 64, 3' hidden=relu output=softmax cost=cross_entropy \
    '[train]' epochs=100000 batch_size=16 learning_rate=0.1 \
    '[checkpoint]' "dir=$T/srun" every_epochs=5 '[log]' progress=off
for np in 1 2; do
    for set in s v; do # the training set, the validation set
        cp good.h5 s.h5
        cp good.h5 v.h5
        rm -rf srun
        ranks "$np" train stream.ini --set data.validation="$T/v.h5" >out 2>err &
        job=$!
        # Wait for a checkpoint or two, then the NaN; a run that ended already has failed.
        for _ in $(seq 600); do
            [ -f srun/metrics.csv ] && [ "$(wc -l <srun/metrics.csv)" -gt 10 ] && break
            sleep 0.1
        done
        $PY - $set.h5 <<'EOF'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r+") as f:
    f["X"][...] = np.full(f["X"].shape, np.nan, dtype=f["X"].dtype)
EOF
        wait $job
        rc=$?
        if [ "$rc" -ne 1 ] || [ "$(grep -c 'backprop: error' err)" -ne 1 ] ||
            ! grep -qE "error: (\[rank [0-9]\] )?$T/$set.h5: /X row [0-9]+ column [0-9]+ is NaN\$" err; then
            bad "np$np NaN streamed mid-run into $set.h5: exit $rc (want 1), stderr:"
            sed 's/^/    /' err | head -5
        else
            ok
        fi
        if finite_weights srun/latest.h5 >check.out 2>&1; then ok; else bad "np$np latest.h5: $(cat check.out)"; fi
    done
done

# ---- 1b. Optimizer state that is not finite ends the run and is never resumed (F6) ----
# Adam on data of 1e22 (1e160 in double, where 1e22 fits): (1 - beta2) g * g overflows, the
# second moment is infinite and m1 / sqrt(m2) is 0. The weights stay finite and frozen: the
# run used to exit 0 with checkpoints of an infinite sW, and resume them with exit 0.
[ "$("$BP" --version | grep -c double)" = 1 ] && scale=1e160 dtype=float64 || scale=1e22 dtype=float32
$PY - "$scale" "$dtype" <<'EOF'
import sys, h5py, numpy as np
r = np.random.default_rng(1)
with h5py.File("bigx.h5", "w") as f:
    f["X"] = (r.standard_normal((200, 4)) * float(sys.argv[1])).astype(sys.argv[2])
    f["y"] = r.integers(0, 3, 200).astype("int32")
EOF
config adam.ini
sed -i "s|^train = .*|train = $T/bigx.h5|; s|^layers = .*|layers = 4, 3|; s|^learning_rate = .*|learning_rate = 0.01\noptimizer = adam|" adam.ini
for np in 1 2; do
    rm -rf run
    expect "np$np adam's second moment overflows" 1 "training diverged at epoch 1, step 1: the Adam second moments of [0-9]+ of layer 0's 12 weights are not finite after the update" \
        ranks "$np" train adam.ini
    for f in run/*.h5; do
        [ -f "$f" ] || continue
        if finite_state "$f" >check.out 2>&1; then ok; else bad "np$np $f: $(cat check.out)"; fi
    done
done
# A checkpoint that holds such state (written by a build before this check, or by hand) is
# refused on resume, exit 2, for Adam's moments and sgd's velocity alike.
poison() { # CKPT DATASET: one value of DATASET made infinite (h5py redoes the checksum)
    $PY - "$1" "$2" <<'EOF'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r+") as f:
    d = f[sys.argv[2]]
    v = d[()]
    v.flat[0] = np.inf
    d[...] = v
EOF
}
for np in 1 2; do
    rm -rf run
    check "np$np an adam run to resume" ranks "$np" train adam.ini --set data.train="$T/good.h5"
    poison run/latest.h5 optimizer/layer_0/sW
    expect "np$np resume of an infinite second moment" 2 "run/latest.h5 holds values that are not finite: the Adam second moments of 1 of layer 0's 12 weights are not finite" \
        ranks "$np" train adam.ini --set data.train="$T/good.h5" --set train.epochs=3 --resume latest
done
rm -rf run
check "a momentum run to resume" "$BP" train adam.ini --set data.train="$T/good.h5" \
    --set train.optimizer=sgd --set train.momentum=0.9
poison run/latest.h5 optimizer/layer_0/vb
expect "resume of an infinite velocity" 2 "run/latest.h5 holds values that are not finite: the velocities of 1 of layer 0's 3 biases are not finite" \
    "$BP" train adam.ini --set data.train="$T/good.h5" --set train.optimizer=sgd \
    --set train.momentum=0.9 --set train.epochs=3 --resume latest

# ---- 2. Every rank runs rank 0's config, data and state (item 4) ----
# Two directories with their own c.ini and good.h5, started as one job. Paths are relative,
# so each rank reads its own files: they may be spelled alike and hold other things.
mkdir -p A B
for d in A B; do
    cp good.h5 $d/good.h5
    write_config $d/c.ini '[data]' train=good.h5 validation_split=40 \
        '[network]' 'layers=4, 8, 3' hidden=tanh output=softmax \
        '[train]' epochs=3 batch_size=16 learning_rate=0.1 '[checkpoint]' dir=run '[log]' progress=off
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
# gradcheck's own options (F8): --examples sets the rows the ranks sum (other counts gave a
# wrong gradient, "max relative error: 4.557e-01"), --epsilon and --tolerance the verdict
# (each rank's own: exit 1 with no line). A value spelled another way is the same value.
expect "gradcheck with other --examples" 2 "rank 1's command line differs from rank 0's: --examples = 3 on rank 1, 16 on rank 0" \
    mpmd gradcheck c.ini --examples 16 -- gradcheck c.ini --examples 3
expect "gradcheck with another --tolerance" 2 "rank 1's command line differs from rank 0's: --tolerance = 0.5 on rank 1, 1e-30 on rank 0" \
    mpmd gradcheck c.ini --tolerance 1e-30 -- gradcheck c.ini --tolerance 0.5
expect "gradcheck with another --epsilon" 2 "rank 1's command line differs from rank 0's: --epsilon = 0.001 on rank 1, 1e-05 on rank 0" \
    mpmd gradcheck c.ini -- gradcheck c.ini --epsilon 1e-3
check "gradcheck with the same options spelled apart" \
    mpmd gradcheck c.ini --epsilon 1e-5 --examples 8 -- gradcheck c.ini --examples 08 --epsilon 0.00001

# ---- 3. /X and /y are the file's own (F13, F5a) ----
# An external link opens another file when it is followed: one to a FIFO blocked train and
# eval for good, deaf to SIGTERM; one to a checkpoint of the run read it as data, and the
# run then pruned it. Soft links, links for /y, and the stream reader alike: refused by the
# link's type, before anything follows it, exit 2.
mkfifo fifo.h5
$PY - <<'EOF'
import h5py
with h5py.File("good.h5", "r") as g:
    X, y = g["X"][()], g["y"][()]
with h5py.File("extx.h5", "w") as f:
    f["X"] = h5py.ExternalLink("fifo.h5", "/X")
    f["y"] = y
with h5py.File("exty.h5", "w") as f:
    f["X"] = X
    f["y"] = h5py.ExternalLink("fifo.h5", "/y")
with h5py.File("softx.h5", "w") as f:
    f["values"] = X
    f["X"] = h5py.SoftLink("/values")
    f["y"] = y
EOF
config link.ini
rm -rf run
check "a checkpoint to evaluate" "$BP" train link.ini
cp run/latest.h5 model.h5
sed -i "s|^dir = .*|dir = $T/lrun|" link.ini # a run that starts each time (run holds one)
# linked NAME FILE DATASET KIND NP ARGS...: backprop ARGS (under mpirun when NP > 1) refuses
# FILE's DATASET as KIND, exit 2, well within the time a blocked open would take.
linked() {
    local name=$1 file=$2 ds=$3 kind=$4 np=$5
    shift 5
    local run=("$BP")
    [ "$np" -gt 1 ] && run=(mpirun --oversubscribe -np "$np" "$BP")
    expect "$name" 2 "$file: $ds is $kind; store the values in the file itself" \
        timeout -k 3 30 "${run[@]}" "$@"
}
for np in 1 2; do
    for placement in replicated stream; do
        linked "np$np train $placement, /X to a FIFO" extx.h5 /X "an external link to another file" \
            "$np" train link.ini --set data.train="$T/extx.h5" --set data.placement=$placement
    done
    linked "np$np eval, /X to a FIFO" extx.h5 /X "an external link to another file" \
        "$np" eval --checkpoint model.h5 --data extx.h5
done
linked "train, /y to a FIFO" exty.h5 /y "an external link to another file" \
    1 train link.ini --set data.train="$T/exty.h5"
linked "train, a soft link" softx.h5 /X "a soft link" 1 train link.ini --set data.train="$T/softx.h5"
linked "validation streamed, /X to a FIFO" extx.h5 /X "an external link to another file" \
    1 train link.ini --set data.validation="$T/extx.h5" --set data.placement=stream
linked "predict, /X to a FIFO" extx.h5 /X "an external link to another file" \
    1 predict --checkpoint model.h5 --data extx.h5 --out p.h5
linked "gradcheck, /X to a FIFO" extx.h5 /X "an external link to another file" \
    1 gradcheck link.ini --set data.train="$T/extx.h5"
# The run's own checkpoint behind the link: refused, and the checkpoint is still there.
ck=$(ls run/ckpt-*.h5 | head -1)
$PY - "$ck" <<'EOF'
import sys, h5py
with h5py.File("extck.h5", "w") as f:
    f["X"] = h5py.ExternalLink(sys.argv[1], "/model/layer_0/W")
    f["y"] = h5py.File("good.h5", "r")["y"][:8]  # layer 0's W is 8 x 4: 8 rows of 4
EOF
linked "a checkpoint behind the link" extck.h5 /X "an external link to another file" \
    1 train link.ini --set data.train="$T/extck.h5" --set checkpoint.dir="$T/run" \
    --set train.epochs=5 --resume latest
[ -f "$ck" ] && ok || bad "$ck was removed"

finish
