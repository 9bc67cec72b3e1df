# Shared by the command-line tests: run backprop alone or under mpirun, check exit
# statuses and messages. Each test script sources this, then calls `finish`.
set -u
BP=${BACKPROP:?set BACKPROP to the backprop binary}
PY=/usr/bin/python3 # Debian's interpreter: it has h5py and numpy
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OPENBLAS_NUM_THREADS=1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T"
passes=0
fails=0

# mpi NP ARGS...: backprop under mpirun with NP ranks; never more than 120 s.
# rank_pid PATTERN RANK: the pid of MPI rank RANK among the processes whose command line
# matches PATTERN (its environment says which rank it is: pids wrap around, so their order
# says nothing, and mpirun's own command line matches too).
rank_pid() {
    local p
    for p in $(pgrep -f "$1"); do
        if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

mpi() {
    local np=$1
    shift
    timeout -k 5 120 mpirun --oversubscribe -np "$np" "$BP" "$@"
}

# config FILE [EXTRA LINES...]: a small valid config training good.h5 (make_data.py) into
# $T/run, plus lines appended.
config() {
    local file=$1
    shift
    cat >"$file" <<INI
[data]
train = $T/good.h5

[network]
layers = 4, 8, 3
hidden = tanh
output = softmax
cost = cross_entropy

[train]
epochs = 2
batch_size = 16
learning_rate = 0.1

[checkpoint]
dir = $T/run
every_epochs = 1

[log]
progress = off
INI
    for line in "$@"; do printf '%s\n' "$line" >>"$file"; done
}

# write_config FILE ITEM...: an INI file from its items, in order: `[section]` starts a
# section and `key=value` writes the line `key = value` (the value may hold spaces and '=').
write_config() {
    local file=$1 item
    shift
    for item in "$@"; do
        case $item in
        \[*\]) printf '%s\n' "$item" ;;
        *=*) printf '%s = %s\n' "${item%%=*}" "${item#*=}" ;;
        *)
            echo "write_config: '$item' is neither [section] nor key=value" >&2
            return 1
            ;;
        esac
    done >"$file"
}

# parallel_config FILE: a small net whose shards differ in size (160 / 13 leaves a short
# last batch): what the data-parallel tests train alone, under mpirun and across hosts.
# threads = 1: the bits depend on the threads per rank too.
parallel_config() {
    write_config "$1" '[data]' "train=$T/good.h5" validation_split=40 \
        '[network]' 'layers=4, 16, 8, 3' hidden=tanh output=softmax cost=cross_entropy init=xavier \
        '[train]' epochs=3 batch_size=13 learning_rate=0.2 lambda=0.5 momentum=0.9 seed=11 threads=1 \
        '[checkpoint]' every_epochs=0 '[log]' progress=off
}

ok() { passes=$((passes + 1)); }
bad() {
    fails=$((fails + 1))
    echo "FAIL: $*"
}

# expect NAME STATUS PATTERN CMD...: CMD exits with STATUS and its stderr matches PATTERN
# (an extended regex) exactly once per job: printed by one rank, not by every rank.
expect() {
    local name=$1 want=$2 pattern=$3
    shift 3
    "$@" >"$T/out" 2>"$T/err"
    local got=$?
    local count
    count=$(grep -cE -e "$pattern" "$T/err")
    if [ "$got" -ne "$want" ] || [ "$count" -ne 1 ] || [ "$(grep -c 'backprop: error' "$T/err")" -ne 1 ]; then
        bad "$name: exit $got (want $want), stderr:"
        sed 's/^/    /' "$T/err" | head -20
    else
        ok
    fi
}

# check NAME CMD...: CMD succeeds.
check() {
    local name=$1
    shift
    if "$@" >"$T/check.out" 2>&1; then
        ok
        [ -n "${VERBOSE:-}" ] && sed "s/^/    $name: /" "$T/check.out" | tail -3
    else
        bad "$name"
        sed 's/^/    /' "$T/check.out" | tail -20
    fi
}

finish() {
    echo "$passes passed, $fails failed"
    [ "$fails" -eq 0 ]
}
