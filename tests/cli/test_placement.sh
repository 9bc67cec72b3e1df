#!/usr/bin/env bash
# [data] placement: every rank its own copy (replicated), one copy per node in shared memory
# (node), or rows read from the HDF5 file as the steps need them (stream). The trajectory
# does not depend on it: bit for bit at the same rank count, within float rounding at
# another; auto picks one from the ranks on the node and the memory, and says why; what
# cannot work is refused before training with one line, from the rank that found it.
source "$(dirname "$0")/lib.sh"
$PY "$SRC/tests/cli/make_data.py" "$T" || exit 1
$PY "$SRC/tests/cli/make_data.py" "$T" big || exit 1
BOUND=1e-5 # as test_parallel: another rank count sums the shards in another order
"$BP" --version | grep -q double && BOUND=1e-12
$PY - "$T" <<'EOF' || exit 1
import sys, h5py, numpy as np
d = sys.argv[1]
with h5py.File(f"{d}/good.h5") as f:
    X, y = f["X"][:], f["y"][:]
with h5py.File(f"{d}/chunked.h5", "w") as f:  # what convert writes without --contiguous
    f.create_dataset("X", data=X, chunks=(50, 4), compression="gzip")
    f["y"] = y
late = X.copy()
late[150, 1] = np.inf  # in rank 1's half at 2 ranks
with h5py.File(f"{d}/late-inf.h5", "w") as f:
    f["X"], f["y"] = late, y
with h5py.File(f"{d}/f64.h5", "w") as f:  # float64 rows: read and narrowed in place
    f["X"], f["y"] = X.astype(np.float64), y
with h5py.File(f"{d}/targets.h5", "w") as f:  # real-valued targets, 2 columns
    f["X"], f["y"] = X, np.stack([X[:, 0] - X[:, 1], 0.5 * X[:, 2]], axis=1).astype(np.float32)
EOF

parallel_config p.ini
sed -i "s|^validation_split = 40|validation_split = 40\ntest = $T/good.h5|" p.ini
for p in replicated node stream; do
    check "np2 $p" mpi 2 train p.ini --set data.placement=$p --set checkpoint.dir=$p
    cp "$T/check.out" $p.log
    check "np2 $p: the banner names it" grep -q "^data: 160 train, 40 validation, 200 test, read in [0-9.]* s, placement $p; " $p.log
done
strip_time() { cut -d, -f1-8 "$1"; }
for p in node stream; do
    check "$p: the metrics of replicated" cmp <(strip_time replicated/metrics.csv) <(strip_time $p/metrics.csv)
    check "$p: the weights of replicated, bit for bit" $PY "$SRC/tests/cli/compare_weights.py" replicated/latest.h5 $p/latest.h5 0
done
check "stream step time has the rows' time" grep -Eq '^step time: [0-9.]+ ms = data [0-9.]+ \+ compute ' stream.log
for np in 1 3; do
    check "stream np$np" mpi $np train p.ini --set data.placement=stream --set checkpoint.dir=stream$np
    check "stream np$np matches replicated np2" $PY "$SRC/tests/cli/compare_weights.py" replicated/latest.h5 stream$np/latest.h5 "$BOUND"
done
check "node np3" mpi 3 train p.ini --set data.placement=node --set checkpoint.dir=node3
check "node np3 matches stream np3 bit for bit" $PY "$SRC/tests/cli/compare_weights.py" node3/latest.h5 stream3/latest.h5 0
check "float64 rows stream" mpi 2 train p.ini --set data.placement=stream --set data.train=$T/f64.h5 --set checkpoint.dir=f64s
check "float64 rows replicated" mpi 2 train p.ini --set data.placement=replicated --set data.train=$T/f64.h5 --set checkpoint.dir=f64r
check "float64 rows: the same weights" $PY "$SRC/tests/cli/compare_weights.py" f64s/latest.h5 f64r/latest.h5 0
# limit with validation_split: the split is the tail of the first `limit` rows, in each.
for p in replicated stream; do
    check "limit 150, split 30: $p" mpi 2 train p.ini --set data.placement=$p --set data.limit=150 --set data.validation_split=30 --set checkpoint.dir=lim-$p
done
cp "$T/check.out" lim.log
check "limit and split: the same metrics" cmp <(strip_time lim-replicated/metrics.csv) <(strip_time lim-stream/metrics.csv)
check "limit and split: the same weights" $PY "$SRC/tests/cli/compare_weights.py" lim-replicated/latest.h5 lim-stream/latest.h5 0
check "limit and split: 120 train, 30 validation" grep -q "^data: 120 train, 30 validation" lim.log
# Real-valued targets (no labels): rows and targets streamed as held.
for p in replicated stream; do
    check "targets: $p" mpi 2 train p.ini --set data.placement=$p --set data.train=$T/targets.h5 --set data.test= --set network.layers=4,8,2 --set network.output=linear --set network.cost=quadratic --set checkpoint.dir=tg-$p
