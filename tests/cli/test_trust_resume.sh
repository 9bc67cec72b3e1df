#!/usr/bin/env bash
# What a resume trusts, and what it refuses (issue 25, items 2, 5, 6, 9, 10), alone and
# under mpirun -np 2:
# 1. every file a run writes is never one of its inputs (under any name), nor a checkpoint
#    other than its own slots, fresh or resumed: the inputs stay byte-identical;
# 2. a resume mid-epoch refuses another batch_size or another set of training examples
#    (limit, validation_split, the data's rows), and takes settings that change neither;
# 3. a resume of a run that had stopped early or converged says so, and trains nothing;
# 4. every counter of a checkpoint is range-checked, and links or storage outside the file
#    are refused;
# 5. batch-shaped memory is sized by min(batch_size, examples), with the same bits;
# 6. a resume replaces only its own run's files: another run's directory and metrics CSV,
#    and a config under a name the run writes, are refused; the ranks agree on the whole
#    state they resume from, and eval on the whole network (issue 25 follow-up: F3-F5b,
#    F9-F11).
source "$(dirname "$0")/lib.sh"
$PY "$SRC/tests/cli/make_data.py" "$T" || exit 1
H5="$PY $SRC/tests/cli/h5tool.py"
CMP="$PY $SRC/tests/cli/compare_weights.py"

# run NP ARGS...: backprop alone (NP 1) or under mpirun.
run() {
    local np=$1
    shift
    if [ "$np" -eq 1 ]; then timeout -k 5 60 "$BP" "$@"; else mpi "$np" "$@"; fi
}
# same NAME FILE COPY: FILE is byte-identical to COPY.
same() { check "$1: $2 unchanged" cmp "$2" "$3"; }

cp good.h5 g2.h5
config c.ini "[checkpoint]" "every_steps = 5" "keep = 0"
sed -i "s|^train = .*|train = $T/g2.h5|" c.ini
check "a run to resume" "$BP" train c.ini
cp g2.h5 g2.orig
cp c.ini c.orig
cp run/latest.h5 latest.orig

