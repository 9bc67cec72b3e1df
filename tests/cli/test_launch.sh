#!/usr/bin/env bash
# backprop launch, the elastic launcher. On one node: usage errors (exit 2, one line, no
# mpirun started), a bad config (exit 2 at once: no probe, no retry), a failure with every
# host answering (exit 1, one probe round, no retry), SIGTERM to the launcher (the job
# stops with a checkpoint, exit 3, nothing left running). Across 3 simulated hosts
# (scripts/cluster.sh, root): host 3's link is cut mid-epoch; the launcher names it, goes on
# on hosts 1-2 within [comm] timeout + 30 s and ends with exit 0 and the bits of an
# uninterrupted 1-rank run (reproducible = any_scale); then the same with the link back
# mid-run: host 3 is taken back, and the bits still match. mpirun goes through a wrapper
# that logs each call (the job's and the probes').
source "$(dirname "$0")/lib.sh"
CLUSTER="$SRC/scripts/cluster.sh"
F=/usr/share/datasets/fashion-mnist
if [ ! -r "$F/train-images-idx3-ubyte.gz" ]; then
    echo "SKIP: Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)"
    exit 0
fi
cat >mpirun-log <<SH
#!/bin/sh
echo "\$*" >>$T/calls
exec mpirun "\$@"
SH
chmod +x mpirun-log
export BACKPROP_MPIRUN=$T/mpirun-log
calls() { if [ -e "$T/calls" ]; then wc -l <"$T/calls"; else echo 0; fi; }
probes() { grep -c -- '--version$' "$T/calls" 2>/dev/null || true; }

check "convert" "$BP" convert --idx-images "$F/train-images-idx3-ubyte.gz" \
    --idx-labels "$F/train-labels-idx1-ubyte.gz" --contiguous --out fm.h5
# test_any_scale.sh's W2-shaped net on 1500 rows: 10 steps an epoch, micro-shards of 32
# (batches of 128: 4 of them, so 3 ranks each hold some), checkpoints every 5 steps.
write_config fm.ini '[data]' "train=$T/fm.h5" limit=1500 validation_split=276 \
    '[network]' 'layers=784, 256, 256, 10' hidden=relu output=softmax cost=cross_entropy \
    '[train]' epochs=60 batch_size=128 learning_rate=0.05 lambda=1 momentum=0.9 seed=3 \
    reproducible=any_scale micro_batch=32 threads=1 \
    '[checkpoint]' every_epochs=1 every_steps=5 keep=0 '[comm]' timeout=10 '[log]' progress=off
printf 'localhost slots=1\n' >local.hosts

# Bad usage: one line, exit 2, mpirun never started.
printf 'a slots=1\nb\n# c\na slots=2\n' >twice.hosts
printf 'a slots=1\nb cpus=2\n' >odd.hosts
expect "no hostfile" 2 "missing --hostfile" "$BP" launch -- fm.ini
expect "unreadable hostfile" 2 "--hostfile nowhere: No such file" "$BP" launch --hostfile nowhere -- fm.ini
expect "host listed twice" 2 "twice.hosts:4: host a is listed twice" "$BP" launch --hostfile twice.hosts -- fm.ini
expect "hostfile line" 2 "odd.hosts:2: unexpected 'cpus=...'" "$BP" launch --hostfile odd.hosts -- fm.ini
expect "min-hosts" 2 "--min-hosts 2 is more than the 1 host of local.hosts" \
    "$BP" launch --hostfile local.hosts --min-hosts 2 -- fm.ini
expect "no --" 2 "missing -- before CONFIG 'fm.ini'" "$BP" launch --hostfile local.hosts fm.ini
expect "no CONFIG" 2 "missing -- CONFIG" "$BP" launch --hostfile local.hosts
expect "--resume is the launcher's" 2 "unexpected argument '--resume' after --" \
    "$BP" launch --hostfile local.hosts -- fm.ini --resume latest
test "$(calls)" -eq 0 && ok || bad "usage errors started mpirun: $(cat calls)"
check "launch --help" sh -c "'$BP' launch --help | grep -q -- '--max-restarts N'"

