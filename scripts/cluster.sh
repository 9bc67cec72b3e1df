#!/usr/bin/env bash
# A cluster of simulated hosts on this machine, to try a multi-host run: each host is a
# network namespace with one address on a private switch (a bridge in a namespace of its
# own), so ranks talk TCP as they would across nodes. Nothing is added to this machine's
# own network: the addresses exist only inside the namespaces. Needs root.
#
#   scripts/cluster.sh up N [--rate RATE]   N hosts (2..8); RATE limits each host's link,
#                                           e.g. 1gbit (tc's tbf); default unlimited
#   scripts/cluster.sh run [-np N] -- CMD...  mpirun across the hosts, one rank per host
#                                           by default; CMD runs as under any mpirun
#   scripts/cluster.sh launch BACKPROP [OPTION...] -- CONFIG [--set ...]
#                                           backprop launch (elastic) from host 1 over all
#                                           the hosts, one rank each, with run's options
#   scripts/cluster.sh link HOST up|down    takes a host's link down (a partition) or up
#   scripts/cluster.sh pids                 processes left in the hosts' namespaces
#   scripts/cluster.sh down                 ends every process in them and removes it all
#
# Hosts are bp-host1..N with addresses 10.213.7.1..N; `up` first tears down what an earlier
# `up` left. Open MPI starts its daemons through scripts/cluster-rsh (ip netns exec, not
# ssh) and keeps all traffic on TCP over the switch (see docs/running.md, "Running across hosts").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PREFIX=bp-host
# The hosts share this machine's /tmp and /dev/shm, where Open MPI keeps each node's
# session directory and its shared-memory segments under names that hold the hostname
# (the same for all): each host gets a directory of its own for them (cluster-rsh sets it),
# or ranks on two hosts would map one segment and crash.
SCRATCH=/tmp/bp-cluster
SWITCH=bp-switch
NET=10.213.7

die() {
    echo "cluster.sh: $*" >&2
    exit 2
}
need_root() {
    [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"
    command -v ip >/dev/null || die "needs iproute2's ip"
    ip netns list >/dev/null 2>&1 || die "network namespaces are not available here"
}
hosts() { ip netns list 2>/dev/null | awk -v p="$PREFIX" '$1 ~ "^"p"[0-9]+$" {print $1}' | sort -V; }

down() {
    for ns in $(hosts) $SWITCH; do
        ip netns list | awk '{print $1}' | grep -qx "$ns" || continue
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$SCRATCH"
}

up() {
    local n=${1:-}
    shift || true
    local rate=""
    while [ $# -gt 0 ]; do
        case $1 in
        --rate) rate=${2:?--rate needs a value, e.g. 1gbit}; shift 2 ;;
        *) die "up: unexpected '$1'" ;;
        esac
    done
    [[ "$n" =~ ^[2-8]$ ]] || die "up: N must be 2..8 hosts"
    down
    trap 'down' ERR
    ip netns add $SWITCH
    ip -n $SWITCH link add br0 type bridge
    ip -n $SWITCH link set br0 up
    for i in $(seq "$n"); do
        local ns=$PREFIX$i
        ip netns add "$ns"
        ip link add "veth$i" netns "$ns" type veth peer name "port$i" netns $SWITCH
        ip -n "$ns" link set "veth$i" name eth0
        ip -n "$ns" addr add "$NET.$i/24" dev eth0
        ip -n "$ns" link set lo up
        ip -n "$ns" link set eth0 up
        # Give up on a peer after about 13 s of unacknowledged data instead of Linux's
        # 15 minutes (tcp_retries2 = 15): with a host cut off, mpirun's own messages to it
        # would otherwise wait that long. Set in the host's namespace only.
        ip netns exec "$ns" sysctl -qw net.ipv4.tcp_retries2=5
        ip -n $SWITCH link set "port$i" master br0
        ip -n $SWITCH link set "port$i" up
        if [ -n "$rate" ]; then
            ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$rate" burst 256kb latency 50ms
        fi
    done
    trap - ERR
    echo "up: $n hosts ($NET.1..$NET.$n)${rate:+, each link $rate}"
}