# ---- 1. what a run writes is never an input nor a checkpoint ----
ln g2.h5 hard.h5
cp run/latest.h5 other-ckpt.h5
mkfifo fifo
for np in 1 2; do
    hows=("--resume latest")
    [ "$np" -eq 1 ] && hows+=("") # fresh runs make the same checks (rank 0's, agreed)
    for how in "${hows[@]}"; do
        tag="np$np${how:+ resume}"
        r="--set train.epochs=3 $how"
        expect "$tag: metrics = the training data" 2 "metrics = $T/g2.h5 is the input \[data\] train" \
            run $np train c.ini $r --set log.metrics=$T/g2.h5
        [ "$np" -eq 1 ] && expect "$tag: metrics = a hard link of it" 2 "metrics = $T/hard.h5 is the input \[data\] train = $T/g2.h5" \
            run $np train c.ini $r --set log.metrics=$T/hard.h5
        expect "$tag: metrics = latest.h5" 2 "metrics = run/latest.h5 is $T/run/latest.h5, a file the run writes itself" \
            run $np train c.ini $r --set log.metrics=run/latest.h5
        expect "$tag: metrics = a checkpoint slot to come" 2 "is $T/run/ckpt-30.h5, a file the run writes itself" \
            run $np train c.ini $r --set log.metrics=$T/run/ckpt-30.h5
        [ "$np" -eq 1 ] && expect "$tag: metrics = step_times.csv" 2 "is $T/run/step_times.csv, a file the run writes itself" \
            run $np train c.ini $r --set log.metrics=$T/run/step_times.csv
        expect "$tag: metrics = another checkpoint" 2 "metrics = $T/other-ckpt.h5 is a checkpoint" \
            run $np train c.ini $r --set log.metrics=$T/other-ckpt.h5
        expect "$tag: metrics = the config" 2 "metrics = $T/c.ini is the config c.ini" \
            run $np train c.ini $r --set log.metrics=$T/c.ini
        expect "$tag: metrics = a file that is no metrics CSV" 2 "metrics = $T/g2.orig exists and is not a metrics CSV" \
            run $np train c.ini $r --set log.metrics=$T/g2.orig
        expect "$tag: metrics = a FIFO" 2 "metrics = $T/fifo is not a regular file" \
            run $np train c.ini $r --set log.metrics=$T/fifo
        # [log] trace (--trace) likewise: it replaces nothing but a trace
        expect "$tag: trace = the training data" 2 "trace = $T/g2.h5 is the input \[data\] train" \
            run $np train c.ini $r --trace $T/g2.h5
        expect "$tag: trace = latest.h5" 2 "trace = run/latest.h5 is $T/run/latest.h5, a file the run writes itself" \
            run $np train c.ini $r --set log.trace=run/latest.h5
        expect "$tag: trace = another checkpoint" 2 "trace = $T/other-ckpt.h5 is a checkpoint" \
            run $np train c.ini $r --trace $T/other-ckpt.h5
        expect "$tag: trace = the config" 2 "trace = $T/c.ini is the config c.ini" \
            run $np train c.ini $r --trace $T/c.ini
        expect "$tag: trace = the metrics" 2 "trace = $T/run/metrics.csv is the metrics file" \
            run $np train c.ini $r --trace $T/run/metrics.csv
        expect "$tag: trace = metrics not written yet" 2 "trace = $T/./m-new.csv is the metrics file $T/m-new.csv" \
            run $np train c.ini $r --set log.metrics=$T/m-new.csv --trace $T/./m-new.csv
        expect "$tag: trace = a file that is no trace" 2 "trace = $T/g2.orig exists and is not a backprop trace" \
            run $np train c.ini $r --trace $T/g2.orig
        expect "$tag: trace = a FIFO" 2 "trace = $T/fifo is not a regular file" \
            run $np train c.ini $r --trace $T/fifo
    done
    # The data under a name the run writes in its directory: replaced or pruned, it would
    # be gone; so would a step-times file that is a checkpoint. A FIFO there would be
    # waited on forever when the resumed run reads its earlier step times.
    ln g2.h5 run/ckpt-7.h5
    expect "np$np: the data as run/ckpt-7.h5" 2 "run/ckpt-7.h5 is the input \[data\] train = $T/g2.h5" \
        run $np train c.ini --set train.epochs=3 --resume latest
    rm run/ckpt-7.h5
    mv run/step_times.csv times.keep
    mkfifo run/step_times.csv
    expect "np$np: step_times.csv is a FIFO" 2 "run/step_times.csv is not a regular file" \
        run $np train c.ini --set train.epochs=3 --resume latest
    rm run/step_times.csv
    cp other-ckpt.h5 run/step_times.csv
    expect "np$np: step_times.csv is a checkpoint" 2 "run/step_times.csv is a checkpoint" \
        run $np train c.ini --set train.epochs=3 --resume latest
    mv times.keep run/step_times.csv
    same "np$np" g2.h5 g2.orig
    same "np$np" c.ini c.orig
    same "np$np" run/latest.h5 latest.orig
    same "np$np" other-ckpt.h5 latest.orig
done
check "latest.h5 still loads" "$BP" inspect run/latest.h5

# ---- 2. a resume mid-epoch keeps the epoch's examples ----
# 200 examples in batches of 16: 13 steps an epoch, ckpt-15 is step 2 of epoch 2.
check "ckpt-15 is mid-epoch" test "$($H5 state run/ckpt-15.h5)" = "1 2 15"
check "inspect names the epoch's shape" sh -c "'$BP' inspect run/ckpt-15.h5 | grep -qx 'epochs: 200 training examples in batches of 16'"
$PY - "$T" <<'PY'
import sys, h5py
t = sys.argv[1]
with h5py.File(f"{t}/g2.h5") as f, h5py.File(f"{t}/g180.h5", "w") as g:
    g["X"], g["y"] = f["X"][:180], f["y"][:180]