# mpirun's stderr: the watchdog's records are kept, not shown; every other line is shown,
# one without a newline (a progress bar) too; stdout passes through. A stand-in mpirun.
cat >fake-mpirun <<'SH'
#!/bin/sh
echo "job out"
printf 'backprop-event: {"event":"timeout","rank":1,"host":"h2","step":7,"what":"x","missing":[],"suspect_hosts":["h2"]}\nbackprop: error: [rank 1] lost\n' >&2
printf 'a line\nbackprop-even\n\rprogress' >&2
exit 0
SH
chmod +x fake-mpirun
check "stderr filtered" sh -c "BACKPROP_MPIRUN='$T/fake-mpirun' '$BP' launch --hostfile local.hosts -- fm.ini >fake.out 2>fake.err"
if [ "$(cat fake.out)" = "job out" ] && [ "$(cat fake.err)" = "$(printf 'backprop: launch: job 1 on 1 host: localhost\nbackprop: error: [rank 1] lost\na line\nbackprop-even\n\rprogress')" ]; then
    ok
else
    bad "stderr filtered: stdout '$(cat fake.out)', stderr:"
    sed 's/^/    /' fake.err
fi

# Lost hosts with a stand-in mpirun whose jobs fail: host b's probe hangs (it is ended
# after --probe-timeout, with what it started), c's fails after the second job. Fewer
# hosts left than --min-hosts: exit 1 with the reason; more losses than --max-restarts:
# exit 1, giving up.
cat >lossy-mpirun <<SH
#!/bin/sh
n=\$(cat "$T/jobs" 2>/dev/null || echo 0)
case "\$*" in
*--version) case "\$*" in *"--host b:1 "*) sleep 31.5 & wait ;; *"--host c:1 "*) [ "\$n" -ge 2 ] && exit 1 ;; esac; exit 0 ;;
esac
echo \$((n + 1)) >"$T/jobs"
echo "backprop: error: timed out" >&2
exit 1
SH
chmod +x lossy-mpirun
printf 'a\nb slots=2\nc max_slots=4\n' >abc.hosts
# lossy NAME STATUS PATTERN LAUNCH-OPTION...: exits STATUS, its last line matching PATTERN.
lossy() {
    local name=$1 want=$2 pattern=$3
    shift 3
    rm -f jobs
    BACKPROP_MPIRUN="$T/lossy-mpirun" "$BP" launch --hostfile abc.hosts --probe-timeout 1 "$@" \
        -- fm.ini 2>err
    local got=$?
    if [ "$got" -eq "$want" ] && tail -1 err | grep -qE "$pattern"; then ok; else
        bad "$name: exit $got (want $want)"
        sed 's/^/    /' err
    fi
}
lossy "fewer than --min-hosts" 1 "^backprop: error: launch: 2 hosts left, fewer than --min-hosts 3$" \
    --min-hosts 3
check "names b" grep -qxF "backprop: launch: host b dropped (no answer to a probe after the job ended: none within 1 s; the job said: timed out); left: 2 hosts" err
pgrep -x sleep -a | grep -q 'sleep 31.5' && bad "a probe left behind" || ok
lossy "--max-restarts" 1 "hosts were lost 2 times \(--max-restarts 1\): giving up$" \
    --max-restarts 1 --backoff 0.2
check "then c" grep -q "launch: host c dropped .*; continuing on 1 host$" err
check "2 jobs" test "$(cat jobs)" -eq 2

# A collective timed out (the record says so), yet every host answers the probes (a link
# that flapped, a host that stalled): a retry can fix that, so the job starts again.
cat >flap-mpirun <<SH
#!/bin/sh
case "\$*" in *--version) exit 0 ;; esac
n=\$(cat "$T/jobs" 2>/dev/null || echo 0)
echo \$((n + 1)) >"$T/jobs"
[ "\$n" -ge 1 ] && exit 0
printf 'backprop-event: {"event":"timeout","rank":0,"host":"a","step":9,"what":"the gradient exchange","missing":[],"suspect_hosts":["b"]}\n' >&2
exit 1
SH
chmod +x flap-mpirun
rm -f jobs
check "a timeout with every host answering: retried" sh -c "BACKPROP_MPIRUN='$T/flap-mpirun' \
    '$BP' launch --hostfile abc.hosts --backoff 0.1 -- fm.ini 2>flap.err"
check "two jobs" test "$(cat jobs)" -eq 2
check "says why" grep -qxF "backprop: launch: the job timed out in the gradient exchange at step \
9, suspecting b, and every host answers now: starting it again on all 3" flap.err