done
check "targets: the same weights" $PY "$SRC/tests/cli/compare_weights.py" tg-replicated/latest.h5 tg-stream/latest.h5 0
# Resumed under another placement: the rows are the same, so is the run.
check "stream, 1 epoch" mpi 2 train p.ini --set data.placement=stream --set checkpoint.dir=switch --set train.epochs=1
check "resumed under node" mpi 2 train p.ini --set data.placement=node --set checkpoint.dir=switch --resume latest
check "resumed: the weights of an unbroken run" $PY "$SRC/tests/cli/compare_weights.py" replicated/latest.h5 switch/latest.h5 0

# auto: node with company, replicated alone, stream when the memory is short.
check "auto np2" mpi 2 train p.ini --set checkpoint.dir=auto2
cp "$T/check.out" auto2.log
check "auto np2 shares a copy" grep -q "placement node (auto: one copy for the 2 ranks on this node)" auto2.log
check "auto np1" mpi 1 train p.ini --set checkpoint.dir=auto1
cp "$T/check.out" auto1.log
check "auto np1 holds its own" grep -q "placement replicated (auto: one rank on this node)" auto1.log
# What each needs here (bytes): replicated and node's rank 0 440 rows' worth (200 train, 40
# split off, 200 test), stream the labels, one-hot rows and permutation of 400 rows. A
# per-rank limit between stream's and replicated's streams.
if "$BP" --version | grep -q double; then stream_mb=0.020; else stream_mb=0.012; fi
check "auto np2, room for stream only" mpi 2 train p.ini --set checkpoint.dir=auto-small --set data.max_memory_mb=$stream_mb
cp "$T/check.out" auto-small.log
check "auto streams when the data does not fit" grep -q "placement stream (auto: the data does not fit in memory)" auto-small.log
expect "stream beyond max_memory_mb" 2 "placement = stream: .*good.h5: 200 examples of 4 features: their labels or targets and the order of the training rows need [0-9.]+ KiB of memory on each rank, but only 4\\.1 KiB is available" \
    mpi 2 train p.ini --set data.placement=stream --set data.max_memory_mb=0.004 --set checkpoint.dir=e9

# Refused before training, one line each.
expect "replicated beyond max_memory_mb" 2 "placement = replicated: $T/good.h5: 200 examples of 4 features, $T/good.h5: 200 examples of 4 features need [0-9.]+ KiB of memory, but only 4\\.1 KiB is available; placement = node keeps one copy per node, or placement = stream reads the rows from the files instead" \
    mpi 2 train p.ini --set data.placement=replicated --set data.max_memory_mb=0.004 --set checkpoint.dir=e1
expect "node beyond max_memory_mb" 2 "placement = node: .*good.h5: 200 examples of 4 features need [0-9.]+ KiB of memory on the node's rank 0 \\(it decodes the data into memory the node's ranks share\\), but only 4\\.1 KiB is available" \
    mpi 2 train p.ini --set data.placement=node --set data.max_memory_mb=0.004 --set checkpoint.dir=e2
expect "stream from a chunked file" 2 'chunked.h5: \[data\] placement = stream reads rows of /X in place, so /X must be stored contiguous and uncompressed .*write it contiguous, as backprop convert can' \
    mpi 2 train p.ini --set data.placement=stream --set data.train=$T/chunked.h5 --set checkpoint.dir=e3
expect "stream from a built-in set" 2 'placement = stream reads rows from HDF5 files, and builtin:xor is not one' \
    mpi 2 train p.ini --set data.placement=stream --set data.train=builtin:xor --set data.validation_split=0 --set data.test= --set network.layers=2,3,1 --set checkpoint.dir=e4
expect "stream: NaN in rank 0's rows" 2 'nan.h5: /X row 17 column 2 is NaN' \
    mpi 2 train p.ini --set data.placement=stream --set data.train=$T/nan.h5 --set checkpoint.dir=e5
expect "stream: infinity in rank 1's rows" 2 'late-inf.h5: /X row 150 column 1 is infinite' \
    mpi 2 train p.ini --set data.placement=stream --set data.train=$T/late-inf.h5 --set data.validation_split=0 --set checkpoint.dir=e6
expect "stream: a label past the classes" 2 'label.h5: .*7' \
    mpi 2 train p.ini --set data.placement=stream --set data.train=$T/label.h5 --set checkpoint.dir=e7
