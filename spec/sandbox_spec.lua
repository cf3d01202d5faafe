-- Hostile vats (issue #6): each attempt to reach something the vat was not
-- given fails with a clear error, and the kernel and other vats carry on.
local testing = require 'ocap.testing'
local ocap = require 'ocap'

local HOSTILE = 'spec/vats/hostile.lua'
local ECHO = 'spec/vats/echo.lua'

describe('the vat sandbox', function()
  local kernel, root, other
  setup(function()
    kernel = testing.makeKernel()
    root = kernel:launchSubcluster({ bootstrap = 'h', vats = { h = { sourceSpec = HOSTILE } } }):await().rootKref
    other = kernel:launchSubcluster({ bootstrap = 'e', vats = { e = { sourceSpec = ECHO } } }):await().rootKref
  end)
  teardown(function() kernel:stop() end)

  local function attempt(name)
    return kernel:queueMessage(root, 'attempt', { name }):await()
  end

  local expected = {
    io = "global 'io'",
    os = "global 'os'",
    debug = "global 'debug'",
    package = "global 'package'",
    load = "global 'load'",
    loadstring = "global 'loadstring'",
    dofile = "global 'dofile'",
    loadfile = "global 'loadfile'",
    collectgarbage = "global 'collectgarbage'",
    ['string.dump'] = "field 'dump'",
    ['require outside the bundle'] = "module 'os' not found in this vat",
    ['require the kernel'] = "module 'ocap.kernel' not found in this vat",
    ['require the C core'] = "module 'ocap.core' not found in this vat",
    ['string metatable'] = 'the string metatable is locked',
    ['setmetatable on an exo'] = 'protected metatable',
    ['getmetatable of an exo'] = 'the metatable is locked: exo',
    ['assign to an exo'] = 'cannot modify exo',
    ['rawset on an exo'] = 'protected',
    ['assign to a hardened table'] = 'cannot modify hardened table',
    ['assign to a nested hardened table'] = 'cannot modify hardened table',
    ['rawset on a hardened table'] = 'protected',
    ['setmetatable on a hardened table'] = 'protected metatable',
    ['setmetatable on baggage'] = 'protected metatable',
    ['rawset on baggage'] = 'protected',
    ['global leak'] = "global '_G'",
    ["vatPowers' __index on a string"] = 'table expected',
    ["vatPowers' __index on an exo"] = 'protected',
    ["ocap's __index on a string"] = 'table expected',
    ["ocap's __index on a hardened table"] = 'protected',
  }

  for name, message in pairs(expected) do
    it('refuses: ' .. name, function()
      local r = attempt(name)
      assert.is_false(r.ok, name .. ' succeeded')
      assert.matches(message, r.err, 1, true)
    end)
  end

  it('covers every attempt the hostile vat knows', function()
    local names = kernel:queueMessage(root, 'names', {}):await()
    for _, name in ipairs(names) do
      if name ~= 'string method' then
        assert.is_truthy(expected[name], 'no expectation for ' .. name)
      end
    end
  end)

  it('keeps string methods even when the vat replaces string.upper', function()
    local r = attempt('string method')
    assert.equal('X', r.ok and 'X' or r.err)
  end)

  it('still runs everyday patterns on long strings', function()
    assert.same({ 21999, 2000, 8 }, kernel:queueMessage(root, 'patterns', {}):await())
  end)

  it('leaves the vat, its objects and other vats working', function()
    assert.equal('hello 1 X', kernel:queueMessage(root, 'stillFine', {}):await())
    assert.equal(4, kernel:queueMessage(other, 'ping', { 4 }):await())
  end)

  it('shows vats presences, never krefs', function()
    local p = kernel:queueMessage(other, 'makeThing', { 'x' }):await()
    local s = kernel:queueMessage(root, 'presenceString', { p }):await()
    assert.matches('Presence', s)
    assert.not_matches('ko%d', s)
  end)
end)

describe('a forged vref', function()
  it('is vat-fatal: ILLEGAL_SYSCALL, crank rolled back, promises rejected', function()
    local kernel = testing.makeKernel()
    local h = kernel:launchSubcluster({ bootstrap = 'h', vats = { h = { sourceSpec = HOSTILE } } }):await()
    local e = kernel:launchSubcluster({ bootstrap = 'c', vats = { c = { sourceSpec = 'spec/vats/counter.lua' } } })
      :await()
    local p = kernel:getPresence(e.rootKref, 'counter')
    local pending = kernel:queueMessage(h.rootKref, 'never', {})
    local ok, err = pcall(ocap.await, kernel:queueMessage(h.rootKref, 'forge', { p }))
    assert.is_false(ok)
    assert.equal('VAT_FATAL:ILLEGAL_SYSCALL', err.code)
    assert.matches("unknown import 'o%-999'", err.message)
    ok, err = pcall(ocap.await, pending)
    assert.is_false(ok)
    assert.equal('VAT_TERMINATED', err.code)
    local dead = kernel:getStatus().terminatedVats
    assert.equal(1, #dead)
    assert.matches('ILLEGAL_SYSCALL', dead[1].reason)
    -- The forging crank was rolled back: the increment it sent first never
    -- reached the counter.
    kernel:run()
    assert.equal(0, kernel:queueMessage(e.rootKref, 'get', {}):await())
    assert.is_nil(kernel.K:kvNext('vs.' .. dead[1].id .. '.'))
    assert.equal('OBJECT_DELETED', select(2, pcall(ocap.await, kernel:queueMessage(h.rootKref, 'ping', { 1 }))).code)
    assert.equal(1, kernel:queueMessage(e.rootKref, 'increment', {}):await())
    kernel:stop()
  end)
end)

describe('a forged promise number', function()
  -- Liveslots hands the resolve syscall a delivery's result as a number
  -- (2efd09d): the kernel reads it as the vpid p-<n> of the vat's c-list.
  local cases = {
    held = "v1 may not resolve 'p%-%d+': it is not the decider",
    unknown = "vat v1 used unknown import 'p%-777'",
    huge = "vat v1 used unknown import 'p%-9007199254740992'",
    max = "vat v1 used unknown import 'p%-9223372036854775807'",
  }
  for how, message in pairs(cases) do
    it('is vat-fatal: ' .. how, function()
      local kernel = testing.makeKernel()
      local h = kernel:launchSubcluster({ bootstrap = 'h', vats = { h = { sourceSpec = HOSTILE } } }):await()
      local kit = ocap.makePromiseKit()
      local ok, err = pcall(ocap.await, kernel:queueMessage(h.rootKref, 'forgeResult', { kit.promise, how }))
      assert.is_false(ok)
      assert.equal('VAT_FATAL:ILLEGAL_SYSCALL', err.code)
      assert.matches(message, err.message)
      -- The promise the vat held is still the host's to resolve.
      kit.resolve(5)
      assert.equal(5, ocap.await(kit.promise))
      kernel:run()
      assert.is_true(kernel.K:check())
      kernel:stop()
    end)
  end

  it('is an ordinary error when it is not positive', function()
    local kernel = testing.makeKernel()
    local h = kernel:launchSubcluster({ bootstrap = 'h', vats = { h = { sourceSpec = HOSTILE } } }):await()
    local ok, err = pcall(ocap.await, kernel:queueMessage(h.rootKref, 'forgeResult',
      { ocap.makePromiseKit().promise, 'zero' }))
    assert.is_false(ok)
    assert.matches('promise number must be positive', tostring(err.message or err))
    assert.equal(1, kernel:queueMessage(h.rootKref, 'ping', { 1 }):await())
    kernel:stop()
  end)
end)

describe('loading vat code', function()
  local kernel
  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() kernel:stop() end)

  it('refuses a binary chunk in a bundle', function()
    local bundle = require 'ocap.bundle'
    local dir = testing.tempDir()
    local b = { format = 'ocap-bundle-1', main = 'main', modules = {
      main = string.dump(load("return { buildRootObject = function() end }")) } }
    local f = assert(io.open(dir .. '/bin.bundle', 'wb'))
    f:write(bundle.encode(b))
    f:close()
    local ok, err = pcall(ocap.await, kernel:launchSubcluster({ bootstrap = 'b',
      vats = { b = { bundleSpec = dir .. '/bin.bundle' } } }))
    assert.is_false(ok)
    assert.matches('binary', err.message)
  end)

  it('runs a vat from a bundle made by ocap bundle, with its own modules', function()
    local dir = testing.tempDir()
    local bin = os.getenv('OCAP_BIN') or 'build/ocap'
    local f = assert(io.open(dir .. '/helper.lua', 'w'))
    f:write("return { twice = function(x) return 2 * x end }\n")
    f:close()
    f = assert(io.open(dir .. '/main.lua', 'w'))
    f:write([[
local ocap = require 'ocap'
local helper = require 'helper'
return { buildRootObject = function()
  return ocap.makeDefaultExo('m', { twice = function(_, x) return helper.twice(x) end })
end }
]])
    f:close()
    assert.is_true(os.execute(bin .. ' bundle ' .. dir .. '/main.lua -o ' .. dir .. '/main.bundle >/dev/null'))
    os.remove(dir .. '/helper.lua')
    local r = kernel:launchSubcluster({ bootstrap = 'm', vats = { m = { bundleSpec = dir .. '/main.bundle' } } })
      :await()
    assert.equal(14, kernel:queueMessage(r.rootKref, 'twice', { 7 }):await())
  end)
end)

describe('the raw syscall table', function()
  it('is reachable from nothing vat code can walk', function()
    local kernel = testing.makeKernel()
    local echo = kernel:launchSubcluster({ bootstrap = 'e', vats = { e = { sourceSpec = ECHO } } }):await()
    for _, globals in ipairs({ {}, { 'setTimeout', 'setInterval', 'print' } }) do
      local r = kernel:launchSubcluster({ bootstrap = 'p', vats = {
        p = { sourceSpec = 'spec/vats/syscall_probe.lua', globals = globals } } }):await()
      kernel:queueMessage(r.rootKref, 'setPeer', { kernel:getPresence(echo.rootKref) }):await()
      assert.same({}, kernel:queueMessage(r.rootKref, 'search', {}):await())
    end
    kernel:stop()
  end)

  -- Only the runtime's boot module ever holds the table. A stand-in for it
  -- (given to the C core directly, as only the host can) lists what it got:
  -- the table's fields, and collectGarbage, which its __index gives.
  local FAKE_BOOT = [[
local M = {}
function M.boot(syscall)
  local names = {}
  for k in pairs(syscall) do names[#names + 1] = k end
  if rawget(syscall, 'collectGarbage') == nil and type(syscall.collectGarbage) == 'function' then
    names[#names + 1] = 'collectGarbage'
  end
  table.sort(names)
  syscall.log('log', '#{"message":"' .. table.concat(names, ' ') .. '"}')
  return function(kind) if kind == 'startVat' then return true end end, {}, {}
end
return M
]]

  local function syscallsOf(globals)
    local core = require 'ocap.core'
    local K = assert(core.open({}))
    local got
    K:setLogger(function(_, _, payload) got = payload:match('^#{"message":"(.*)"}$') end)
    K:setRuntime({ { 'ocap.vatboot', FAKE_BOOT } })
    assert(K:createVat('v1', { main = 'm', modules = { m = 'return {}' }, globals = globals }))
    K:stopVat('v1')
    K:close()
    return got
  end

  it('holds timer syscalls only for a vat endowed with timers', function()
    local base = 'abandonExports collectGarbage decode dropImports exit log resolve retireExports retireImports '
      .. 'send sendNumbered subscribe traceback vatstoreDelete vatstoreGet vatstoreNext vatstoreSet'
    local timers = 'abandonExports collectGarbage decode dropImports exit log resolve retireExports retireImports '
      .. 'send sendNumbered subscribe timerStart timerStop traceback vatstoreDelete vatstoreGet vatstoreNext '
      .. 'vatstoreSet'
    assert.equal(base, syscallsOf(''))
    assert.equal(base, syscallsOf('print os.time clearTimeout clearInterval'))
    assert.equal(timers, syscallsOf('setTimeout'))
    assert.equal(timers, syscallsOf('print setInterval'))
  end)
end)
