#!/usr/bin/env bash
# Stopping on request: SIGTERM, SIGINT or SIGUSR1 to a lone process, to mpirun (which
# forwards SIGUSR1 to every rank) or to one rank only ends the run at the next step with a
# checkpoint of the step reached, exit status 3 and one line; --resume latest then ends
# bit-identical to an uninterrupted run at the same rank count. Also: [checkpoint]
# every_seconds, and SIGTERM to Open MPI's mpirun itself (which kills the job) losing nothing.
source "$(dirname "$0")/lib.sh"
H5="$PY $SRC/tests/cli/h5tool.py"
CMP="$PY $SRC/tests/cli/compare_weights.py"
trap 'pkill -KILL -f "$T/sig.ini" 2>/dev/null; rm -rf "$T"' EXIT

# 3000 examples of 64 features, 10 classes: 30 steps an epoch at batch 100.
$PY "$SRC/tests/cli/make_data.py" "$T" big || exit 1
STEPS_PER_EPOCH=30
write_config sig.ini '[data]' "train=$T/big.h5" \
    '[network]' 'layers=64, 512, 256, 10' hidden=relu output=softmax cost=cross_entropy init=he \
    '[train]' epochs=25 batch_size=100 learning_rate=0.05 lambda=0.1 momentum=0.9 seed=4 \
    '[checkpoint]' every_epochs=5 keep=2 '[log]' progress=off
strip_time() { cut -d, -f1-8 "$1"; } # the CSV without samples_per_s and elapsed_s

# run NP DIR ARGS...: train sig.ini into DIR alone (NP = 0) or under mpirun, in the
# background, stdout and stderr to DIR.out and DIR.err, the trace to DIR.trace.json; $job is
# the pid of the launcher.
run() {
    local np=$1 dir=$2
    shift 2
    if [ "$np" -eq 0 ]; then
        "$BP" train "$T/sig.ini" --set checkpoint.dir="$dir" --trace "$dir.trace.json" "$@" \
            >"$dir.out" 2>"$dir.err" &
    else
        mpirun --oversubscribe -np "$np" "$BP" train "$T/sig.ini" --set checkpoint.dir="$dir" \
            --trace "$dir.trace.json" "$@" >"$dir.out" 2>"$dir.err" &
    fi
    job=$!
}

# finished NAME: waits for $job (killing it after 120 s); $status is its exit status.
finished() {
    local i
    for i in $(seq 1200); do
        kill -0 "$job" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$job" 2>/dev/null; then
        bad "$1: still running after 120 s"
        pkill -KILL -f "$T/sig.ini"
    fi
    wait "$job"
    status=$?
}

# after_epochs DIR N: waits until DIR/metrics.csv has N rows (at most 60 s).
after_epochs() {
    local i
    for i in $(seq 3000); do
        [ "$(cat "$1/metrics.csv" 2>/dev/null | wc -l)" -gt "$2" ] && return 0
        sleep 0.02
    done
    return 1
}

# The references: one per way of running, lone (0) included. A lone process and a job of
# one rank under mpirun may differ in the last bit: the lone one takes every core for its
# BLAS threads, mpirun binds the rank to one, and a product's rounding may depend on the
# thread count (dgemm with 1 and 2 threads on AMD Zen 3). The promise is the same ranks and
# the same threads per rank (docs/robustness.md).
for np in 0 1 2 3; do
    run "$np" "ref$np"
    finished "reference at $np"
    check "reference run at $np ranks" test "$status" -eq 0
done

# stopped NAME DIR NP SIG TARGET...: trains DIR at NP ranks (0 = alone), sends SIG to
# TARGET once two epochs are logged ("launcher", or "rank R" twice with "twice"), and checks
# the stop: status 3, the line, a checkpoint at its step, every epoch line up to there, no
# temporary file. Then resumes, and compares with the uninterrupted run.
stopped() {
    local name=$1 dir=$2 np=$3 sig=$4 target=$5 rank=${6:-0} twice=${7:-}
    run "$np" "$dir"
    after_epochs "$dir" 2 || bad "$name: no epoch logged"
    local pid=$job
    if [ "$target" = rank ]; then
        pid=$(rank_pid "$BP train $T/sig.ini --set checkpoint.dir=$dir" "$rank")
    fi
    kill -s "$sig" "$pid"
    [ -n "$twice" ] && kill -s "$sig" "$pid" # while the first is being acted on
    finished "$name"
    local line step
    line=$(grep -E "^backprop: stopped by SIG$sig at step [0-9]+; resume with --resume latest$" "$dir.err")
    step=$(echo "$line" | sed -E 's/.* at step ([0-9]+);.*/\1/')
    if [ "$status" -ne 3 ] || [ "$(echo "$line" | grep -c .)" -ne 1 ]; then
        bad "$name: exit $status (want 3), stderr:"
        sed 's/^/    /' "$dir.err" | head -20
        return
    fi
    ok
    check "$name: latest.h5 at step $step" test "$($H5 state "$dir/latest.h5" | cut -d' ' -f3)" = "$step"
    # the trace, written on the stop: every rank's last 100 steps, up to the step reached
    check "$name: the trace of the stop" $PY -c 'import json, sys
d = json.load(open(sys.argv[1])); o = d["otherData"]; step, ranks = int(sys.argv[2]), max(1, int(sys.argv[3]))
assert (o["written"], o["ranks"], o["last_step"]) == ("stop", ranks, step), o
first = max(0, step - 99)  # (step 0: the set-up, where its collectives were recorded)
assert first <= o["first_step"] <= max(1, first), o
pids = {e["pid"] for e in d["traceEvents"] if e["ph"] == "X" and e["name"] == "backward" and e["args"]["step"] == step}
assert pids == set(range(ranks)), pids' "$dir.trace.json" "$step" "$np"
    check "$name: ckpt-$step.h5" test -e "$dir/ckpt-$step.h5"
    check "$name: stopped after two epochs, before the end" test "$step" -gt 60 -a "$step" -lt 750
    check "$name: every epoch line up to step $step" \
        test "$(grep -c '^epoch ' "$dir.out")" -eq $((step / STEPS_PER_EPOCH))
    check "$name: metrics rows up to there" \
        test "$($H5 metrics-epochs "$dir/metrics.csv" | wc -w)" -eq $((step / STEPS_PER_EPOCH))
    check "$name: no temporary file" test -z "$(ls -A "$dir" | grep tmp)"
    run "$np" "$dir" --resume latest
    finished "$name: resume"
    check "$name: resumed to the end" test "$status" -eq 0
    check "$name: bit-identical to the uninterrupted run" $CMP "ref$np/latest.h5" "$dir/latest.h5" 0
    check "$name: same metrics" test "$(strip_time "ref$np/metrics.csv")" = "$(strip_time "$dir/metrics.csv")"
}

