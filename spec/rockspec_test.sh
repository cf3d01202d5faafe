#!/usr/bin/env bash
# Installs the rock into a private tree with `luarocks make` and checks
# that stock lua5.4 can require 'ocap' from it and run a subcluster.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
cd "$src"
luarocks --lua-version 5.4 lint rockspec/ocap-scm-1.rockspec
luarocks --lua-version 5.4 --tree "$tree" make rockspec/ocap-scm-1.rockspec >"$tree/install.log" 2>&1 ||
  { cat "$tree/install.log"; exit 1; }
unset LUA_PATH LUA_CPATH
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
