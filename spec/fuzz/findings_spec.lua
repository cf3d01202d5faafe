-- Inputs the fuzz targets (spec/fuzz) found mishandled, replayed through a
-- real kernel. Each input is also in the target's seed corpus, which
-- `ctest -R fuzz/` runs first on every run.
local testing = require 'ocap.testing'
local marshal = require 'ocap.marshal'
local ocap = require 'ocap'
local support = require 'support'

local ECHO = 'spec/vats/echo.lua'

local function launchEcho(kernel)
  return kernel:launchSubcluster({ bootstrap = 'echo', vats = { echo = { sourceSpec = ECHO } } }):await()
end

-- Sends a message whose methargs body is given verbatim, as no host API
-- would write it, from the kernel's endpoint; returns its result promise.
local function sendRaw(kernel, target, body)
  local kpid = kernel.K:allocPromise('kernel')
  local p = kernel.ls.trackPromise(kpid)
  kernel.K:send(target, body, {}, kpid)
  kernel.K:commit()
  return p
end

describe('vat JSON decoder (fuzz findings)', function()
  local kernel, root
  before_each(function()
    kernel = testing.makeKernel()
    root = launchEcho(kernel).rootKref
  end)
  after_each(function() kernel:stop() end)

  it('reads an integer beyond 2^53 as the host and JSON.parse do', function()
    local body = '#["echo",[9007199254740993]]'
    local host = marshal.unserializeData({ body = body, slots = {} })[2][1]
    assert.are.equal(9007199254740992, host)
    assert.are.equal(host, ocap.await(sendRaw(kernel, root, body)))
  end)

  it('refuses a lone surrogate escape, which has no UTF-8 encoding', function()
    for _, s in ipairs({ '\\ud800', '\\udfff', '\\ud800\\u0041', 'x\\udc00' }) do
      local err = support.rejection(sendRaw(kernel, root, '#["echo",["' .. s .. '"]]'))
      assert.matches('lone surrogate', err.message, 1, true)
    end
    -- A pair is one character.
    assert.are.equal('\u{1F600}', ocap.await(sendRaw(kernel, root, '#["echo",["\\ud83d\\ude00"]]')))
  end)

  it('refuses numbers that are not JSON', function()
    for _, n in ipairs({ '+1', '01', '-01', '.5', '1.', '1.e5', '-.5', '0x10', '1e', '-' }) do
      local err = support.rejection(sendRaw(kernel, root, '#["echo",[' .. n .. ']]'))
      assert.matches('invalid capdata body', err.message, 1, true)
    end
    -- JSON numbers still read as before.
    local v = ocap.await(sendRaw(kernel, root, '#["echo",[[-0,0,1.5,-2E-7,1e+2,10]]]'))
    assert.are.same({ 0, 0, 1.5, -2e-7, 100, 10 }, { table.unpack(v) })
  end)
end)

