#!/usr/bin/env bash
# [train] reproducible = any_scale: a W2-shaped net (784-256-256-10) on Fashion-MNIST rows
# ends byte-identical whatever the rank count (1, 2, 3, 4, 6), the threads, overlap and
# bucket size, and the placement: the weights, the optimizer state and the metrics rows
# but their timings. A resume at another rank count, mid-epoch, continues to the same bits.
source "$(dirname "$0")/lib.sh"
F=/usr/share/datasets/fashion-mnist
if [ ! -r "$F/train-images-idx3-ubyte.gz" ]; then
    echo "SKIP: Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)"
    exit 0
fi
check "convert" "$BP" convert --idx-images "$F/train-images-idx3-ubyte.gz" \
    --idx-labels "$F/train-labels-idx1-ubyte.gz" --contiguous --out fm.h5
# 1500 rows, the last 276 held out for validation (evaluated in chunks of 256 and 20): 9
# batches of 128 and a short one of 72 (micro-shards 32, 32, 8), 20 steps in 2 epochs.
write_config a.ini '[data]' "train=$T/fm.h5" limit=1500 validation_split=276 \
    '[network]' 'layers=784, 256, 256, 10' hidden=relu output=softmax cost=cross_entropy \
    '[train]' epochs=2 batch_size=128 learning_rate=0.05 lambda=1 momentum=0.9 seed=3 \
    reproducible=any_scale micro_batch=32 \
    '[checkpoint]' every_epochs=1 every_steps=5 keep=0 '[log]' progress=off

# same NAME A B [CHECKPOINT]: the final checkpoints' (ckpt-20.h5 unless named) weights and
# optimizer state, and the metrics rows but their timing columns, bit for bit.
same() {
    local c=${4:-ckpt-20.h5}
    if $PY "$SRC/tests/cli/compare_weights.py" "$2/$c" "$3/$c" 0 optimizer \
        >/dev/null && cmp -s <(cut -d, -f1-8 "$2/metrics.csv") <(cut -d, -f1-8 "$3/metrics.csv"); then
        ok
    else
        bad "$1: $2 and $3 differ"
    fi
}

check "np1" mpi 1 train a.ini --set checkpoint.dir=np1
for np in 2 3 4 6; do
    check "np$np" mpi "$np" train a.ini --set checkpoint.dir=np$np
    same "np$np" np1 np$np
done
# The 6-rank run's banner says how the batch is cut, and that two of its ranks idle.
cp "$T/check.out" np6.out
# The float build sends each rank's one micro-shard as floats; the double build int64.
floats="one a rank, sent as floats"
"$BP" --version | grep -q double && floats=""
check "banner" grep -qxF "reproducible: any_scale, a batch in 4 micro-shards of 32 rows, every \
product on 1 thread: the same bits at any rank or thread count (${floats:+$floats; }ranks past \
the micro-shards idle)" np6.out
check "alone, 2 threads" "$BP" train a.ini --set checkpoint.dir=alone --set train.threads=2
same "alone" np1 alone
check "np2 no overlap, small buckets" mpi 2 train a.ini --set checkpoint.dir=nover \
    --set comm.overlap=false --set comm.bucket_mb=0.1
same "overlap" np1 nover
check "np3 bucket 0.05" mpi 3 train a.ini --set checkpoint.dir=bucket --set comm.bucket_mb=0.05
same "bucket" np1 bucket
check "np2 stream" mpi 2 train a.ini --set checkpoint.dir=stream --set data.placement=stream
same "stream" np1 stream
check "np3 node" mpi 3 train a.ini --set checkpoint.dir=node --set data.placement=node
same "node" np1 node
# One micro-shard a rank (micro_batch 64: 2 of them, and 64 + 8 rows in the short batch):
# each rank's gradient goes to the node's sum as floats, quantized there.
check "np1 u64" mpi 1 train a.ini --set checkpoint.dir=u1 --set train.micro_batch=64
cp "$T/check.out" u1.out
check "np2 u64" mpi 2 train a.ini --set checkpoint.dir=u2 --set train.micro_batch=64
cp "$T/check.out" u2.out
same "one micro-shard a rank" u1 u2
check "np2 u64: says so" grep -qxF "reproducible: any_scale, a batch in 2 micro-shards of 64 rows, \
every product on 1 thread: the same bits at any rank or thread count${floats:+ ($floats)}" u2.out
check "np1 u64: alone, no floats" grep -qxF "reproducible: any_scale, a batch in 2 micro-shards of \
64 rows, every product on 1 thread: the same bits at any rank or thread count" u1.out

