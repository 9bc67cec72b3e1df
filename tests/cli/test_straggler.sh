#!/usr/bin/env bash
# Straggler detection ([log] straggler_factor, docs/running.md "Slow ranks") and the
# flight recorder's trace at the end of a run. One rank of 3, throttled from its start by
# a duty cycle of SIGSTOP and SIGCONT (stopped 20 ms of every 40), is named by one warning
# line within 200 steps; ten runs without the throttle warn of nothing. The throttled
# run's trace ([log] trace) holds every rank's last 100 steps as valid Chrome trace JSON.
# Alone (RUN_SERIAL): another test's load on the cores would be a straggler of its own.
source "$(dirname "$0")/lib.sh"
F=/usr/share/datasets/fashion-mnist
host=$(hostname)

# Steps of about 5 ms at 3 ranks on 2 cores: 50 steps an epoch, windows of 0.5 s.
write_config s.ini '[data]' "train=$F/train-images-idx3-ubyte.gz" \
    "train_labels=$F/train-labels-idx1-ubyte.gz" limit=9600 \
    '[network]' 'layers=784, 512, 512, 10' hidden=relu output=softmax init=he \
    '[train]' epochs=6 batch_size=192 learning_rate=0.05 momentum=0.9 threads=1 \
    '[checkpoint]' every_epochs=0 '[log]' progress=off

# throttle PID: stops PID for 20 ms of every 40 until it is gone.
throttle() {
    while kill -STOP "$1" 2>/dev/null; do
        sleep 0.02
        kill -CONT "$1" 2>/dev/null || break
        sleep 0.02
    done
}
victim= throttler=
trap 'kill $throttler 2>/dev/null; kill -CONT $victim 2>/dev/null; pkill -KILL -f "$T/s.ini"; rm -rf "$T"' EXIT

# throttled NAME ARGS...: trains s.ini into NAME/ on 3 ranks, rank 2 throttled from its
# start; checks that one warning names rank 2 within 200 steps.
throttled() {
    local name=$1
    shift
    timeout -k 5 120 mpirun --oversubscribe -np 3 "$BP" train "$T/s.ini" --set checkpoint.dir=$name \
        "$@" >$name.out 2>$name.err &
    local job=$! status warned line to
    for _ in $(seq 500); do
        victim=$(rank_pid "$BP train $T/s.ini --set checkpoint.dir=$name" 2) && break
        sleep 0.01
    done
    throttle "$victim" &
    throttler=$!
    wait "$job"
    status=$?
    kill "$throttler" 2>/dev/null
    warned=$(grep -c 'backprop: warning' $name.err)
    line=$(grep 'backprop: warning' $name.err)
    to=$(sed -n 's/.*(\([0-9.]*\)x, steps \([0-9]*\)-\([0-9]*\)).*/\3/p' <<<"$line")
    if [ "$status" -eq 0 ] && [ "$warned" -eq 1 ] &&
        grep -qE "^backprop: warning: rank 2 \(host $host\) is slow: step work [0-9.]+ ms against [0-9.]+ ms on the other ranks \([0-9.]+x, steps [0-9]+-[0-9]+\); every step waits for it$" $name.err &&
        [ -n "$to" ] && [ "$to" -le 200 ]; then
        ok
    else
        bad "$name: throttled rank 2 of 3: exit $status, $warned warnings, the last step seen $to:"
        cat $name.err
    fi
}
throttled slow --set train.epochs=5 --trace slow/trace.json
# reproducible = any_scale: the bounds' maximum, where the others wait for the slow rank
# before the exchange, is not their work either.
throttled slow-any --set train.epochs=4 --set train.reproducible=any_scale --set train.micro_batch=64
# step_times.csv records it; the summary lists every rank's compute and wait
if sed -n 2p slow/step_times.csv | grep -qE '^[0-9]+,250,([0-9.e+-]+,){4}3,2,[0-9.]+$' &&
    $PY -c 'import sys; f = float(sys.argv[1].split(",")[-1]); sys.exit(0 if f >= 1.5 else 1)' \
        "$(sed -n 2p slow/step_times.csv)"; then
    ok
else
    bad "step_times.csv does not record the slow rank:"
    cat slow/step_times.csv
fi
for r in 0 1 2; do
    check "summary: rank $r" grep -qE "^  rank $r \(host $host\): data [0-9.]+ \+ compute [0-9.]+ \+ wait [0-9.]+ \+ update [0-9.]+$" slow.out
done
check "says where the trace is" grep -qx "trace: slow/trace.json (the last 100 steps of every rank)" slow.out

# The trace: Chrome trace-event JSON, every rank a process named with its host, each of
# the last 100 steps' phases on every rank, each bucket's exchange a b/e pair, nothing
# unfinished.
check "trace" $PY - slow/trace.json "$host" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
o, ev = d["otherData"], d["traceEvents"]
assert o["written"] == "end" and o["steps"] == 100 and o["ranks"] == 3, o
assert (o["first_step"], o["last_step"]) == (151, 250), o
names = {e["pid"]: e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "process_name"}
assert names == {r: "rank %d (host %s)" % (r, sys.argv[2]) for r in range(3)}, names
for r in range(3):
    for phase in ("data", "forward", "backward", "update"):
        steps = {e["args"]["step"] for e in ev if e["pid"] == r and e["name"] == phase and e["ph"] == "X"}
        assert steps == set(range(151, 251)), (r, phase, sorted(steps)[:3], len(steps))
    begins = {e["id"]: e for e in ev if e["pid"] == r and e["ph"] == "b"}
    ends = {e["id"]: e for e in ev if e["pid"] == r and e["ph"] == "e"}
    assert begins and begins.keys() == ends.keys(), r
    assert all(ends[i]["ts"] >= begins[i]["ts"] for i in begins)
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in ev if e["ph"] == "X")
assert not any(e.get("args", {}).get("unfinished") for e in ev)
EOF

# Ten runs as above without the throttle: no warning (the margin's reasons are in
# docs/running.md).
quiet=0
for i in $(seq 10); do
    mpi 3 train s.ini --set checkpoint.dir=even$i >even.out 2>even.err || cat even.err
    if grep -q 'warning' even.err; then
        bad "run $i without a throttle warned:"
        cat even.err
    else
        quiet=$((quiet + 1))
    fi
done
check "ten runs, no warning" test "$quiet" -eq 10
finish