stopped "SIGTERM alone" a-term 0 TERM launcher
stopped "SIGINT alone" a-int 0 INT launcher
stopped "SIGUSR1 to mpirun, 1 rank" m1-usr1 1 USR1 launcher
stopped "SIGUSR1 to mpirun, 2 ranks" m2-usr1 2 USR1 launcher
stopped "SIGUSR1 to mpirun, 3 ranks" m3-usr1 3 USR1 launcher
stopped "SIGTERM to rank 1 of 2" r2-term 2 TERM rank 1
stopped "SIGTERM to rank 2 of 3" r3-term 3 TERM rank 2
stopped "SIGINT twice to rank 0 of 2" r2-int 2 INT rank 0 twice

# A third signal ends the process at once (exit 1, one line); what is on disk stays whole.
# Three different signals: two of one kind pending at once would count as one.
run 0 third
after_epochs third 6 || bad "third signal: no epoch logged"
for i in $(seq 500); do [ -e third/latest.h5 ] && break; sleep 0.02; done # epoch 5's
kill -TERM "$job"
kill -INT "$job"
kill -USR1 "$job"
finished "third signal"
check "third signal: exit 1" test "$status" -eq 1
check "third signal: the line" grep -qE '^backprop: error: a third SIG(TERM|INT|USR1): ending now' third.err
check "third signal: latest.h5 whole" $H5 state third/latest.h5
run 0 third --resume latest
finished "third signal: resume"
check "third signal: resumed" test "$status" -eq 0
check "third signal: bit-identical after resume" $CMP ref0/latest.h5 third/latest.h5 0

# Open MPI 4.1's mpirun takes SIGTERM as "abort the job": it exits 1 and SIGKILLs the
# ranks 2 s later, whatever they do (docs/robustness.md). What is on disk stays whole.
run 2 mterm
after_epochs mterm 2 || bad "mpirun SIGTERM: no epoch logged"
kill -TERM "$job"
finished "mpirun SIGTERM"
check "SIGTERM to mpirun: Open MPI's status 1" test "$status" -eq 1
run 2 mterm --resume latest
finished "mpirun SIGTERM: resume"
check "SIGTERM to mpirun: resume runs" test "$status" -eq 0
check "SIGTERM to mpirun: a write the kill cut short is cleared" test -z "$(ls -A mterm | grep tmp)"
check "SIGTERM to mpirun: bit-identical after resume" $CMP ref2/latest.h5 mterm/latest.h5 0

# every_seconds = S: each checkpoint is taken at the first step boundary at least S after
# the one before (elapsed_s, stored in each, says when). Steps of ~10 ms here.
run 2 secs --set train.epochs=40 --set train.batch_size=500 --set network.layers=64,1024,1024,10 \
    --set checkpoint.every_seconds=0.5 --set checkpoint.every_epochs=0 --set checkpoint.keep=0
finished "every_seconds"
check "every_seconds run" test "$status" -eq 0
check "checkpoints every 0.5 s, within one step" $PY - secs 0.5 <<'PY'
import glob, sys, h5py
run, every = sys.argv[1], float(sys.argv[2])
rows = []
for path in glob.glob(f"{run}/ckpt-*.h5"):
    with h5py.File(path, "r") as f:
        a = f["train"].attrs
        rows.append((int(a["global_step"]), float(a["elapsed_s"])))
rows.sort()
final = rows.pop()  # the end of the run has one of its own
assert len(rows) >= 3, rows
prev = (0, 0.0)
for step, at in rows:
    gap, steps = at - prev[1], step - prev[0]
    # Taken at the first boundary after `every`: less than one step late. One step is
    # the interval's mean; the bound allows three, or 0.1 s, for steps a busy machine
    # stretched. (A checkpoint decided anywhere but at each boundary would be late by
    # whole intervals, or early.)
    step_s = gap / steps
    print(f"step {step}: {gap:.4f} s after the last, {steps} steps of {1e3 * step_s:.1f} ms")
    assert gap >= every, (step, gap)
    assert gap - every < max(3 * step_s, 0.1), (step, gap, step_s)
    prev = (step, at)
assert final[1] - prev[1] < every + max(3 * step_s, 0.1), final
PY
cat "$T/check.out"

finish
