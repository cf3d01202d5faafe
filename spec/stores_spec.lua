-- Durable stores and durable exo state (lua/ocap/stores.lua, durable.lua).
local testing = require 'ocap.testing'
local support = require 'support'

describe('durable state', function()
  local kernel, keeper

  before_each(function()
    kernel = testing.makeKernel { database = testing.tempDir() }
    keeper = kernel:launchSubcluster({
      bootstrap = 'keeper',
      vats = {
        keeper = { sourceSpec = 'spec/vats/promise_keeper.lua' },
        echo = { sourceSpec = 'spec/vats/echo.lua' },
      },
    }):await().rootKref
  end)

  after_each(function()
    kernel:stop()
    testing.cleanup()
  end)

  local function keep(how, shape, remote)
    return support.rejection(kernel:queueMessage(keeper, 'keep', { how, shape, remote })).message
  end

  local function unchanged()
    assert.same({ hasPending = false, slot = 'empty', ledgerSize = 0, balance = 1 },
      kernel:queueMessage(keeper, 'contents', {}):await())
  end

  it('refuses a promise in baggage, at init and at set', function()
    assert.matches('^cannot store a promise in baggage: durable state cannot hold promises',
      keep('baggageInit', 'top', false))
    assert.matches('^cannot store a promise in baggage: ', keep('baggageSet', 'top', true))
    unchanged()
  end)

  it('refuses a promise anywhere inside the value, naming where', function()
    assert.matches('^cannot store a promise in baggage %(at %.list%[3%]%): ',
      keep('baggageInit', 'nested', true))
    assert.matches('^cannot store a promise in ledger %(at %.list%[3%]%): ',
      keep('storeInit', 'nested', false))
    unchanged()
  end)

  it('refuses a promise in the state of a durable exo', function()
    assert.matches('^cannot store a promise in Account state %(at %.balance%): ',
      keep('exoInit', 'top', false))
    assert.matches('^cannot store a promise in Account state %(at %.balance%): ',
      keep('exoState', 'top', true))
    assert.matches('^cannot store a promise in Account state %(at %.balance%.list%[3%]%): ',
      keep('exoState', 'nested', false))
    unchanged()
  end)

  it('keeps the vat working, and its state across a restart', function()
    keep('baggageInit', 'top', true)
    kernel = testing.restart(kernel)
    unchanged()
  end)
end)

describe('baggage values', function()
  local kernel, root, vatId
  before_each(function()
    kernel = testing.makeKernel {}
    local r = kernel:launchSubcluster({ bootstrap = 'c', vats = { c = { sourceSpec = 'spec/vats/counter.lua' } } })
      :await()
    root, vatId = r.rootKref, kernel:getSubclusters()[1].vats.c
  end)
  after_each(function() kernel:stop() end)

  local function op(...) return kernel:queueMessage(root, 'baggageOp', { ... }):await() end

  it('come back as they were set, each of its type, whatever was there before', function()
    op('init', 'k', 0)
    local values = { 1, 'a', true, 1.5, 2, math.tointeger(2 ^ 60) + 1, ('long'):rep(40), false, -3, 'b' }
    for _, v in ipairs(values) do
      op('set', 'k', v)
      local got = op('get', 'k')
      assert.equal(v, got)
      assert.equal(math.type(v), math.type(got))
    end
  end)

  it('are stored as the reference codec encodes them', function()
    -- Plain values go through the C codec without the marshaller's
    -- capdata: the bytes must be the marshaller's all the same.
    local reference = require('ocap.marshal').reference
    local key = 'vs.' .. vatId .. '.vc.1.sk'
    op('init', 'k', 0)
    for _, v in ipairs({ 7, -3, 1.5, 1e21, 1e-7, 1 / 0, -1 / 0, 0 / 0, 2 ^ 53, '', 'plain', '!bang', '$dollar',
      '#hash', '%pct', '&amp', '+plus', '-minus', 'caf\xc3\xa9', 'quote"back\\', true, false }) do
      op('set', 'k', v)
      assert.equal('\n' .. reference.serializeData(v).body, kernel.K:kvGet(key))
    end
  end)

  it('are read as the store holds them, even when written behind the vat', function()
    assert.equal(1, kernel:queueMessage(root, 'increment', {}):await())
    local key = 'vs.' .. vatId .. '.vc.1.scount'
    assert.equal('\n#1', kernel.K:kvGet(key))
    kernel.K:kvSet(key, '\n#41')
    kernel.K:commit()
    assert.equal(42, kernel:queueMessage(root, 'increment', {}):await())
    assert.equal(42, kernel:queueMessage(root, 'get', {}):await())
  end)
end)