describe('smallcaps decoding (fuzz findings)', function()
  local kernel, root, vatId
  before_each(function()
    kernel = testing.makeKernel()
    local r = launchEcho(kernel)
    root, vatId = r.rootKref, kernel:getSubcluster(r.subclusterId).vats.echo
  end)
  after_each(function() kernel:stop() end)

  -- An object the echo vat has never seen: the kernel facet.
  local function anObject() return kernel.K:kvGet('kernelService.kernelFacet') end

  it('refuses a slot used both as a remotable and as a promise', function()
    -- Record members are met in hash order: before, the first one met
    -- decided what the slot was.
    local body = '#["echo",[{"a":"$0","b":"$0","c":"$0","p":"&0"}]]'
    for _, slot in ipairs({ kernel.K:allocPromise('kernel'), anObject() }) do
      local kpid = kernel.K:allocPromise('kernel')
      local p = kernel.ls.trackPromise(kpid)
      kernel.K:send(root, body, { slot }, kpid)
      kernel.K:commit()
      local err = support.rejection(p)
      -- For an object, the promise encoding may be met first (see below).
      if not err.message:find('is not a promise', 1, true) then
        assert.matches('slot 0 is used both as a remotable and as a promise', err.message, 1, true)
      end
    end
    assert.is_true(support.isLive(kernel, vatId))
  end)

  it('refuses a slot given two interface names', function()
    local kpid = kernel.K:allocPromise('kernel')
    local p = kernel.ls.trackPromise(kpid)
    kernel.K:send(root, '#["echo",[["$0.Alleged: x","$0.Alleged: y"]]]', { anObject() }, kpid)
    kernel.K:commit()
    assert.matches('slot 0 is given two interface names', support.rejection(p).message, 1, true)
  end)

  it('refuses a promise encoding of an object without harm to the receiver', function()
    local kpid = kernel.K:allocPromise('kernel')
    local p = kernel.ls.trackPromise(kpid)
    kernel.K:send(root, '#["echo",["&0"]]', { anObject() }, kpid)
    kernel.K:commit()
    local err = support.rejection(p)
    assert.is_true(support.isLive(kernel, vatId), err.message)
    assert.matches('is not a promise', err.message, 1, true)
  end)
end)

describe('records read back from the store (fuzz findings)', function()
  local kernel
  after_each(function() pcall(kernel.stop, kernel) end)

  -- A kernel whose database had one key damaged, reopened.
  local function damaged(key, value)
    kernel = testing.makeKernel({ database = testing.tempDir() })
    kernel:launchSubcluster({ bootstrap = 'echo', vats = { echo = { sourceSpec = ECHO } } }):await()
    kernel.K:kvSet(key, value)
    kernel.K:commit()
    kernel = testing.restart(kernel)
    return kernel
  end

  local function failsNaming(key, f)
    local ok, err = pcall(f)
    assert.is_false(ok)
    local quoted = tostring(err):match("corrupt database: key ['\"]([^'\"]+)['\"] holds")
    assert.are.equal(key, quoted, tostring(err))
  end

  it('reports a damaged vat record as corruption naming its key', function()
    for _, bad in ipairs({ '#5', '#{"config":5,"name":"echo","subclusterId":"s1"}', 'not smallcaps' }) do
      local k = damaged('vat.v1', bad)
      failsNaming('vat.v1', function() k:getStatus() end)
      k:stop()
    end
  end)

  it('reports a damaged subcluster record as corruption naming its key', function()
    local k = damaged('subcluster.s1', '#{"config":{},"id":"s1","vats":{"echo":7}}')
    failsNaming('subcluster.s1', function() k:getSubclusters() end)
  end)

  it('reports a damaged counter as corruption naming its key', function()
    local k = damaged('nextObjectId', 'abc')
    failsNaming('nextObjectId', function() k:queueMessage('ko1', 'ping', {}) end)
    k:stop()
    k = damaged('nextSubclusterId', '1e9')
    failsNaming('nextSubclusterId', function()
      k:launchSubcluster({ bootstrap = 'e', vats = { e = { sourceSpec = ECHO } } }):await()
    end)
  end)
end)

describe("marshal's Lua reference codec (fuzz findings)", function()
  local pass = require 'ocap.pass'

  it('reads an empty object with white space inside as a record, as the C codec does', function()
    for _, body in ipairs({ '#{ }', '#[{\n}]', '#{"a":{\t \r\n}}' }) do
      local ref = marshal.reference.unserializeData({ body = body, slots = {} })
      local c = marshal.unserializeData({ body = body, slots = {} })
      local function inner(v) return body == '#{ }' and v or (v[1] or v.a) end
      assert.are.equal('copyRecord', pass.passStyleOf(inner(ref)), body)
      assert.are.equal(pass.passStyleOf(inner(c)), pass.passStyleOf(inner(ref)), body)
    end
    -- Inside a string it stays a string.
    assert.are.equal('{ }', marshal.reference.unserializeData({ body = '#"{ }"', slots = {} }))
  end)
end)
