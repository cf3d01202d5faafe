-- Budgets a vat cannot escape (issue #9, items 3, 4, 7, 9 and 11): what a
-- vat sends, queues, arms and logs is bounded and charged to it, a vat
-- never loses its state because of what another vat sent it or because it
-- failed to restart, and every number in a config is checked.
local testing = require 'ocap.testing'
local support = require 'support'
local rejection = support.rejection

local BUDGET = 'spec/vats/budget.lua'

describe('budgets', function()
  local kernel
  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() kernel:stop() end)

  describe('numbers in creationOptions', function()
    local function launchError(creationOptions)
      return rejection(kernel:launchSubcluster({
        bootstrap = 'b', vats = { b = { sourceSpec = BUDGET, creationOptions = creationOptions } },
      })).message
    end
    local where = 'ClusterConfig.vats.b.creationOptions.'

    it('refuses a meter of NaN, inf, 1e300, 2^63 or 0.5, naming the field and the value', function()
      local msg = where .. 'meter.instructions: must be a positive integral number, at most 1e15, got '
      assert.equal(msg .. 'nan', launchError({ meter = { instructions = 0 / 0 } }))
      assert.equal(msg .. 'inf', launchError({ meter = { instructions = math.huge } }))
      assert.equal(msg .. '1.0000000000000001e+300', launchError({ meter = { instructions = 1e300 } }))
      assert.equal(msg .. '9.2233720368547758e+18', launchError({ meter = { instructions = 2 ^ 63 } }))
      assert.equal(msg .. '0.5', launchError({ meter = { instructions = 0.5 } }))
      assert.equal(msg .. '"1e8"', launchError({ meter = { instructions = '1e8' } }))
      assert.equal(where .. 'meter: must be a table, got 5', launchError({ meter = 5 }))
      assert.equal(where .. 'meter: unknown key "cpu"', launchError({ meter = { instructions = 1e8, cpu = 1 } }))
      assert.equal(0, #kernel:getStatus().vats)
    end)

    it('refuses a memoryLimit of NaN, inf or beyond 2^40', function()
      local msg = where .. 'memoryLimit: must be an integer number of bytes, at least 65536 and at most 2^40, got '
      assert.equal(msg .. 'nan', launchError({ memoryLimit = 0 / 0 }))
      assert.equal(msg .. '-inf', launchError({ memoryLimit = -math.huge }))
      assert.equal(msg .. '1099511627777', launchError({ memoryLimit = (1 << 40) + 1 }))
    end)

    it('accepts integral floats and runs with the meter given', function()
      local r = kernel:launchSubcluster({
        bootstrap = 'b', vats = { b = { sourceSpec = BUDGET, creationOptions = { meter = { instructions = 3e6 } } } },
      }):await()
      assert.equal(4, kernel:queueMessage(r.rootKref, 'ping', { 4 }):await())
      -- 3e6 is the budget, not the default (1e8): a 5e6-step loop is stopped.
      assert.equal('VAT_FATAL:METER_EXHAUSTED', rejection(kernel:queueMessage(r.rootKref, 'spin', { 5000000 })).code)
    end)
  end)

  describe('a vat that fails to restart', function()
    -- The keys of vatId's own store, as the database holds them.
    local function storeKeys(vatId)
      local keys, after = {}, nil
      while true do
        local key = kernel.K:kvNext('vs.' .. vatId .. '.', after)
        if not key then return keys end
        keys[#keys + 1] = key .. '=' .. kernel.K:kvGet(key)
        after = key
      end
    end

    local function statusOf(vatId)
      for _, v in ipairs(kernel:getStatus().vats) do
        if v.id == vatId then return v end
      end
    end

    it('is kept with its data, reported failed, and refuses messages until the host decides', function()
      kernel:stop()
      kernel = testing.makeKernel { database = testing.tempDir() }
      local r = kernel:launchSubcluster({
        bootstrap = 'b', vats = { b = { sourceSpec = BUDGET, parameters = { failBuildIfMarked = true } } },
      }):await()
      local root = r.rootKref
      local vatId = kernel:getSubcluster(r.subclusterId).vats.b
      assert.equal('kept', kernel:queueMessage(root, 'put', { 'data', 'kept' }):await())
      -- Its baggage grows so that buildRootObject fails at the next start.
      kernel:queueMessage(root, 'put', { 'marked', 'yes' }):await()
      local before = storeKeys(vatId)
      assert.is_true(#before > 2)

      kernel = testing.restart(kernel)
      local err = rejection(kernel:queueMessage(root, 'get', { 'data' }))
      assert.equal('VAT_FAILED', err.code)
      assert.equal(('[KERNEL:VAT_FAILED] vat %s (b) failed to restart: buildRootObject failed: '
        .. 'baggage is marked: yes'):format(vatId), err.message)
      local st = statusOf(vatId)
      assert.is_table(st, 'the vat is no longer listed')
      assert.equal('failed', st.state)
      assert.equal('buildRootObject failed: baggage is marked: yes', st.reason)
      assert.is_nil(support.terminatedRecord(kernel, vatId))
      assert.same(before, storeKeys(vatId))
      local ping = rejection(kernel:pingVat(vatId))
      assert.equal('VAT_FAILED', ping.code)

      -- It stays failed across another kernel restart, without retrying.
      kernel = testing.restart(kernel)
      assert.equal('failed', statusOf(vatId).state)
      assert.equal('VAT_FAILED', rejection(kernel:queueMessage(root, 'ping', { 1 })).code)
      assert.same(before, storeKeys(vatId))

      -- The host may retry: it fails again, and nothing changes.
      local again = rejection(kernel:restartVat(vatId))
      assert.equal(('vat %s failed to restart: buildRootObject failed: baggage is marked: yes'):format(vatId),
        again.message)
      assert.equal('failed', statusOf(vatId).state)
      assert.same(before, storeKeys(vatId))

      -- Or terminate it: only then is its data deleted.
      kernel:terminateVat(vatId, 'given up'):await()
      assert.is_nil(statusOf(vatId))
      assert.equal('given up', support.terminatedRecord(kernel, vatId).reason)
      assert.same({}, storeKeys(vatId))
    end)
  end)
end)
