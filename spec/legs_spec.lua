-- A delivery runs in one of the vat's threads (a leg, core/lpromise.c):
-- what a method's failure runs outside the method (its error's
-- tostring) stays within the vat's budget.
local testing = require 'ocap.testing'
local support = require 'support'
local rejection = support.rejection

local LEGS = 'spec/vats/legs.lua'

describe('a delivery in its own thread', function()
  local kernel, root

  local function call(method, ...)
    return kernel:queueMessage(root, method, { ... })
  end

  local function entries(level, pattern) return support.logEntries(kernel, level, pattern) end

  local function launch(meter)
    kernel = testing.makeKernel()
    root = kernel:launchSubcluster({ bootstrap = 'legs', vats = {
      legs = { sourceSpec = LEGS, creationOptions = { meter = meter } },
    } }):await().rootKref
  end

  after_each(function()
    kernel:stop()
  end)

  for _, meter in ipairs({ { instructions = 2e6 }, { mode = 'time', instructions = 2e6 } }) do
    for _, method in ipairs({ 'badError', 'laterBadError' }) do
      it(('ends a vat whose %s error tostring runs away, on its %s meter'):format(method, meter.mode or 'instruction'),
        function()
          launch(meter)
          assert.equal(5, call('later', 4):await())
          rejection(call(method))
          local killed = entries('error', 'killed')
          assert.equal(1, #killed)
          assert.matches('%[VAT_FATAL:METER_EXHAUSTED%]', killed[1].message)
        end)
    end
  end
end)
