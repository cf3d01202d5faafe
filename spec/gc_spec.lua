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

-- ---- the kernel's side of GC, driven by a vat that makes the syscalls ----

local support = require 'support'
local RAW = 'spec/vats/gc_raw.lua'

--- Launches vats a and b running spec/vats/gc_raw.lua; returns their ids
--- and root presences.
local function raw(kernel)
  local r = kernel:launchSubcluster({ bootstrap = 'a', vats = { a = { sourceSpec = RAW }, b = { sourceSpec = RAW } } })
    :await()
  local ids = kernel:getSubcluster(r.subclusterId).vats
  return {
    a = ids.a, b = ids.b,
    A = kernel:getPresence(kernel.K:krefOf(ids.a, 'o+0'), 'gcRaw'),
    B = kernel:getPresence(kernel.K:krefOf(ids.b, 'o+0'), 'gcRaw'),
  }
end

local function get(kernel, key) return kernel.K:kvGet(key) end

--- Every key the kernel keeps for object kref, as key -> value.
local function objectKeys(kernel, kref)
  local out = {}
  for _, key in ipairs(kernel:_scan(kref .. '.')) do out[key] = get(kernel, key) end
  for _, key in ipairs(kernel:_scan('')) do
    if key:match('%.c%.' .. kref .. '$') then out[key] = get(kernel, key) end
  end
  return out
end

