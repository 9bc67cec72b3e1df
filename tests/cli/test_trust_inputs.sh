#!/usr/bin/env bash
# Inputs a hostile or careless user hands backprop (issue 25, items 1, 7, 8, 11 and 12, and
# its follow-up): run directories whose names and files carry gnuplot code or are FIFOs,
# devices and files without end, plot outputs onto plot's own inputs, data that overflows
# a model, CSV first rows that look like headers, HDF5 filters this build cannot decode,
# files that are not what a command expects, and command lines that say one thing twice. A
# refusal is exit 2 with one error line, and no error line holds a raw control character.
source "$(dirname "$0")/lib.sh"
$PY "$SRC/tests/cli/make_data.py" "$T" || exit 1
command -v gnuplot >/dev/null || { echo "FAIL: gnuplot is not installed (scripts/test.sh installs gnuplot-nox)"; exit 1; }

config base.ini
bp() { timeout -k 5 120 "$BP" "$@"; }
on() { # on NP ARGS...: alone for NP = 1, else under mpirun
    local np=$1
    shift
    if [ "$np" -eq 1 ]; then bp "$@"; else mpi "$np" "$@"; fi
}
# clean NAME: the last expect's stderr is text, one line per line: UTF-8 with no control
# character but the line ends (a raw \r, \x1b or newline from a file is escaped).
clean() {
    if $PY -c '
import sys, unicodedata
text = open(sys.argv[1], "rb").read().decode("utf-8")
sys.exit(any(unicodedata.category(c) == "Cc" and c != "\n" for c in text))' "$T/err" 2>/dev/null; then
        ok
    else
        bad "$1: a raw control character or a byte that is not UTF-8: $(cat -v "$T/err")"
    fi
}
# refused NAME REGEX CMD...: exit 2, one clean error line matching REGEX.
refused() {
    local name=$1 pattern=$2
    shift 2
    expect "$name" 2 "$pattern" "$@"
    clean "$name"
}
scalar=$("$BP" --version | grep -o 'float\|double')

# ---- 1. plot: nothing from a run directory is gnuplot code ----
check "a run to copy" bp train base.ini --set checkpoint.dir=$T/runA --set data.validation_split=40
M=PWNED # gnuplot runs here: a command that ran would leave $T/PWNED*
names=(
    $'inj\nEOD\nprint system("touch '"$M"$'1")\n$junk << EOD'
    "x'); system('touch ${M}2'); print('"
    'x"; system("touch '"$M"'3"); "'
    '`touch '"$M"'4`'
    '@macro $var \$(touch '"$M"'5) EOD'
    'tail\'
    $'bytes\xff\xfe\x1b[2J\x01'
)
for name in "${names[@]}"; do
    mkdir -p "$name"
    cp runA/metrics.csv runA/step_times.csv runA/latest.h5 "$name/"
