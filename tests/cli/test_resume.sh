#!/usr/bin/env bash
# Checkpoints and resume: bit-exact continuation mid-epoch, on another rank count within
# rounding, after a SIGKILL, extension of a finished run; refusals of damaged or foreign
# files; eval/predict against a forward pass computed from the file by h5py alone.
source "$(dirname "$0")/lib.sh"
$PY "$SRC/tests/cli/make_data.py" "$T" || exit 1
H5="$PY $SRC/tests/cli/h5tool.py"
CMP="$PY $SRC/tests/cli/compare_weights.py"
BOUND=1e-5
"$BP" --version | grep -q double && BOUND=1e-12

# batch_size 13: 13 steps an epoch, the last one of 4 examples.
write_config r.ini '[data]' "train=$T/good.h5" validation_split=40 "test=$T/good.h5" \
    '[network]' 'layers=4, 16, 8, 3' hidden=tanh output=softmax cost=cross_entropy \
    '[train]' epochs=3 batch_size=13 learning_rate=0.2 lambda=0.5 momentum=0.9 seed=5 \
    '[checkpoint]' "dir=$T/A" every_epochs=1 every_steps=5 keep=0 '[log]' progress=off
strip_time() { cut -d, -f1-8 "$1"; } # the CSV without samples_per_s and elapsed_s

check "uninterrupted run" mpi 2 train r.ini
check "ckpt-15 is mid-epoch" test "$($H5 state A/ckpt-15.h5)" = "1 2 15"
check "resume mid-epoch, same ranks" mpi 2 train r.ini --set checkpoint.dir=B --resume A/ckpt-15.h5
check "bit-identical to uninterrupted" $CMP A/latest.h5 B/latest.h5 0
check "same metrics rows" test "$(strip_time A/metrics.csv)" = "$(strip_time B/metrics.csv)"
check "epochs once each" test "$($H5 metrics-epochs B/metrics.csv)" = "1 2 3"
check "resume on 3 ranks" mpi 3 train r.ini --set checkpoint.dir=C --resume A/ckpt-15.h5
check "3 ranks within rounding" $CMP A/latest.h5 C/latest.h5 "$BOUND"
check "resume alone" "$BP" train r.ini --set checkpoint.dir=D --resume A/ckpt-5.h5
check "1 rank within rounding" $CMP A/latest.h5 D/latest.h5 "$BOUND"

# Learning-rate schedules are a function of the position alone: a resume mid-epoch stays
# bit-identical under each, and each changes the run.
for sched in "step --set train.lr_step_epochs=1 --set train.lr_gamma=0.5" \
    "cosine --set train.lr_min=0.01" "inverse_scaling --set train.lr_power=0.3"; do
    name=${sched%% *}
    check "$name: uninterrupted" mpi 2 train r.ini --set checkpoint.dir=S$name --set train.lr_schedule=$sched
    check "$name: resume mid-epoch" mpi 2 train r.ini --set checkpoint.dir=R$name \
        --set train.lr_schedule=$sched --resume S$name/ckpt-15.h5
    check "$name: bit-identical" $CMP S$name/latest.h5 R$name/latest.h5 0
    $CMP A/latest.h5 S$name/latest.h5 0 >/dev/null && bad "$name: same weights as constant" || ok
done

# Adam's moments are in the checkpoint: a resume mid-epoch stays bit-identical, coupled
# and decoupled; a checkpoint of another optimizer is refused.
for wd in coupled decoupled; do
    adam="--set train.optimizer=adam --set train.momentum=0 --set train.learning_rate=0.01 --set train.weight_decay=$wd"
    check "adam $wd: uninterrupted" mpi 2 train r.ini --set checkpoint.dir=SA$wd $adam
    check "adam $wd: resume mid-epoch" mpi 2 train r.ini --set checkpoint.dir=RA$wd $adam \
        --resume SA$wd/ckpt-15.h5
    check "adam $wd: bit-identical" $CMP SA$wd/latest.h5 RA$wd/latest.h5 0
