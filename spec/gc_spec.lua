-- Garbage collection (issue #12). What exists so far: stats() counts the
-- kernel's live objects, kept promises and vats, the figures GC specs and
-- the churn bench compare before and after.
local testing = require 'ocap.testing'
local ocap = require 'ocap'
local E = ocap.E

local COUNTER = 'spec/vats/counter.lua'

--- Counts the keys under prefix ending with suffix, straight from the store.
local function keys(kernel, prefix, suffix)
  local n = 0
  for _, key in ipairs(kernel:_scan(prefix)) do
    if key:sub(-#suffix) == suffix then n = n + 1 end
  end
  return n
end

describe('kernel:stats()', function()
  local kernel
  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() kernel:stop() end)

  it('counts objects, promises and vats as they come and go', function()
    local s0 = kernel:stats()
    assert.equal(0, s0.vats)
    local r = kernel:launchSubcluster({ bootstrap = 'c', vats = { c = { sourceSpec = COUNTER } } }):await()
    local root = kernel:getPresence(r.rootKref, 'counter')
    local s1 = kernel:stats()
    assert.equal(1, s1.vats)
    assert.is_true(s1.objects > s0.objects)
    -- Each ephemeral exo the vat sends out becomes a kernel object.
    for _ = 1, 3 do E(root).makeEphemeral():await() end
    local s2 = kernel:stats()
    assert.equal(s1.objects + 3, s2.objects)
    assert.equal(keys(kernel, 'ko', '.owner'), s2.objects)
    assert.equal(keys(kernel, 'kp', '.state'), s2.promises)
    -- Terminating the vat deletes the objects it owned and its record.
    kernel:terminateSubcluster(r.subclusterId):await()
    local s3 = kernel:stats()
    assert.equal(0, s3.vats)
    assert.equal(s0.objects, s3.objects)
  end)
end)
