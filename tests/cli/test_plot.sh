#!/usr/bin/env bash
# backprop plot: a run (resumed once) and two runs in one picture. The PNG is checked by its
# header and size; the script handed to gnuplot (--script) has one point per epoch whose
# values are metrics.csv's, the step times of both commands of the resumed run, and the
# confusion matrix that eval gives; the timeline of a trace made here (its rows, the
# unfinished exchange to the trace's end, a hostile name sanitised, the 32-lane limit), and
# traces that are not one. Without gnuplot, plot names the package to install.
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

# The timeline of a trace (the format train's [log] trace writes), made here: 3 ranks (or
# $2), 6 steps, 100 ms each, the watchdog's end (rank 2 stuck in its last bucket's exchange:
# a "B" and a "b" without end), a hostile process name, and events the timeline skips (no
# pid, a string ts, a negative dur, a "b" without id, a thread it does not draw).
make_trace() {
    RANKS=${2:-3} $PY - "$1" <<'EOF'
import json, os, random, sys
rnd, ranks, ev = random.Random(7), int(os.environ["RANKS"]), []
us = lambda v: round(v, 3)
for r in range(ranks):
    name = "rank 2 'q\" `ls` $(id) ${X} @x #c \\ \u00e9\x1b[2J\nend" if r == 2 else f"rank {r} (host h{r % 2})"
    ev.append({"ph": "M", "name": "process_name", "pid": r, "args": {"name": name}})
    ev.append({"ph": "M", "name": "thread_name", "pid": r, "tid": 0, "args": {"name": "trainer"}})
for step in range(1, 7):
    for r in range(ranks):
        t = (step - 1) * 100000.0 + 37.5 * r + rnd.uniform(0, 40)
        stuck = step == 6 and r == 2
        for name, cat, dur in (("data", "data", 2500), ("forward", "compute", 21000), ("backward", "compute", 30000)):
            d = us(dur + rnd.uniform(0, 900))
            ev.append({"ph": "X", "name": name, "cat": cat, "pid": r, "tid": 0, "ts": us(t), "dur": d, "args": {"step": step}})
            t += d
        for b in range(2):
            i, at = f"{r}.{step}.{b}", us(t - 20000 + 9000 * b)
            ev.append({"ph": "b", "name": f"exchange bucket {b}", "cat": "exchange", "id": i, "pid": r, "tid": 0, "ts": at, "args": {"step": step, "bucket": b}})
            if stuck and b == 1:
                ev[-1]["args"]["unfinished"] = True
                ev.append({"ph": "B", "name": "exchange bucket 1", "cat": "exchange", "pid": r, "tid": 0, "ts": us(t), "args": {"step": step, "unfinished": True}})
                continue
            ev.append({"ph": "X", "name": f"cross-node sum, bucket {b}", "cat": "exchange", "pid": r, "tid": 1, "ts": us(at + 300), "dur": 4000.0, "args": {"step": step, "bucket": b}})
            ev.append({"ph": "e", "name": f"exchange bucket {b}", "cat": "exchange", "id": i, "pid": r, "tid": 0, "ts": us(t + 3000 + 2000 * b), "args": {}})
        if stuck:
            continue
        ev.append({"ph": "X", "name": "the any_scale exponent maximum", "cat": "collective", "pid": r, "tid": 0, "ts": us(t + 5000), "dur": 900.0, "args": {"step": step}})
        ev.append({"ph": "X", "name": "update", "cat": "update", "pid": r, "tid": 0, "ts": us(t + 6000), "dur": 4000.0, "args": {"step": step}})
        if step == 4:
            ev.append({"ph": "X", "name": "checkpoint copy", "cat": "checkpoint", "pid": r, "tid": 0, "ts": us(t + 10000), "dur": 3000.0, "args": {"step": step}})
            ev.append({"ph": "X", "name": "checkpoint write", "cat": "checkpoint", "pid": r, "tid": 2, "ts": us(t + 13000), "dur": 250000.0, "args": {"step": step}})
ev += [{"ph": "X", "name": "data", "cat": "data", "tid": 0, "ts": 1.0, "dur": 1.0, "args": {"step": 6}},
       {"ph": "X", "name": "data", "cat": "data", "pid": 0, "tid": 0, "ts": "9", "dur": 1.0, "args": {"step": 6}},
       {"ph": "X", "name": "data", "cat": "data", "pid": 1, "tid": 0, "ts": 500000.0, "dur": -1.0, "args": {"step": 6}},
       {"ph": "b", "name": "exchange bucket 9", "cat": "exchange", "pid": 1, "tid": 0, "ts": 500000.0, "args": {"step": 6}},
       {"ph": "X", "name": "data", "cat": "data", "pid": 1, "tid": 7, "ts": 500000.0, "dur": 1.0, "args": {"step": 6}}]
latest = max(max(e["ts"], e["ts"] + e.get("dur", 0)) for e in ev if e["ph"] != "M" and isinstance(e["ts"], float) and e.get("dur", 0) >= 0)
doc = {"displayTimeUnit": "ms", "otherData": {"backprop": "0.9.0", "written": "watchdog", "steps": 100, "ranks": ranks, "first_step": 1, "last_step": 6, "written_at_us": us(latest + 1234.5)}, "traceEvents": ev}
with open(sys.argv[1], "w") as f:  # one event a line, as train writes it
    f.write(json.dumps(doc).replace('{"ph"', '\n{"ph"'))
EOF
}
# timeline_matches SCRIPT TRACE K: the script's $timeline block has exactly a row per event
# of the trace's drawn ranks (the first 32) that reaches into the window of its last K steps
# (from the first event of step last-K+1 to written_at_us, in ms, clipped at its start:
# rank lane sublane start_ms end_ms category unfinished); the unfinished pair reaches the
# trace's end (the x range's end); the lanes are named by the sanitised process names; a
# step line per step; and the panel is drawn.
timeline_matches() {
    $PY - "$@" <<'EOF'
import json, re, sys
text, doc, k = open(sys.argv[1]).read(), json.load(open(sys.argv[2])), int(sys.argv[3])
block = lambda name: re.search(rf"^\${name} << EOD\n(.*?)^EOD$", text, re.M | re.S).group(1)
got = [tuple(l.split()) for l in block("timeline").splitlines() if not l.startswith("#")]
evs = [e for e in doc["traceEvents"] if e["ph"] in "XBbe" and isinstance(e.get("pid"), int)
       and isinstance(e["ts"], float) and e.get("dur", 0) >= 0 and (e["ph"] not in "be" or "id" in e)]
last = max(e["args"]["step"] for e in evs if "step" in e["args"])
inwin = lambda e: "step" in e["args"] and e["args"]["step"] >= last - k + 1
t0 = min(e["ts"] for e in evs if inwin(e))
ranks = sorted({e["pid"] for e in doc["traceEvents"] if "pid" in e})[:32]
ends = {(e["pid"], e["id"]): e["ts"] for e in evs if e["ph"] == "e"}
done = lambda e: e["ph"] == "X" or (e["pid"], e.get("id")) in ends
stop = lambda e: e["ts"] + e["dur"] if e["ph"] == "X" else ends[e["pid"], e["id"]]
# The window ends a tenth past the last moment seen in it (these traces have unfinished
# events): the unfinished drawn to that edge.
seen = max(stop(e) if done(e) else e["ts"] for e in evs if inwin(e) and e["ph"] != "e")
edge = seen + max((seen - t0) / 10, 1.0)
want = []
for e in evs:
    if e["ph"] == "e" or e["pid"] not in ranks or e.get("tid", 0) > 2:
        continue
    end = stop(e) if done(e) else edge
    if end < t0 or e["ts"] >= edge:
        continue
    sub = 1 if e["ph"] == "b" else [0, 2, 3][e.get("tid", 0)]
    cat = e["name"] if e["cat"] == "compute" else e["cat"]
    want.append((str(e["pid"]), str(ranks.index(e["pid"])), str(sub), "%.6f" % ((max(e["ts"], t0) - t0) / 1000),
                 "%.6f" % ((min(end, edge) - t0) / 1000), cat, str(int(not done(e)))))
assert sorted(got) == sorted(want), (len(got), len(want), sorted(set(got) ^ set(want))[:6])
assert sum(r[6] == "1" for r in got) == 2, "the unfinished pair"
span = "%.6f" % ((edge - t0) / 1000)
assert all(r[4] == span for r in got if r[6] == "1"), "an unfinished event ends before the edge"
assert f"set xrange [0:{span}]" in text
clean = lambda s: "".join("?" if b < 0x20 or b > 0x7e or chr(b) in "'\"\\$@`#" else chr(b) for b in s.encode())
names = {e["pid"]: e["args"]["name"] for e in doc["traceEvents"] if e.get("name") == "process_name"}
tics = ", ".join(f"'{clean(names[r])}' {i}" for i, r in enumerate(ranks))
assert f"set ytics ({tics})\n" in text, re.search(r"^set ytics \(.*$", text, re.M).group(0)[:200]
steps = [l.split() for l in block("trace_steps").splitlines() if not l.startswith("#")]
assert [int(s[0]) for s in steps] == list(range(max(1, last - k + 1), last + 1)), steps
assert re.search(r"^plot \$trace_steps .*\n(     .*\n)*     \$timeline using .*title 'unfinished", text, re.M), "no timeline drawn"
EOF
}
make_trace trace.json
cp -r run traced && cp trace.json traced/trace.json
check "plot a run with its trace.json" "$BP" plot traced --script traced.gp
cp "$T/check.out" traced.log
check "it says the timeline" grep -qx "wrote traced/plot.png: traced (4 epochs, step times, confusion matrix, timeline)" traced.log
check "the timeline: a row more, 1100 x 1200" png_size traced/plot.png 1100 1200
check "the timeline: the last 4 steps' events, the unfinished to the end" timeline_matches traced.gp trace.json 4
check "the timeline's panel: the picture's width" grep -qx "set size 1,0.333333" traced.gp
no_hostile_bytes() {
    $PY -c 'import sys; t = open(sys.argv[1], "rb").read(); assert not any(b in t for b in (b"$(id)", b"${X}", b"`ls`", b"\x1b", b"\xc3\xa9", b"\nend")), "raw"' "$1"
}
check "the hostile name: none of its raw bytes in the script" no_hostile_bytes traced.gp
check "--trace, --trace-steps 2" "$BP" plot run --trace trace.json --trace-steps 2 --out k2.png --script k2.gp
check "the last 2 steps" timeline_matches k2.gp trace.json 2
check "--trace-steps=50 (more than the trace has)" "$BP" plot run --trace trace.json --trace-steps=50 --out k50.png --script k50.gp
check "all 6 steps" timeline_matches k50.gp trace.json 50
mkdir hung && cp trace.json hung/trace.json
check "a run with a trace and no metrics yet" "$BP" plot hung --script hung.gp
cp "$T/check.out" hung.log
check "it says so" grep -qx "wrote hung/plot.png: hung (no epochs yet, timeline)" hung.log
check "the timeline alone: 1100 x 400" png_size hung/plot.png 1100 400
check "its rows" timeline_matches hung.gp trace.json 4
make_trace wide.json 40
check "40 ranks" "$BP" plot hung --trace wide.json --out wide.png --script wide.gp
check "32 lanes of 40" timeline_matches wide.gp wide.json 4
check "said in the title" grep -qx "set title 'Timeline of wide.json: steps 3..6; unfinished at the edge (32 of 40 ranks)'" wide.gp
check "32 lanes: 6 rows, 1100 x 2400" png_size wide.png 1100 2400
# A trace with nothing unfinished (one written at the end of a run): the window ends with
# the last step's phases, not with what came after them (the run's end: collectives).
$PY - trace.json clean.json <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
ev = [e for e in d["traceEvents"] if not e.get("args", {}).get("unfinished")]
last = max(e["args"]["step"] for e in ev if "step" in e.get("args", {}))
ev.append({"ph": "X", "name": "an agreement between ranks", "cat": "collective", "pid": 0, "tid": 0,
           "ts": d["otherData"]["written_at_us"] - 10, "dur": 5, "args": {"step": last}})
