#!/usr/bin/env bash
# The C embedding example (host/examples/embed): run as built here, then
# built out of tree with `env -u LD_PRELOAD cc app.c $(pkg-config --cflags --libs ocap)`
# against a `cmake --install` into a temporary prefix, and run again with
# only that prefix's modules and library.
#   spec/embed_test.sh BUILD_DIR
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$src/build}
ex=$src/host/examples/embed
want='launched
sum(2, 3) -> ok {"by":"C","total":5}
later(21) -> ok 42
broken() -> error [KERNEL:DELIVERY_FAILED] calc: this method always fails
ticker fired alongside: yes'
check() {
  test "$1" = "$want" || { printf 'unexpected output:\n%s\n' "$1"; exit 1; }
}
check "$("$build/embed_app" "$ex")"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# cmake and cc run without the sanitizer preload of `make asan`.
env -u LD_PRELOAD cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log"; exit 1; }
mv "$tmp/prefix" "$tmp/moved"
cp "$ex/app.c" "$ex/cluster.lua" "$ex/adder-vat.lua" "$tmp/"
cd "$tmp"
export PKG_CONFIG_PATH="$tmp/moved/lib/pkgconfig"
# shellcheck disable=SC2046
env -u LD_PRELOAD cc app.c $(pkg-config --cflags --libs ocap) -Wl,-rpath,"$tmp/moved/lib" -o app
check "$(env -u LUA_PATH -u LUA_CPATH -u OCAP_LUADIR ./app "$tmp")"
echo "embed ok"
