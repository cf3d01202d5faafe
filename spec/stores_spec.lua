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