PY
mid="step 2 of epoch 2"
check "np2: an uninterrupted run" mpi 2 train c.ini --set checkpoint.dir=$T/ref2
ln -s run ref1
for np in 1 2; do
    r="--resume ref$np/ckpt-15.h5 --set checkpoint.dir=$T/m$np"
    expect "np$np: another batch_size" 2 "$mid.*\[train\] batch_size = 16 in the checkpoint's run and 32 here.*at an epoch boundary" \
        run $np train c.ini $r --set train.batch_size=32
    expect "np$np: another limit" 2 "$mid.*200 examples in the checkpoint's run and 150 here \(\[data\] limit = 0 in the checkpoint's run and 150 here\)" \
        run $np train c.ini $r --set data.limit=150
    expect "np$np: another validation_split" 2 "$mid.*200 examples in the checkpoint's run and 180 here \(\[data\] validation_split = 0" \
        run $np train c.ini $r --set data.validation_split=20
    expect "np$np: data with other rows" 2 "$mid.*200 examples in the checkpoint's run and 180 here \(\[data\] train has other rows\)" \
        run $np train c.ini $r --set data.train=$T/g180.h5
    # A limit beyond the rows and another seed (the checkpoint's orders the epochs) change
    # no example: the resume goes on to the bits of the uninterrupted run.
    check "np$np: a limit that changes nothing" run $np train c.ini $r --set data.limit=500 --set train.seed=9
    check "np$np: ... bit-identical" $CMP ref$np/latest.h5 m$np/latest.h5 0
    # At an epoch boundary the batch size may change.
    check "np$np: another batch_size at an epoch's end" run $np train c.ini --resume run/ckpt-13.h5 \
        --set checkpoint.dir=$T/b$np --set train.batch_size=32
done

# ---- 3. a run that had already stopped says so ----
es="--set data.validation_split=40 --set train.epochs=60 --set train.learning_rate=2"
check "early stopping with patience 1" "$BP" train c.ini --set checkpoint.dir=$T/es $es --set train.early_stopping=1
state=$($H5 state es/latest.h5)
check "it stopped early" test "${state%% *}" -lt 60
cp es/latest.h5 es.orig
lb="--set train.optimizer=lbfgs --set train.momentum=0 --set train.batch_size=1000 --set train.epochs=500"
check "lbfgs converges" "$BP" train c.ini --set checkpoint.dir=$T/lb $lb --set train.lbfgs_tolerance=0.05
grep -q '^lbfgs: converged after' "$T/check.out" && ok || bad "lbfgs did not converge"
for np in 1 2; do
    run $np train c.ini --set checkpoint.dir=$T/es $es --set train.early_stopping=5 --resume latest >out 2>&1
    check "np$np: patience 5 on a stopped run exits 0" test $? -eq 0
    check "np$np: says it had already stopped" grep -q "^early stopping: the run had already stopped before this resume: no better validation cost for 1 epochs" out
    grep -q "for 5 epochs" out && bad "np$np: claims 5 epochs without improvement" || ok
    grep -q "^epoch " out && bad "np$np: trained after the stop" || ok
    check "np$np: the checkpoint is the stop's" cmp es/latest.h5 es.orig
    run $np train c.ini --set checkpoint.dir=$T/lb $lb --set train.lbfgs_tolerance=0.001 --resume latest >out 2>&1
    check "np$np: lbfgs resumed after converging exits 0" test $? -eq 0
    check "np$np: says it had already converged" grep -q "^lbfgs: the run had already stopped before this resume: converged after .*another lbfgs_tolerance does not continue it" out
done

# ---- 4. counters in range, everything in the file ----
cp run/ckpt-15.h5 base.h5
$PY - "$T" <<'PY'
import sys, h5py, numpy as np
t = sys.argv[1]
cases = {
    "epoch-min": ("epoch", np.iinfo(np.int64).min), "epoch-max": ("epoch", np.iinfo(np.int64).max),
    "epoch-neg": ("epoch", -3), "step-max": ("global_step", np.iinfo(np.int64).max),
    "step-small": ("global_step", 2), "batch-big": ("batch_in_epoch", 13),
    "batch-neg": ("batch_in_epoch", -1), "ranks-neg": ("ranks", -1), "ranks-zero": ("ranks", 0),
}
import shutil
for name, (attr, v) in cases.items():
    shutil.copy(f"{t}/base.h5", f"{t}/{name}.h5")
    with h5py.File(f"{t}/{name}.h5", "r+") as f:
        a = f["train"].attrs
        dtype = a[attr].dtype
        del a[attr]
        a.create(attr, v, dtype=dtype)