d["traceEvents"] = ev
json.dump(d, open(sys.argv[2], "w"))
EOF
check "a trace with nothing unfinished" "$BP" plot hung --trace clean.json --trace-steps 2 --out clean.png --script clean.gp
check "its window ends with the last step's phases" $PY - clean.json clean.gp <<'EOF'
import json, re, sys
d, text = json.load(open(sys.argv[1])), open(sys.argv[2]).read()
ev = [e for e in d["traceEvents"] if e["ph"] in "Xb" and "step" in e.get("args", {})
      and isinstance(e.get("pid"), int) and isinstance(e["ts"], float) and e.get("dur", 0) >= 0
      and (e["ph"] != "b" or "id" in e)]
last = max(e["args"]["step"] for e in ev)
t0 = min(e["ts"] for e in ev if e["args"]["step"] >= last - 1)
ends = {(e["pid"], e["id"]): e["ts"] for e in d["traceEvents"] if e["ph"] == "e"}
end = max(e["ts"] + e["dur"] if e["ph"] == "X" else ends[e["pid"], e["id"]] for e in ev
          if e["args"]["step"] == last and e["cat"] in ("data", "compute", "exchange", "update"))
assert "set xrange [0:%.6f]" % ((end - t0) / 1000) in text, re.search(r"set xrange.*", text).group(0)
assert re.search(r"^set title 'Timeline of clean.json: steps [0-9]+..[0-9]+'$", text, re.M)
EOF
# One unfinished event that begins where the trace ends (a watchdog's last moment): still
# drawn, with a width.
cat >edge.json <<'EOF'
{"otherData": {"written_at_us": 1000.0}, "traceEvents": [
{"ph": "M", "name": "process_name", "pid": 0, "args": {"name": "rank 0"}},
{"ph": "B", "name": "exchange bucket 0", "cat": "exchange", "pid": 0, "tid": 0, "ts": 1000.0,
 "args": {"step": 5, "unfinished": true}}]}
