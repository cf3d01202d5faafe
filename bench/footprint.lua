-- Where an idle vat's bytes go, module by module (issue #11). Run with
-- plain Lua 5.4 from the repository's root after `make build`:
--
--   LUA_CPATH='build/lib/?.so;;' LUA_PATH='lua/?.lua;lua/?/init.lua;;' lua5.4 bench/footprint.lua
--
-- Each runtime module an idle vat loads at boot is compiled and stripped as
-- the kernel does (K:setRuntime), then loaded into this state: the growth
-- of the heap is its code, split by counting what `luac -l` lists against
-- Lua 5.4's object sizes on a 64-bit machine (a prototype 128 bytes, an
-- instruction 4, a constant 16, an upvalue descriptor 16, a nested
-- prototype's pointer 8); what the count leaves over is the strings the
-- code interned first. Running the chunk then gives the module's own state
-- (its table, the closures and tables it makes at load). The instances boot
-- makes (liveslots, the ocap table) and the sandbox are what K:vatMemory of
-- a real idle vat holds beyond these; bench/run.lua prints that total.
local BOOT = { 'ocap.pass', 'ocap.promise', 'ocap.marshal', 'ocap.exo', 'ocap.liveslots', 'ocap.api',
  'ocap.vatboot' }

local function bytes()
  collectgarbage()
  collectgarbage()
  return collectgarbage('count') * 1024
end

-- The prototypes of a stripped chunk, from luac's listing.
local function census(dump)
  local path = os.tmpname()
  local f = assert(io.open(path, 'wb'))
  f:write(dump)
  f:close()
  -- -p: the listing only, without writing luac.out where this runs.
  local p = assert(io.popen('luac5.4 -l -p ' .. path))
  local c = { protos = 0, code = 0, k = 0, upv = 0, p = 0 }
  for line in p:lines() do
    local n = line:match('^%a+ <[^>]*> %((%d+) instructions?')
    if n then
      c.protos, c.code = c.protos + 1, c.code + tonumber(n)
    end
    local up, k, fn = line:match('(%d+) upvalues?, %d+ locals?, (%d+) constants?, (%d+) functions?')
    if up then c.upv, c.k, c.p = c.upv + tonumber(up), c.k + tonumber(k), c.p + tonumber(fn) end
  end
  p:close()
  os.remove(path)
  return c
end

local function source(name)
  local path = assert(package.searchpath(name, package.path))
  local f = assert(io.open(path, 'rb'))
  local s = f:read('a')
  f:close()
  return s
end

-- Later requires find what this script loaded, so each module's state
-- counts only its own.
local rows = {}
for _, name in ipairs(BOOT) do
  local dump = string.dump(assert(load(source(name), '=' .. name)), true)
  local c = census(dump)
  local b0 = bytes()
  local chunk = assert(load(dump, '=' .. name, 'b'))
  local b1 = bytes()
  local mod = chunk(name)
  package.loaded[name] = mod == nil and true or mod
  local b2 = bytes()
  local protos = c.protos * 128 + 4 * c.code + 16 * (c.k + c.upv) + 8 * c.p
  rows[#rows + 1] = { name, c, b1 - b0, protos, b2 - b1 }
end

print(('%-16s %6s %6s %6s %6s  %8s %8s %8s %8s %8s'):format('module', 'protos', 'instr', 'consts', 'upvals',
  'code B', 'protos B', 'insns B', 'strings B', 'state B'))
local tot = { 0, 0, 0, 0, 0 }
for _, r in ipairs(rows) do
  local name, c, code, protos, state = r[1], r[2], r[3], r[4], r[5]
  print(('%-16s %6d %6d %6d %6d  %8d %8d %8d %8d %8d'):format(name, c.protos, c.code, c.k, c.upv, code,
    c.protos * 128, 4 * c.code, code - protos, state))
  tot[1], tot[2], tot[3], tot[4], tot[5] = tot[1] + code, tot[2] + c.protos * 128, tot[3] + 4 * c.code,
    tot[4] + code - protos, tot[5] + state
end
print(('%-16s %6s %6s %6s %6s  %8d %8d %8d %8d %8d'):format('total', '', '', '', '', tot[1], tot[2], tot[3], tot[4],
  tot[5]))