done
# The script gnuplot got is text with no line that a hostile string made: every string is
# in quotes with no quote, backslash, '$', '@' or backtick inside (nor '#' in a data
# block), data blocks hold
# numbers and such strings, and each block ends where it began.
script_safe() {
    $PY - "$1" <<'EOF'
import re, sys
raw = open(sys.argv[1], "rb").read()
assert all(32 <= b < 127 or b == 10 for b in raw), "a byte outside printable ASCII"
text = raw.decode()
assert "`" not in text and "@" not in text and "\\\n" not in text.replace(", \\\n", ""), "a backtick, @ or line continuation"
block = None
number = r"(-?[0-9.]+(e[-+][0-9]+)?|NaN)"
for line in text.splitlines():
    if block:
        if line == "EOD":
            block = None
        elif not line.startswith("#"):
            assert re.fullmatch(rf'("[^"\\$#]*" )?{number}( {number})*', line), line
        continue
    m = re.fullmatch(r"\$(metrics_[0-9]|steps|confusion_[0-9]) << EOD", line)
    if m:
        block = m.group(1)
        continue
    rest = re.sub(r"'[^'\\$]*'", "", line)  # single-quoted strings, none with a quote inside
    assert "'" not in rest and '"' not in rest, line
    assert not re.search(r"\$(?!(metrics_[0-9]|steps|confusion_[0-9]|[0-9])\b)", rest), line
    assert not re.search(r"system|\bprint\b|touch", rest), line
assert block is None, "a data block left open"
EOF
}
png_ok() { # png_ok FILE W H
    $PY - "$@" <<'EOF'
import struct, sys
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
assert struct.unpack(">II", data[16:24]) == (int(sys.argv[2]), int(sys.argv[3])), "size"
EOF
}
check "plot the report's directory" bp plot "${names[0]}" --out one.png --script one.gp
check "its PNG" png_ok one.png 1100 800
check "its script is safe" script_safe one.gp
check "all hostile runs in one picture" bp plot runA "${names[@]}" --out all.png --script all.gp
check "their PNG: 8 confusion matrices" png_ok all.png 1100 2400
check "their script is safe" script_safe all.gp
check "each run's titles, sanitized" grep -q "title 'x?); system(?touch $M""2?); print(?: train'" all.gp
# plot's default picture is RUN_DIR/plot.png: the hostile directory is the output's too.
check "plot into the hostile directory" bp plot "${names[0]}"
check "its plot.png" png_ok "${names[0]}/plot.png" 1100 800
ls "$M"* >/dev/null 2>&1 && bad "a hostile name ran a command: $(ls "$M"*)" || ok
# Hostile metrics.csv: unknown columns are never drawn, a drawn value is only ever a
# number printed from the double it parses to (inf is drawn as missing, as empty is).
mkdir csvrun
printf 'epoch,train_cost,"EOD\x27),val_cost,test_cost,train_accuracy,val_accuracy,test_accuracy,system("touch %s6")\n' "$M" >csvrun/metrics.csv
printf '1,0x1p-1, system("touch %s7") ,inf,,0.25,,,`touch %s8`\n2,0.125,EOD,,,0.5,,,@x\n' "$M" "$M" >>csvrun/metrics.csv
printf 'first_step,steps,data_ms,compute_ms,exchange_ms,update_ms,ranks\n0,10,nan,1,1,1,1\n' >csvrun/step_times.csv
check "plot hostile metrics" bp plot csvrun --out csv.png --script csv.gp
check "their script is safe" script_safe csv.gp
check "the values drawn: parsed numbers" grep -qx '1 0.5 NaN NaN 0.25 NaN NaN' csv.gp
check "the second row" grep -qx '2 0.125 NaN NaN 0.5 NaN NaN' csv.gp
check "NaN step times are not drawn" grep -q "no step_times.csv" csv.gp
ls "$M"* >/dev/null 2>&1 && bad "a hostile CSV ran a command: $(ls "$M"*)" || ok
mkdir badcsv
printf 'epoch,train_cost\n1,0.5; system("touch %s9")\n' "$M" >badcsv/metrics.csv
refused "a drawn field that is not a number" "row 2: '0\.5; system\(.*' is not a number" bp plot badcsv --out bad.png
printf 'epoch,train_cost\n1,\x1b[2J\r\n' >badcsv/metrics.csv
refused "an escape sequence in a field" "row 2: '\\\\x1b\[2J' is not a number" bp plot badcsv --out bad.png
[ -e bad.png ] && bad "a refused plot wrote its picture" || ok

# ---- 1b. plot: every file it reads is an input, opened as one ----
# A FIFO or a device where a run's file should be is refused (metrics.csv) or left out
# with a warning (step_times.csv), never waited on or read forever; so is a regular file
# without end (1 TB of sparse zeros). Seconds each: a hang would meet the 20 s limit.
quick() { timeout -k 5 20 "$BP" "$@"; }
mkdir fifo zero big
for run in fifo zero big; do cp runA/latest.h5 runA/metrics.csv $run/; done
mkfifo fifo/step_times.csv
ln -s /dev/zero zero/step_times.csv
truncate -s 1T big/step_times.csv
for run in fifo zero big; do
    check "$run step_times.csv: drawn without it" quick plot $run --out $run.png --script $run.gp
    grep -q "warning: no step times for $run: $run/step_times.csv: " "$T/check.out" && ok || bad "$run: no warning: $(cat "$T/check.out")"
    check "$run step_times.csv: the panel says so" grep -q "no step_times.csv" $run.gp
