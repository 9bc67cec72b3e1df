#!/usr/bin/env bash
# What backprop promises about its files and inputs (docs/robustness.md), tried the way a
# careless or hostile user would: concurrent runs, outputs over inputs and devices, full
# disks, FIFOs, files that declare more than they hold, damaged gzip, sloppy numbers. Each
# case checks the exit status, the one error line, that nothing hangs (every command runs
# under a timeout) or dies by a signal, and that files that existed before are unchanged.
source "$(dirname "$0")/lib.sh"
$PY "$SRC/tests/cli/make_data.py" "$T" || exit 1

config base.ini
sed -i "s|^dir = .*|dir = $T/fresh|" base.ini

# bp ARGS...: backprop alone, never more than 120 s.
bp() { timeout -k 5 120 "$BP" "$@"; }
# on NP ARGS...: alone for NP = 1, else under mpirun.
on() {
    local np=$1
    shift
    if [ "$np" -eq 1 ]; then bp "$@"; else mpi "$np" "$@"; fi
}
# snapshot PATH...: type, size and checksum of every file under PATH, hidden ones included.
snapshot() {
    find "$@" -printf '%y %s %p\n' 2>/dev/null | sort
    find "$@" -type f -exec md5sum {} + 2>/dev/null | sort
}
unchanged() { # unchanged NAME BEFORE PATH...
    local name=$1 before=$2
    shift 2
    if [ "$before" = "$(snapshot "$@")" ]; then ok; else bad "$name: files changed"; fi
}
# full_fs PAGES SCRIPT: SCRIPT in bash with $T/small a tmpfs that is full but for PAGES
# pages of 4 KiB, in a private mount namespace that ends with it: nothing to unmount, also
# when a check fails.
full_fs() {
    mkdir -p "$T/small"
    unshare --mount --propagation private bash -c \
        "mount -t tmpfs -o size=1m tmpfs '$T/small' && cd '$T' && ${3:-:} &&
         { dd if=/dev/zero of=small/fill bs=4k 2>/dev/null; truncate -s -$(($1 * 4096)) small/fill; } && $2"
}
# Long runs started in the background, ended by the test; never left behind.
trap 'pkill -KILL -f "$T/owner" 2>/dev/null; [ -n "${cg:-}" ] && rmdir "$cg" 2>/dev/null; rm -rf "$T"' EXIT

check "a finished run" bp train base.ini --set checkpoint.dir=$T/run
ckpt=$(ls run/ckpt-*.h5 | head -1)

# ---- 1. one run at a time in a run directory ----
sed "s|^epochs = 2$|epochs = 1000000|; s|^dir = .*|dir = $T/busy|" base.ini >owner.ini
# start NP CONFIG: a long run in the background, the process that a signal ends in $owner.
start() {
    if [ "$1" -eq 1 ]; then "$BP" train "$T/$2" >owner.out 2>&1 &
    else mpirun --oversubscribe -np "$1" "$BP" train "$T/$2" >owner.out 2>&1 & fi
    owner=$!
}
wait_for() { # wait_for FILE: up to 60 s
    for _ in $(seq 600); do [ -e "$1" ] && return 0; sleep 0.1; done
    return 1
}
for np in 1 2; do
    rm -rf busy
    start "$np" owner.ini
    if wait_for busy/latest.h5; then
        before=$(snapshot busy/metrics.csv)
        expect "np$np second run" 2 "busy is in use by another run \(held by pid [0-9]+ on .*\); wait" \
            on "$np" train owner.ini --set train.seed=2
        expect "np$np second run, resuming" 2 'busy is in use by another run' \
            on "$np" train owner.ini --resume latest
        # The metrics file inside a busy directory is locked too, for runs elsewhere.
        expect "np$np another run's metrics file" 2 'busy/metrics\.csv is in use by another run.*\[log\] metrics' \
            on "$np" train owner.ini --set checkpoint.dir=$T/elsewhere$np --set log.metrics=$T/busy/metrics.csv
        # The owner went on writing its own rows meanwhile; none came from the losers.
        if awk -F, 'NR > 1 && $1 != NR - 1 { exit 1 }' busy/metrics.csv; then ok; else
            bad "np$np metrics rows out of order"; fi
        [ -n "$before" ] && ok || bad "np$np metrics"
    else
        bad "np$np the first run never wrote a checkpoint"
        cat owner.out
    fi
    kill -TERM "$owner" 2>/dev/null
    wait "$owner" 2>/dev/null