# What mpirun needs here, for run and launch.
# TCP between hosts, on the switch's subnet; shared memory between the ranks of one
# host, as on a real node (TCP alone between two ranks of one host crashes Open MPI
# 4.1 here). mpi_yield_when_idle: ranks that wait yield the core,
# so the kernel's network processing is not starved when ranks use every core (docs/running.md
# has the figures). Keepalives on Open MPI's own connections (idle 5 s, then 3 probes
# 2 s apart; its default is 480 s): when a host is cut off, mpirun and the far daemon
# notice within seconds and end the job, after backprop's [comm] timeout has ended
# the ranks.
MPIRUN_OPTIONS=(--map-by node --mca plm_rsh_agent "$here/cluster-rsh"
    --mca oob_tcp_if_include "$NET.0/24" --mca btl_tcp_if_include "$NET.0/24"
    --mca btl tcp,vader,self --mca mpi_yield_when_idle 1
    --mca oob_tcp_keepalive_time 5 --mca oob_tcp_keepalive_intvl 3
    --mca oob_tcp_keepalive_probes 5)

# Runs CMD... as host 1 (its namespace and hostname), with its directory for Open MPI's
# files: mpirun is host 1's daemon, and its ranks there get host 1's directory.
as_host1() {
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    mkdir -p "$SCRATCH/${PREFIX}1"
    export TMPDIR=$SCRATCH/${PREFIX}1 OMPI_MCA_btl_vader_backing_directory=$SCRATCH/${PREFIX}1
    exec ip netns exec ${PREFIX}1 unshare --uts sh -c 'hostname "$0" && exec "$@"' ${PREFIX}1 "$@"
}

run() {
    local np="" list=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        case $1 in
        -np) np=$2; shift 2 ;;
        *) die "run: unexpected '$1' (run [-np N] -- CMD...)" ;;
        esac
    done
    [ "${1:-}" = "--" ] || die "run: missing -- CMD..."
    shift
    local all
    all=$(hosts)
    [ -n "$all" ] || die "run: no hosts (scripts/cluster.sh up N first)"
    local count
    count=$(echo "$all" | wc -l)
    local slots=$(((${np:-$count} + count - 1) / count))
    for i in $(seq "$count"); do list+=("$NET.$i:$slots"); done
    as_host1 mpirun --host "$(IFS=,; echo "${list[*]}")" -np "${np:-$count}" "${MPIRUN_OPTIONS[@]}" "$@"
}

# backprop launch over every host (slots=1 each, in $SCRATCH/hosts), run's mpirun options
# given to it as --mpirun-arg values; OPTION... and what follows -- are launch's.
launch() {
    local bp=${1:?launch BACKPROP [OPTION...] -- CONFIG [--set ...]} args=() count
    shift
    count=$(hosts | wc -l)
    [ "$count" -gt 0 ] || die "launch: no hosts (scripts/cluster.sh up N first)"
    mkdir -p "$SCRATCH"
    for i in $(seq "$count"); do echo "$NET.$i slots=1"; done >"$SCRATCH/hosts"
    for a in "${MPIRUN_OPTIONS[@]}"; do args+=(--mpirun-arg "$a"); done
    as_host1 "$bp" launch --hostfile "$SCRATCH/hosts" "${args[@]}" "$@"
}

link() {
    local host=${1:?link HOST up|down} state=${2:?link HOST up|down}
    [[ "$host" =~ ^[0-9]+$ ]] && host=$PREFIX$host
    ip -n "$host" link set eth0 "$state"
}

need_root
case ${1:-} in
up) shift; up "$@" ;;
run) shift; run "$@" ;;
launch) shift; launch "$@" ;;
link) shift; link "$@" ;;
pids) for ns in $(hosts); do ip netns pids "$ns"; done ;;
down) down ;;
*) die "usage: scripts/cluster.sh up N [--rate R] | run [-np N] -- CMD... | launch BACKPROP [OPTION...] -- CONFIG... | link HOST up|down | pids | down" ;;
esac
