-- Integrity of the kernel's tables (issue #9, items 2, 8 and 10): values of
-- any length are read whole, and a damaged database gives a clean error.
local testing = require 'ocap.testing'
local ocap = require 'ocap'

local SCENARIO = 'spec/vats/scenario.lua'

describe('promise subscribers', function()
  local kernel
  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() kernel:stop() end)

  it('notifies every one of 100 vats awaiting one promise', function()
    local roots = {}
    for i = 1, 100 do
      local r = kernel:launchSubcluster({ bootstrap = 'w', vats = {
        w = { sourceSpec = SCENARIO, parameters = { name = 'w' .. i } } } }):await()
      roots[i] = r.rootKref
    end
    local kit = ocap.makePromiseKit()
    for i = 1, 100 do
      assert.equal('noted', kernel:queueMessage(roots[i], 'takePromiseNoWait', { kit.promise }):await())
    end
    kit.resolve('go')
    kernel:run()
    local told = 0
    for i = 1, 100 do
      if kernel:queueMessage(roots[i], 'lastSeen', {}):await() == 'go' then told = told + 1 end
    end
    assert.equal(100, told)
  end)
end)