done
$CMP SAcoupled/latest.h5 SAdecoupled/latest.h5 0 >/dev/null && bad "adam: decoupled changes nothing" || ok
expect "sgd checkpoint, adam config" 2 'A/ckpt-15\.h5 was trained with optimizer = sgd but the config has adam' \
    mpi 2 train r.ini --set checkpoint.dir=X $adam --resume A/ckpt-15.h5

# Early stopping: the run ends when the validation cost has not improved for `early_stopping`
# epochs, with the best epoch's weights (those of its own epoch-end checkpoint, to the bit),
# and says so; a resume mid-run stops at the same epoch with the same bits.
es="--set train.epochs=40 --set train.early_stopping=1 --set checkpoint.every_epochs=1"
check "early stopping" mpi 2 train r.ini --set checkpoint.dir=ES $es
cp "$T/check.out" es.out
best=$(sed -nE "s/^early stopping: no better validation cost for 1 epochs; the weights are epoch ([0-9]+)'s.*/\1/p" es.out)
check "early stopping: said so" test -n "$best"
check "early stopping: before the last epoch" test "$($H5 state ES/latest.h5 | cut -d' ' -f1)" -lt 40
check "early stopping: the best epoch's weights" $CMP ES/latest.h5 "ES/ckpt-$((best * 13)).h5" 0
check "early stopping: resume mid-epoch" mpi 2 train r.ini --set checkpoint.dir=ER $es --resume ES/ckpt-15.h5
check "early stopping: resumed run bit-identical" $CMP ES/latest.h5 ER/latest.h5 0
check "early stopping: resumed run stopped at the same epoch" test "$($H5 state ES/latest.h5)" = "$($H5 state ER/latest.h5)"
expect "early stopping without validation data" 2 'early_stopping needs validation data' \
    mpi 2 train r.ini --set checkpoint.dir=EN $es --set data.validation_split=0

# L-BFGS: its history and where its line search stands are in the checkpoint, so a resume
# in the middle of a line search stays bit-identical at 2 ranks; 1 rank agrees within
# rounding. It needs the whole training set in each step, and its own history size.
lb="--set train.optimizer=lbfgs --set train.momentum=0 --set train.batch_size=100000 --set network.hidden=relu --set checkpoint.every_steps=1 --set train.epochs=20"
check "lbfgs: uninterrupted" mpi 2 train r.ini --set checkpoint.dir=LB $lb
mid=$(for f in LB/ckpt-*.h5; do echo "$f $($H5 state "$f")"; done | awk '$3 >= 2 {print $1}' | sort -t- -k2 -n | head -1)
check "lbfgs: a checkpoint inside a line search" test -n "$mid"
check "lbfgs: inspect says where the search stands" sh -c "'$BP' inspect $mid | grep -q '^optimizer: lbfgs (.* pairs held; in a line search, '"
check "lbfgs: resume inside a line search" mpi 2 train r.ini --set checkpoint.dir=LR $lb --resume "$mid"
check "lbfgs: bit-identical" $CMP LB/latest.h5 LR/latest.h5 0
check "lbfgs: same metrics rows" test "$(strip_time LB/metrics.csv)" = "$(strip_time LR/metrics.csv)"
check "lbfgs: one rank" "$BP" train r.ini --set checkpoint.dir=L1 $lb
check "lbfgs: 1 rank within rounding" $CMP LB/latest.h5 L1/latest.h5 "$BOUND"
expect "lbfgs: a mini-batch" 2 'optimizer = lbfgs takes the whole training set in each step, but batch_size = 13 and it has' \
    mpi 2 train r.ini --set checkpoint.dir=LX --set train.optimizer=lbfgs --set train.momentum=0
expect "lbfgs: another history size" 2 'keeps 10 L-BFGS pairs but the config has lbfgs_history = 4' \
    mpi 2 train r.ini --set checkpoint.dir=LY $lb --set train.lbfgs_history=4 --resume "$mid"