# Resume at other counts, mid-epoch: step 5 of the first epoch's 10, step 15 of the second.
check "resume np2 -> np3" mpi 3 train a.ini --set checkpoint.dir=r3 --resume np2/ckpt-5.h5
same "resume np2 -> np3" np1 r3
check "resume np3 -> np1" mpi 1 train a.ini --set checkpoint.dir=r1 --resume np3/ckpt-15.h5
same "resume np3 -> np1" np1 r1

# A resume that changes what decides the bits goes on, and says so.
check "resume with another micro_batch" sh -c "'$BP' train a.ini --set checkpoint.dir=m1 \
    --set train.micro_batch=16 --resume np2/ckpt-5.h5 >m1.out"
check "says so" grep -qxF "note: the checkpoint's run had [train] micro_batch = 32, this one 16: \
the run as a whole repeats with neither" m1.out
check "resume in same_ranks" sh -c "'$BP' train a.ini --set checkpoint.dir=m2 \
    --set train.reproducible=same_ranks --resume np2/ckpt-5.h5 >m2.out"
check "says so" grep -qxF "note: the checkpoint's run had [train] reproducible = any_scale, this \
one same_ranks: from here on same_ranks, but the run as a whole repeats in neither" m2.out

# Adam too.
check "adam np1" mpi 1 train a.ini --set checkpoint.dir=a1 --set train.optimizer=adam \
    --set train.momentum=0 --set train.learning_rate=0.001
check "adam np3" mpi 3 train a.ini --set checkpoint.dir=a3 --set train.optimizer=adam \
    --set train.momentum=0 --set train.learning_rate=0.001
same "adam" a1 a3

# Nesterov, a cosine schedule with early stopping (patience 1 ends it after the second epoch
# of 8: the stop, decided from val_cost summed exactly, at the same step everywhere), and
# checkpoints every_seconds on rank 0's clock.
check "nesterov np1" mpi 1 train a.ini --set checkpoint.dir=n1 --set train.optimizer=nesterov
check "nesterov np2" mpi 2 train a.ini --set checkpoint.dir=n2 --set train.optimizer=nesterov
same "nesterov" n1 n2
early=(--set train.epochs=8 --set train.lr_schedule=cosine --set train.early_stopping=1
       --set train.learning_rate=0.3)
check "early stop np1" mpi 1 train a.ini --set checkpoint.dir=e1 "${early[@]}"
check "early stop np4" mpi 4 train a.ini --set checkpoint.dir=e4 "${early[@]}" \
    --set checkpoint.every_seconds=0.001
same "early stop" e1 e4 latest.h5
if [ "$(wc -l <e1/metrics.csv)" -lt 9 ]; then ok; else bad "early stop: it ran all 8 epochs"; fi
n1=$(find e1 -name 'ckpt-*.h5' | wc -l) n4=$(find e4 -name 'ckpt-*.h5' | wc -l)
if [ "$n4" -gt "$n1" ]; then ok; else bad "every_seconds: $n4 checkpoints, not more than $n1"; fi

