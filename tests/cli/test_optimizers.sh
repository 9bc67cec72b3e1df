#!/usr/bin/env bash
# optimizer = nesterov, the optimizer added behind the interface (src/opt_nesterov.c): it
# trains, its checkpoints keep its velocity under /optimizer with the name "nesterov", a
# run stopped after epoch 1 and resumed resumes it bit for bit at 2 ranks, and it is not
# sgd with the same momentum.
source "$(dirname "$0")/lib.sh"
$PY "$SRC/tests/cli/make_data.py" "$T" || exit 1
CMP="$PY $SRC/tests/cli/compare_weights.py"
parallel_config p.ini
nesterov="--set train.optimizer=nesterov"
cost() { sed -n "$(($2 + 1))p" "$1" | cut -d, -f3; } # FILE EPOCH: train_cost of that row
less() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 < b + 0) }'; }

check "nesterov: 2 epochs at 2 ranks" mpi 2 train p.ini $nesterov --set train.epochs=2 \
    --set checkpoint.dir=U
check "nesterov: the cost falls" less "$(cost U/metrics.csv 2)" "$(cost U/metrics.csv 1)"
check "nesterov: below chance after one epoch" less "$(cost U/metrics.csv 1)" 1.0986
check "nesterov: its name and velocity in the checkpoint" $PY -c "
import h5py, sys
f = h5py.File('U/latest.h5', 'r')
o = f['optimizer']
v = o['layer_0/vW'][()]
sys.exit(not (o.attrs['name'] in ('nesterov', b'nesterov') and abs(v).max() > 0))"

check "nesterov: stopped after epoch 1" mpi 2 train p.ini $nesterov --set train.epochs=1 \
    --set checkpoint.dir=S
check "nesterov: resumed to epoch 2" mpi 2 train p.ini $nesterov --set train.epochs=2 \
    --set checkpoint.dir=R --resume S/latest.h5
check "nesterov: resumed bit-identical, optimizer state too" $CMP U/latest.h5 R/latest.h5 0 optimizer
check "nesterov: same metrics rows" test "$(cut -d, -f1-8 U/metrics.csv)" = \
    "$(cut -d, -f1-8 S/metrics.csv; tail -n +3 R/metrics.csv | cut -d, -f1-8)"

check "sgd with the same momentum" mpi 2 train p.ini --set train.epochs=2 --set checkpoint.dir=G
$CMP U/latest.h5 G/latest.h5 0 >/dev/null && bad "nesterov: the weights of sgd" || ok
expect "nesterov's checkpoint is not sgd's" 2 "was trained with optimizer = nesterov but the config has sgd" \
    mpi 2 train p.ini --set train.epochs=3 --set checkpoint.dir=X --resume U/latest.h5
finish