expect "node: NaN found by the node's reader" 2 'nan.h5: /X row 17 column 2 is NaN' \
    mpi 2 train p.ini --set data.placement=node --set data.train=$T/nan.h5 --set checkpoint.dir=e8
expect "placement misspelt" 2 "\[data\] placement: expected auto, replicated, node or stream, got 'shared'" \
    "$BP" train p.ini --set data.placement=shared
for d in e1 e2 e3 e4 e5 e6 e7 e8 e9; do
    [ -e $d/latest.h5 ] && bad "$d: a refused run left a checkpoint"
done

# eval, predict and plot read an HDF5 file whose /X is contiguous in place, a workspace of
# rows at a time, each rank its share (source.h): the numbers of the same rows loaded whole
# (chunked.h5 holds good.h5's), and bad rows refused as they are read.
ck=replicated/latest.h5
for np in 1 2 3; do
    check "eval np$np, read in place" mpi $np eval --checkpoint $ck --data $T/good.h5 --json
    cp "$T/check.out" in-place$np.json
    check "eval np$np, loaded whole" mpi $np eval --checkpoint $ck --data $T/chunked.h5 --json
    cp "$T/check.out" whole$np.json
    check "eval np$np: the same sums and confusion" cmp in-place$np.json whole$np.json
done
check "predict, read in place" "$BP" predict --checkpoint $ck --data $T/good.h5 --out pred-in-place.h5
check "predict, loaded whole" "$BP" predict --checkpoint $ck --data $T/chunked.h5 --out pred-whole.h5
same_predictions() {
    $PY - "$@" <<'EOF'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1]) as a, h5py.File(sys.argv[2]) as b:
    assert sorted(a) == sorted(b) == ["outputs", "predicted"], (list(a), list(b))
    for name in a:
        assert np.array_equal(a[name][:], b[name][:]), name
EOF
}
check "predict: the same outputs and classes" same_predictions pred-in-place.h5 pred-whole.h5
check "eval of float64 rows read in place" "$BP" eval --checkpoint $ck --data $T/f64.h5 --json
cp "$T/check.out" f64.json
check "float64 rows: the sums of float32's (they hold the same values)" cmp f64.json in-place1.json
expect "eval: NaN, found as it is read" 2 'nan\.h5: /X row 17 column 2 is NaN' \
    mpi 2 eval --checkpoint $ck --data $T/nan.h5
expect "eval: infinity in rank 1's rows, said by rank 1" 2 '\[rank 1\] .*late-inf\.h5: /X row 150 column 1 is infinite' \
    mpi 2 eval --checkpoint $ck --data $T/late-inf.h5
expect "predict: NaN, found as it is read" 2 'nan\.h5: /X row 17 column 2 is NaN' \
    "$BP" predict --checkpoint $ck --data $T/nan.h5 --out pred-nan.h5
[ -e pred-nan.h5 ] && bad "a refused predict left its file"
expect "eval: a label past the classes" 2 'label\.h5: .*7' "$BP" eval --checkpoint $ck --data $T/label.h5

# A set larger than the memory eval may have: 600 MB of rows under ulimit -d 256 MB (heap
# and private mappings; the file's pages are the page cache's). Its 150 blocks of the same
# 1000 rows give 150 times one block's confusion matrix, and the same accuracy.
$PY - <<'EOF' || exit 1
import h5py, numpy as np
rng = np.random.default_rng(3)
X = rng.random((1000, 1024), dtype=np.float32)
y = np.argmax(X @ rng.standard_normal((1024, 10)).astype(np.float32), axis=1).astype(np.int32)
with h5py.File("block.h5", "w") as f:
    f["X"], f["y"] = X, y
with h5py.File("wide.h5", "w") as f:
    d = f.create_dataset("X", shape=(150 * 1000, 1024), dtype="f4")
    for i in range(150):
        d[i * 1000:(i + 1) * 1000] = X
    f["y"] = np.tile(y, 150)