done
rm fifo/metrics.csv zero/metrics.csv
mkfifo fifo/metrics.csv
ln -s /dev/zero zero/metrics.csv
printf 'epoch,train_cost\n1,0.5\n' >big/metrics.csv
truncate -s 1T big/metrics.csv
refused "a FIFO for metrics.csv" '^backprop: error: fifo/metrics\.csv: is a FIFO, not a file$' quick plot fifo --out m.png
refused "/dev/zero for metrics.csv" '^backprop: error: zero/metrics\.csv: is a device, not a file$' quick plot zero --out m.png
refused "a metrics.csv without end" 'big/metrics\.csv: more than 100001 lines' quick plot big --out m.png
printf 'epoch,train_cost\n1,0.5%01100d\n' 0 >big/metrics.csv
refused "a line longer than plot reads" 'big/metrics\.csv: line 2 is longer than 1022 bytes' quick plot big --out m.png
[ -e m.png ] && bad "a refused plot wrote its picture" || ok
# The data a confusion matrix is drawn from is an input too, --force or not; and so is the
# picture for the script: one file each. A checkpoint is never an output.
cp good.h5 pd.h5
cp good.h5 pt.h5
check "a run with a test set" bp train base.ini --set checkpoint.dir=$T/runP --set data.train=$T/pd.h5 --set data.test=$T/pt.h5 --set train.epochs=1
refused "--out onto the test set" "pt\.h5: is the input $T/pt\.h5; write elsewhere" bp plot runP --out $T/pt.h5 --force
refused "--script onto the training set" "pd\.h5: is the input $T/pd\.h5; write elsewhere" bp plot runP --out p.png --script pd.h5 --force
cp good.h5 ps.h5
check "a run with a validation_split" bp train base.ini --set checkpoint.dir=$T/runS --set data.train=$T/ps.h5 --set data.validation_split=40 --set train.epochs=1
refused "--out onto a validation_split's training set" "ps\.h5: is the input $T/ps\.h5" bp plot runS --out ps.h5 --force
for set in pt pd ps; do check "$set.h5 is as it was" cmp $set.h5 good.h5; done
refused "--out onto another run's checkpoint" 'runA/latest\.h5: is a checkpoint' bp plot runP --out runA/latest.h5 --force
refused "--out and --script one file" '\./y\.png: is also the picture.s output' bp plot runP --out y.png --script ./y.png --force
[ -e p.png ] || [ -e y.png ] && bad "a refused plot wrote a file" || ok
check "a picture to replace" bp plot runP --out y.png
refused "--out and --script one existing file" 'y\.png: is also the picture.s output' bp plot runP --out y.png --script y.png --force
check "it is still the picture" png_ok y.png 1100 800
# stdout quotes directory names as error lines do: a name's escape sequence is shown.
check "plot a name with control bytes" bp plot "${names[6]}" --out esc.png
$PY - "$T/check.out" <<'EOF' && ok || bad "stdout: $(cat -v "$T/check.out")"
import sys
out = open(sys.argv[1], "rb").read()
assert out == rb"wrote esc.png: bytes\xff\xfe\x1b[2J\x01 (2 epochs, step times, confusion matrix)" + b"\n", out
EOF

# ---- 2. eval and predict: finite data that overflows the model ----
check "a relu model" bp train base.ini --set checkpoint.dir=$T/relu --set network.hidden=relu
# 3e38 is finite in float, 1.7e308 in double; in every sign pattern, the hidden units whose
# weights match it overflow to inf, and the next layer's inf - inf is NaN.
$PY - "$scalar" <<'EOF'
import itertools, sys, h5py, numpy as np
big = np.float32(3e38) if sys.argv[1] == "float" else np.float64(1.7e308)
signs = np.array(list(itertools.product([1, -1], repeat=4)) * 4, dtype=big.dtype)
X = signs * big
with h5py.File("huge.h5", "w") as f:
    f["X"], f["y"] = X, (np.arange(64) % 3).astype(np.int32)
