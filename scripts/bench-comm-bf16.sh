#!/usr/bin/env bash
# [comm] dtype = bf16 against float across 2 simulated hosts (scripts/cluster.sh, network
# namespaces) whose links are limited to RATE (default 1gbit): W3 ([784,2048,2048,10],
# batch 256, 20 steps an epoch, 2 epochs, 1 rank x 1 thread per host) for the exchange's
# time per step and the bytes on the wire, the two dtypes alternating REPS times; then the
# main job (configs/fashion-mnist.ini, 1 thread per host: each simulated host has both of
# this machine's cores, and two ranks of two threads would share them) in each for its
# final test accuracy. Needs root. About 10 minutes; not part of the tests.
# Usage: scripts/bench-comm-bf16.sh [RATE] [REPS]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench-comm-bf16.sh: needs root (network namespaces)" >&2; exit 2; }
rate=${1:-1gbit}
reps=${2:-2}
source scripts/release-env.sh dataset-fashion-mnist iproute2 >/dev/null
out=$(mktemp -d)
trap 'scripts/cluster.sh down >/dev/null 2>&1; rm -rf "$out"' EXIT
scripts/cluster.sh up 2 --rate "$rate" >/dev/null
F=/usr/share/datasets/fashion-mnist
cat >"$out/w3.ini" <<INI
[data]
train = $F/train-images-idx3-ubyte.gz
train_labels = $F/train-labels-idx1-ubyte.gz
limit = 5120
[network]
layers = 784, 2048, 2048, 10
hidden = relu
output = softmax
[train]
epochs = 2
batch_size = 256
learning_rate = 0.05
lambda = 5
threads = 1
[checkpoint]
every_epochs = 0
[log]
progress = off
INI
tx() { ip -n bp-host1 -s link show eth0 | awk '/TX:/ {getline; print $1}'; }
echo "# $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; 2 hosts, links $rate"
echo "| dtype | step ms | exchange waited for, ms (share) | exchange in all, ms (hidden) | compute ms | MB sent by host 1 per step |"
echo "|---|---|---|---|---|---|"
for rep in $(seq "$reps"); do
    for dtype in float bf16; do
        before=$(tx)
        log=$(scripts/cluster.sh run -- --bind-to none "$PWD/build/release/backprop" train \
            "$out/w3.ini" --set checkpoint.dir="$out/w3-$dtype-$rep" --set comm.dtype=$dtype)
        sent=$(($(tx) - before))
        line=$(grep '^step time' <<<"$log")
        step=$(sed -E 's/^step time: ([0-9.]+) ms.*/\1/' <<<"$line")
        exch=$(sed -E 's/.* exchange ([0-9.]+ \([0-9.]+%\)).*/\1/' <<<"$line")
        comp=$(sed -E 's/.*compute ([0-9.]+).*/\1/' <<<"$line")
        all=$(sed -E 's/.*exchange took ([0-9.]+) in all, ([0-9.]+) of it hidden.*/\1 (\2)/' <<<"$line")
        echo "| $dtype | $step | $exch | $all | $comp | $(awk -v b="$sent" 'BEGIN {printf "%.2f", b / 40 / 1e6}') |"
    done
done
echo
for dtype in float bf16; do
    scripts/cluster.sh run -- --bind-to none "$PWD/build/release/backprop" train \
        configs/fashion-mnist.ini --set checkpoint.dir="$out/main-$dtype" \
        --set comm.dtype=$dtype --set train.threads=1 --set log.progress=off \
        >"$out/main-$dtype.log"
    acc=$(tail -1 "$out/main-$dtype/metrics.csv" | cut -d, -f8)
    epochs=$(tail -1 "$out/main-$dtype/metrics.csv" | cut -d, -f1)
    echo "main job across 2 hosts, dtype = $dtype: $epochs epochs, final test accuracy" \
        "$(awk -v a="$acc" 'BEGIN {printf "%.2f", 100 * a}') %, $(grep '^step time' "$out/main-$dtype.log")"
done
