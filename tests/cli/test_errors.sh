#!/usr/bin/env bash
# Bad input ends the job before any work with exit 2 and one error line for the whole job,
# alone and under mpirun -np 2; and a failing run leaves the run directory as it was.
source "$(dirname "$0")/lib.sh"
$PY "$SRC/tests/cli/make_data.py" "$T" || exit 1

config good.ini
sed 's/^\[train\]$/[training]/' good.ini >section.ini
sed 's/^epochs = 2$/epochs = 2\nepoch = 3/' good.ini >key.ini
sed 's/^epochs = 2$/epochs = two/' good.ini >type.ini
sed 's/^learning_rate = 0.1$/learning_rate = 0.1\nmomentum = 1.5/' good.ini >range.ini
grep -v '^layers' good.ini >missing.ini
sed 's/^output = softmax$/output = linear/' good.ini >combo.ini
printf 'no equals sign here\n' >>good-then-junk.ini
cat good.ini >>good-then-junk.ini

for np in 1 2; do
    run() { if [ "$np" -eq 1 ]; then "$BP" "$@"; else mpi 2 "$@"; fi; }
    expect "np$np unknown section" 2 'section\.ini:10: unknown section \[training\]' run train section.ini
    expect "np$np unknown key" 2 "key\.ini:12: unknown key 'epoch' in \[train\]" run train key.ini
    expect "np$np wrong type" 2 "type\.ini:11: \[train\] epochs: expected an integer, got 'two'" run train type.ini
    expect "np$np out of range" 2 'range\.ini:14: \[train\] momentum: 1\.5 is out of range' run train range.ini
    expect "np$np missing key" 2 "missing\.ini:[0-9]+: missing required key 'layers' in \[network\]" run train missing.ini
    expect "np$np bad combination" 2 'combo\.ini:[0-9]+: \[network\] cross_entropy needs a sigmoid or softmax output' run train combo.ini
    expect "np$np syntax" 2 'good-then-junk\.ini:1: syntax error' run train good-then-junk.ini
    expect "np$np --set range" 2 '--set train\.epochs=0: \[train\] epochs: 0 is out of range' run train good.ini --set train.epochs=0
    expect "np$np --set key" 2 "--set train\.nope=1: unknown key 'nope' in \[train\]" run train good.ini --set train.nope=1
    expect "np$np --set form" 2 '--set epochs: expected SECTION\.KEY=VALUE' run train good.ini --set epochs
    expect "np$np straggler_factor under 1.1" 2 '\[log\] straggler_factor: 1\.05 is below 1\.1' \
        run train good.ini --set log.straggler_factor=1.05
    expect "np$np trace with the recorder off" 2 '\[log\] trace = t\.json with trace_steps = 0: the flight recorder is off' \
        run train good.ini --set log.trace_steps=0 --trace t.json
    expect "np$np --trace without a path" 2 '--trace needs a file path' run train good.ini --trace
    expect "np$np no config file" 2 'nosuch\.ini: no such file' run train nosuch.ini
    expect "np$np no CONFIG" 2 'missing CONFIG' run train
    expect "np$np data missing" 2 'absent\.h5' run train good.ini --set data.train=$T/absent.h5
    expect "np$np data rows" 2 'rows\.h5: /y has 5 rows but /X has 6' run train good.ini --set data.train=$T/rows.h5
    expect "np$np data label" 2 'label\.h5.*7' run train good.ini --set data.train=$T/label.h5
    expect "np$np data nan" 2 'nan\.h5.*NaN' run train good.ini --set data.train=$T/nan.h5
    expect "np$np data width" 2 'wide\.h5.*5.*4|wide\.h5.*4.*5' run train good.ini --set data.train=$T/wide.h5
    expect "np$np test set" 2 'nan\.h5.*NaN' run train good.ini --set data.test=$T/nan.h5
    expect "np$np resume nothing" 2 '--resume latest: no checkpoint' run train good.ini --resume latest
    expect "np$np unwritable dir" 2 'cannot create directory|not writable' run train good.ini --set checkpoint.dir=$T/good.ini/run
    expect "np$np eval usage" 2 'missing --checkpoint' run eval --data good.h5
    expect "np$np diverges" 1 'training diverged at epoch 1, step [0-9]+: the cost is' run train good.ini \
        --set network.output=linear --set network.cost=quadratic --set train.learning_rate=1e6 \
        --set checkpoint.dir=$T/diverged
done
expect "unknown command" 2 "unknown command 'fly'" "$BP" fly

# A finished run, then failing runs pointed at its directory: nothing there changes.
check "good run" "$BP" train good.ini
snapshot() { (cd "$T/run" && find . -type f | sort | xargs md5sum); }
before=$(snapshot)
expect "fresh run over a run" 2 'already holds a run.*--resume latest' "$BP" train good.ini
expect "fresh run over its metrics" 2 'run/metrics\.csv already holds another run' "$BP" train good.ini --set checkpoint.dir=$T/other --set log.metrics=$T/run/metrics.csv
expect "resume other layers" 2 'layers 4,8,3.*4,9,3|4,9,3.*4,8,3' "$BP" train good.ini --set network.layers=4,9,3 --resume latest
expect "resume other hidden" 2 'hidden.*tanh.*relu|hidden.*relu.*tanh' "$BP" train good.ini --set network.hidden=relu --resume latest
expect "resume bad data" 2 'nan\.h5.*NaN' mpi 2 train good.ini --set data.train=$T/nan.h5 --resume latest
expect "resume np2 bad --set" 2 'out of range' mpi 2 train good.ini --set train.lambda=-1 --resume latest
[ "$before" = "$(snapshot)" ] && ok || bad "the run directory changed under failing runs"
finish
