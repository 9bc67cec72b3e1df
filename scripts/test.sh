#!/usr/bin/env bash
# Installs what is missing, builds backprop in float, in double, and with sanitizers, and
# runs every test through ctest. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh python3-h5py python3-numpy dataset-fashion-mnist iproute2 procps util-linux gnuplot-nox

# mpirun as root (CI, containers) needs explicit consent.
if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
jobs=$(nproc)

build_and_test() { # DIR CMAKE-ARGS... ; then CTEST-ARGS after --
    local dir=$1; shift
    local cmake_args=() ctest_args=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do cmake_args+=("$1"); shift; done
    [ $# -gt 0 ] && shift && ctest_args=("$@")
    echo "== $dir: ${cmake_args[*]}"
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release "${cmake_args[@]}" >/dev/null
    cmake --build "$dir" -j "$jobs"
    (cd "$dir" && ctest --output-on-failure -j "$jobs" "${ctest_args[@]}")
}

build_and_test build/float
# The error paths, the SLURM job script, the launcher, the ranks' agreement checks (hashes
# of bytes), the plots and straggler detection do not depend on the scalar type: the double
# build skips them, which keeps the whole run within CI's 15 minutes.
build_and_test build/double -DBACKPROP_DOUBLE=ON -- \
    -E 'cli_errors|cli_slurm|cli_launch|cli_trust_ranks|cli_plot|cli_straggler'
# Sanitizers on the unit tests (MPI's own allocations are out of our hands).
build_and_test build/asan -DBACKPROP_SANITIZE=ON -- -L unit