# A stop asked for before the ranks take signals waits for the job's "started" record
# (SIGUSR1 would end a rank that has not blocked it yet).
cat >slow-start <<SH
#!/bin/sh
trap 'echo usr1 >>"$T/order"; exit 3' USR1
sleep 1
echo started >>"$T/order"
printf 'backprop-event: {"event":"started"}\n' >&2
sleep 5 & wait
exit 0
SH
chmod +x slow-start
rm -f order
BACKPROP_MPIRUN="$T/slow-start" "$BP" launch --hostfile local.hosts -- fm.ini 2>early.err &
job=$!
sleep 0.3
kill -TERM "$job"
wait "$job"
status=$?
if [ "$status" -eq 3 ] && [ "$(cat order 2>/dev/null | tr '\n' ' ')" = "started usr1 " ]; then ok; else
    bad "an early stop: exit $status (want 3), order: $(cat order 2>/dev/null | tr '\n' ' ')"
fi

# A bad config: the job's exit 2 at once, one mpirun (no probe, no retry).
expect "bad config" 2 "epochs: 0 is out of range" \
    "$BP" launch --hostfile local.hosts -- fm.ini --set train.epochs=0 --set checkpoint.dir=$T/bad
test "$(calls)" -eq 1 && ok || bad "bad config: $(calls) mpirun calls (want 1)"
# A failure with every host answering (divergence): exit 1 after one probe round, no retry.
rm -f calls
expect "divergence" 1 "training diverged" "$BP" launch --hostfile local.hosts -- fm.ini \
    --set train.learning_rate=1e20 --set checkpoint.dir=$T/dv
test "$(calls)" -eq 2 && test "$(probes)" -eq 1 && ok || bad "divergence: calls $(cat calls)"
# SIGTERM to the launcher: SIGUSR1 to mpirun, the job's checkpoint, exit 3; nothing left.
"$BP" launch --hostfile local.hosts -- fm.ini --set checkpoint.dir=$T/term \
    --set train.epochs=100000 >term.out 2>term.err &
job=$!
for _ in $(seq 300); do [ -e term/latest.h5 ] && break; sleep 0.1; done
kill -TERM "$job"
wait "$job"
status=$?
if [ "$status" -eq 3 ] && grep -q "stopped by SIGUSR1" term.err && ! pgrep -f "$T/term" >/dev/null; then
    ok
else
    bad "SIGTERM: exit $status (want 3)"
    sed 's/^/    /' term.err | head
fi

# Across simulated hosts: root and network namespaces.
if [ "$(id -u)" -ne 0 ] || ! ip netns list >/dev/null 2>&1 || ! unshare --net --uts true 2>/dev/null; then
    echo "SKIP: the simulated hosts need root and network namespaces (iproute2's ip, unshare)"
    finish
    exit $?
fi
trap '"$CLUSTER" down; rm -rf "$T"' EXIT # the launcher runs in host 1: down ends it
trap 'exit 1' TERM INT                     # (ctest's timeout): through the EXIT trap

check "1 rank on one node" mpi 1 train fm.ini --set checkpoint.dir=ref
check "1 rank on one node, longer" mpi 1 train fm.ini --set checkpoint.dir=ref100 --set train.epochs=100

