-- Endowments (issue #6, part 3) and vatPowers (part 5): VatConfig.globals
-- gives a vat print, timers, os.time/clock/date and math.random by name,
-- from an allow-list that Kernel.make{ allowedGlobalNames } can only
-- narrow; vatPowers gives it a logger and a way to exit.
local testing = require 'ocap.testing'
local ocap = require 'ocap'
local support = require 'support'
local rejection = support.rejection
local terminatedRecord = support.terminatedRecord
local isLive = support.isLive
local E = ocap.E

local ENDOWED = 'spec/vats/endowed.lua'
local ECHO = 'spec/vats/echo.lua'
local COUNTER = 'spec/vats/counter.lua'

local ALL = {
  'print', 'setTimeout', 'clearTimeout', 'setInterval', 'clearInterval',
  'os.time', 'os.clock', 'os.date', 'math.random',
}

local function entriesWith(kernel, message)
  local out = {}
  for _, e in ipairs(kernel:logs()) do
    if e.message == message then out[#out + 1] = e end
  end
  return out
end

-- Whether the kernel's event loop still has live handles (timers). Uses
-- the C kernel's loopAlive, which the kernel's own await loop relies on.
local function loopAlive(kernel)
  return kernel.K:loopAlive()
end

describe('endowments', function()
  local kernel
  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() kernel:stop() end)

  -- Launches `vats` (name -> VatConfig) with `first` as the bootstrap vat.
  -- Returns the bootstrap root kref, a function giving a vat's presence
  -- by name, and the vat ids by name.
  local function launch(first, vats)
    local r = kernel:launchSubcluster({ bootstrap = first, vats = vats }):await()
    local ids = kernel:getSubcluster(r.subclusterId).vats
    local function peer(name)
      if name == first then return kernel:getPresence(r.rootKref, 'endowed') end
      return kernel:queueMessage(r.rootKref, 'peer', { name }):await()
    end
    return r.rootKref, peer, ids
  end

  local function endowed(globals, creationOptions)
    return { sourceSpec = ENDOWED, globals = globals, creationOptions = creationOptions }
  end

  describe('print', function()
    it("logs its arguments, tab-joined, as a 'log' entry with the vat's id", function()
      local root, _, ids = launch('a', { a = endowed({ 'print' }) })
      kernel:queueMessage(root, 'say', table.pack('hello', 42, nil, true)):await()
      local entries = entriesWith(kernel, 'hello\t42\tnil\ttrue')
      assert.equal(1, #entries)
      assert.equal('log', entries[1].level)
      assert.equal(ids.a, entries[1].vatId)
    end)

    it('is nil in a vat without the endowment, and logs nothing', function()
      local root = launch('a', { a = endowed(nil) })
      assert.is_false(kernel:queueMessage(root, 'has', { 'print' }):await())
      local r = kernel:queueMessage(root, 'trySay', { 'not printed' }):await()
      assert.is_false(r.ok)
      assert.matches("attempt to call a nil value (global 'print')", r.err, 1, true)
      assert.equal(0, #entriesWith(kernel, 'not printed'))
    end)
  end)

  describe('timers', function()
    it('setTimeout calls back later; the host await waits on the event loop for it', function()
      local root = launch('a', { a = endowed({ 'setTimeout' }) })
      -- Once the message is delivered only the timer is left: await drives
      -- the event loop until it fires and resolves the promise.
      assert.equal('fired', kernel:queueMessage(root, 'after', { 20, 'fired' }):await())
      assert.equal('zero delay', kernel:queueMessage(root, 'after', { 0, 'zero delay' }):await())
      assert.equal(0, kernel:stats().queue)
    end)

    it('clearTimeout stops a timer before it fires', function()
      local root = launch('a', { a = endowed({ 'setTimeout', 'clearTimeout' }) })
      assert.equal(0, kernel:queueMessage(root, 'cancelled', { 10 }):await())
    end)

    it('setInterval fires repeatedly until clearInterval', function()
      local root = launch('a', { a = endowed({ 'setTimeout', 'setInterval', 'clearInterval' }) })
      -- ticks(n, ms) resolves 5 periods after clearing at the n-th tick,
      -- with the number of ticks seen by then.
      assert.equal(4, kernel:queueMessage(root, 'ticks', { 4, 5 }):await())
      assert.equal(1, kernel:queueMessage(root, 'ticks', { 1, 5 }):await())
    end)

    it('runs a callback in a crank of its own, where it may await', function()
      local root = launch('a', { a = endowed({ 'setTimeout' }), e = { sourceSpec = ECHO } })
      assert.equal('awaited in a timer', kernel:queueMessage(root, 'afterAwait', { 'e', 5 }):await())
    end)

    it('logs a failing callback and keeps the vat going', function()
      local root, _, ids = launch('a', { a = endowed({ 'setTimeout' }) })
      assert.equal('after the failure', kernel:queueMessage(root, 'failingTimer', { 5 }):await())
      local found
      for _, e in ipairs(kernel:logs()) do
        if e.vatId == ids.a and e.message:find('timer callback failed: ', 1, true) then found = e end
      end
      assert.is_table(found, 'no "timer callback failed" entry')
      assert.equal('error', found.level)
      assert.matches('timer went wrong', found.message, 1, true)
      assert.equal(3, kernel:queueMessage(root, 'ping', { 3 }):await())
    end)

    it('setTimeout refuses a callback that is not a function', function()
      local root = launch('a', { a = endowed({ 'setTimeout' }) })
      local r = kernel:queueMessage(root, 'badTimer', {}):await()
      assert.is_false(r.ok)
      assert.matches('setTimeout: callback must be a function', r.err, 1, true)
    end)

    it('are given only by name: each timer function is absent unless endowed', function()
      local root, peer = launch('a', { a = endowed({ 'setTimeout' }), n = endowed(nil) })
      local n = peer('n')
      for _, name in ipairs({ 'setTimeout', 'clearTimeout', 'setInterval', 'clearInterval' }) do
        assert.equal(name == 'setTimeout', kernel:queueMessage(root, 'has', { name }):await(), name)
        assert.is_false(E(n).has(name):await(), name)
      end
    end)

    -- The vat `a` ticks an interval that sends increment() to `tally` on
    -- every tick; `w` has its own timers, to let time pass on the host.
    local function ticking(creationOptions)
      local root, peer, ids = launch('a', {
        a = endowed(ALL, creationOptions),
        w = endowed(ALL),
        tally = { sourceSpec = COUNTER },
      })
      local tally, w = peer('tally'), peer('w')
      local longTimer = kernel:queueMessage(root, 'after', { 600000, 'too late' })
      assert.equal(3, kernel:queueMessage(root, 'tickPeer', { 'tally', 3, 5 }):await())
      return root, tally, w, ids, longTimer
    end

    -- After `a` is gone: no tick reaches tally any more, and the event
    -- loop has no timer of `a` left.
    local function assertStopped(tally, w)
      local seen = E(tally).get():await()
      assert.is_true(seen >= 3)
      assert.equal('later', E(w).after(50, 'later'):await())
      assert.equal(seen, E(tally).get():await())
      assert.is_false(loopAlive(kernel))
    end

    it('stop when their vat is terminated, with no delivery afterwards', function()
      local root, tally, w, ids, longTimer = ticking()
      kernel:terminateVat(ids.a, 'enough ticking'):await()
      local err = rejection(longTimer)
      assert.equal('VAT_TERMINATED', err.code)
      assertStopped(tally, w)
      assert.equal('OBJECT_DELETED', rejection(kernel:queueMessage(root, 'ping', { 1 })).code)
    end)

    it('stop when their vat exhausts its meter in a timer callback', function()
      local root, tally, w, ids, longTimer = ticking({ meter = { instructions = 2e6 } })
      kernel:queueMessage(root, 'loopingTimer', { 1 }):await()
      local err = rejection(longTimer)
      assert.equal('VAT_TERMINATED', err.code)
      assert.matches('METER_EXHAUSTED', err.message, 1, true)
      assert.matches('METER_EXHAUSTED', terminatedRecord(kernel, ids.a).reason, 1, true)
      assertStopped(tally, w)
    end)

    it('stop when their vat exits', function()
      local root, tally, w, ids, longTimer = ticking()
      kernel:queueMessage(root, 'exit', { 'bye' }):await()
      assert.equal('VAT_TERMINATED', rejection(longTimer).code)
      assert.equal('exited', terminatedRecord(kernel, ids.a).reason)
      assertStopped(tally, w)
    end)

    it('are dropped by restartVat', function()
      local root, tally, w, ids = ticking()
      kernel:restartVat(ids.a):await()
      assertStopped(tally, w)
      assert.equal(4, kernel:queueMessage(root, 'ping', { 4 }):await())
    end)
  end)

  describe('os.time, os.clock and os.date', function()
    it('work when endowed', function()
      local root = launch('a', { a = endowed({ 'os.time', 'os.clock', 'os.date' }) })
      local before = os.time()
      local t = kernel:queueMessage(root, 'osTime', {}):await()
      local after = os.time()
      assert.equal('integer', math.type(t))
      assert.is_true(before <= t and t <= after, ('os.time in the vat is %d, not in [%d, %d]'):format(t, before, after))
      local c = kernel:queueMessage(root, 'osClock', {}):await()
      assert.is_number(c)
      assert.is_true(c >= 0)
      assert.equal('1970-01-01 01:00', kernel:queueMessage(root, 'osDate', { '!%Y-%m-%d %H:%M', 3600 }):await())
    end)

    it('are given one by one, and never bring the rest of os', function()
      local root = launch('a', { a = endowed({ 'os.time' }) })
      local function has(name) return kernel:queueMessage(root, 'has', { name }):await() end
      assert.is_true(has('os.time'))
      assert.is_false(has('os.clock'))
      assert.is_false(has('os.date'))
      assert.is_false(has('os.execute'))
      assert.is_false(has('os.getenv'))
    end)

    it('are absent without the endowment: there is no os at all', function()
      local root = launch('a', { a = endowed({ 'print', 'math.random' }) })
      assert.is_false(kernel:queueMessage(root, 'has', { 'os' }):await())
      local r = kernel:queueMessage(root, 'tryOs', { 'time' }):await()
      assert.is_false(r.ok)
      assert.matches("global 'os'", r.err, 1, true)
    end)
  end)

  describe('math.random', function()
    it('works when endowed, seeded per vat: two vats get different sequences', function()
      local root, peer = launch('a', { a = endowed({ 'math.random' }), b = endowed({ 'math.random' }) })
      local xs = kernel:queueMessage(root, 'randoms', { 8 }):await()
      local ys = E(peer('b')).randoms(8):await()
      assert.equal(8, #xs)
      for _, x in ipairs(xs) do assert.is_true(x >= 1 and x <= 1000000) end
      assert.are_not.same(xs, ys)
      -- Calls go on along the vat's sequence.
      assert.are_not.same(xs, kernel:queueMessage(root, 'randoms', { 8 }):await())
    end)

    it('repeats its sequence when the vat starts again (seeded from the vat id)', function()
      local root, _, ids = launch('a', { a = endowed({ 'math.random' }) })
      local before = kernel:queueMessage(root, 'randoms', { 5 }):await()
      kernel:restartVat(ids.a):await()
      assert.same(before, kernel:queueMessage(root, 'randoms', { 5 }):await())
    end)

    it('is absent otherwise, and math.randomseed always is', function()
      local root, peer = launch('a', { a = endowed({ 'math.random' }), n = endowed(nil) })
      local n = peer('n')
      assert.is_false(E(n).has('math.random'):await())
      assert.is_false(E(n).has('math.randomseed'):await())
      assert.is_false(kernel:queueMessage(root, 'has', { 'math.randomseed' }):await())
      local r = E(n).tryRandom():await()
      assert.is_false(r.ok)
      assert.matches("field 'random'", r.err, 1, true)
    end)
  end)

  describe('the allow-list', function()
    local function launchError(k, globals)
      local keys = k:keyCount()
      local err = rejection(k:launchSubcluster({
        bootstrap = 'x', vats = { x = endowed(globals), e = { sourceSpec = ECHO } },
      }))
      assert.equal(0, #k:getStatus().vats)
      assert.equal(0, #k:getSubclusters())
      assert.equal(keys, k:keyCount())
      return err.message
    end

    it('gives every built-in name', function()
      local root = launch('a', { a = endowed(ALL) })
      for _, name in ipairs(ALL) do
        assert.is_true(kernel:queueMessage(root, 'has', { name }):await(), name)
      end
    end)

    it('refuses an unknown name, before anything launches', function()
      for _, name in ipairs({ 'io', 'os.execute', 'os.getenv', 'load', 'debug.getinfo', 'math.randomseed', 'os' }) do
        assert.equal(('Vat "x" requested unknown global "%s"'):format(name), launchError(kernel, { name }))
      end
      assert.equal('Vat "x" requested unknown global "io"', launchError(kernel, { 'print', 'io' }))
      assert.equal('ClusterConfig.vats.x.globals: must be a sequence of names',
        launchError(kernel, { print = true }))
      -- The kernel still works.
      local root = launch('a', { a = endowed({ 'print' }) })
      assert.equal(1, kernel:queueMessage(root, 'ping', { 1 }):await())
    end)

    it('is narrowed by Kernel.make{ allowedGlobalNames }', function()
      local k = testing.makeKernel { allowedGlobalNames = { 'print', 'os.time' } }
      local ok, err = pcall(function()
        assert.equal('Vat "x" requested unknown global "setTimeout"', launchError(k, { 'setTimeout' }))
        assert.equal('Vat "x" requested unknown global "math.random"', launchError(k, { 'print', 'math.random' }))
        local r = k:launchSubcluster({ bootstrap = 'x', vats = { x = endowed({ 'print', 'os.time' }) } }):await()
        k:queueMessage(r.rootKref, 'say', { 'narrowed' }):await()
        assert.equal(1, #(function()
          local out = {}
          for _, e in ipairs(k:logs()) do if e.message == 'narrowed' then out[#out + 1] = e end end
          return out
        end)())
        assert.is_false(k:queueMessage(r.rootKref, 'has', { 'setTimeout' }):await())
      end)
      k:stop()
      assert(ok, err)
    end)

    it('cannot be widened by allowedGlobalNames', function()
      for _, allowed in ipairs({ { 'os.execute' }, { 'print', 'os.getenv' }, { 'io', 'load' } }) do
        local k = testing.makeKernel { allowedGlobalNames = allowed }
        local ok, err = pcall(function()
          for _, name in ipairs(allowed) do
            if name ~= 'print' then
              assert.equal(('Vat "x" requested unknown global "%s"'):format(name), launchError(k, { name }))
            end
          end
        end)
        k:stop()
        assert(ok, err)
      end
    end)

    it('is empty with allowedGlobalNames = {}', function()
      local k = testing.makeKernel { allowedGlobalNames = {} }
      local ok, err = pcall(function()
        assert.equal('Vat "x" requested unknown global "print"', launchError(k, { 'print' }))
        -- A vat that asks for nothing still launches.
        local r = k:launchSubcluster({ bootstrap = 'x', vats = { x = endowed(nil) } }):await()
        assert.equal(2, k:queueMessage(r.rootKref, 'ping', { 2 }):await())
      end)
      k:stop()
      assert(ok, err)
    end)
  end)
end)

describe('vatPowers', function()
  local kernel
  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() kernel:stop() end)

  local function launch()
    local r = kernel:launchSubcluster({
      bootstrap = 'a',
      vats = { a = { sourceSpec = ENDOWED, globals = { 'setTimeout' } }, e = { sourceSpec = ECHO } },
    }):await()
    local ids = kernel:getSubcluster(r.subclusterId).vats
    local echo = kernel:queueMessage(r.rootKref, 'peer', { 'e' }):await()
    return r.rootKref, ids.a, echo
  end

  it('logger: four levels and subLogger tags reach the host with the vat id', function()
    local root, vatId = launch()
    kernel:queueMessage(root, 'logAll', { { 't1', 't2' } }):await()
    local expected = {
      { 'a debug entry', 'debug', { 't1', 't2' }, 1 },
      { 'a log entry', 'log', { 't1', 't2' }, 2 },
      { 'a warn entry', 'warn', { 't1', 't2' }, 3 },
      { 'an error entry', 'error', { 't1', 't2' }, { k = 'v' } },
      { 'a root entry', 'log', {} },
      { 'a nested entry', 'log', { 't1', 't2', 'deeper' } },
    }
    for _, x in ipairs(expected) do
      local entries = entriesWith(kernel, x[1])
      assert.equal(1, #entries, x[1])
      local e = entries[1]
      assert.equal(x[2], e.level, x[1])
      assert.equal(vatId, e.vatId, x[1])
      assert.same(x[3], e.tags or {}, x[1])
      if x[4] ~= nil then
        assert.is_table(e.data, x[1])
        assert.same(x[4], e.data[1], x[1])
      end
    end
  end)

  -- The vat holds a promise it decides and a long timer; it exits in the
  -- next call.
  local function exitWith(method, arg)
    local root, vatId, echo = launch()
    local held = kernel:queueMessage(root, 'hold', { 'k' })
    local timer = kernel:queueMessage(root, 'after', { 600000, 'never' })
    local result = kernel:queueMessage(root, method, { arg }):await()
    return root, vatId, echo, held, timer, result
  end

  local function assertGone(root, vatId, echo, held, timer, why)
    assert.is_false(isLive(kernel, vatId))
    for _, p in ipairs({ held, timer }) do
      local err = rejection(p)
      assert.equal('VAT_TERMINATED', err.code)
      assert.equal(('[KERNEL:VAT_TERMINATED] vat %s was terminated: %s'):format(vatId, why), err.message)
    end
    assert.equal('OBJECT_DELETED', rejection(kernel:queueMessage(root, 'ping', { 1 })).code)
    assert.equal('alive', E(echo).echo('alive'):await())
  end

  it('exitVat(value) ends the vat after the delivery, with that completion', function()
    local root, vatId, echo, held, timer, result = exitWith('exit', 'all done')
    -- The delivery runs to its end and its result reaches the caller.
    assert.equal('still running after exitVat', result)
    local rec = terminatedRecord(kernel, vatId)
    assert.same({ id = vatId, reason = 'exited', failure = false, completion = 'all done' }, rec)
    assertGone(root, vatId, echo, held, timer, 'exited')
  end)

  it('exitVat records plain data as the completion', function()
    local _, vatId = exitWith('exit', { answer = 42, list = { 1, 2 } })
    assert.same({ answer = 42, list = { 1, 2 } }, terminatedRecord(kernel, vatId).completion)
  end)

  it('exitVatWithFailure(reason) ends the vat as a failure, with the reason as an error value', function()
    local root, vatId, echo, held, timer, result = exitWith('exitWithFailure', 'went wrong')
    assert.equal('still running after exitVatWithFailure', result)
    local rec = terminatedRecord(kernel, vatId)
    assert.equal('exited with failure: went wrong', rec.reason)
    assert.is_true(rec.failure)
    assert.equal('went wrong', rec.completion.message)
    assert.equal('Error', rec.completion.name)
    assertGone(root, vatId, echo, held, timer, 'exited with failure: went wrong')
  end)

  it('exitVatWithFailure keeps the name of an error value', function()
    local _, vatId = exitWith('exitWithFailure', ocap.makeError('out of range', 'RangeError'))
    local rec = terminatedRecord(kernel, vatId)
    assert.equal('exited with failure: out of range', rec.reason)
    assert.equal('RangeError', rec.completion.name)
    assert.equal('out of range', rec.completion.message)
  end)

  it('only the first exit counts', function()
    local root, vatId, echo, held, timer = exitWith('exitTwice')
    local rec = terminatedRecord(kernel, vatId)
    assert.equal('exited', rec.reason)
    assert.is_false(rec.failure)
    assert.equal('first', rec.completion)
    assertGone(root, vatId, echo, held, timer, 'exited')
  end)
end)