EOF
for np in 1 2; do
    refused "np$np eval --json on overflowing data" 'huge\.h5: the network.s cost is (NaN|infinite) on this data: its values are finite but overflow' \
        on "$np" eval --checkpoint relu/latest.h5 --data huge.h5 --json
    grep -qi 'nan\|inf' "$T/out" && bad "np$np eval --json printed $(cat "$T/out")" || ok
    refused "np$np eval on overflowing data" 'overflow the model' on "$np" eval --checkpoint relu/latest.h5 --data huge.h5
    refused "np$np predict on overflowing data" 'huge\.h5: row [0-9]+: the network.s output is (NaN|infinite): the row.s values are finite but overflow' \
        on "$np" predict --checkpoint relu/latest.h5 --data huge.h5 --out pred.h5
    [ -e pred.h5 ] && bad "np$np predict wrote its file" || ok
done
# JSON that Python's strict parser takes (no NaN, no Infinity) for ordinary data.
check "eval --json" bp eval --checkpoint relu/latest.h5 --data good.h5 --json
cp "$T/check.out" eval.json
check "is strict JSON" $PY -c '
import json, sys
def no(c): raise ValueError(c)
json.loads(open(sys.argv[1]).read(), parse_constant=no)' eval.json

# ---- 3. CSV: the header rule ----
# rows FILE N: convert wrote N examples, the first of them 1, 2, 3 with label 0.
rows() {
    $PY - "$@" <<'EOF'
import sys, h5py
with h5py.File(sys.argv[1]) as f:
    assert len(f["X"]) == int(sys.argv[2]), len(f["X"])
    assert f["X"][0].tolist() == [1, 2, 3] and f["y"][0] == 0, (f["X"][0], f["y"][0])
EOF
}
printf '"1",2,3,0\n4,5,6,1\n' >quoted.csv
check "a quoted first field is data" bp convert --csv quoted.csv --out quoted.h5
check "both rows" rows quoted.h5 2
printf '"x1","x2","x3","label"\r"1","2","3","0"\r4,5,6,1\r' >cr.csv
check "a quoted header, CR-only line ends" bp convert --csv cr.csv --out cr.h5
check "both rows" rows cr.h5 2
printf ',2,3,0\n4,5,6,1\n' >empty.csv
refused "an empty first field is data" 'empty\.csv: line 1 column 1 is empty' bp convert --csv empty.csv --out e.h5
printf 'NA,2,3,0\n4,5,6,1\n' >na.csv
refused "NA first is data" "na\.csv: line 1 column 1: 'NA' is not a number" bp convert --csv na.csv --out e.h5
printf 'NA,NA,NA,NA\n4,5,6,1\n' >allna.csv
refused "a first row of NA alone is data" "allna\.csv: line 1 column 1: 'NA' is not a number" bp convert --csv allna.csv --out e.h5
printf ',,,\n4,5,6,1\n' >allempty.csv
refused "a first row of empty fields is data" 'allempty\.csv: line 1 column 1 is empty' bp convert --csv allempty.csv --out e.h5
printf 'x1,x2,label\n1,2,3,0\n' >narrow.csv
refused "a header narrower than its rows" 'narrow\.csv: line 2 has 4 fields but the header, line 1, has 3' bp convert --csv narrow.csv --out e.h5
printf '1 2,3,4,0\n' >space.csv
refused "one line, the real error" "space\.csv: line 1 column 1: '1 2' is not a number" bp convert --csv space.csv --out e.h5
printf '1,2,3,0\r4,x\x1b[31m,6,1\r' >esc.csv
refused "a field's escape sequence, escaped" "esc\.csv: line 2 column 2: 'x\\\\x1b\[31m' is not a number" bp convert --csv esc.csv --out e.h5
[ -e e.h5 ] && bad "a refused convert wrote its file" || ok

