#!/bin/bash
# The layers, checked: the library's public names are the public headers' and no others,
# and the CLI is a client of those headers alone.
#   - every global symbol libbackprop.a defines that starts with bp_ (one underscore) is
#     declared in include/backprop/*.h; private ones take bp__ (DEVELOPERS.md);
#   - no public header names a bp__ symbol;
#   - src/cli/*.c and *.h include no header of src/ but the CLI's own cli.h and args.h.
# Usage: check_symbols.sh LIBBACKPROP.A SOURCE_DIR
set -u
lib=$1 src=$2
fail=0
headers=("$src"/include/backprop/*.h)

public=$(cat "${headers[@]}")
for sym in $(nm -g --defined-only "$lib" | awk 'NF == 3 && $2 ~ /^[TDRBVW]$/ { print $3 }' |
             grep -E '^bp_[a-zA-Z0-9]' | sed 's/\..*//' | sort -u); do
    if ! grep -Eq "\\b$sym[[:space:]]*[([;]" <<<"$public"; then
        echo "check_symbols: $sym is global in $(basename "$lib") but not declared in include/backprop/*.h: declare it there, or rename it bp__${sym#bp_} (or make it static)"
        fail=1
    fi
done

if grep -nE '\bbp__[a-zA-Z0-9_]+' "${headers[@]}"; then
    echo "check_symbols: a public header names a private bp__ symbol (above)"
    fail=1
fi

if grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$src"/src/cli/*.c "$src"/src/cli/*.h |
    grep -vE '#[[:space:]]*include[[:space:]]*"(backprop/[a-z_]+\.h|cli\.h|args\.h)"'; then
    echo "check_symbols: src/cli includes a header of src/ (above): the CLI uses include/backprop/*.h alone"
    fail=1
fi

[ $fail = 0 ] && echo "check_symbols: ok"
exit $fail