shutil.copy(f"{t}/base.h5", f"{t}/other.h5")
for name in ("soft", "external", "raw", "virtual"):
    shutil.copy(f"{t}/base.h5", f"{t}/{name}.h5")
    with h5py.File(f"{t}/{name}.h5", "r+") as f:
        W = f["model/layer_0/W"][()]
        del f["model/layer_0/W"]
        if name == "soft":
            f["model/layer_0/W"] = h5py.SoftLink("/optimizer/layer_0/vW")
        elif name == "external":
            f["model/layer_0/W"] = h5py.ExternalLink(f"{t}/other.h5", "/model/layer_0/W")
        elif name == "raw":
            W.tofile(f"{t}/raw.bin")
            f.create_dataset("model/layer_0/W", data=W, external=[(f"{t}/raw.bin", 0, W.nbytes)])
        else:
            layout = h5py.VirtualLayout(shape=W.shape, dtype=W.dtype)
            layout[:] = h5py.VirtualSource(f"{t}/other.h5", "/model/layer_0/W", shape=W.shape)
            f.create_virtual_dataset("model/layer_0/W", layout)
PY
declare -A why=(
    [epoch-min]="epoch = -9223372036854775808 is out of range"
    [epoch-max]="epoch = 9223372036854775807 is out of range"
    [epoch-neg]="epoch = -3 is out of range"
    [step-max]="global_step = 9223372036854775807 is out of range"
    [step-small]="batch_in_epoch = 2 after 1 epochs does not fit global_step = 2"
    [batch-big]="batch_in_epoch = 13, but an epoch of 200 examples in batches of 16 has 13 steps"
    [batch-neg]="batch_in_epoch = -1 after 1 epochs"
    [ranks-neg]="ranks = -1 is out of range"
    [ranks-zero]="ranks = 0 is out of range"
    [soft]="/model/layer_0/W is a soft link"
    [external]="/model/layer_0/W is an external link to another file"
    [raw]="/model/layer_0/W is a dataset stored in external raw files"
    [virtual]="/model/layer_0/W is a virtual dataset"
)
for name in "${!why[@]}"; do
    expect "inspect $name" 2 "$name\.h5: /?(train: )?${why[$name]}" "$BP" inspect $name.h5
    nps=1
    case $name in epoch-min | step-max | batch-big | external | virtual) nps="1 2" ;; esac
    for np in $nps; do
        expect "np$np: resume $name" 2 "${why[$name]}" \
            run $np train c.ini --set checkpoint.dir=$T/c-$name-$np --resume $name.h5
    done
done

# ---- 5. a batch larger than the data costs the memory of the data's rows ----
big="--set network.layers=4,1000,3 --set train.epochs=2"
for np in 1 2; do
    check "np$np: batch_size 10000000 on 200 rows" run $np train c.ini --set checkpoint.dir=$T/h$np $big \
        --set train.batch_size=10000000
    check "np$np: batch_size 200" run $np train c.ini --set checkpoint.dir=$T/w$np $big --set train.batch_size=200
    check "np$np: the same bits" $CMP h$np/latest.h5 w$np/latest.h5 0
done
# A batch that does not fit is named, under the process's own limit (ulimit -d). Not under
# [data] max_memory_mb: that is the data's budget. 3000 rows of 20074 units: 689 MiB at 1
# rank, 345 MiB a rank at 2; the net itself and an evaluation's rows take about 80 MiB
# (float; twice that in double).
$PY "$SRC/tests/cli/make_data.py" "$T" big || exit 1
wide="--set data.train=$T/big.h5 --set network.layers=64,20000,10 --set train.batch_size=3000"
limit_mb=400 # the double build's values take twice the room
"$BP" --version | grep -q double && limit_mb=600
limited() { bash -c "ulimit -d $((limit_mb * 1024)) && exec timeout -k 5 120 $*"; }
for np in 1 2; do
    launcher="'$BP'"
    [ "$np" -eq 2 ] && launcher="mpirun --oversubscribe -np 2 '$BP'"
    expect "np$np: the message names the batch" 2 "\[train\] batch_size = 3000: $((3000 / np)) rows on each rank through \[network\] layers = 64,20000,10 \(activations, pre-activations, deltas\) need [0-9.]+ [MG]iB of memory, but only [0-9.]+ MiB is available" \
        limited "$launcher train c.ini --set checkpoint.dir=$T/n$np $wide"
    check "np$np: a limit on the data alone does not count the batch" run $np train c.ini \
        --set checkpoint.dir=$T/budget$np $big --set train.batch_size=200 --set data.max_memory_mb=0.05