done
# Two runs started at the same moment, as in the report: one trains, the other exits 2
# before any work, and metrics.csv holds each epoch once.
for np in 1 2; do
    rm -rf twin
    on "$np" train base.ini --set checkpoint.dir=$T/twin --set train.epochs=20 >twin1.out 2>twin1.err &
    first=$!
    on "$np" train base.ini --set checkpoint.dir=$T/twin --set train.epochs=20 --set train.seed=2 >twin2.out 2>twin2.err
    rc2=$?
    wait "$first"
    rc1=$?
    loser=$([ "$rc1" -eq 2 ] && echo twin1.err || echo twin2.err)
    if [ "$((rc1 + rc2))" -eq 2 ] && [ "$rc1" -ne 1 ] && grep -qE 'twin (is in use by another run|already holds a run)' "$loser" &&
        [ "$(grep -c 'backprop: error' "$loser")" -eq 1 ] &&
        awk -F, 'NR > 1 && $1 != NR - 1 { exit 1 } END { exit NR != 21 }' twin/metrics.csv; then
        ok
    else
        bad "np$np two runs at once: exits $rc1 and $rc2, $(($(wc -l <twin/metrics.csv) - 1)) metrics rows"
        cat twin1.err twin2.err | grep backprop
    fi
done
# A run killed outright holds nothing: the next one resumes in its directory.
rm -rf busy
start 1 owner.ini
wait_for busy/latest.h5 && sleep 0.5
kill -KILL "$owner"
wait "$owner" 2>/dev/null
done_epochs=$($PY -c "import h5py; print(h5py.File('busy/latest.h5')['train'].attrs['epoch'])")
check "resume after a killed run" bp train owner.ini --resume latest --set train.epochs=$((done_epochs + 1))
[ ! -e busy/.backprop.lock ] && ok || bad "the lock file outlived its run"
# A metrics file outside the run directory has its own lock.
mkdir -p logs
sed "s|^dir = .*|dir = $T/busy2|; s|^progress = off|progress = off\nmetrics = $T/logs/m.csv|" owner.ini >owner2.ini
start 1 owner2.ini
if wait_for busy2/latest.h5; then
    expect "shared metrics file" 2 'logs/m\.csv is in use by another run.*\[log\] metrics' \
        bp train owner2.ini --set checkpoint.dir=$T/busy3
else
    bad "the metrics-lock run never started"
fi
kill -TERM "$owner" 2>/dev/null
wait "$owner" 2>/dev/null

# ---- 2. outputs never replace checkpoints, inputs, devices or (without --force) files ----
cp good.h5 data-copy.h5
mknod dev-null c 1 3
mkfifo out-fifo
echo "precious" >existing.h5
guard="run good.h5 data-copy.h5 dev-null existing.h5"
before=$(snapshot $guard)
predict() { on "$np" predict --checkpoint "$ckpt" --data good.h5 "$@"; }
for np in 1 2; do
    expect "np$np predict over its checkpoint" 2 "is the input $ckpt|is a checkpoint" predict --out "$ckpt"
    expect "np$np predict over its checkpoint, --force" 2 'is the input|is a checkpoint' predict --out "$ckpt" --force
    expect "np$np predict over latest.h5" 2 'latest\.h5: is (the input|a checkpoint)' predict --out run/latest.h5 --force
    expect "np$np predict over its data" 2 'data-copy\.h5: is the input' \
        on "$np" predict --checkpoint "$ckpt" --data data-copy.h5 --out data-copy.h5 --force
    expect "np$np predict over a device" 2 'dev-null: is a device' predict --out dev-null --force
    expect "np$np predict over a FIFO" 2 'out-fifo: is a FIFO' predict --out out-fifo --force
    expect "np$np predict over a directory" 2 'run: is a directory' predict --out run --force
    expect "np$np predict over a file" 2 'existing\.h5: exists; add --force' predict --out existing.h5
    expect "np$np predict into no directory" 2 'nodir/x\.h5: cannot write there: directory nodir: No such file or directory' \
        predict --out nodir/x.h5