expect "lbfgs: another cost" 2 "the checkpoint's L-BFGS state minimised the cost with lambda = 0.5 over 160 examples, but the config gives lambda = 0.25 over 160" \
    mpi 2 train r.ini --set checkpoint.dir=LZ $lb --set train.lambda=0.25 --resume "$mid"
check "lbfgs: converges" mpi 2 train r.ini --set checkpoint.dir=LC ${lb/epochs=20/epochs=1000} --set train.lbfgs_tolerance=0.05
cp "$T/check.out" lc.out
check "lbfgs: says it converged" grep -q '^lbfgs: converged after [0-9]* iterations and [0-9]* cost evaluations: no gradient component is larger than lbfgs_tolerance' lc.out
check "lbfgs: stopped before the last epoch" test "$($H5 state LC/latest.h5 | cut -d' ' -f1)" -lt 1000

# Extending a finished run equals training longer from the start.
check "extend to 5 epochs" mpi 2 train r.ini --set checkpoint.dir=B --set train.epochs=5 --resume latest
check "5 epochs straight" mpi 2 train r.ini --set checkpoint.dir=E --set train.epochs=5
check "extension bit-identical" $CMP B/latest.h5 E/latest.h5 0
check "extension metrics" test "$($H5 metrics-epochs B/metrics.csv)" = "1 2 3 4 5"
check "nothing to do when finished" mpi 2 train r.ini --set checkpoint.dir=E --set train.epochs=5 --resume latest
check "keep = 2" mpi 2 train r.ini --set checkpoint.dir=K --set checkpoint.keep=2
check "two step files stay" test "$(ls K | grep -c '^ckpt-')" -eq 2 -a -e K/ckpt-39.h5 -a -e K/latest.h5
# Pruning counts and removes only the names it writes: a file that merely parses as a step
# (a user's ckpt-052.h5) is neither counted nor removed, and costs no real checkpoint.
cp K/ckpt-39.h5 K/ckpt-052.h5
check "keep = 2, extended" mpi 2 train r.ini --set checkpoint.dir=K --set checkpoint.keep=2 \
    --set train.epochs=4 --resume latest
check "a foreign name is left alone" test -e K/ckpt-052.h5 -a -e K/ckpt-50.h5 -a -e K/ckpt-52.h5 \
    -a "$(ls K | grep -c '^ckpt-[1-9][0-9]*\.h5$')" -eq 2

# Killed with SIGKILL mid-run, then resumed: the same weights as never being killed.
write_config big.ini '[data]' "train=$T/good.h5" '[network]' 'layers=4, 512, 512, 3' hidden=relu output=softmax \
    '[train]' epochs=300 batch_size=4 learning_rate=0.01 momentum=0.5 \
    '[checkpoint]' "dir=$T/killed" every_epochs=0 every_steps=97 keep=2 '[log]' progress=off
check "big run uninterrupted" mpi 2 train big.ini --set checkpoint.dir=straight
mpi 2 train big.ini >killed.out 2>&1 &
job=$!
for _ in $(seq 200); do [ -e killed/latest.h5 ] && break; sleep 0.05; done
sleep 0.5
pkill -9 -f "$BP train big.ini"
wait $job
read -r epoch batch step <<<"$($H5 state killed/latest.h5)"
check "killed before the end" test "$step" -lt 15000
check "resume after SIGKILL" mpi 2 train big.ini --resume latest
check "no temporary files left" test -z "$(ls -A killed | grep tmp)"
check "resumed run bit-identical" $CMP straight/latest.h5 killed/latest.h5 0

# SIGKILL while checkpoints are being written, over and over: latest.h5 always loads.
sed -e 's/^layers = .*/layers = 4, 1500, 1500, 3/' -e 's/^every_steps = .*/every_steps = 1/' \
    -e "s|^dir = .*|dir = $T/hammer|" -e 's/^epochs = .*/epochs = 1000/' big.ini >hammer.ini
