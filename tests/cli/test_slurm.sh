#!/usr/bin/env bash
# scripts/slurm/backprop.sbatch under a real SLURM (Debian's slurm-wlm, installed if
# missing): a one-node cluster of the test's own (munged, slurmctld, slurmd; every file in
# a temporary directory, its own ports, all on 127.0.0.1; stopped and removed at exit, also
# on failure). The batch job (2 tasks) is signalled mid-run as SLURM does before a time
# limit (SIGUSR1 to the batch shell); it must stop with a checkpoint, requeue itself,
# resume, and end bit-identical to an uninterrupted run. SIGUSR2 stops it without a
# requeue, and the same submission again continues. Needs root.
source "$(dirname "$0")/lib.sh"
source "$SRC/tests/cli/slurm_lib.sh"
CMP="$PY $SRC/tests/cli/compare_weights.py"
H5="$PY $SRC/tests/cli/h5tool.py"
if [ "$(id -u)" -ne 0 ]; then
    echo "FAIL: the SLURM test needs root (its daemons run as root); run it as root"
    exit 1
fi
# Open MPI stays on loopback and shared memory, as the cluster does.
export OMPI_MCA_oob_tcp_if_include=lo OMPI_MCA_btl=self,vader
D=$(mktemp -d /tmp/bp-slurm.XXXXXX)
trap 'slurm_down "$D"; pkill -KILL -f "$BP train job.ini" 2>/dev/null; rm -rf "$T"' EXIT
slurm_install || { bad "cannot install slurm-wlm and munge"; finish; exit 1; }
slurm_up "$D" || { bad "the one-node SLURM did not start"; finish; exit 1; }

$PY "$SRC/tests/cli/make_data.py" "$T" big || exit 1
# 64, 1024, 1024, 10: steps of a few ms, so that the job runs for seconds.
write_config job.ini '[data]' "train=$T/big.h5" \
    '[network]' 'layers=64, 1024, 1024, 10' hidden=relu output=softmax init=he \
    '[train]' epochs=40 batch_size=100 learning_rate=0.05 momentum=0.9 seed=8 \
    '[checkpoint]' "dir=$T/job" every_epochs=10 '[log]' progress=off
strip_time() { cut -d, -f1-8 "$1"; }

check "uninterrupted run, 2 ranks" timeout -k 5 300 mpirun -np 2 "$BP" train job.ini --set checkpoint.dir=$T/ref

# submit DIR [ENV]: the batch script with 2 tasks on job.ini into DIR, ENV (VAR=VALUE)
# added to its environment; $id is the job.
submit() {
    id=$(sbatch --parsable --output="$T/slurm-%j.out" --export=ALL,BACKPROP="$BP"${2:+,$2} \
        "$SRC/scripts/slurm/backprop.sbatch" job.ini --set checkpoint.dir="$T/$1")
    check "$1: submitted" test -n "$id"
}

# mid_run NAME DIR: waits until the job runs and DIR has two epochs logged (at most 60 s).
mid_run() {
    check "$1: job running" slurm_wait_state "$id" RUNNING 60
    local i
    for i in $(seq 1500); do
        [ "$(cat "$T/$2/metrics.csv" 2>/dev/null | wc -l)" -gt 2 ] && break
        sleep 0.04
    done
    check "$1: two epochs logged" test "$(cat "$T/$2/metrics.csv" 2>/dev/null | wc -l)" -gt 2
}

# ended NAME DIR: the run in DIR ended where the uninterrupted one did, to the bit.
ended() {
    check "$1: bit-identical to the uninterrupted run" $CMP ref/latest.h5 "$2/latest.h5" 0
    check "$1: same metrics" test "$(strip_time ref/metrics.csv)" = "$(strip_time "$2/metrics.csv")"
    check "$1: at the end of training" test "$($H5 state "$2/latest.h5")" = "40 0 1200"
}
STOP_LINE='^backprop: stopped by SIGUSR1 at step [0-9]+; resume with --resume latest$'

# What --signal=B:USR1@120 does before the time limit: stop, requeue, resume.
submit A
mid_run "requeue" A
check "requeue: signal the batch shell" scancel --signal=USR1 --batch "$id"
check "requeue: requeued and finished" slurm_wait_state "$id" COMPLETED 240
out="$T/slurm-$id.out"
check "requeue: one restart" test "$(slurm_job_field "$id" Restarts)" = 1
check "requeue: exit code 0 in the end" test "$(slurm_job_field "$id" ExitCode)" = 0:0
check "requeue: the stop line" grep -qE "$STOP_LINE" "$out"
check "requeue: it requeued itself" \
    grep -q "backprop.sbatch: stopped by SIGUSR1 before the time limit; requeueing job $id" "$out"
check "requeue: the second start resumed mid-run" grep -qE '^resumed at epoch ([3-9]|[1-3][0-9]), ' "$out"
check "requeue: two starts" test "$(grep -c '^backprop.sbatch: job .*, start [12]$' "$out")" = 2
ended "requeue" A
[ -n "${VERBOSE:-}" ] && sed 's/^/    job: /' "$out"
[ "$fails" -gt 0 ] && sed 's/^/    job: /' "$out" | grep -v '^    job: *$' | tail -30

# SIGUSR2: stop with a checkpoint and end the job; the same command again continues.
submit B
mid_run "stop" B
check "stop: signal the batch shell" scancel --signal=USR2 --batch "$id"
check "stop: the job ended" slurm_wait_state "$id" 'FAILED|COMPLETED' 120
check "stop: exit code 3, no restart" \
    test "$(slurm_job_field "$id" ExitCode) $(slurm_job_field "$id" Restarts)" = "3:0 0"
check "stop: the stop line" grep -qE "$STOP_LINE" "$T/slurm-$id.out"
submit B
check "stop: submitted again, finished" slurm_wait_state "$id" COMPLETED 240
check "stop: continued from the stop" grep -qE '^resumed at epoch ' "$T/slurm-$id.out"
ended "stop" B

# ELASTIC=1: the same job under backprop launch over the allocation's node; SIGUSR1 to the
# batch shell reaches the launcher, which stops the job with a checkpoint: requeued, resumed.
submit E ELASTIC=1
mid_run "elastic" E
check "elastic: signal the batch shell" scancel --signal=USR1 --batch "$id"
check "elastic: requeued and finished" slurm_wait_state "$id" COMPLETED 240
out="$T/slurm-$id.out"
check "elastic: one restart" test "$(slurm_job_field "$id" Restarts)" = 1
check "elastic: under the launcher" grep -qE '^backprop: launch: job 1 on 1 host: ' "$out"
check "elastic: the stop line" grep -qE "$STOP_LINE" "$out"
check "elastic: the second start resumed mid-run" grep -qE '^resumed at epoch ([3-9]|[1-3][0-9]), ' "$out"
ended "elastic" E
[ "$fails" -gt 0 ] && sed 's/^/    job: /' "$out" | grep -v '^    job: *$' | tail -30

finish
