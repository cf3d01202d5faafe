-- A vat that attacks the runtime's C functions (issue #11 moved much of
-- the runtime to C): each method returns what the attack produced, or the
-- error it raised, so that a spec can check that the kernel survived and
-- the vat's code saw the Lua behaviour.
local ocap = require 'ocap'
local P = require 'ocap.promise'

local M = {}

-- A call with more arguments than a C function's guaranteed stack room,
-- after a stack grown to its limit: a C function that copies its
-- arguments must make room for them first.
local EXTRA = 600000

local function extra()
  local t = {}
  for i = 1, EXTRA do t[i] = i end
  return t
end

-- A slots table whose length (rawlen, 2^61) is far beyond what it holds:
-- a decoder that sizes its work by that length must not overflow.
local function sparseSlots()
  local t = { [1] = 1, [2] = 1, [4] = 1, [5] = 1, [8] = 1, [9] = 1 }
  local j = 16
  while j <= 2 ^ 61 do
    t[math.tointeger(j)] = 1
    j = j * 2
  end
  return t
end

function M.buildRootObject()
  return ocap.makeDefaultExo('hostile_c', {
    repExtraArgs = function() return string.rep('a', 2, '', table.unpack(extra())) end,
    sparseSlots = function()
      local slots = sparseSlots()
      local m = require('ocap.marshal').makeMarshal(function() end, function() return 'slot' end)
      local ok, err = pcall(m.unserialize, { body = '#"$100000000"', slots = slots })
      return { #slots == math.tointeger(2 ^ 61), ok, tostring(err) }
    end,
    -- The token a worker yields when its task is done, yielded by a task
    -- itself, must not make the worker look idle: the next task would
    -- resume the yield, handing the task and its arguments to this code.
    stealTask = function()
      local kit, worker = P.makePromiseKit(), nil
      P.spawn(function()
        worker = coroutine.running()
        return kit.promise:await()
      end)
      coroutine.resume(worker) -- awaits again, yielding to this code
      kit.resolve(1)
      local _, done = coroutine.resume(worker) -- ends its task
      local stolen = 'nothing'
      P.spawn(function()
        local _, _, arg = coroutine.yield(done)
        stolen = tostring(arg)
      end)
      local p = P.spawn(function(a) return a end, 'secret')
      return { stolen, P.state(p) }
    end,
    -- The runtime loads some modules on first use and calls them with the
    -- raw syscall table or liveslots' state: a module vat code could
    -- change would hand those over.
    interceptRuntime = function()
      local got, errors = {}, {}
      local function spy(...)
        for _, v in ipairs({ ... }) do
          if type(v) == 'table' and (rawget(v, 'syscall') or rawget(v, 'send')) then got[#got + 1] = v end
        end
      end
      local targets = {
        ['ocap.vatboot.rare'] = { 'log', 'unhandled', 'explain', 'fillLogger' },
        ['ocap.vatboot.endow'] = { 'make' },
        ['ocap.liveslots.gc'] = { 'make' },
        ['ocap.liveslots.rare'] = { 'make' },
        ['ocap.liveslots.kits'] = { 'stores', 'gc', 'bagIndex', 'presenceString' },
        ['ocap.liveslots.eventual'] = { 'call', 'install', 'refOf', 'sendOnly' },
        ['ocap.stores'] = { 'make' },
      }
      for name, fields in pairs(targets) do
        local m = require(name)
        for _, f in ipairs(fields) do
          local ok, err = pcall(function() m[f] = spy end)
          if not ok then errors[#errors + 1] = tostring(err) end
          ok = pcall(rawset, m, f, spy)
          if not ok then errors[#errors + 1] = 'rawset' end
          local _, t = pairs(m)
          if t ~= m then errors[#errors + 1] = 'pairs handed out the module' end
        end
      end
      P.reject('unhandled, logged by the runtime')
      P.drain()
      local fields = 0
      for k, v in pairs(require('ocap.promise')) do
        if type(k) == 'string' and type(v) == 'function' then fields = fields + 1 end
      end
      return { #got, #errors, errors[1] or 'none', fields > 10 }
    end,
    -- E()'s module (ocap.liveslots.eventual) takes liveslots' shared
    -- table at its first call: one vat code makes, with the view of
    -- ocap.liveslots it can get, is refused, and E() still routes
    -- through the runtime's own tables.
    ping = function(_, x) return x end,
    fakeEventual = function(_, target)
      local eventual = require('ocap.liveslots.eventual')
      local fake = { M = require('ocap.liveslots') }
      eventual.install(fake)
      local ok = pcall(eventual.call, fake, ocap.E, target)
      return { ok, rawget(fake, 'eventualSend') == nil, ocap.E(target).ping(5):await() }
    end,
    -- ocap.marshal reads through to the ocap.marshal module, which the
    -- runtime uses too: its metatable must not hand the module out.
    marshalModule = function()
      local mt = getmetatable(ocap.marshal)
      local module = type(mt) == 'table' and rawget(mt, '__index')
      if type(module) == 'table' then
        module.serializeData = function() return { body = '#"forged"', slots = {} } end
      end
      return { type(mt), require('ocap.marshal').serializeData(1).body }
    end,
    -- The C core sets the promise metatable on every promise it makes: a
    -- __gc written into it would make a finalizer of vat code, which Lua
    -- runs with the instruction meter off. Returns what getmetatable
    -- answered, whether writing __gc there worked, and how many times
    -- the finalizer ran for the promises made after.
    promiseFinalizer = function()
      local ran = 0
      local mt = getmetatable(P.resolve(1))
      local wrote = type(mt) == 'table' and pcall(rawset, mt, '__gc', function() ran = ran + 1 end)
      for i = 1, 300 do P.resolve(i) end
      local churn = {}
      for i = 1, 300000 do churn[i % 100 + 1] = {} end
      if wrote then rawset(mt, '__gc', nil) end
      return { type(mt), wrote, ran, P.isPromise(P.resolve(1)), #churn }
    end,
    -- ocap.promise.track(t, key) writes t[key] raw: on a protected table
    -- (a hardened one, an exo) it must refuse as the vat's rawset does.
    -- Returns what each write answered and what the tables read after.
    trackProtected = function()
      local hard = ocap.harden({ a = 1 })
      local okH, errH = pcall(P.track, hard, 'a')
      local okP, errP = pcall(P.track, {}, 'k')
      return { okH, tostring(errH), hard.a, okP, P.isPromise(errP) }
    end,
    concatExtraArgs = function() return table.concat({ 'x', 'y' }, ',', 1, 2, table.unpack(extra())) end,
  })
end

return M
