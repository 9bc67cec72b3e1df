#!/bin/bash
# No string in the library's sources names a command-line flag ("--force"): the library
# says what is wrong (and returns a code the program can test), the CLI which flag fixes it.
# Usage: check_messages.sh SOURCE_DIR
set -u
src=$1
fail=0
# String literals of the library's sources (comments stripped) that name a --flag.
flags=$(for f in "$src"/src/*.c "$src"/src/*.h; do
    sed -e 's://.*$::' "$f" | perl -0pe 's{/\*.*?\*/}{$& =~ tr/\n//cdr}gse' |
        grep -noE '"([^"\\]|\\.)*--[a-z][a-z-]*([^"\\]|\\.)*"' | sed "s|^|${f#"$src"/}:|"
done)
if [ -n "$flags" ]; then
    echo "$flags"
    echo "check_messages: a library message names a command-line flag (above): say what is wrong, and let src/cli name the flag"
    fail=1
fi

[ $fail = 0 ] && echo "check_messages: ok"
exit $fail