for i in 1 2 3 4 5 6; do
    mpi 1 train hammer.ini ${resume:-} >/dev/null 2>&1 &
    job=$!
    sleep "0.$((RANDOM % 9 + 1))"
    for _ in $(seq 100); do [ -e hammer/latest.h5 ] && break; sleep 0.05; done
    pkill -9 -f "$BP train hammer.ini"
    wait $job 2>/dev/null
    check "latest.h5 readable after kill $i" "$BP" inspect hammer/latest.h5
    resume="--resume latest"
done
read -r epoch batch step <<<"$($H5 state hammer/latest.h5)"
check "resumable after the kills" "$BP" train hammer.ini --resume latest \
    --set train.epochs=$((epoch + 1)) --set checkpoint.every_steps=0

# Damaged and foreign files are refused, with exit 2, by train, inspect and eval.
cp A/latest.h5 flipped.h5 && $H5 flip flipped.h5
head -c $(($(stat -c %s A/latest.h5) / 2)) A/latest.h5 >truncated.h5
cp A/latest.h5 v2.h5 && $H5 set-version v2.h5 2
echo "not a checkpoint" >text.h5
for cmd in train inspect eval; do
    run() { # run CKPT
        case $cmd in
        train) "$BP" train r.ini --set checkpoint.dir=F --resume "$1" ;;
        inspect) "$BP" inspect "$1" ;;
        eval) "$BP" eval --checkpoint "$1" --data good.h5 ;;
        esac
    }
    expect "$cmd flipped byte" 2 'flipped\.h5.*checksum' run flipped.h5
    expect "$cmd truncated" 2 'truncated\.h5' run truncated.h5
    expect "$cmd newer version" 2 'v2\.h5.*version 2.*newer' run v2.h5
    expect "$cmd text file" 2 'text\.h5.*not an HDF5 file' run text.h5
    expect "$cmd foreign HDF5" 2 'good\.h5.*not a backprop checkpoint' run good.h5
    expect "$cmd missing" 2 'absent\.h5' run absent.h5
done
check "no run started by refusals" test ! -e F/latest.h5

# Damage in HDF5's global heap can crash or hang libhdf5 itself: backprop reads a file in a
# child process first, so every flipped byte there ends in exit 0 or 2, never a signal.
mkdir flips && $H5 heap-flips A/latest.h5 flips
crashed=0
for f in flips/*.h5; do
    timeout -k 5 120 "$BP" inspect "$f" >/dev/null 2>&1
    status=$?
    [ "$status" -eq 0 ] || [ "$status" -eq 2 ] || { crashed=$((crashed + 1)); echo "  $f: exit $status"; }
done
check "flipped heap bytes: $(ls flips | wc -l) files, none crashes or hangs" test "$crashed" -eq 0

# eval and predict against numpy's forward pass over the weights in the file.
check "predict" "$BP" predict --checkpoint A/latest.h5 --data good.h5 --out pred.h5
check "numpy forward" $H5 forward A/latest.h5 good.h5 ref.npy
check "eval --json" mpi 2 eval --checkpoint A/latest.h5 --data good.h5 --json
cp "$T/check.out" eval.json
check "outputs and accuracy match" $PY - <<'PY'
import json, sys
import h5py, numpy as np
ref = np.load("ref.npy")
with h5py.File("pred.h5", "r") as f:
    out, pred = f["outputs"][()], f["predicted"][()]
with h5py.File("good.h5", "r") as f:
    y = f["y"][()]
res = json.loads(open("eval.json").read().splitlines()[-1])
diff = float(np.max(np.abs(out - ref)))
cost = float(np.mean(-np.log(ref[np.arange(len(y)), y])))
conf = np.zeros((3, 3), int)
np.add.at(conf, (y, ref.argmax(1)), 1)
print(f"max |output - numpy| {diff:.2e}; accuracy {res['accuracy']} vs {np.mean(ref.argmax(1) == y)}")
ok = (diff < 1e-5 and (pred == ref.argmax(1)).all() and res["n"] == len(y)
      and abs(res["accuracy"] - np.mean(ref.argmax(1) == y)) < 1e-12
      and abs(res["cost"] - cost) < 1e-5 * cost and res["confusion"] == conf.tolist())
sys.exit(0 if ok else 1)
PY
finish