describe('kernel garbage collection', function()
  local kernel
  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() if kernel then kernel:stop() end end)

  it('counts each importer, and deletes an object once nobody reaches or recognizes it', function()
    local v = raw(kernel)
    local objects0 = kernel:stats().objects
    local thing = E(v.B).make('t'):await()
    local kref = kernel:krefOf(thing)
    -- The host imports it: `kernel.c.<kref>`, counted once.
    assert.equal(v.b, get(kernel, kref .. '.owner'))
    assert.equal('1,1', get(kernel, kref .. '.refCount'))
    assert.equal(kref, get(kernel, 'kernel.c.' .. kref))
    local vref = E(v.A).keep(thing):await()
    assert.equal('2,2', get(kernel, kref .. '.refCount'))
    assert.equal(vref, get(kernel, v.a .. '.c.' .. kref))
    assert.equal('1', get(kernel, kref .. '.i.' .. v.a)) -- the importers' index
    assert.equal(objects0 + 1, kernel:stats().objects)
    -- a drops it: still recognized, its entry marked.
    assert.is_true(E(v.A).gc({ { 'dropImports', { vref } } }):await())
    assert.equal('1,2', get(kernel, kref .. '.refCount'))
    assert.equal('_ ' .. vref, get(kernel, v.a .. '.c.' .. kref))
    assert.is_nil(get(kernel, kref .. '.dropped'))
    -- The host drops it too: b is told (dropExports) before the next message.
    kernel.K:dropImports({ kref })
    assert.equal(0, E(v.B).count():await())
    assert.equal('0,2', get(kernel, kref .. '.refCount'))
    assert.equal('true', get(kernel, kref .. '.dropped'))
    assert.equal(v.b, get(kernel, kref .. '.owner'))
    -- Both retire it: b is told (retireExports) and every key goes.
    assert.is_true(E(v.A).gc({ { 'retireImports', { vref } } }):await())
    assert.is_nil(get(kernel, v.a .. '.c.' .. kref))
    assert.is_nil(get(kernel, v.a .. '.c.' .. vref))
    assert.equal('0,1', get(kernel, kref .. '.refCount'))
    kernel.K:retireImports({ kref })
    assert.equal(0, E(v.B).count():await())
    assert.same({}, objectKeys(kernel, kref))
    assert.same({}, kernel:_scan('gcAction.'))
    assert.equal(objects0, kernel:stats().objects)
    assert.equal('OBJECT_DELETED', support.rejection(kernel:queueMessage(kref, 'name', {})).code)
  end)

  it('delivers dropExports and retireExports to the host for what it exported', function()
    local v = raw(kernel)
    local seen = {}
    kernel.K:setHostDispatch(function(kind, a, ...)
      if kind ~= 'message' and kind ~= 'notify' then seen[#seen + 1] = kind .. ' ' .. table.concat(a, ',') end
      return kernel.ls.dispatch(kind, a, ...)
    end)
    local vref = E(v.A).keep(ocap.makeDefaultExo('hostThing', {})):await()
    local kref = get(kernel, v.a .. '.c.' .. vref)
    assert.equal('kernel', get(kernel, kref .. '.owner'))
    assert.equal('1,1', get(kernel, kref .. '.refCount'))
    assert.is_true(E(v.A).gc({ { 'dropImports', { vref } }, { 'retireImports', { vref } } }):await())
    assert.same({ 'dropExports ' .. kref, 'retireExports ' .. kref }, seen)
    assert.same({}, objectKeys(kernel, kref))
  end)

  it('keeps what a waiting message carries, and what a settled promise holds', function()
    local v = raw(kernel)
    local thing = E(v.B).make('t'):await()
    local kref = kernel:krefOf(thing)
    -- A message parked on a promise a never resolves carries it.
    local never = E(v.A).never()
    kernel:queueMessage(never, 'use', { thing })
    assert.equal(0, E(v.A).count():await())
    kernel.K:dropImports({ kref })
    kernel.K:retireImports({ kref })
    assert.equal(0, E(v.B).count():await())
    assert.equal('1,1', get(kernel, kref .. '.refCount'))
    assert.is_nil(get(kernel, kref .. '.dropped'))
    assert.equal('t', E(thing).name():await())
  end)

  it('drops and retires what a terminated vat imported', function()
    local v = raw(kernel)
    local thing = E(v.B).make('t'):await()
    local kref = kernel:krefOf(thing)
    E(v.A).keep(thing):await()
    kernel.K:dropImports({ kref })
    kernel.K:retireImports({ kref })
    assert.equal(0, E(v.B).count():await())
    assert.equal('1,1', get(kernel, kref .. '.refCount'))
    kernel:terminateVat(v.a):await()
    assert.equal(0, E(v.B).count():await())
    assert.same({}, objectKeys(kernel, kref))
  end)

  it('refuses the host a GC call it may not make, changing nothing', function()
    local v = raw(kernel)
    local thing = E(v.B).make('t'):await()
    local kref = kernel:krefOf(thing)
    local function refusal(name, arg)
      local ok, err = pcall(kernel.K[name], kernel.K, arg)
      assert.is_false(ok)
      return (tostring(err):gsub('^[^:]*:%d+: ', ''))
    end
    assert.equal("kernel dropImports 'ko999': not an import of kernel", refusal('dropImports', { 'ko999' }))
    assert.equal("kernel dropImports '" .. kref .. "': named twice", refusal('dropImports', { kref, kref }))
    assert.equal("kernel retireImports '" .. kref .. "': still reachable (drop it first)",
      refusal('retireImports', { kref }))
    assert.equal('dropImports takes a sequence of kref strings', refusal('dropImports', kref))
    assert.equal('dropImports takes a sequence of kref strings', refusal('dropImports', { x = kref }))
    kernel.K:commit()
    assert.equal('1,1', get(kernel, kref .. '.refCount'))
    assert.equal(kref, get(kernel, 'kernel.c.' .. kref))
  end)

  describe('refuses a vat a forged GC syscall: ILLEGAL_SYSCALL, crank rolled back, nothing freed', function()
    -- Each case runs in vat a, which imports b's thing (its vref stands
    -- for IMPORT) and exports its own, held by the host (EXPORT).
    local CASES = {
      { 'drop something never imported', { { 'dropImports', { 'o-999' } } }, "dropImports 'o-999': not an import" },
      { 'drop an export', { { 'dropImports', { 'EXPORT' } } }, 'not an import' },
      { 'drop a promise', { { 'dropImports', { 'p-1' } } }, "dropImports 'p-1': not an import" },
      { 'drop twice in one call', { { 'dropImports', { 'IMPORT', 'IMPORT' } } }, 'named twice' },
      { 'drop twice', { { 'dropImports', { 'IMPORT' } }, { 'dropImports', { 'IMPORT' } } }, 'already dropped' },
      { 'retire an import still reachable', { { 'retireImports', { 'IMPORT' } } }, 'still reachable (drop it first)' },
      { 'retire an export still reachable', { { 'retireExports', { 'EXPORT' } } }, 'still reachable' },
      { 'retire a root', { { 'retireExports', { 'o+0' } } }, "retireExports 'o+0': still reachable" },
      { 'retire an import as an export', { { 'retireExports', { 'IMPORT' } } }, 'not an export' },
      { 'abandon an import', { { 'abandonExports', { 'IMPORT' } } }, 'not an export' },
      { 'abandon its root', { { 'abandonExports', { 'o+0' } } }, "abandonExports 'o+0': the vat's root" },
      { 'abandon an unknown export', { { 'abandonExports', { 'o+77' } } }, "abandonExports 'o+77': not an export" },
      { 'a string, not a sequence', { { 'dropImports', 'IMPORT' } }, 'dropImports takes a sequence of vref strings' },
      { 'a record', { { 'retireImports', { x = 'IMPORT' } } }, 'retireImports takes a sequence of vref strings' },
      { 'numbers', { { 'retireExports', { 1 } } }, 'retireExports takes a sequence of vref strings' },
      { 'nothing', { { 'abandonExports' } }, 'abandonExports takes a sequence of vref strings' },
    }
    for _, case in ipairs(CASES) do
      it(case[1], function()
        local v = raw(kernel)
        local thing = E(v.B).make('t'):await()
        local kref = kernel:krefOf(thing)
        local import = E(v.A).keep(thing):await()
        local other = E(v.B).make('other'):await()
        local otherRef = E(v.A).keep(other):await()
        E(v.A).make('mine'):await()
        local export = E(v.A).exportRef(1):await()
        local function fill(x)
          if x == 'IMPORT' then return import elseif x == 'EXPORT' then return export end
          if type(x) ~= 'table' then return x end
          local out = {}
          for k, y in pairs(x) do out[k] = fill(y) end
          return out
        end
        local steps = fill(case[2])
        -- A legal drop first: the crank that holds the illegal call must
        -- undo it, and the message sent before it.
        table.insert(steps, 1, { 'dropImports', { otherRef } })
        local err = support.rejection(E(v.A).sendThenGc(v.B, steps))
        assert.equal('VAT_FATAL:ILLEGAL_SYSCALL', err.code)
        assert.matches(case[3], err.message, 1, true)
        assert.equal(0, E(v.B).count():await())
        -- a is gone, and its import with it; the host's keeps b's thing.
        assert.equal(v.b, get(kernel, kref .. '.owner'))
        assert.equal('1,1', get(kernel, kref .. '.refCount'))
        assert.is_nil(get(kernel, kref .. '.dropped'))
        assert.equal('t', E(thing).name():await())
        assert.equal('1,1', get(kernel, kernel:krefOf(other) .. '.refCount'))
      end)
    end
  end)

  it('keeps counts and flags across a restart, and never brings a deleted object back', function()
    kernel:stop()
    kernel = testing.makeKernel({ database = testing.tempDir() })
    local v = raw(kernel)
    local thing = E(v.B).make('t'):await()
    local kref = kernel:krefOf(thing)
    local vref = E(v.A).keep(thing):await()
    assert.is_true(E(v.A).gc({ { 'dropImports', { vref } } }):await())
    kernel = testing.restart(kernel)
    assert.equal('1,2', get(kernel, kref .. '.refCount'))
    assert.equal('_ ' .. vref, get(kernel, v.a .. '.c.' .. kref))
    local A = kernel:getPresence(kernel.K:krefOf(v.a, 'o+0'), 'gcRaw')
    local B = kernel:getPresence(kernel.K:krefOf(v.b, 'o+0'), 'gcRaw')
    -- The restarted a still may not drop twice; it may retire.
    assert.is_true(E(A).gc({ { 'retireImports', { vref } } }, B):await())
    kernel.K:dropImports({ kref })
    assert.equal(0, E(B).count():await())
    assert.equal('true', get(kernel, kref .. '.dropped'))
    kernel = testing.restart(kernel)
    kernel.K:retireImports({ kref })
    B = kernel:getPresence(kernel.K:krefOf(v.b, 'o+0'), 'gcRaw')
    assert.equal(0, E(B).count():await())
    assert.same({}, objectKeys(kernel, kref))
    kernel = testing.restart(kernel)
    assert.same({}, objectKeys(kernel, kref))
    assert.equal('OBJECT_DELETED', support.rejection(kernel:queueMessage(kref, 'name', {})).code)
  end)
