#!/usr/bin/env bash
# Lints the rockspec, installs the rock into a private tree with
# `luarocks make`, offline, and checks that stock lua5.4 can require 'ocap'
# from it and run a subcluster, and that the tree's `ocap` command runs a
# host script with the tree's modules, also once the tree has moved.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tree=$tmp/tree
# Debian's lua-cjson (apt) is not a rock: tell luarocks it is provided, as
# README.md tells users to, so that nothing is fetched.
cat >"$tmp/config.lua" <<'LUA'
rocks_provided = { ["lua-cjson"] = "2.1.0-1" }
LUA
export LUAROCKS_CONFIG=$tmp/config.lua
# luarocks' cmake build works in build.luarocks/ inside the directory it
# runs in; in the checkout that directory would be shared by concurrent
# runs (make test and make asan) and kept between them, so build from a
# private copy of the checkout, without its build directories.
mkdir "$tmp/src"
(cd "$src" && tar --exclude=./.git --exclude=./build --exclude='./build-*' \
  --exclude=./build.luarocks --exclude=./.ocap -cf - .) | tar -xf - -C "$tmp/src"
cd "$tmp/src"
luarocks --lua-version 5.4 lint rockspec/ocap-scm-1.rockspec
test -f LICENSE || { echo 'the LICENSE file the rockspec names is missing'; exit 1; }
luarocks --lua-version 5.4 --tree "$tree" make rockspec/ocap-scm-1.rockspec >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log"; exit 1; }
unset LUA_PATH LUA_CPATH OCAP_LUADIR
eval "$(luarocks --lua-version 5.4 --tree "$tree" path)"
cd /
lua5.4 - "$tree" "$src" <<'LUA'
local tree, src = arg[1], arg[2]
local where = package.searchpath('ocap', package.path)
assert(where and where:find(tree, 1, true) == 1, 'ocap not loaded from the rock: ' .. tostring(where))
local ocap = require 'ocap'
local k = ocap.Kernel.make { logger = function() end }
local r = k:launchSubcluster({ bootstrap = 'b', vats = { b = { sourceSpec = src .. '/vats/examples/bob.lua' } } }):await()
local answer = k:queueMessage(r.rootKref, 'hello', { 'rock' }):await()
assert(answer == 'Hello, rock! This is Bob.', answer)
k:stop()
print('rock ok: ' .. where)
LUA
# The tree's ocap command, with the tree moved away from where it was built.
unset LUA_PATH LUA_CPATH
mv "$tree" "$tmp/moved"
cat >"$tmp/host.lua" <<'LUA'
local moved, src = ...
local where = package.searchpath('ocap.cli', package.path)
assert(where and where:find(moved, 1, true) == 1, 'ocap.cli not loaded from the rock: ' .. tostring(where))
for dir in package.path:gmatch('[^;]+') do
  assert(not dir:find(src, 1, true), 'the source tree is on package.path: ' .. dir)
end
local ocap = require 'ocap'
local k = ocap.Kernel.make { logger = function() end }
local r = k:launchSubcluster({ bootstrap = 'b', vats = { b = { sourceSpec = src .. '/vats/examples/bob.lua' } } }):await()
print(k:queueMessage(r.rootKref, 'hello', { 'rock' }):await())
LUA
out=$("$tmp/moved/bin/ocap" run "$tmp/host.lua" "$tmp/moved" "$src")
test "$out" = 'Hello, rock! This is Bob.' || { echo "unexpected output: $out"; exit 1; }
echo "rock's ocap ok"
