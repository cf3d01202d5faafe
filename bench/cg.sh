#!/bin/sh
# Instructions per operation of a bench script, with callgrind (exact,
# unlike wall clock on a shared machine):
#
#   bench/cg.sh bench/launch.lua 10 30        # per two-vat launch
#   bench/cg.sh bench/roundtrip.lua 200 1200  # per vat-to-vat round trip
#   bench/cg.sh bench/roundtrip.lua 200 1200 db
#
# It runs `valgrind --tool=callgrind build/ocap run SCRIPT N` for N1 and
# N2 (and the optional `db`, which the scripts take to mean LevelDB) and
# prints (total(N2) - total(N1)) / (N2 - N1), which leaves out start-up.
# Run from the repository's root after `make build`; needs valgrind.
set -eu
if [ $# -lt 3 ]; then
  echo "usage: bench/cg.sh SCRIPT N1 N2 [db]" >&2
  exit 2
fi
script=$1 n1=$2 n2=$3 db=${4:-}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
total() {
  valgrind --tool=callgrind --callgrind-out-file="$out/cg.$1" build/ocap run "$script" "$1" $db \
    >/dev/null 2>&1
  callgrind_annotate "$out/cg.$1" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }'
}
a=$(total "$n1")
b=$(total "$n2")
echo "$a $b" | awk -v n1="$n1" -v n2="$n2" -v s="$script" \
  '{ printf "%s: %.0f instructions per op (N=%s: %s, N=%s: %s)\n", s, ($2 - $1) / (n2 - n1), n1, $1, n2, $2 }'