done
expect "convert over latest.h5" 2 'latest\.h5: is a checkpoint' bp convert --csv existing.h5 --out run/latest.h5 --force
expect "convert over a device" 2 'dev-null: is a device' bp convert --csv existing.h5 --out dev-null --force
expect "convert over its input" 2 'is the input' bp convert --csv existing.h5 --out existing.h5 --force
printf 'f,g,t\n1,2,0.5\n3,4,1.5\n' >t.csv
expect "convert over a file" 2 'existing\.h5: exists; add --force' bp convert --csv t.csv --out existing.h5
unchanged "refused outputs" "$before" $guard
[ -c dev-null ] && [ -p out-fifo ] && ok || bad "a device or FIFO was replaced"
check "predict --force over a plain file" predict --out existing.h5 --force
$PY -c "import h5py; assert h5py.File('existing.h5')['outputs'].shape == (200, 3)" && ok || bad "predict --force output"
# A full disk: the old file stays, no temporary is left.
full_fs 1 "timeout 60 '$BP' predict --checkpoint '$ckpt' --data good.h5 --out small/p.h5 --force >out 2>err
    echo \$? >rc; cat small/p.h5 >p.after; ls -A small >ls.after" "echo old >small/p.h5"
[ "$(cat rc)" = 1 ] && grep -q 'small/p\.h5: cannot write (No space left on device)' err && ok ||
    bad "predict on a full disk: exit $(cat rc), $(cat err)"
[ "$(cat p.after)" = old ] && [ "$(cat ls.after | tr '\n' ' ')" = "fill p.h5 " ] && ok ||
    bad "predict on a full disk left $(cat ls.after | tr '\n' ' ')"

# ---- 3. the metrics CSV never ends in part of a row ----
for np in 1 2; do
    full_fs 2 "timeout -k 5 120 $( [ "$np" -eq 1 ] || echo "mpirun --oversubscribe -np $np") '$BP' train base.ini \
            --set train.epochs=500 --set checkpoint.dir=$T/m$np --set log.metrics=$T/small/metrics.csv \
            --set checkpoint.every_epochs=0 >out 2>err
        echo \$? >rc; cp small/metrics.csv metrics.after"
    rows=$(($(wc -l <metrics.after) - 1))
    if [ "$(cat rc)" = 1 ] && [ "$(grep -c 'backprop: error' err)" = 1 ] &&
        grep -q 'metrics\.csv: cannot append (No space left on device)' err &&
        [ "$(tail -c 1 metrics.after | od -An -c | tr -d ' ')" = '\n' ] &&
        awk -F, 'NF != 10 || $1 != NR { exit 1 }' <(tail -n +2 metrics.after) && [ "$rows" -gt 10 ]; then
        ok
    else
        bad "np$np metrics on a full disk: exit $(cat rc), $rows rows, $(tail -c 80 metrics.after | od -c | tail -3)"
        sed 's/^/    /' err | head
    fi
done

# ---- 3b. a checkpoint written in the background onto a full disk ----
# Rank 0's writer thread fails while the ranks train on: the next step tells every rank,
# the job ends with status 1 and one line naming the file, the checkpoints written before
# stay readable, and no temporary is left.
for np in 1 2; do
    full_fs 12 "timeout -k 5 120 $( [ "$np" -eq 1 ] || echo "mpirun --oversubscribe -np $np") '$BP' train base.ini \
            --set train.epochs=500 --set checkpoint.dir=$T/small/c$np --set checkpoint.every_steps=3 \
            --set checkpoint.keep=0 --set log.metrics=$T/cm$np.csv >out 2>err
        echo \$? >rc; ls -A small/c$np >ls.after; cp small/c$np/latest.h5 latest.after"
    if [ "$(cat rc)" = 1 ] && [ "$(grep -c 'backprop: error' err)" = 1 ] &&
        grep -q 'backprop: error: .*small/c'$np'/.*No space left on device' err &&
        ! grep -q tmp ls.after && [ "$(grep -c '^ckpt-' ls.after)" -ge 1 ] &&
        $PY "$SRC/tests/cli/h5tool.py" state latest.after >/dev/null; then
        ok
    else
        bad "np$np checkpoint on a full disk: exit $(cat rc), files $(tr '\n' ' ' <ls.after)"
        sed 's/^/    /' err | head
    fi
done

