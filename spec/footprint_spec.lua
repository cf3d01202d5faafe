-- What an idle vat costs (issue #11): the kernel compiles its runtime once,
-- strips it, and every vat reads that one buffer; a vat loads the parts of
-- the runtime it does not use at boot only when it first touches them.
-- The bound counts the bytes of the vat's Lua heap (K:vatMemory), which
-- the same code always allocates alike; bench/run.lua prints the figures.
local testing = require 'ocap.testing'

local IDLE = 'spec/vats/idle.lua'

-- An idle vat held 486 KiB before the runtime was shared and stripped,
-- about 171 KiB once ocap.guards, ocap.marshal.reference and the logger
-- loaded on first use, about 141 KiB once ocap.stores and ocap.durable
-- did too, and about 112 KiB once ocap.pass, ocap.marshal, ocap.exo and
-- the promise core were C. The bound, about a fifth above that, leaves
-- room for ordinary growth but not for a per-vat copy of the runtime (85
-- KiB), an unstripped runtime (about 50 KiB), or one of those modules
-- loaded at boot (66, 37, 31 KiB).
local IDLE_BOUND = 136 * 1024

-- Every vat loads these at boot and keeps them: as Lua, each function
-- costs every vat its prototype (prototypes cannot be shared between Lua
-- states), so they are C, and only their rarely used parts load as Lua.
describe('the runtime every vat keeps', function()
  local function cFunctions(name, t)
    local lua = {}
    for k, v in pairs(t) do
      if type(v) == 'function' and debug.getinfo(v, 'S').what ~= 'C' then lua[#lua + 1] = name .. '.' .. k end
    end
    table.sort(lua)
    return lua
  end

  it('has no Lua function in ocap.pass, ocap.marshal, ocap.exo, a marshaller, an exo or the ocap table', function()
    local pass, marshal, exo = require 'ocap.pass', require 'ocap.marshal', require 'ocap.exo'
    local m = marshal.makeMarshal(function() end, function() end)
    local e = exo.makeDefaultExo('e', {})
    local ocap = require('ocap.api').make(nil, nil)
    local lua = {}
    local tables = { pass = pass, marshal = marshal, marshaller = m, codec = pass.codec, exo = exo,
      exoMT = debug.getmetatable(e), ocapMT = getmetatable(ocap), ocapMarshal = ocap.marshal }
    for name, t in pairs(tables) do
      for _, f in ipairs(cFunctions(name, t)) do lua[#lua + 1] = f end
    end
    assert.same({}, lua)
  end)

  it('has no Lua function for the cold parts of liveslots: its kits, baggage shell and presences', function()
    -- A vat's instance, on a store of its own.
    local store = {}
    local syscall = {
      vatstoreGet = function(k) return store[k] end,
      vatstoreSet = function(k, v) store[k] = v end,
    }
    local liveslots = require 'ocap.liveslots'
    local ls = liveslots.make({ syscall = syscall, vatId = 'v1', kind = 'vat' })
    local bag = ls.baggage()
    local presence = ls.presenceFor('o-1')
    local lua = {}
    for name, t in pairs({ ls = { stores = ls.stores, durable = ls.durable, vom = ls.vom },
      baggageMT = debug.getmetatable(bag), presenceMT = debug.getmetatable(presence) }) do
      for _, f in ipairs(cFunctions(name, t)) do lua[#lua + 1] = f end
    end
    assert.same({}, lua)
    -- They still do what they stand for, loading the Lua behind them.
    assert.equal('MapStore(baggage)', tostring(bag))
    assert.equal('[Presence Alleged: presence]', tostring(presence))
    assert.equal('baggage', store['vc.1|label'])
  end)
  it('has no Lua function for E() but its __call until its first call, which puts E\'s own in place', function()
    -- Fresh copies of the modules, as a vat's state loads them.
    local names = { 'ocap.liveslots', 'ocap.liveslots.eventual', 'ocap.liveslots.rare' }
    local saved = {}
    for _, n in ipairs(names) do saved[n], package.loaded[n] = package.loaded[n], nil end
    local ok, err = pcall(function()
      local liveslots = require 'ocap.liveslots'
      local E = liveslots.E
      local function luaOnes()
        local lua = {}
        for name, t in pairs({ E = E, liveslots = { refOf = liveslots.refOf,
          setPipeline = liveslots.setPipeline, stoppedMessage = liveslots.stoppedMessage } }) do
          for _, f in ipairs(cFunctions(name, t)) do lua[#lua + 1] = f end
        end
        table.sort(lua)
        return lua
      end
      assert.same({}, luaOnes())
      local stub = getmetatable(E).__call
      local mine = function() end
      E.get = mine
      local got
      E.when(1, function(v) got = v end)
      require('ocap.promise').drain()
      assert.equal(1, got)
      assert.same({ 'E.get', 'E.sendOnly', 'E.when', 'liveslots.refOf', 'liveslots.setPipeline',
        'liveslots.stoppedMessage' }, luaOnes())
      assert.equal(mine, E.get)
      assert.is_not.equal(stub, getmetatable(E).__call)
    end)
    for _, n in ipairs(names) do package.loaded[n] = saved[n] end
    assert(ok, err)
  end)
end)

describe('an idle vat', function()
  local kernel

  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() kernel:stop() end)

  local function launchIdle()
    local r = kernel:launchSubcluster({ bootstrap = 'v', vats = { v = { sourceSpec = IDLE } } }):await()
    return r.rootKref, kernel:getSubcluster(r.subclusterId).vats.v
  end

  it(('holds less than %d KiB of Lua heap'):format(IDLE_BOUND // 1024), function()
    local _, vatId = launchIdle()
    local bytes = kernel.K:vatMemory(vatId)
    assert.is_true(bytes < IDLE_BOUND, ('an idle vat holds %d bytes'):format(bytes))
  end)

  it('does not keep the source of a module once it is loaded', function()
    local _, idle = launchIdle()
    -- The idle vat with 64 KiB more of source, in a comment.
    local path = testing.tempDir() .. '/padded.lua'
    local src = assert(io.open(IDLE)):read('a')
    local f = assert(io.open(path, 'w'))
    f:write(src, '\n--[[', string.rep('padding ', 8192), ']]\n')
    f:close()
    local r = kernel:launchSubcluster({ bootstrap = 'v', vats = { v = { sourceSpec = path } } }):await()
    local padded = kernel:getSubcluster(r.subclusterId).vats.v
    local more = kernel.K:vatMemory(padded) - kernel.K:vatMemory(idle)
    assert.is_true(more < 16 * 1024, ('the padded vat holds %d bytes more'):format(more))
  end)

  it('gets its logger on first touch', function()
    local root = launchIdle()
    assert.is_true(kernel:queueMessage(root, 'log', { 'hello' }):await())
    local got = {}
    for _, e in ipairs(kernel.logs()) do
      if e.message == 'hello' then got[#got + 1] = e.level .. ' ' .. table.concat(e.tags, ',') end
    end
    assert.same({ 'log ', 'warn sub' }, got)
  end)

  it('fills in a logger taken at start on its first use, out of vat code\'s reach', function()
    local function launch()
      return kernel:launchSubcluster({ bootstrap = 'h', vats = { h = { sourceSpec = 'spec/vats/logger_holder.lua' } } })
        :await().rootKref
    end
    local root = launch()
    -- Before: an empty table whose metatable vat code can neither read
    -- nor replace, and which rawset cannot write.
    assert.same({ 'boolean', true, false, false, true, true }, kernel:queueMessage(root, 'before', {}):await())
    local got = kernel:queueMessage(root, 'use', { 'hello' }):await()
    assert.same({ true, 'function', true, false }, { got[1], got[2], got[3], got[4] })
    assert.matches('use logger:log(...), not logger.log(...)', got[5], 1, true)
    local seen = {}
    for _, e in ipairs(kernel.logs()) do
      if e.message == 'hello' then seen[#seen + 1] = e.level .. ' ' .. table.concat(e.tags, ',') end
    end
    assert.same({ 'log ', 'warn sub' }, seen)
    assert.same({ 'debug:function', 'error:function', 'log:function', 'subLogger:function', 'warn:function' },
      kernel:queueMessage(launch(), 'keys', {}):await())
    assert.same({ 'mine bye', 'function' }, kernel:queueMessage(launch(), 'assign', { 'bye' }):await())
  end)

  it('loads the runtime it needs, not what a replaced global require gives', function()
    local root = launchIdle()
    assert.same({ true, 'function', 0 }, kernel:queueMessage(root, 'hijackRequire', { 'guards' }):await())
    assert.same({ true, 'function', 0 }, kernel:queueMessage(root, 'hijackRequire', { 'logger' }):await())
    assert.same({ true, 'copyArray', 0 }, kernel:queueMessage(root, 'hijackRequire', { 'passStyle' }):await())
  end)

  it('gets the rarer part of liveslots on first touch', function()
    -- E() of a local object, in a vat that has only ever served.
    local r = kernel:launchSubcluster({ bootstrap = 'v', vats = { v = { sourceSpec = 'spec/vats/echo.lua' } } })
      :await()
    local root = kernel:getPresence(r.rootKref)
    assert.equal(7, kernel:queueMessage(r.rootKref, 'call', { root, 'ping', 7 }):await())
  end)

  it('explains a missing endowment with its own code, loaded late', function()
    local root = launchIdle()
    local ok, err = pcall(function() kernel:queueMessage(root, 'hijackThenFail', {}):await() end)
    assert.is_false(ok)
    assert.matches('print is an endowment this vat did not request; add "print" to VatConfig.globals',
      tostring(err.message or err), 1, true)
  end)

  it('gets exo classes and guards on first touch', function()
    local root = launchIdle()
    assert.same({ 7, false }, kernel:queueMessage(root, 'exoClass', { 5 }):await())
  end)

  it('gets symbols, byte arrays, big integers and tagged values on first touch', function()
    local root = launchIdle()
    assert.same({ true, 'function', 0 }, kernel:queueMessage(root, 'hijackRequire', { 'boxes' }):await())
    local got = kernel:queueMessage(root, 'boxes', {}):await()
    local pass = require 'ocap.pass'
    local styles = {}
    for i, v in ipairs(got) do styles[i] = pass.passStyleOf(v) end
    assert.same({ 'symbol', 'byteArray', 'bigint', 'tagged' }, styles)
  end)

  it('gets durable stores on first touch', function()
    local root = launchIdle()
    assert.equal('v', kernel:queueMessage(root, 'store', { 'k', 'v' }):await())
  end)

  it('gets the promise combinators on first touch', function()
    local root = launchIdle()
    assert.same({ 1, 2, 3, 4, 'rejected' }, kernel:queueMessage(root, 'combinators', {}):await())
  end)

  it('hands out its baggage before its store code loads', function()
    local root = launchIdle()
    local got = kernel:queueMessage(root, 'baggage', {}):await()
    assert.same({ 'MapStore(baggage)', false, 'remotable' }, { got[1], got[2], got[3] })
    -- The baggage went out as the store it is, and comes back as itself.
    assert.equal(0, kernel:queueMessage(got[4], 'getSize', {}):await())
    assert.is_true(kernel:queueMessage(root, 'isBaggage', { got[4] }):await())
    assert.equal('v', kernel:queueMessage(root, 'store', { 'k', 'v' }):await())
    assert.equal(1, kernel:queueMessage(got[4], 'getSize', {}):await())
  end)

  it('gets durable exos on first touch', function()
    local root = launchIdle()
    assert.same({ 42, 'boxed' }, kernel:queueMessage(root, 'durable', {}):await())
  end)

  it('gets E() on its first call, as if it had always been there', function()
    local r = kernel:launchSubcluster({ bootstrap = 'v', vats = { v = { sourceSpec = 'spec/vats/eventual.lua' } } })
      :await()
    local errors = kernel:queueMessage(r.rootKref, 'nilTarget', { false }):await()
    assert.matches('^spec/vats/eventual%.lua:%d+: E: target is nil$', errors[1])
    assert.equal(errors[1], errors[2])
    r = kernel:launchSubcluster({ bootstrap = 'v', vats = { v = { sourceSpec = 'spec/vats/eventual.lua' } } })
      :await()
    assert.same({ 'E: target is nil', 'E: target is nil' }, kernel:queueMessage(r.rootKref, 'nilTarget', { true })
      :await())
    r = kernel:launchSubcluster({ bootstrap = 'v', vats = { v = { sourceSpec = 'spec/vats/eventual.lua' } } })
      :await()
    assert.same({ 7, 9, true, 'mine' }, kernel:queueMessage(r.rootKref, 'replaced', {}):await())
  end)
end)
