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

describe('Kernel.make { gc = ... }', function()
  local Kernel = require 'ocap.kernel'

  --- The error Kernel.make raises for options, with the position stripped.
  local function refusal(options)
    local ok, err = pcall(Kernel.make, options)
    assert.is_false(ok)
    return (tostring(err):gsub('^[^:]*:%d+: ', ''))
  end

  it('accepts a reap interval, false, or nothing', function()
    for _, gc in ipairs({ {}, { reapInterval = 1 }, { reapInterval = 5000 }, { reapInterval = false } }) do
      local kernel = Kernel.make({ gc = gc })
      assert.equal(gc.reapInterval == nil and 200 or gc.reapInterval, kernel.reapInterval)
      kernel:stop()
    end
  end)

  it('refuses a bad interval or an unknown key, naming the field', function()
    local bad = 'Kernel.make: option gc.reapInterval must be a positive integer or false, got '
    assert.equal(bad .. '0', refusal({ gc = { reapInterval = 0 } }))
    assert.equal(bad .. '1.5', refusal({ gc = { reapInterval = 1.5 } }))
    assert.equal(bad .. 'true', refusal({ gc = { reapInterval = true } }))
    assert.equal(bad .. '"10"', refusal({ gc = { reapInterval = '10' } }))
    assert.equal('Kernel.make: option gc has unknown key "interval"', refusal({ gc = { interval = 3 } }))
    assert.equal('Kernel.make: option gc must be a table, got number', refusal({ gc = 200 }))
  end)
end)