# ---- 4. HDF5 filters this build cannot decode are named ----
$PY - <<'EOF'
import h5py, numpy as np
X = np.random.default_rng(1).standard_normal((200, 4)).astype(np.float32)
y = (np.arange(200) % 3).astype(np.int32)
with h5py.File("lzfX.h5", "w") as f:
    f.create_dataset("X", data=X, compression="lzf")
    f["y"] = y
with h5py.File("lzfy.h5", "w") as f:
    f["X"] = X
    f.create_dataset("y", data=y, compression="lzf")
EOF
lzf='is compressed with filter lzf \(id 32000\), which this HDF5 build cannot decode'
for np in 1 2; do
    refused "np$np eval, /X lzf" "lzfX\.h5: /X $lzf" on "$np" eval --checkpoint relu/latest.h5 --data lzfX.h5
    refused "np$np train, /y lzf" "lzfy\.h5: /y $lzf" on "$np" train base.ini --set data.train=$T/lzfy.h5 --set checkpoint.dir=$T/lz
    refused "np$np train, test /X lzf" "lzfX\.h5: /X $lzf" on "$np" train base.ini --set data.test=$T/lzfX.h5 --set checkpoint.dir=$T/lz
done
refused "predict, /X lzf" "lzfX\.h5: /X $lzf" bp predict --checkpoint relu/latest.h5 --data lzfX.h5 --out p.h5
refused "stream placement, /y lzf" "lzfy\.h5: /(X|y) " bp train base.ini --set data.train=$T/lzfy.h5 --set data.placement=stream --set checkpoint.dir=$T/lz

# ---- 5. what a file is, said before what it lacks; limits; the command line ----
mkdir adir
mkfifo afifo
printf 'x1,x2,x3,x4,label\n1,2,3,4,0\n' >data.csv
$PY - <<'EOF'
import struct
open("img.idx", "wb").write(struct.pack(">IIII", 0x803, 6, 2, 2) + bytes(24))
open("lab.idx", "wb").write(struct.pack(">II", 0x801, 6) + bytes(6))
EOF
for np in 1 2; do
    refused "np$np eval, missing data" 'missing: no such file' on "$np" eval --checkpoint relu/latest.h5 --data missing
    refused "np$np eval, a CSV" 'data\.csv: not an IDX image file .*begins with text: a CSV file goes through convert' \
        on "$np" eval --checkpoint relu/latest.h5 --data data.csv
    refused "np$np eval, a directory" 'adir: is a directory, not a file' on "$np" eval --checkpoint relu/latest.h5 --data adir
    refused "np$np eval, a FIFO" 'afifo: is a FIFO, not a file' on "$np" eval --checkpoint relu/latest.h5 --data afifo
    refused "np$np eval, IDX images without labels" 'img\.idx: IDX images need their labels: add --labels FILE' \
        on "$np" eval --checkpoint relu/latest.h5 --data img.idx
    grep -q 'train_labels' "$T/err" && bad "np$np eval named a config key" || ok
    refused "np$np train, IDX images without train_labels" 'img\.idx: IDX images need their labels: set \[data\] train_labels' \
        on "$np" train base.ini --set data.train=$T/img.idx --set checkpoint.dir=$T/idx
    refused "np$np train, validation IDX without labels" 'img\.idx: IDX images need their labels: set \[data\] validation_labels' \
        on "$np" train base.ini --set data.train=$T/img.idx --set data.train_labels=$T/lab.idx --set data.validation=$T/img.idx --set checkpoint.dir=$T/idx
    refused "np$np [comm] timeout under a second" '--set: \[comm\] timeout: 0\.5 s is below the 1 s the watchdog can honour' \
        on "$np" train base.ini --set comm.timeout=0.5
    refused "np$np --set twice" '--set train\.epochs=3: \[train\] epochs is set twice on the command line' \
        on "$np" train base.ini --set train.epochs=2 --set train.epochs=3