# stamp FILE: each line read, with the seconds it came at, into FILE.
stamp() { while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done >"$1"; }
# elastic NAME [LAUNCH OPTION...] -- [--set ...]: the launcher over 3 hosts into NAME/, in
# the background ($job), its lines stamped into NAME.out and NAME.err.
elastic() {
    local name=$1 opts=()
    shift
    while [ "$1" != "--" ]; do opts+=("$1"); shift; done
    shift
    "$CLUSTER" launch "$BP" --backoff 1 --probe-timeout 8 "${opts[@]}" -- "$T/fm.ini" \
        --set checkpoint.dir="$T/$name" "$@" > >(stamp "$name.out") 2> >(stamp "$name.err") &
    job=$!
}
# cut NAME: waits for NAME's checkpoint at step 25, then cuts host 3 off mid-epoch; $cut
# is when.
cut_host3() {
    for _ in $(seq 600); do [ -e "$1/ckpt-25.h5" ] && break; sleep 0.05; done
    sleep 0.1
    cut=$EPOCHREALTIME
    "$CLUSTER" link 3 down
}
# wait_job NAME: the launcher's exit status (120 s at most).
wait_job() {
    for _ in $(seq 1200); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
    kill -TERM "$job" 2>/dev/null
    wait "$job"
}
# recovered NAME: the seconds from the cut to the first step on the survivors (the
# resumed run's banner line, printed before it), and the steps redone (the step the
# watchdog stopped at, less the step resumed from).
recovered() {
    local at step from
    at=$(awk '/^[0-9.]+ resumed at epoch/ {print $1; exit}' "$1.out")
    step=$(grep -o 'at step [0-9]*' "$1.err" | head -1 | grep -o '[0-9]*$')
    from=$(grep -o 'resumed at epoch .*(global step [0-9]*)' "$1.out" | head -1 | grep -o '[0-9]*)$' | tr -d ')')
    took=$(awk -v a="$at" -v c="$cut" 'BEGIN {printf "%.1f", a - c}')
    echo "$1: from the cut to the first step on hosts 1-2: ${took} s; steps redone: $((step - from)) (the watchdog at step $step, resumed from step $from)"
}
# same NAME A B: the final checkpoints' weights and optimizer state, and the metrics rows
# but their timing columns, bit for bit.
same() {
    if $PY "$SRC/tests/cli/compare_weights.py" "$2/latest.h5" "$3/latest.h5" 0 optimizer \
        >/dev/null && cmp -s <(cut -d, -f1-8 "$2/metrics.csv") <(cut -d, -f1-8 "$3/metrics.csv"); then
        ok
    else
        bad "$1: $2 and $3 differ"
    fi
}

# Host 3 cut off for good: dropped, the job goes on on 2 hosts, exit 0, the same bits.
check "up 3 hosts" "$CLUSTER" up 3
rm -f calls
elastic lost --
cut_host3 lost
wait_job
status=$?
test "$status" -eq 0 && ok || bad "lost: exit $status (want 0)"
check "lost: host 3 named" grep -qE 'launch: host (bp-host3|10\.213\.7\.3) dropped \(.*\); continuing on 2 hosts$' lost.err
recovered lost
if [ -n "$took" ] && awk -v t="$took" 'BEGIN {exit !(t <= 40)}'; then ok; else bad "lost: $took s from the cut (more than 10 + 30)"; fi
same "lost host" ref lost
check "lost: 2 jobs" test "$(grep -c ' train ' calls)" -eq 2
check "lost: then on 2 hosts" test "$(grep -c 'over 2 ranks' lost.out)" -eq 1
grep 'dropped' lost.err | sed 's/^[0-9.]* /    /'

# Host 3 cut off, then back while the job runs on 2: taken back, exit 0, the same bits.
check "up 3 hosts" "$CLUSTER" up 3
elastic back --probe-every 1 -- --set train.epochs=100
cut_host3 back
for _ in $(seq 600); do grep -q 'resumed at epoch' back.out 2>/dev/null && break; sleep 0.1; done
"$CLUSTER" link 3 up
up=$EPOCHREALTIME
wait_job
status=$?
test "$status" -eq 0 && ok || bad "back: exit $status (want 0)"
check "back: host 3 dropped" grep -qE 'launch: host (bp-host3|10\.213\.7\.3) dropped' back.err
check "back: host 3 taken back" grep -qE 'launch: host (bp-host3|10\.213\.7\.3) answers again: .* on 3 hosts$' back.err
check "back: resumed twice" test "$(grep -c 'resumed at epoch' back.out)" -eq 2
check "back: on 3, 2, then 3 hosts" test "$(grep -o 'over [23] ranks' back.out | tr -d '\n')" = \
    "over 3 ranksover 2 ranksover 3 ranks"
recovered back
awk -v u="$up" '/resumed at epoch/ {n++} n == 2 {printf "back: from the link up to the first step on 3 hosts: %.1f s\n", $1 - u; exit}' back.out
same "host taken back" ref100 back
grep -E 'dropped|answers again' back.err | sed 's/^[0-9.]* /    /'
# Nothing left but, for a few seconds, the old job's daemon on host 3 (cut off from
# mpirun, it gives up by itself: test_cluster.sh).
for _ in $(seq 100); do
    left=$("$CLUSTER" pids; pgrep -f "$T/fm.ini" || true)
    [ -z "$left" ] && break
    sleep 0.1
done
[ -z "$left" ] && ok || bad "processes left: $left"
finish
