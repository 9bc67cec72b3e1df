#!/usr/bin/env bash
# backprop gradcheck: one line per layer, then the max relative error; exit 1 above the
# tolerance; the same result alone and under mpirun.
source "$(dirname "$0")/lib.sh"
$PY "$SRC/tests/cli/make_data.py" "$T" || exit 1
write_config g.ini '[data]' "train=$T/good.h5" \
    '[network]' 'layers=4, 6, 5, 3' hidden=tanh output=softmax cost=cross_entropy \
    '[train]' epochs=1 batch_size=8 learning_rate=0.1 lambda=3
check "gradcheck passes" "$BP" gradcheck g.ini
cp "$T/check.out" alone.out
check "three layer lines and a total" grep -cE '^layer [0-2] ' alone.out
[ "$(grep -cE '^layer [0-2] ' alone.out)" -eq 3 ] && ok || bad "expected 3 layer lines"
tail -1 alone.out | grep -qE '^max relative error: [0-9.e+-]+$' && ok || bad "last line: $(tail -1 alone.out)"
check "gradcheck np3" mpi 3 gradcheck g.ini --examples 10
"$BP" gradcheck g.ini --examples 10 >alone10.out 2>&1
# The numbers are computed from the same sums up to rounding: same structure, same verdict.
[ "$(grep -c '^layer' "$T/check.out")" -eq 3 ] && ok || bad "np3 output: $(cat "$T/check.out")"
"$BP" gradcheck g.ini --tolerance 1e-30 >/dev/null 2>&1
[ $? -eq 1 ] && ok || bad "an impossible tolerance must exit 1"
for h in sigmoid relu linear; do
    for o in "sigmoid cross_entropy" "softmax quadratic" "linear quadratic"; do
        set -- $o
        check "gradcheck $h/$1/$2" "$BP" gradcheck g.ini --set network.hidden=$h \
            --set network.output=$1 --set network.cost=$2
    done
done
# Seed 000's experiment passes in this build as it ships, float included (its first
# layer's gradients are ~1e-4).
check "seed 000: gradcheck configs/xor.ini" "$BP" gradcheck "$SRC/configs/xor.ini"
expect "gradcheck bad epsilon" 2 'epsilon: expected a positive number' "$BP" gradcheck g.ini --epsilon -1
finish
