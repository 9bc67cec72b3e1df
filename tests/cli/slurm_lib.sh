# A throw-away one-node SLURM cluster for tests: source this file, then
#   slurm_install            # packages (Debian 12: slurm-wlm 22.05, munge 0.5.15), as root
#   D=$(mktemp -d); trap 'slurm_down "$D"' EXIT
#   slurm_up "$D"            # munged + slurmctld + slurmd, all state under $D; exports SLURM_CONF
#   id=$(sbatch --parsable ...); slurm_wait_state "$id" RUNNING 30
#   slurm_down "$D"          # idempotent; safe from an EXIT trap
# Everything the cluster talks over is 127.0.0.1 (SlurmctldHost/NodeAddr) or a unix socket
# under $D. Every wait has a deadline. Messages go to stderr prefixed "slurm_lib:".
# Needs root (SlurmUser=root, the daemons run as root), bash 4+, procps (pgrep).

SLURM_LIB_PORT_BASE=${SLURM_LIB_PORT_BASE:-16817}

_slurm_log() { echo "slurm_lib: $*" >&2; }

# slurm_install: make slurmctld, slurmd, sbatch, munged exist. Installs slurm-wlm and
# munge with apt-get (no recommends), running 'apt-get update' only when the first try
# fails. For its duration /usr/sbin/policy-rc.d answers 101, so no package script starts
# a system munge/slurmctld/slurmd; a policy-rc.d already there is put back byte for byte,
# and one we made is removed. Returns non-zero when the tools are still missing.
slurm_install() {
    local t missing=0
    for t in slurmctld slurmd sbatch munged; do
        command -v "$t" >/dev/null 2>&1 || missing=1
    done
    [ "$missing" -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        _slurm_log "SLURM is not installed and installing it needs root"
        return 1
    fi
    local pol=/usr/sbin/policy-rc.d saved="" rc
    if [ -e "$pol" ] || [ -L "$pol" ]; then
        saved=$(mktemp /tmp/policy-rc.d.XXXXXX) || return 1
        cp -a "$pol" "$saved" || return 1
        rm -f "$pol"
    fi
    printf '#!/bin/sh\n# slurm_lib.sh: no service starts during its apt-get install\nexit 101\n' >"$pol"
    chmod 0755 "$pol"
    local apt="timeout -k 10 600 apt-get -y -q --no-install-recommends"
    DEBIAN_FRONTEND=noninteractive $apt install slurm-wlm munge >&2
    rc=$?
    if [ "$rc" -ne 0 ]; then
        _slurm_log "apt-get install failed ($rc); running apt-get update and trying again"
        DEBIAN_FRONTEND=noninteractive timeout -k 10 600 apt-get -q update >&2
        DEBIAN_FRONTEND=noninteractive $apt install slurm-wlm munge >&2
        rc=$?
    fi
    rm -f "$pol"
    if [ -n "$saved" ]; then
        cp -a "$saved" "$pol" && rm -f "$saved"
    fi
    for t in slurmctld slurmd sbatch munged; do
        if ! command -v "$t" >/dev/null 2>&1; then
            _slurm_log "still missing after apt-get install (rc $rc): $t"
            return 1
        fi
    done
    return 0
}

# _slurm_port_free PORT: nothing listens on TCP PORT (any address).
_slurm_port_free() {
    if command -v ss >/dev/null 2>&1; then
        ! ss -Htln "sport = :$1" 2>/dev/null | grep -q .
    else # no iproute2: a connect to 127.0.0.1 that fails means nobody listens there
        ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

# _slurm_pidof_file FILE: the pid in FILE, when that process is alive.
_slurm_pidof_file() {
    local p
    p=$({ tr -dc '0-9' <"$1"; } 2>/dev/null)
    [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"
}

# _slurm_tagged DIR: pids of everything this cluster runs, and, recursively, their
# children: the daemons (started with SLURM_LIB_TAG=DIR in their environment), the
# slurmstepds (slurmd gives them SLURM_CONF=DIR/slurm.conf) and the job processes
# (SLURM_CONF=DIR/slurm.conf and a SLURM_JOB_ID, also those that left the process tree with
# setsid or a double fork). Never the calling shell, which has SLURM_CONF but no job id.
_slurm_tagged() {
    local dir=$1 p env pids="" c kids
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$p" = "$$" ] || [ "$p" = "$BASHPID" ] && continue
        env=$({ tr '\0' '\n' <"/proc/$p/environ"; } 2>/dev/null) || continue
        if grep -qxF "SLURM_LIB_TAG=$dir" <<<"$env"; then
            pids="$pids $p"
        elif grep -qxF "SLURM_CONF=$dir/slurm.conf" <<<"$env"; then
            if grep -q '^SLURM_JOB_ID=' <<<"$env" ||
                { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -q '^slurmstepd'; then
                pids="$pids $p"
            fi
        fi
    done
    local all=" $pids " frontier=$pids
    while [ -n "${frontier// /}" ]; do
        kids=""
        for p in $frontier; do
            for c in $(pgrep -P "$p" 2>/dev/null); do
                case "$all" in *" $c "*) ;; *) all="$all$c " kids="$kids $c" ;; esac
            done
        done
        frontier=$kids
    done
    echo $all # unquoted: one line of pids
}

# slurm_up DIR [PORT_BASE]: start a one-node cluster whose every file lives in DIR (an
# existing empty directory, e.g. from mktemp -d; its path must have no spaces or commas).
# Writes DIR/munge.key (0400), DIR/slurm.conf, starts munged, slurmctld, slurmd, exports
# SLURM_CONF=DIR/slurm.conf (so sbatch, squeue, scontrol, scancel, sinfo use this cluster)
# and returns once the node is idle (30 s at most). Ports: the first two free ones from
# PORT_BASE (default $SLURM_LIB_PORT_BASE, 16817) up. Node: $(hostname -s), CPUs=nproc,
# partition "debug". On failure: the tail of the logs on stderr, non-zero; call
# slurm_down DIR anyway.
slurm_up() {
    local dir=${1:?slurm_up DIR}
    local port=${2:-$SLURM_LIB_PORT_BASE}
    case "$dir" in /*) ;; *) dir=$(cd "$dir" && pwd) || return 1 ;; esac
    case "$dir" in *[[:space:],]*) _slurm_log "DIR must have no spaces or commas: $dir"; return 1 ;; esac
    local host cpus ctl_port="" d_port="" i
    host=$(hostname -s)
    cpus=$(nproc)
    for ((i = 0; i < 200; i++)); do
        if _slurm_port_free $((port + i)); then
            if [ -z "$ctl_port" ]; then ctl_port=$((port + i)); else d_port=$((port + i)); break; fi
        fi
    done
    if [ -z "$d_port" ]; then
        _slurm_log "no two free TCP ports from $port up"
        return 1
    fi
    # munged wants every directory above its socket searchable by all (0700 is refused:
    # "Socket is inaccessible: execute permissions for all required").
    chmod 0755 "$dir"
    mkdir -p "$dir/state" "$dir/spool" "$dir/log"
    chmod 0700 "$dir/state" "$dir/spool" "$dir/log"

    # munge: its own key, socket, pid, log and seed, all in DIR.
    (umask 077 && dd if=/dev/urandom of="$dir/munge.key" bs=128 count=1 status=none) || return 1
    chmod 0400 "$dir/munge.key"
    SLURM_LIB_TAG=$dir munged --socket="$dir/munge.socket" --key-file="$dir/munge.key" \
        --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munged.seed" --num-threads=2 || {
        _slurm_log "munged did not start"; tail -n 20 "$dir/log/munged.log" >&2; return 1
    }
    local deadline=$((SECONDS + 10))
    until munge -s x -S "$dir/munge.socket" 2>/dev/null | unmunge -S "$dir/munge.socket" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            _slurm_log "munged not answering on $dir/munge.socket after 10 s"
            tail -n 20 "$dir/log/munged.log" >&2
            return 1
        fi
        sleep 0.2
    done

    cat >"$dir/slurm.conf" <<EOF
# Written by tests/cli/slurm_lib.sh: a throw-away one-node cluster.
ClusterName=bptest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctl_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also delays a requeued job's restart (BeginTime); 5 is the least slurmstepd
# accepts ("AuthInfo=cred_expire=2 invalid"); the default is 120.
AuthInfo=socket=$dir/munge.socket,cred_expire=${SLURM_LIB_CRED_EXPIRE:-5}
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$dir/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
# Start a job as soon as it can run (batch_sched_delay defaults to 3 s), and look at
# pending jobs every 2 s (default 60 s): a requeued job is held until its BeginTime
# (requeue + cred_expire + 1 s), and only a scheduling pass notices that it has passed.
SchedulerParameters=batch_sched_delay=0,sched_interval=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
JobRequeue=1
ReturnToService=2
KillWait=5
MinJobAge=300
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
${SLURM_LIB_EXTRA_CONF:-}
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    : >"$dir/plugstack.conf"
    export SLURM_CONF=$dir/slurm.conf
    SLURM_LIB_TAG=$dir slurmctld -f "$dir/slurm.conf" -i || {
        _slurm_log "slurmctld did not start"; tail -n 20 "$dir/log/slurmctld.log" >&2; return 1
    }
    deadline=$((SECONDS + 15))
    until timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            _slurm_log "slurmctld not answering on port $ctl_port after 15 s"
            tail -n 20 "$dir/log/slurmctld.log" >&2
            return 1
        fi
        sleep 0.2
    done
    SLURM_LIB_TAG=$dir slurmd -f "$dir/slurm.conf" -N "$host" || {
        _slurm_log "slurmd did not start"; tail -n 20 "$dir/log/slurmd.log" >&2; return 1
    }
    deadline=$((SECONDS + 30))
    local st=""
    while :; do
        st=$(timeout 5 sinfo -h -n "$host" -o %T 2>/dev/null)
        [ "$st" = idle ] && break
        if [ "$SECONDS" -ge "$deadline" ]; then
            _slurm_log "node $host not idle after 30 s (state '${st}')"
            timeout 5 scontrol show node "$host" >&2
            tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2
            return 1
        fi
        sleep 0.2
    done
    return 0
}

# slurm_job_state JOBID: the job's state (PENDING, RUNNING, COMPLETED, ...) or nothing.
slurm_job_state() {
    timeout 5 scontrol -o show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2
}

# slurm_job_field JOBID FIELD: one Field=value of scontrol show job (e.g. Restarts).
slurm_job_field() {
    timeout 5 scontrol -o show job "$1" 2>/dev/null | tr ' ' '\n' | grep "^$2=" | head -n1 | cut -d= -f2-
}

# slurm_wait_state JOBID STATE[|STATE...] SECONDS: wait until the job is in one of the
# states (an extended regex over scontrol's JobState); non-zero, with the last state on
# stderr, past the deadline.
slurm_wait_state() {
    local id=$1 want=$2 deadline=$((SECONDS + $3)) st=""
    while :; do
        st=$(slurm_job_state "$id")
        if [ -n "$st" ] && [[ "$st" =~ ^($want)$ ]]; then
            return 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            _slurm_log "job $id: state '$st' after $3 s, wanted $want"
            return 1
        fi
        sleep 0.2
    done
}

# slurm_kick JOBID SECONDS: once the job is PENDING on its BeginTime (as a requeued job is
# for cred_expire + 1 s), let it start now. From outside the job only: a batch script that
# updates its own StartTime after 'scontrol requeue' changes nothing (the requeue sets the
# BeginTime again once the script has ended). Non-zero when the job was not seen waiting
# on BeginTime within SECONDS.
slurm_kick() {
    local id=$1 deadline=$((SECONDS + $2)) st
    while [ "$SECONDS" -lt "$deadline" ]; do
        st=$(timeout 5 scontrol -o show job "$id" 2>/dev/null | grep -oE '(JobState|Reason)=[^ ]*' | tr '\n' ' ')
        if [[ "$st" == *JobState=PENDING*Reason=BeginTime* ]]; then
            timeout 5 scontrol update jobid="$id" StartTime=now
            return
        fi
        sleep 0.1
    done
    _slurm_log "job $id: not pending on BeginTime within $2 s ($st)"
    return 1
}

# slurm_down DIR: cancel every job, stop slurmd, slurmctld and munged (SIGTERM by their
# pid files, SIGKILL after 10 s), kill whatever job processes are left (anything started
# by these daemons), remove DIR. Safe to call twice, on a DIR that slurm_up never finished
# (or never started), and from an EXIT trap. Unsets SLURM_CONF when it pointed into DIR.
# Always returns 0.
slurm_down() {
    local dir=${1:-}
    [ -n "$dir" ] && [ -d "$dir" ] || return 0
    dir=$(cd "$dir" && pwd) || return 0
    if _slurm_pidof_file "$dir/slurmctld.pid" >/dev/null; then
        # Cancel every job and give them 3 s to end (SIGCONT+SIGTERM now, SIGKILL after
        # KillWait=5 s; what is still there after 3 s is killed below).
        SLURM_CONF=$dir/slurm.conf timeout 5 scancel --quiet --user=root >/dev/null 2>&1
        local deadline=$((SECONDS + 3))
        while [ "$SECONDS" -lt "$deadline" ] &&
            [ -n "$(SLURM_CONF=$dir/slurm.conf timeout 5 squeue -h -t R,CG,S,CF -o %i 2>/dev/null)" ]; do
            sleep 0.2
        done
    fi
    # Everything this cluster started, collected before the daemons go (their orphans are
    # re-parented then).
    local procs p f deadline
    procs=$(_slurm_tagged "$dir")
    for f in slurmd slurmctld munged; do
        p=$(_slurm_pidof_file "$dir/$f.pid") && kill -TERM "$p" 2>/dev/null
    done
    deadline=$((SECONDS + 10))
    while [ "$SECONDS" -lt "$deadline" ]; do
        local alive=""
        for f in slurmd slurmctld munged; do
            _slurm_pidof_file "$dir/$f.pid" >/dev/null && alive=1
        done
        [ -z "$alive" ] && break
        sleep 0.2
    done
    for f in slurmd slurmctld munged; do
        p=$(_slurm_pidof_file "$dir/$f.pid") && kill -KILL "$p" 2>/dev/null
    done
    procs="$procs $(_slurm_tagged "$dir")"
    for p in $procs; do
        [ "$p" = "$$" ] || [ "$p" = "$BASHPID" ] || kill -KILL "$p" 2>/dev/null
    done
    deadline=$((SECONDS + 5))
    for p in $procs; do
        while kill -0 "$p" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    done
    [ "${SLURM_CONF:-}" = "$dir/slurm.conf" ] && unset SLURM_CONF
    rm -rf "$dir"
    return 0
}