# ---- 4. FIFOs and directories as inputs are refused, not waited on ----
mkfifo fifo.h5 fifo.ini fifo-idx
for np in 1 2; do
    expect "np$np FIFO train data" 2 'fifo\.h5: is a FIFO, not a file' on "$np" train base.ini --set data.train=$T/fifo.h5
    expect "np$np FIFO test data" 2 'fifo\.h5: is a FIFO' on "$np" train base.ini --set data.test=$T/fifo.h5 --set checkpoint.dir=$T/f
    expect "np$np FIFO IDX labels" 2 'fifo-idx: is a FIFO' on "$np" train base.ini --set data.train=$T/fifo-idx --set data.train_labels=$T/fifo-idx --set checkpoint.dir=$T/f
    expect "np$np FIFO config" 2 'fifo\.ini: is a FIFO' on "$np" train fifo.ini
    expect "np$np directory config" 2 'run: is a directory, not a file' on "$np" train run
    expect "np$np FIFO resume" 2 'fifo\.h5: is a FIFO' on "$np" train base.ini --resume fifo.h5 --set checkpoint.dir=$T/f
    expect "np$np FIFO eval data" 2 'fifo\.h5: is a FIFO' on "$np" eval --checkpoint "$ckpt" --data fifo.h5
    expect "np$np FIFO eval checkpoint" 2 'fifo\.h5: is a FIFO' on "$np" eval --checkpoint fifo.h5 --data good.h5
    expect "np$np FIFO gradcheck data" 2 'fifo\.h5: is a FIFO' on "$np" gradcheck base.ini --set data.train=$T/fifo.h5
done
expect "FIFO CSV" 2 'fifo\.h5: is a FIFO' bp convert --csv fifo.h5 --out c.h5

