#!/usr/bin/env bash
# backprop plot: a run (resumed once) and two runs in one picture. The PNG is checked by its
# header and size; the script handed to gnuplot (--script) has one point per epoch whose
# values are metrics.csv's, the step times of both commands of the resumed run, and the
# confusion matrix that eval gives. Without gnuplot, plot names the package to install.
source "$(dirname "$0")/lib.sh"
$PY "$SRC/tests/cli/make_data.py" "$T" || exit 1
command -v gnuplot >/dev/null || { echo "FAIL: gnuplot is not installed (scripts/test.sh installs gnuplot-nox)"; exit 1; }

parallel_config p.ini
sed -i "s|^validation_split = 40|validation_split = 40\ntest = $T/good.h5|" p.ini
check "train 2 epochs" mpi 2 train p.ini --set checkpoint.dir=run --set train.epochs=2
check "resume to 4" mpi 2 train p.ini --set checkpoint.dir=run --set train.epochs=4 --resume latest
check "a second run" mpi 1 train p.ini --set checkpoint.dir=other --set train.epochs=3 --set data.test=
check "step_times.csv: a row per command" test "$(wc -l <run/step_times.csv)" -eq 3
check "plot" "$BP" plot run --script run.gp
cp "$T/check.out" plot.log
check "plot says where" grep -qx "wrote run/plot.png: run (4 epochs, step times, confusion matrix)" plot.log

# png_size FILE W H: a PNG (signature, IHDR) of W x H pixels.
png_size() {
    $PY - "$@" <<'EOF'
import struct, sys
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
assert data[12:16] == b"IHDR", "no IHDR"
w, h = struct.unpack(">II", data[16:24])
assert (w, h) == (int(sys.argv[2]), int(sys.argv[3])), (w, h)
assert len(data) > 20000, f"only {len(data)} bytes: an empty picture?"
EOF
}
# blocks_match SCRIPT RUN_DIR I [METRICS]: block $metrics_I has one row per epoch of METRICS
# (RUN_DIR/metrics.csv),
# each field the file's text (NaN where it is empty); $steps' row for RUN_DIR has the
# steps-weighted means of step_times.csv.
blocks_match() {
    $PY - "$@" <<'EOF'
import csv, re, sys
script, run, i = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(script).read()
block = lambda name: re.search(rf"^\${name} << EOD\n(.*?)^EOD$", text, re.M | re.S).group(1)
rows = [l.split() for l in block(f"metrics_{i}").splitlines() if not l.startswith("#")]
metrics = list(csv.DictReader(open(sys.argv[4] if len(sys.argv) > 4 else f"{run}/metrics.csv")))
cols = ["epoch", "train_cost", "val_cost", "test_cost", "train_accuracy", "val_accuracy", "test_accuracy"]
assert len(rows) == len(metrics), (len(rows), len(metrics))
for got, want in zip(rows, metrics):
    assert got == [want[c] or "NaN" for c in cols], (got, want)
times = list(csv.DictReader(open(f"{run}/step_times.csv")))
steps = sum(float(t["steps"]) for t in times)
mean = lambda k: sum(float(t["steps"]) * float(t[k]) for t in times) / steps
line = next(l for l in block("steps").splitlines() if l.startswith(f'"{run}"'))
got = [float(v) for v in line.split()[1:]]
want = [mean("data_ms"), mean("compute_ms"), mean("exchange_ms"), mean("update_ms"), steps]
assert all(abs(g - w) <= 1e-5 * max(1, abs(w)) for g, w in zip(got, want)), (got, want)
EOF
}
# blocks_match_costs SCRIPT RUN_DIR I: as blocks_match, without step times.
blocks_match_costs() {
    $PY - "$@" <<'EOF'
import csv, re, sys
script, run, i = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(script).read()
block = re.search(rf"^\$metrics_{i} << EOD\n(.*?)^EOD$", text, re.M | re.S).group(1)
rows = [l.split() for l in block.splitlines() if not l.startswith("#")]
metrics = list(csv.DictReader(open(f"{run}/metrics.csv")))
cols = ["epoch", "train_cost", "val_cost", "test_cost", "train_accuracy", "val_accuracy", "test_accuracy"]
assert len(rows) == len(metrics), (len(rows), len(metrics))
for got, want in zip(rows, metrics):
    assert got == [want[c] or "NaN" for c in cols], (got, want)
EOF
}
check "the picture: a 1100 x 800 PNG" png_size run/plot.png 1100 800
check "the curves: metrics.csv's rows, 4 epochs, the resumed ones included" blocks_match run.gp run 0
check "the resumed run's steps: both commands" grep -q '^"run" .* 52$' run.gp
# The confusion matrix is eval's, of latest.h5 on the test set the run's config names.
check "eval --json" "$BP" eval --checkpoint run/latest.h5 --data "$T/good.h5" --json
cp "$T/check.out" eval.json
confusion_matches() {
    $PY - "$@" <<'EOF'
import json, re, sys
text = open(sys.argv[1]).read()
got = [[float(v) for v in l.split()] for l in re.search(r"^\$confusion_0 << EOD\n(.*?)^EOD$", text, re.M | re.S).group(1).splitlines()]
want = json.load(open(sys.argv[2]))["confusion"]
assert got == want, (got, want)
EOF
}
check "the confusion matrix: eval's" confusion_matches run.gp eval.json

