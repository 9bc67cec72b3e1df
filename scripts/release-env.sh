# Sourced by the scripts that run backprop (demo, check-seeds): installs what is missing
# (plus the Debian packages given as arguments), builds build/release/backprop, and lets
# mpirun run as root where it must.
scripts/deps.sh "$@"
if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DBACKPROP_TESTS=OFF >/dev/null
cmake --build build/release -j "$(nproc)" --target backprop