# ---- 5. a checkpoint on a full disk: one error, exit 1, no signal ----
for np in 1 2; do
    full_fs 50 "timeout -k 5 120 $( [ "$np" -eq 1 ] || echo "mpirun --oversubscribe -np $np") '$BP' train base.ini \
        --set network.layers=4,1000,3 --set train.epochs=5 --set checkpoint.keep=0 \
        --set checkpoint.dir=$T/small/run >out 2>err
        echo \$? >rc; ls -A small/run >ls.after
        for f in small/run/*.h5; do '$BP' inspect \$f >/dev/null || echo \"bad \$f\"; done >inspect.after"
    if [ "$(cat rc)" = 1 ] && [ "$(grep -c 'backprop: error' err)" = 1 ] &&
        grep -q 'run/ckpt-[0-9]*\.h5: cannot write (No space left on device)' err &&
        ! grep -q '\.tmp\.' ls.after && [ ! -s inspect.after ] && grep -q latest.h5 ls.after; then
        ok
    else
        bad "np$np checkpoint on a full disk: exit $(cat rc); left $(cat ls.after | tr '\n' ' ')"
        sed 's/^/    /' err | head -5
    fi
done

# ---- 6. data larger than memory is refused by its declared size ----
$PY - <<'PY'
import h5py, numpy as np
with h5py.File("huge.h5", "w") as f:   # 40 TB declared, nothing written
    f.create_dataset("X", shape=(10**7, 10**6), dtype="f4", chunks=(1, 1000))
    f.create_dataset("y", shape=(10**7,), dtype="i4", chunks=(1000,))
with h5py.File("vds-12g.h5", "w") as f:  # the 12 GB virtual dataset of the report
    f.create_virtual_dataset("X", h5py.VirtualLayout(shape=(300000, 10000), dtype="f4"), fillvalue=0)
    f["y"] = np.zeros(300000, dtype="i4")
PY
# What the declared shapes need in memory, as bp_real: float here, double in double builds.
if "$BP" --version | grep -q double; then huge='72\.8 TiB' vds='22\.4 GiB'; else huge='36\.4 TiB' vds='11\.2 GiB'; fi
for np in 1 2; do
    expect "np$np data larger than memory" 2 "huge\\.h5: 10000000 examples of 1000000 features need $huge of memory( on the node's rank 0 \\(it decodes the data into memory the node's ranks share\\))?, but only [0-9.]+ [GMT]iB is available" \
        on "$np" train base.ini --set data.train=$T/huge.h5
    expect "np$np network larger than memory" 2 '\[network\] layers = 4,1000000,1000000,2: 1000008000002 parameters, their gradient and momentum need [0-9.]+ TiB of memory, but only' \
        on "$np" train base.ini --set network.layers=4,1000000,1000000,2
done
expect "eval data larger than memory" 2 "huge\\.h5: .* need $huge" bp eval --checkpoint "$ckpt" --data huge.h5
# In a memory cgroup of 3 GB (where this machine lets root make one), the cgroup's limit is
# what counts, as the kernel's OOM killer would.
cg=""
for root in /sys/fs/cgroup/memory /sys/fs/cgroup; do
    if [ -w "$root" ] && mkdir "$root/backprop-test-$$" 2>/dev/null; then
        cg="$root/backprop-test-$$"
        break
    fi
done
if [ -n "$cg" ]; then
    if [ -e "$cg/memory.limit_in_bytes" ]; then echo 3G >"$cg/memory.limit_in_bytes"; else echo 3G >"$cg/memory.max"; fi
    expect "12 GB data set in a 3 GB cgroup" 2 "vds-12g\\.h5: 300000 examples of 10000 features need $vds of memory, but only (2\\.[0-9]|3\\.0) GiB is available" \
        bash -c "echo \$\$ >'$cg/cgroup.procs' && exec timeout 60 '$BP' train base.ini --set data.train=$T/vds-12g.h5 --set data.placement=replicated"
    for _ in $(seq 50); do rmdir "$cg" 2>/dev/null && break; sleep 0.1; done
    cg=""
else
    echo "note: no memory cgroup can be made here; the cgroup arithmetic is covered by test_util"
fi

# Under a memory limit too small for OpenBLAS's work buffer (which Debian 12's OpenBLAS
# would retry forever, deaf to SIGTERM), each command that multiplies says so at once.
limited() { bash -c "ulimit -d $((100 * 1024)) && OMP_NUM_THREADS=1 exec timeout -k 5 60 '$BP' $*"; }
buffer='OpenBLAS needs a 128 MiB work buffer for its thread, which this process.s memory limits \(ulimit -v or -d\) leave no room for'
expect "train under ulimit -d 100 MiB: refused, not hung" 2 "$buffer" limited train base.ini --set checkpoint.dir=$T/limited
expect "eval under ulimit -d 100 MiB" 2 "$buffer" limited eval --checkpoint "$ckpt" --data "$T/good.h5"
expect "gradcheck under ulimit -d 100 MiB" 2 "$buffer" limited gradcheck base.ini
[ -e limited ] && bad "a refused train left limited/"
check "a run with a test set" bp train base.ini --set checkpoint.dir=$T/tested --set data.test=$T/good.h5
check "plot under ulimit -d 100 MiB: the picture, without the confusion matrix" limited plot tested --out $T/limited.png
cp "$T/check.out" limited-plot.log
check "plot says why" grep -Eq "warning: no confusion matrix for tested: $buffer" limited-plot.log
# With OpenBLAS's threads left to it (lib.sh sets one), its workers would take their
# buffers as the library loads; under a limit, backprop starts again with one, and the
# threads it sets later get buffers only where they fit (fewer threads where not all do).
check "train under ulimit -d 200 MiB, OpenBLAS threads unset" env -u OPENBLAS_NUM_THREADS \
    bash -c "ulimit -d $((200 * 1024)) && exec timeout -k 5 60 '$BP' train base.ini --set checkpoint.dir=$T/limited2 --set train.threads=2"
cp "$T/check.out" limited2.log
check "it trained, with the threads that fit" grep -Eq "over 1 rank x [12] BLAS threads?" limited2.log

# ---- 7. data whose storage does not cover it ----
$PY - <<'PY'
import h5py, numpy as np
X = np.ones((200, 4), dtype="f4")
y = np.zeros(200, dtype="i4")
open("ext.bin", "wb").write(X.tobytes()[:1000])          # 1000 of the 3200 bytes
with h5py.File("external.h5", "w") as f:
    f.create_dataset("X", shape=(200, 4), dtype="f4", external=[("ext.bin", 0, 3200)])
    f["y"] = y
with h5py.File("src.h5", "w") as f:
    f["X"] = X[:100]
layout = h5py.VirtualLayout(shape=(200, 4), dtype="f4")
layout[:100] = h5py.VirtualSource("src.h5", "X", shape=(100, 4))   # rows 100..199 unmapped
with h5py.File("vds.h5", "w") as f:
    f.create_virtual_dataset("X", layout, fillvalue=0)
    f["y"] = y
with h5py.File("zero-rows.h5", "w") as f:
    f["X"] = np.zeros((0, 4), dtype="f4")
    f["y"] = np.zeros(0, dtype="i4")
PY
for np in 1 2; do
    expect "np$np external storage" 2 'external\.h5: /X is stored in external files; store the values in the file itself' \
        on "$np" train base.ini --set data.train=$T/external.h5
    expect "np$np virtual dataset" 2 'vds\.h5: /X is a virtual dataset' on "$np" train base.ini --set data.train=$T/vds.h5
    expect "np$np zero rows" 2 'zero-rows\.h5: /X is empty \(0 x 4\): no examples' on "$np" train base.ini --set data.train=$T/zero-rows.h5
done

# ---- 8. byte-order marks ----
printf '\xef\xbb\xbf1,2,0\n3,4,1\n5,6,1\n' >bom.csv
check "CSV with a BOM" bp convert --csv bom.csv --out bom.h5
$PY -c "import h5py; assert h5py.File('bom.h5')['X'].shape == (3, 2)" && ok || bad "the BOM CSV lost a row"
printf '\xef\xbb\xbf' >bom.ini
sed "s|^dir = .*|dir = $T/bom-run|" base.ini >>bom.ini
check "config with a BOM" bp train bom.ini

# ---- 9. gzip IDX files are checked to their end ----
$PY - <<'PY'
import gzip, struct
n = 200
images = struct.pack(">IIII", 0x803, n, 2, 2) + bytes(range(200)) * 4
labels = struct.pack(">II", 0x801, n) + bytes(i % 3 for i in range(n))
gz = gzip.compress(images)
open("img.gz", "wb").write(gz)
open("lab.gz", "wb").write(gzip.compress(labels))
open("img-cut.gz", "wb").write(gz[:-8])            # no trailer
open("img-cut4.gz", "wb").write(gz[:-4])           # CRC, no length
bad = bytearray(gz); bad[-6] ^= 0x40                 # a flipped CRC byte
open("img-crc.gz", "wb").write(bytes(bad))
PY
idx() { bp convert --idx-images "$1" --idx-labels lab.gz --out "$2"; }
check "intact gzip IDX" idx img.gz idx.h5
expect "gzip without its trailer" 2 'img-cut\.gz: truncated gzip data' idx img-cut.gz a.h5
expect "gzip with half its trailer" 2 'img-cut4\.gz: truncated gzip data' idx img-cut4.gz a.h5
expect "gzip with a bad CRC" 2 'img-crc\.gz: truncated or damaged gzip data \(incorrect data check\)' idx img-crc.gz a.h5

# ---- 10. numbers on the command line are parsed strictly ----
for v in 1e3 2x 3.7 99999999999 -1 '' ' 2'; do
    expect "--targets '$v'" 2 "--targets: expected an integer from 0 to 1000000, got '$v'" bp convert --csv t.csv --targets "$v" --out t.h5
done
check "--targets 1" bp convert --csv t.csv --targets 1 --out t.h5
for v in 1e3 2x 0 3.5; do
    expect "--examples '$v'" 2 "--examples: expected an integer from 1 to 1000000, got '$v'" bp gradcheck base.ini --examples "$v"
done
sets=()
for i in $(seq 65); do sets+=(--set train.epochs=1); done
expect "65 --set" 2 'at most 64 --set options' bp gradcheck base.ini "${sets[@]}"
expect "65 --set train" 2 'at most 64 --set options' bp train base.ini "${sets[@]}"

# ---- 11. clear errors ----
for np in 1 2; do
    expect "np$np seed past 2^64" 2 "seed: expected an integer from 0 to 18446744073709551615, got '18446744073709551616'" \
        on "$np" train base.ini --set train.seed=18446744073709551616
    expect "np$np negative seed" 2 "seed: expected an integer from 0 to 18446744073709551615, got '-1'" \
        on "$np" train base.ini --set train.seed=-1
    expect "np$np huge learning rate" 2 'learning_rate: 1e\+308 is out of range \(must be > 0 and at most 1e300\)' \
        on "$np" train base.ini --set train.learning_rate=1e308
    expect "np$np learning rate past double" 2 "learning_rate: 1e400 is out of range \(must be > 0 and at most 1e300\)" \
        on "$np" train base.ini --set train.learning_rate=1e400
done
check "the largest seed" bp train base.ini --set train.seed=18446744073709551615 --set checkpoint.dir=$T/seedmax
$PY -c "import h5py; assert h5py.File('$T/seedmax/latest.h5')['train'].attrs['seed'] == 2**64 - 1" && ok || bad "seed 2^64-1 not stored"
finish