done

# ---- 6. a resume replaces only its own run's files ----
config o.ini "[checkpoint]" "every_steps = 13" "keep = 0"
sed -i "s|^dir = .*|dir = $T/runO|" o.ini
sed "s|runO|runQ|" o.ini >q.ini
check "run O" "$BP" train o.ini --set train.learning_rate=0.5
check "run Q" "$BP" train q.ini
cp -r runO runO.orig
for np in 1 2; do
    expect "np$np: resume into another run's metrics" 2 "runO/metrics\.csv already holds another run's metrics" \
        run $np train q.ini --resume latest --set train.epochs=3 --set log.metrics=$T/runO/metrics.csv
    expect "np$np: resume into another run's directory" 2 "runO already holds a run .*runQ/ckpt-13\.h5 is not a checkpoint of it" \
        run $np train q.ini --resume $T/runQ/ckpt-13.h5 --set checkpoint.dir=$T/runO --set train.epochs=3 \
        --set checkpoint.keep=1
    check "np$np: run O untouched" diff -r runO runO.orig
done
# Its own runs resume: a rewind in its directory, a copy into a new one, latest.
cp -r runQ runQ2
check "a rewind to ckpt-13 in its own directory" "$BP" train q.ini --resume $T/runQ2/ckpt-13.h5 \
    --set checkpoint.dir=$T/runQ2 --set train.epochs=3
check "... the CSV holds epochs 1-3 once" test "$(cut -d, -f1 runQ2/metrics.csv | tr '\n' ' ')" = "epoch 1 2 3 "
check "np2: a checkpoint into a new directory" mpi 2 train q.ini --resume $T/runQ/ckpt-13.h5 \
    --set checkpoint.dir=$T/runN --set train.epochs=3
check "np2: --resume latest" mpi 2 train q.ini --resume latest --set train.epochs=3
# The config under a name the run writes or sweeps in its directory.
mkdir -p r5
for name in ckpt-13.h5 ckpt-1.h5 .q.ini.tmp.123 latest.h5 step_times.csv; do
    cp q.ini "r5/$name"
    expect "the config as r5/$name" 2 "r5/$name is the config r5/$name, and the run" \
        "$BP" train "r5/$name" --set checkpoint.dir=$T/r5 --set checkpoint.keep=1
    check "r5/$name unchanged" cmp q.ini "r5/$name"
    rm "r5/$name"
done
# MPMD: two checkpoints with the same weights and global step but another position, and
# two that differ only in the cost, are refused before any step.
mkdir -p A B
cp runQ/ckpt-13.h5 A/c.h5
cp runQ/ckpt-13.h5 B/c.h5
cp runQ/ckpt-13.h5 A/e.h5
cp runQ/ckpt-13.h5 B/e.h5
$PY - "$T" <<'PY'
import sys, h5py, numpy as np
t = sys.argv[1]
with h5py.File(f"{t}/B/c.h5", "r+") as f:
    a = f["train"].attrs
    a["epoch"] = np.int64(0)
    a["batch_in_epoch"] = np.int64(12)
    del f["train/metrics"]
    f["train"].create_dataset("metrics", shape=(0, 10), maxshape=(None, 10), chunks=(64, 10), dtype="f8")
with h5py.File(f"{t}/B/e.h5", "r+") as f:
    f["model"].attrs["cost"] = "quadratic"
PY
mpmd() { timeout -k 5 60 mpirun --oversubscribe -np 1 -wdir $T/A "$BP" "$@" : -np 1 -wdir $T/B "$BP" "$@"; }
expect "MPMD: another position at the same step" 2 "rank 1 resumes from another state than rank 0, with the same weights at global step 13: epoch 1, step 12 of it on rank 1, epoch 2, step 0 on rank 0" \
    mpmd train $T/q.ini --resume c.h5 --set checkpoint.dir=$T/m9 --set train.epochs=3 --set comm.timeout=0
expect "MPMD: eval of another cost" 2 "rank 1's checkpoint \(e\.h5\) holds other weights than rank 0's" \
    mpmd eval --checkpoint e.h5 --data $T/good.h5