# Stopped by SIGUSR1 (mpirun forwards it to every rank) in an early epoch of 30 at 3 ranks
# (more than the cores, and OPENBLAS_NUM_THREADS unset: each rank's OpenBLAS starts a worker
# thread before main, which must not die of the signal), resumed at 2 from the checkpoint the stop wrote: the same bits as
# 1 rank throughout.
long=(--set train.epochs=30 --set checkpoint.every_epochs=0 --set checkpoint.every_steps=0)
check "long np1" mpi 1 train a.ini --set checkpoint.dir=l1 "${long[@]}"
(unset OPENBLAS_NUM_THREADS && mpi 3 train a.ini --set checkpoint.dir=ls "${long[@]}") \
    >ls.out 2>ls.err &
job=$!
for i in $(seq 600); do
    [ "$(cat ls/metrics.csv 2>/dev/null | wc -l)" -gt 1 ] && break
    sleep 0.02
done
pkill -USR1 -f "^mpirun .*checkpoint.dir=ls" || true # not timeout(1)
wait "$job"
status=$?
if [ "$status" -eq 3 ] && [ "$(cat ls/metrics.csv | wc -l)" -lt 31 ]; then ok; else
    bad "signal: exit $status (want 3), $(cat ls/metrics.csv | wc -l) metrics lines"
    sed 's/^/    /' ls.err | head -5
fi
check "resume after the signal np2" mpi 2 train a.ini --set checkpoint.dir=ls "${long[@]}" \
    --resume ls/latest.h5
same "signal, resume np2" l1 ls latest.h5

# Large costs (a linear unit on targets near 4e4: 8e8 a row, 2e11 a validation chunk, the
# epoch's sums past 2^31) are summed, not refused as a divergence nor wrapped around: at 1
# and 3 ranks the same bits, and within float rounding of same_ranks's sums.
$PY - <<'PY' || bad "large targets: cannot write big_y.h5"
import h5py, numpy as np
x = np.random.default_rng(1).standard_normal((1000, 1)).astype(np.float32)
with h5py.File("big_y.h5", "w") as f:
    f["X"] = x
    f["y"] = (40000 + 10 * x).astype(np.float32)
PY
write_config big.ini '[data]' "train=$T/big_y.h5" validation_split=500 \
    '[network]' 'layers=1, 1' hidden=linear output=linear cost=quadratic \
    '[train]' epochs=2 batch_size=50 learning_rate=1e-9 seed=1 micro_batch=1 \
    '[checkpoint]' every_epochs=1 '[log]' progress=off
check "large costs, same_ranks" mpi 1 train big.ini --set checkpoint.dir=bs
check "large costs np1" mpi 1 train big.ini --set checkpoint.dir=b1 --set train.reproducible=any_scale
check "large costs np3" mpi 3 train big.ini --set checkpoint.dir=b3 --set train.reproducible=any_scale
same "large costs" b1 b3 latest.h5
check "large costs as same_ranks's" $PY -c '
import csv, sys
rows = [list(csv.DictReader(open(d + "/metrics.csv"))) for d in ("bs", "b1")]
for s, a in zip(*rows):
    for key in ("train_cost", "val_cost"):
        x, y = float(s[key]), float(a[key])
        assert x > 1e8 and abs(x - y) <= 1e-6 * x, (key, x, y)
assert len(rows[1]) == 2
'

check "inspect says any_scale" sh -c \
    "'$BP' inspect np3/latest.h5 | grep -qx 'reproducible: any_scale, micro-shards of 32 rows (the same bits at any rank count)'"

# A step that diverges ends the job as in same_ranks: exit 1, one line.
expect "divergence np2" 1 "training diverged at epoch 1, step [0-9]+: the cost is nan" \
    mpi 2 train a.ini --set checkpoint.dir=dv --set train.learning_rate=1e8

# Refused by name.
expect "lbfgs refused" 2 "reproducible = any_scale does not take optimizer = lbfgs" \
    "$BP" train a.ini --set train.optimizer=lbfgs --set train.momentum=0
finish