EOF
check "train on one block" "$BP" train p.ini --set data.train=$T/block.h5 --set data.validation_split=0 --set data.test= --set network.layers=1024,20,10 --set train.epochs=2 --set checkpoint.dir=wide
check "eval of one block" "$BP" eval --checkpoint wide/latest.h5 --data $T/block.h5 --json
cp "$T/check.out" block.json
check "eval of 600 MB in 256 MB" bash -c "ulimit -d $((256 * 1024)) && OMP_NUM_THREADS=1 timeout -k 5 120 '$BP' eval --checkpoint wide/latest.h5 --data $T/wide.h5 --json"
cp "$T/check.out" wide.json
check "150 blocks: 150 times the counts, the same cost" $PY - <<'EOF'
import json
one, all_ = json.load(open("block.json")), json.load(open("wide.json"))
assert all_["n"] == 150 * one["n"] and all_["accuracy"] == one["accuracy"], (all_, one)
assert all_["confusion"] == [[150 * v for v in row] for row in one["confusion"]]
assert abs(all_["cost"] - one["cost"]) <= 1e-6 * one["cost"], (all_["cost"], one["cost"])
EOF
check "predict of 600 MB in 256 MB" bash -c "ulimit -d $((256 * 1024)) && OMP_NUM_THREADS=1 timeout -k 5 120 '$BP' predict --checkpoint wide/latest.h5 --data $T/wide.h5 --out wide-pred.h5"
check "predict of one block" "$BP" predict --checkpoint wide/latest.h5 --data $T/block.h5 --out block-pred.h5
# A row's outputs do not depend on where it falls in a pass's 256 rows but for the
# products' rounding: within float's for 10 outputs in [0, 1].
check "150 blocks: one block's predictions 150 times" $PY - <<'EOF'
import h5py, numpy as np
with h5py.File("block-pred.h5") as a, h5py.File("wide-pred.h5") as b:
    assert b["outputs"].shape == (150000, 10), b["outputs"].shape
    assert np.array_equal(b["predicted"][:], np.tile(a["predicted"][:], 150))
    assert np.abs(b["outputs"][:] - np.tile(a["outputs"][:], (150, 1))).max() <= 1e-6
EOF
rm -f wide.h5
# A process's limits are its own: 2 replicated ranks each hold the 123 MB set (246 MB in
# double) under ulimit -d 330 MiB (480), about 180 MiB of it the process and OpenBLAS's
# buffer, where two copies would not fit.
$PY - <<'EOF' || exit 1
import h5py, numpy as np
with h5py.File("block.h5") as f, h5py.File("mid.h5", "w") as g:
    g["X"], g["y"] = np.tile(f["X"][:], (30, 1)), np.tile(f["y"][:], 30)
EOF
[ "$("$BP" --version | grep -c double)" = 1 ] && own=480 || own=330 # the double build's rows are twice as wide
check "replicated at 2 ranks, each within its own ulimit -d" bash -c "ulimit -d $((own * 1024)) && OMP_NUM_THREADS=1 timeout -k 5 120 mpirun --oversubscribe -np 2 '$BP' train p.ini --set data.train=$T/mid.h5 --set data.limit=1000 --set data.validation_split=0 --set data.test= --set data.placement=replicated --set network.layers=1024,20,10 --set train.epochs=1 --set checkpoint.dir=mid"
rm -f mid.h5
# Loaded whole, rows that the limit cannot hold are refused before any is read: 781 MiB
# declared (a chunked /X of 200000 x 1024, never written) against what ulimit -d leaves.
$PY - <<'EOF' || exit 1
import h5py
with h5py.File("declared.h5", "w") as f:
    f.create_dataset("X", shape=(200000, 1024), dtype="f4", chunks=(1000, 1024))
    f.create_dataset("y", shape=(200000,), dtype="i4", chunks=(1000,))
EOF
[ "$("$BP" --version | grep -c double)" = 1 ] && declared='1\.5 GiB' || declared='781\.2 MiB'
expect "loaded whole beyond ulimit -d: refused, exit 2" 2 "declared\.h5: 200000 examples of 1024 features need $declared of memory, but only [0-9.]+ MiB is available" \
    bash -c "ulimit -d $((256 * 1024)) && OMP_NUM_THREADS=1 timeout -k 5 120 '$BP' eval --checkpoint wide/latest.h5 --data $T/declared.h5"

# The file cut short while the run reads it: the rank that finds out says so, and the job
# ends (exit 1) instead of waiting for it.
write_config long.ini '[data]' "train=$T/cut.h5" placement=stream \
    '[network]' 'layers=64, 32, 10' hidden=relu output=softmax \
    '[train]' epochs=100000 batch_size=30 learning_rate=0.05 \
    '[checkpoint]' "dir=$T/cut" every_epochs=0 '[log]' progress=off
cp big.h5 cut.h5
mpi 2 train long.ini >cut.out 2>cut.err &
job=$!
for _ in $(seq 300); do
    [ "$(cat cut/metrics.csv 2>/dev/null | wc -l)" -ge 3 ] && break
    sleep 0.1
done
truncate -s 200000 cut.h5 # /X's rows past about 780 are gone
wait $job
got=$?
if [ $got -eq 1 ] && [ "$(grep -c 'backprop: error' cut.err)" -eq 1 ] &&
    grep -q "cut.h5: cannot read row [0-9]* of /X: the file is shorter than when it was opened" cut.err; then
    ok
else
    bad "file cut short mid-run: exit $got"
    sed 's/^/    /' cut.err | head
fi
finish