EOF
check "an unfinished event at the trace's end" "$BP" plot hung --trace edge.json --out edge.png --script edge.gp
check "drawn, with a width" $PY -c 'import re, sys
rows = re.search(r"^\$timeline << EOD\n(.*?)^EOD$", open(sys.argv[1]).read(), re.M | re.S).group(1).split("\n")
rows = [r.split() for r in rows if r and not r.startswith("#")]
assert len(rows) == 1 and float(rows[0][4]) > float(rows[0][3]) and rows[0][6] == "1", rows' edge.gp
# The same written 5 s later (the watchdog's timeout): the window stays at the steps, the
# title says how much longer the trace went on.
sed 's/"written_at_us": 1000.0/"written_at_us": 5001000.0/' edge.json >later.json
check "written 5 s later" "$BP" plot hung --trace later.json --out later.png --script later.gp
check "the title says so" grep -qx "set title 'Timeline of later.json: step 5; unfinished at the edge, 5 s more to the end of the trace'" later.gp
echo '{"traceEvents": [{"ph": "M", "name": "process_name", "pid": 0, "args": {"name": "rank 0"}}]}' >nosteps.json
check "a trace without steps" "$BP" plot hung --trace nosteps.json --out nosteps.png --script nosteps.gp
check "its panel says so" grep -q "no event in the trace names its step" nosteps.gp
# Not a trace: one line, exit 2, nothing written.
echo "not json {" >bad.json
echo '{"traceEvents": {}, "otherData": {}}' >nolist.json
echo '[1, 2]' >array.json
: >empty.json
expect "a trace that is not JSON" 2 '^backprop: error: bad\.json: not a trace \(not JSON, at byte 0\)$' "$BP" plot run --trace bad.json --out t.png
expect "JSON without traceEvents" 2 '^backprop: error: nolist\.json: not a trace \(no traceEvents list\)$' "$BP" plot run --trace nolist.json --out t.png
expect "a JSON array" 2 'array\.json: not a trace \(no traceEvents list\)' "$BP" plot run --trace array.json --out t.png
expect "an empty trace file" 2 '^backprop: error: empty\.json: not a trace \(an empty file\)$' "$BP" plot run --trace empty.json --out t.png
: >hung/trace.json
expect "a bad trace.json in the run" 2 'hung/trace\.json: not a trace \(an empty file\)' "$BP" plot hung --out t.png
expect "a missing --trace" 2 'gone\.json: ' "$BP" plot run --trace gone.json --out t.png
for k in 0 51 -1 4x ""; do
    expect "--trace-steps '$k'" 2 "--trace-steps: '$k' is not a whole number from 1 to 50" "$BP" plot run --trace trace.json --trace-steps "$k" --out t.png
done
expect "--out onto the trace" 2 'trace\.json' "$BP" plot run --trace trace.json --out trace.json --force
[ -e t.png ] && bad "a refused plot left t.png"

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