# validation_split (after limit) and no test set: the confusion matrix of the training
# file's rows 120..149, read in place, is eval's of those rows in a file of their own.
check "a run with a split" "$BP" train p.ini --set checkpoint.dir=split --set data.test= --set data.limit=150 --set data.validation_split=30 --set train.epochs=2
check "plot it" "$BP" plot split --script split.gp
$PY - "$T" <<'EOF' || exit 1
import sys, h5py
with h5py.File(f"{sys.argv[1]}/good.h5") as f, h5py.File("tail.h5", "w") as g:
    g["X"], g["y"] = f["X"][120:150], f["y"][120:150]
EOF
check "eval of rows 120..149" "$BP" eval --checkpoint split/latest.h5 --data tail.h5 --json
cp "$T/check.out" tail.json
check "the split's confusion matrix: those rows'" confusion_matches split.gp tail.json
check "it is the validation set's" grep -q "Confusion matrix, validation set" split.gp

check "two runs in one picture" "$BP" plot run other --out both.png --script both.gp
check "two runs: 1100 x 1200 (a confusion matrix each)" png_size both.png 1100 1200
check "two runs: the first's curves" blocks_match both.gp run 0
check "two runs: the second's curves" blocks_match both.gp other 1
check "two runs: labelled by directory" grep -q "title 'other: train'" both.gp
check "two runs: the second has no test column" bash -c "! grep -q \"title 'other: test'\" both.gp"

# Real-valued targets (no accuracy, no confusion matrix), a directory name with a space and
# a quote, and a run of an older backprop (no step_times.csv): each panel says what it lacks.
check "a regression run" "$BP" train p.ini --set data.train=builtin:line --set data.test= --set data.validation_split=100 --set network.layers=1,1 --set network.output=linear --set network.cost=quadratic --set train.epochs=3 --set "checkpoint.dir=it's odd"
rm "it's odd/step_times.csv"
check "plot it" "$BP" plot "it's odd" --script odd.gp
cp "$T/check.out" odd.log
check "it says what it drew" grep -qx "wrote it's odd/plot.png: it's odd (3 epochs)" odd.log
check "no accuracy, said" grep -q "no accuracy: the targets are not class labels" odd.gp
check "no step times, said" grep -q "no step_times.csv" odd.gp
check "the regression run's curves" blocks_match_costs odd.gp "it's odd" 0
check "a 1100 x 800 PNG" png_size "it's odd/plot.png" 1100 800

# A run whose [log] metrics is elsewhere: found through the config latest.h5 stores.
check "metrics elsewhere" "$BP" train p.ini --set checkpoint.dir=apart --set log.metrics=logs/apart.csv --set train.epochs=2
check "plot finds them" "$BP" plot apart --script apart.gp
check "its curves: logs/apart.csv's rows" blocks_match apart.gp apart 0 logs/apart.csv
mv logs/apart.csv logs/gone.csv
expect "its metrics gone" 2 'logs/apart\.csv: no such file \(\[log\] metrics in the config stored in apart/latest\.h5, relative to where train ran\)' "$BP" plot apart
mv logs/gone.csv logs/apart.csv
mkdir broken && echo "not a checkpoint" >broken/latest.h5
expect "no metrics and a damaged latest.h5: both said" 2 'broken/metrics\.csv: no such file \(nor could the run.s config be read: broken/latest\.h5: ' "$BP" plot broken
expect "--out onto metrics elsewhere" 2 'logs/apart\.csv' "$BP" plot apart --out logs/apart.csv --force

# What cannot be drawn, one line each; nothing written.
mkdir empty
expect "no metrics" 2 'empty/metrics\.csv: no such file \(plot takes run directories' "$BP" plot empty
expect "existing --out" 2 'both.png: exists; add --force to replace it' "$BP" plot run --out both.png
expect "--out onto the run's metrics" 2 'metrics.csv' "$BP" plot run --out run/metrics.csv --force
expect "under mpirun" 2 'plot runs alone, not under mpirun' mpi 2 plot run --out x.png
mkdir nobin
expect "without gnuplot" 2 'plot needs gnuplot, which is not installed \(Debian: apt-get install gnuplot-nox\)' \
    env PATH="$T/nobin" "$BP" plot run --out nognuplot.png
[ -e nognuplot.png ] && bad "a refused plot left a file"
ls -a run | grep -q '\.tmp\.' && bad "a temporary file left in run/"
finish