done
check "eval of IDX images with their labels" bp eval --checkpoint relu/latest.h5 --data img.idx --labels lab.idx
printf '[comm]\ntimeout = 0.2\n' >>base.ini
refused "timeout in the file" 'base\.ini:[0-9]+: \[comm\] timeout: 0\.2 s is below' bp train base.ini
refused "gradcheck: the same limits" 'base\.ini:[0-9]+: \[comm\] timeout' bp gradcheck base.ini
refused "gradcheck: --set twice" 'is set twice on the command line' bp gradcheck base.ini --set comm.timeout=1 --set comm.timeout=2
check "a timeout of 1 s is taken" bp train base.ini --set comm.timeout=1 --set checkpoint.dir=$T/t1 --set train.epochs=1
# Paths and config values quoted in errors are escaped too.
refused "a path with a newline and an escape" 'no\\nsuch\\x1b\[2J: no such file' bp eval --checkpoint relu/latest.h5 --data $'no\nsuch\x1b[2J'
config esc.ini
sed -i $'s/^hidden = tanh$/hidden = ta\x1bnh/' esc.ini
refused "a config value with an escape" "esc\.ini:[0-9]+: \[network\] hidden: expected .*got 'ta\\\\x1bnh'" bp train esc.ini

# backprop --help lists every option each command's own --help does.
"$BP" --help >short.txt
for cmd in train eval predict gradcheck inspect convert plot; do
    "$BP" "$cmd" --help | sed '/^$/q' | grep -o -- '--[a-z][a-z-]*' | sort -u >long.txt
    awk -v c="$cmd" '$1 == c { on = 1; print; next } on && /^          / { print; next } { on = 0 }' short.txt |
        grep -o -- '--[a-z][a-z-]*' | sort -u >listed.txt
    missing=$(comm -23 long.txt listed.txt | tr '\n' ' ')
    [ -z "$missing" ] && ok || bad "backprop --help: $cmd lacks $missing"
done
# train --help lists every config key docs/config.md does, under its section, and fits 80
# columns (the table that drives both is checked against the docs by test_config).
"$BP" train --help >train-help.txt
awk '/^## \[/ { s = $2 } /^\| `/ { split($0, c, "`"); print s, c[2] }' "$SRC/docs/config.md" | sort >documented.txt
awk '/^\[/ { s = $1 } /^  [a-z_0-9]+ = / { print s, $1 }' train-help.txt | sort >helped.txt
[ -s documented.txt ] && cmp -s documented.txt helped.txt && ok ||
    bad "train --help and docs/config.md list other keys: $(diff documented.txt helped.txt | head -3 | tr '\n' ' ')"
sed '1,/^Config keys/d' train-help.txt | awk 'length($0) > 80 { print; exit 1 }' && ok ||
    bad "train --help: a config key's line is over 80 columns"

# ---- 6. stdout quotes paths and stored text as error lines do ----
# A directory, an output and a config value with an escape sequence: train's "done" line,
# convert's and predict's "wrote" lines and inspect's path and stored config show it
# escaped (\x1b), never raw. Checked on the bytes of stdout.
E=$'e\x1b[2J'
mkdir -p "$T/$E"
printf '1,2,3,0\n4,5,6,1\n' >"$T/$E/in.csv"
config out.ini
noraw() { # noraw NAME: $T/check.out holds no raw control byte but newlines, and shows \x1b
    if $PY -c '
import sys
b = open(sys.argv[1], "rb").read()
sys.exit(any(c < 0x20 and c != 0x0a or c == 0x7f for c in b) or b"\\x1b" not in b)' "$T/check.out"; then
        ok
    else
        bad "$1: stdout: $(cat -v "$T/check.out")"
    fi
}
for np in 1 2; do
    check "np$np: train into a directory with an escape" on $np train out.ini --set "checkpoint.dir=$T/$E/run$np"
    noraw "np$np: train's done line"
    check "np$np: predict to a name with an escape" on $np predict --checkpoint "$T/$E/run$np/latest.h5" \
        --data good.h5 --out "$T/$E/p$np.h5"
    noraw "np$np: predict's wrote line"
done
check "convert to a name with an escape" bp convert --csv "$T/$E/in.csv" --out "$T/$E/c.h5"
noraw "convert's wrote line"
check "inspect a checkpoint there" bp inspect "$T/$E/run1/latest.h5"
noraw "inspect's path and stored config"
finish
