#!/usr/bin/env bash
# Installs ocap with `cmake --install` into a temporary prefix, moves the
# prefix elsewhere, and checks that the installed `ocap` runs a host script
# with its own installed modules: none from the source tree it was built
# from, none from a path baked in at build time.
#   spec/install_test.sh BUILD_DIR
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$src/build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log"; exit 1; }
mv "$tmp/prefix" "$tmp/moved"
cp "$src/vats/examples/bob.lua" "$tmp/bob.lua"
cat >"$tmp/host.lua" <<'LUA'
local moved, src = ...
local where = package.searchpath('ocap.cli', package.path)
assert(where and where:find(moved, 1, true) == 1, 'ocap.cli not loaded from the install: ' .. tostring(where))
for dir in package.path:gmatch('[^;]+') do
  assert(not dir:find(src, 1, true), 'the source tree is on package.path: ' .. dir)
end
local ocap = require 'ocap'
local k = ocap.Kernel.make { logger = function() end }
local r = k:launchSubcluster({ bootstrap = 'b', vats = { b = { sourceSpec = 'bob.lua' } } }):await()
print(k:queueMessage(r.rootKref, 'hello', { 'install' }):await())
-- Omnium's controller vat ships with the install.
local entry = require('ocap.omnium').subcluster()
local vat = entry.config.vats.controller.sourceSpec
assert(vat:find(moved, 1, true) == 1, 'omnium controller not from the install: ' .. vat)
LUA
cd "$tmp"
out=$(env -u LUA_PATH -u LUA_CPATH -u OCAP_LUADIR "$tmp/moved/bin/ocap" run host.lua "$tmp/moved" "$src")
test "$out" = 'Hello, install! This is Bob.' || { echo "unexpected output: $out"; exit 1; }
# Found on PATH (argv[0] is then a bare name), through a symbolic link.
ln -s "$tmp/moved/bin/ocap" "$tmp/ocap-link"
out=$(env -u LUA_PATH -u LUA_CPATH -u OCAP_LUADIR PATH="$tmp/moved/bin:$PATH" ocap run host.lua "$tmp/moved" "$src")
test "$out" = 'Hello, install! This is Bob.' || { echo "unexpected output on PATH: $out"; exit 1; }
out=$(env -u LUA_PATH -u LUA_CPATH -u OCAP_LUADIR "$tmp/ocap-link" run host.lua "$tmp/moved" "$src")
test "$out" = 'Hello, install! This is Bob.' || { echo "unexpected output by a link: $out"; exit 1; }
# The installed C module and Lua modules also serve stock lua5.4.
out=$(env -u OCAP_LUADIR LUA_PATH="$tmp/moved/share/lua/5.4/?.lua;$tmp/moved/share/lua/5.4/?/init.lua;;" \
  LUA_CPATH="$tmp/moved/lib/lua/5.4/?.so;;" lua5.4 host.lua "$tmp/moved" "$src" 2>&1) ||
  { echo "$out"; exit 1; }
echo "install ok: $out"