end)

describe('reaping', function()
  local kernel
  after_each(function() if kernel then kernel:stop() end end)

  it('reaps a vat every reapInterval deliveries, before the run queue', function()
    kernel = testing.makeKernel({ gc = { reapInterval = 2 } })
    local v = raw(kernel)
    kernel:reapVats():await()
    assert.equal(0, kernel.K:gcWork())
    kernel:queueMessage(v.A, 'bump', {})
    kernel:queueMessage(v.A, 'bump', {})
    kernel:step() -- the first: no reap due
    assert.equal(0, kernel.K:gcWork())
    kernel:step() -- the second: a's reap is due
    assert.equal(1, kernel.K:gcWork())
    local queued = kernel.K:queueLength()
    kernel:step() -- the reap, before the notifies waiting
    assert.equal(0, kernel.K:gcWork())
    assert.equal(queued, kernel.K:queueLength())
  end)

  it('never reaps on its own with reapInterval = false', function()
    kernel = testing.makeKernel({ gc = { reapInterval = false } })
    local v = raw(kernel)
    for _ = 1, 5 do
      kernel:queueMessage(v.A, 'bump', {})
      kernel:step()
      assert.equal(0, kernel.K:gcWork())
    end
  end)

  it('resolves reapVats() for a host that drives the kernel with pump()', function()
    kernel = testing.makeKernel({ gc = { reapInterval = false } })
    raw(kernel)
    local settled = false
    kernel:reapVats():next(function() settled = true end)
    for _ = 1, 100 do
      if not kernel:pump() then break end
    end
    assert.is_true(settled)
    assert.equal(0, kernel.K:gcWork())
  end)

  it('reapVats() and collectGarbage() reap every endpoint and resolve when done', function()
    kernel = testing.makeKernel({ gc = { reapInterval = false } })
    raw(kernel)
    local seen = {}
    kernel.K:setHostDispatch(function(kind, ...)
      seen[#seen + 1] = kind
      return kernel.ls.dispatch(kind, ...)
    end)
    for _, call in ipairs({ 'reapVats', 'collectGarbage' }) do
      seen = {}
      local cranks = kernel:stats().cranks
      local p = kernel[call](kernel)
      assert.is_true(kernel.K:gcWork() >= 3) -- two vats and the host
      p:await()
      assert.equal(0, kernel.K:gcWork())
      assert.same({ 'bringOutYourDead' }, seen)
      assert.equal(cranks + 3, kernel:stats().cranks)
    end
  end)
end)

describe('garbage collection end to end (liveslots and kernel)', function()
  local CHURNER = 'spec/vats/churner.lua'
  local kernel
  after_each(function() if kernel then kernel:stop() end end)

  local function launch()
    local r = kernel:launchSubcluster({ bootstrap = 'alice', vats = {
      alice = { sourceSpec = CHURNER }, bob = { sourceSpec = CHURNER } } }):await()
    local ids = kernel:getSubcluster(r.subclusterId).vats
    return kernel:getPresence(kernel.K:krefOf(ids.alice, 'o+0'), 'churner'),
      kernel:getPresence(kernel.K:krefOf(ids.bob, 'o+0'), 'churner')
  end

  it('frees what vats make and drop: kernel keys and objects stay flat', function()
    kernel = testing.makeKernel({ gc = { reapInterval = false } })
    local alice, bob = launch()
    assert.equal(3, E(alice).churn(bob, 2):await())
    kernel:collectGarbage():await()
    local s0 = kernel:stats()
    assert.equal(5050, E(alice).churn(bob, 100):await())
    -- Nothing reaps on its own here: every object is still there.
    assert.equal(s0.objects + 100, kernel:stats().objects)
    kernel:collectGarbage():await()
    local s1 = kernel:stats()
    assert.equal(s0.objects, s1.objects)
    assert.equal(s0.keys, s1.keys)
  end)

  it('frees them on its own every reapInterval deliveries', function()
    kernel = testing.makeKernel({ gc = { reapInterval = 10 } })
    local alice, bob = launch()
    assert.equal(3, E(alice).churn(bob, 2):await())
    kernel:collectGarbage():await()
    local s0 = kernel:stats()
    assert.equal(20100, E(alice).churn(bob, 200):await())
    -- At most what came in since each vat's last reap is left.
    assert.is_true(kernel:stats().objects - s0.objects <= 10)
    kernel:collectGarbage():await()
    assert.equal(s0.keys, kernel:stats().keys)
  end)

  it('frees, after a restart, what the previous heap took in after its last reap', function()
    kernel = testing.makeKernel({ database = testing.tempDir(), gc = { reapInterval = false } })
    local alice, bob = launch()
    assert.equal(3, E(alice).churn(bob, 2):await())
    kernel:collectGarbage():await()
    local s0 = kernel:stats()
    assert.equal(55, E(alice).churn(bob, 10):await()) -- no reap: all still counted
    assert.equal(s0.objects + 10, kernel:stats().objects)
    kernel = testing.restart(kernel)
    local ids = kernel:getSubclusters()[1].vats
    alice = kernel:getPresence(kernel.K:krefOf(ids.alice, 'o+0'), 'churner')
    bob = kernel:getPresence(kernel.K:krefOf(ids.bob, 'o+0'), 'churner')
    assert.equal(1, E(alice).churn(bob, 1):await()) -- both heaps start again
    kernel:collectGarbage():await()
    assert.equal(s0.objects, kernel:stats().objects)
  end)

  it('frees what the host was given and let go of', function()
    kernel = testing.makeKernel({ gc = { reapInterval = false } })
    local _, bob = launch()
    -- In a function of its own: a loop's locals stay in the stack frame
    -- of the function that ran it until overwritten.
    local function use(n)
      for i = 1, n do
        local thing = E(bob).make(i):await()
        assert.equal(i, E(thing).label():await())
      end
    end
    use(1) -- bob's first imported promise writes its counter
    collectgarbage()
    kernel:collectGarbage():await()
    local s0 = kernel:stats()
    use(50)
    assert.equal(s0.objects + 50, kernel:stats().objects)
    collectgarbage()
    kernel:collectGarbage():await()
    local s1 = kernel:stats()
    assert.equal(s0.objects, s1.objects)
    assert.equal(s0.keys, s1.keys)
  end)
end)