# Real-valued counters and metrics rows a run never writes.
$PY - "$T" <<'PY'
import sys, shutil, h5py, numpy as np
t = sys.argv[1]
cases = {"correct": ("epoch_correct", 1e12), "seen": ("epoch_seen", -1e9),
         "seen-many": ("epoch_seen", 500.0), "costsum": ("epoch_cost_sum", np.inf),
         "elapsed": ("elapsed_s", np.nan), "trains": ("epoch_train_s", -5.0)}
for name, (attr, v) in cases.items():
    shutil.copy(f"{t}/runQ/ckpt-13.h5", f"{t}/r-{name}.h5")
    with h5py.File(f"{t}/r-{name}.h5", "r+") as f:
        f["train"].attrs[attr] = np.float64(v)
for name, (col, v) in {"acc": (3, 50.0), "cost": (2, -1.0), "time": (9, np.inf)}.items():
    shutil.copy(f"{t}/runQ/ckpt-13.h5", f"{t}/r-{name}.h5")
    with h5py.File(f"{t}/r-{name}.h5", "r+") as f:
        m = f["train/metrics"]
        r = m[()]
        r[0, col] = v
        m[...] = r
PY
declare -A rwhy=(
    [correct]="epoch_correct = 1e\+12 of epoch_seen = 0 examples is not a count"
    [seen]="epoch_seen = -1e\+09 is out of range"
    [seen-many]="epoch_seen = 500 examples after 0 steps of the epoch is more than they hold"
    [costsum]="epoch_cost_sum = inf is out of range"
    [elapsed]="elapsed_s = nan is out of range"
    [trains]="epoch_train_s = -5 is out of range"
    [acc]="/train/metrics row 0 \(epoch 1\): train_accuracy is out of range"
    [cost]="/train/metrics row 0 \(epoch 1\): train_cost is out of range"
    [time]="/train/metrics row 0 \(epoch 1\): elapsed_s is out of range"
)
for name in "${!rwhy[@]}"; do
    expect "inspect r-$name" 2 "${rwhy[$name]}" "$BP" inspect r-$name.h5
done
for np in 1 2; do
    expect "np$np: resume r-correct" 2 "${rwhy[correct]}" \
        run $np train q.ini --set checkpoint.dir=$T/rc$np --resume r-correct.h5
done
# A stop between an epoch's row and its checkpoint: latest.h5 is from inside the first
# epoch (no row), metrics.csv has rows. The run's own CSV in its own directory is taken,
# rewritten from the checkpoint, and the run ends on the bits of an unbroken one.
config k.ini "[checkpoint]" "every_steps = 5" "keep = 0"
for np in 1 2; do
    check "np$np: run K" run $np train k.ini --set checkpoint.dir=$T/runK$np
    cp -r runK$np runK$np.r
    cp runK$np/ckpt-5.h5 runK$np.r/latest.h5
    check "np$np: resume from inside the first epoch, rows in the CSV" run $np train k.ini \
        --resume latest --set checkpoint.dir=$T/runK$np.r
    check "np$np: the bits of the unbroken run" $CMP runK$np/latest.h5 runK$np.r/latest.h5 0
    check "np$np: its rows" test "$(cut -d, -f1-8 runK$np/metrics.csv)" = "$(cut -d, -f1-8 runK$np.r/metrics.csv)"
done
# A step_times.csv of a backprop before slow_rank and slow_factor (here saved with CRLF, and
# a line of junk added): a resume keeps its rows, those two fields empty, leaves the junk
# out with a warning, and adds its own row.
sed -i -e '1s/,slow_rank,slow_factor$//' -e '2,$s/,[^,]*,[^,]*$//' runK1/step_times.csv
old_row=$(sed -n 2p runK1/step_times.csv)
sed -i -e 's/$/\r/' runK1/step_times.csv
echo 'hello, world' >>runK1/step_times.csv
run 1 train k.ini --resume latest --set checkpoint.dir=$T/runK1 --set train.epochs=3 >older.out 2>&1
check "an older step_times.csv: resumed, the junk line said" grep -qF "runK1/step_times.csv: 1 line that was not step times left out" older.out
check "its rows kept" test "$(sed -n 2p runK1/step_times.csv)" = "$old_row,,"
check "and the new one added, the junk not" test "$(wc -l <runK1/step_times.csv)" -eq 3
finish
