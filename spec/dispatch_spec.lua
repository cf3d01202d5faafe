-- A delivered method runs as a task in a pooled worker (dispatchCall in
-- core/lpromise.c runs promise.xcall inline, or the method in the worker
-- the delivery itself runs in): every way a task ends must come back as
-- the method's result, rejection, log or kill, and leave the worker fit
-- for the next delivery.
local testing = require 'ocap.testing'
local support = require 'support'
local rejection = support.rejection

local TASKS = 'spec/vats/tasks.lua'

describe('a delivered method run as a task', function()
  local kernel, root

  local function call(method, ...)
    return kernel:queueMessage(root, method, { ... })
  end

  local function entries(level, pattern) return support.logEntries(kernel, level, pattern) end

  before_each(function()
    kernel = testing.makeKernel()
    root = kernel:launchSubcluster({ bootstrap = 'tasks', vats = {
      tasks = { sourceSpec = TASKS, creationOptions = { meter = { instructions = 2e6 } } },
    } }):await().rootKref
  end)

  after_each(function()
    kernel:stop()
  end)

  it('reports a method that raises, and runs the next one in the same worker', function()
    local worker = call('worker'):await()
    local err = rejection(call('boom', 'no'))
    assert.equal('no', err.message)
    local warned = entries('warn', '"boom" failed')
    assert.equal(1, #warned)
    assert.matches('"boom" failed: spec/vats/tasks.lua:%d+: no$', warned[1].message)
    local traced = entries('debug', '^method failed$')
    assert.equal(1, #traced)
    assert.matches('stack traceback:', tostring(traced[1].data[1].traceback), 1, true)
    assert.equal(worker, call('worker'):await())
  end)

  it('settles the result of a method that awaits, and pools its worker after', function()
    local worker = call('worker'):await()
    assert.equal(5, call('later', 4):await())
    assert.equal(worker, call('laterWorker'):await())
    local err = rejection(call('laterBoom', 'late'))
    assert.equal('late', err.message)
    assert.equal(1, #entries('warn', '"laterBoom" failed: late$'))
    assert.equal(worker, call('worker'):await())
    assert.equal(7, call('later', 6):await())
  end)

  -- A delivery runs in an idle worker when the vat has one (a leg,
  -- core/lpromise.c), and a method that awaits keeps it as its task.
  it('settles methods that await at once in the order they are resumed', function()
    assert.equal(5, call('later', 4):await())
    local a, b, c = call('gate', 1), call('gate', 2), call('gate', 3)
    assert.is_true(call('open', 10):await())
    assert.same({ 11, 12, 13 }, { a:await(), b:await(), c:await() })
    assert.equal(7, call('later', 6):await())
  end)

  it('leaves a method that yields its thread itself pending, and goes on', function()
    assert.equal(5, call('later', 4):await())
    local stuck = call('yield')
    local worker = call('worker'):await()
    assert.equal(7, call('later', 6):await())
    assert.equal(worker, call('worker'):await())
    assert.equal('pending', require('ocap.promise').state(stuck))
  end)

  it('ends the vat whose method runs away, on its meter', function()
    assert.equal(5, call('later', 4):await())
    rejection(call('loop'))
    local killed = entries('error', 'killed')
    assert.equal(1, #killed)
    assert.matches('%[VAT_FATAL:METER_EXHAUSTED%] instruction meter exhausted$', killed[1].message)
  end)

  -- A bootstrap runs as any other method does (liveslots' invokeLocal).
  describe('a bootstrap', function()
    local function launch(k, mode)
      return k:launchSubcluster({ bootstrap = 'b', vats = {
        b = { sourceSpec = 'spec/vats/late_bootstrap.lua', parameters = { mode = mode } },
      } })
    end

    it('that awaits a turn settles the launch with its result', function()
      assert.equal(42, launch(kernel, 'return'):await().bootstrapResult)
    end)

    it('that raises after awaiting fails the launch, and says so once', function()
      local err = rejection(launch(kernel, 'raise'))
      assert.matches('bootstrap of vat "b" failed: late boom$', err.message)
      assert.equal(1, #entries('warn', '"bootstrap" failed: late boom$'))
    end)

    it('a root lacking one has nothing to do, at launch or when sent later', function()
      assert.is_nil(call('bootstrap'):await())
      assert.equal(5, call('later', 4):await())
    end)
  end)
end)
