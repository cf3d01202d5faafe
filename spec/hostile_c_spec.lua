-- Vat code attacking the runtime's C functions: each attack ends in the
-- Lua behaviour or a clean error, and the kernel carries on.
local testing = require 'ocap.testing'

local HOSTILE = 'spec/vats/hostile_c.lua'

describe('the runtime C functions under attack', function()
  local kernel, root
  setup(function()
    kernel = testing.makeKernel()
    root = kernel:launchSubcluster({ bootstrap = 'h', vats = { h = { sourceSpec = HOSTILE } } }):await().rootKref
  end)
  teardown(function() kernel:stop() end)

  it('ignores extra arguments to string.rep however many there are', function()
    assert.equal('aa', kernel:queueMessage(root, 'repExtraArgs', {}):await())
  end)

  it('ignores extra arguments to table.concat however many there are', function()
    assert.equal('x,y', kernel:queueMessage(root, 'concatExtraArgs', {}):await())
  end)
end)
