-- A kernel run from the host's own event loop (ocap.loop): attached to a
-- real luv loop, whose own timers and handles keep running between the
-- kernel's bounded batches, and driven by hand with pump and nextWakeup.
local uv = require 'luv'
local ocap = require 'ocap'
local testing = require 'ocap.testing'

local LOOPER = 'spec/vats/looper.lua'
local ECHO = 'spec/vats/echo.lua'

local function cluster(services)
  return { bootstrap = 'looper', services = services,
    vats = { looper = { sourceSpec = LOOPER, globals = { 'setTimeout' } }, echo = { sourceSpec = ECHO } } }
end

-- A host service whose answer comes from a luv timer, later.
local function lateService()
  return ocap.makeDefaultExo('late', {
    answer = function(_, n)
      local kit = ocap.makePromiseKit()
      local t = uv.new_timer()
      t:start(5, 0, function()
        t:close()
        kit.resolve(n * 10)
      end)
      return kit.promise
    end,
  })
end

-- Settles into box.ok / box.value when p settles (read after uv.run).
local function watch(p)
  local box = {}
  p:next(function(v) box.ok, box.value = true, v end, function(e) box.ok, box.value = false, e end)
  return box
end

describe('kernel:attach(uv)', function()
  local kernel
  before_each(function() kernel = testing.makeKernel({ services = { late = lateService() } }) end)
  after_each(function()
    kernel:stop()
    uv.run() -- the close callbacks of the handles
  end)

  local function launch(services)
    local box = watch(kernel:launchSubcluster(cluster(services)))
    uv.run()
    assert.is_true(box.ok, tostring(box.value))
    return box.value.rootKref
  end

  it('runs cranks in bounded batches while the host loop turns', function()
    local a = kernel:attach(uv, { batch = 4 })
    local root = launch()
    -- A check handle runs once per loop iteration: it counts the host's
    -- turns while the kernel works, and what the kernel had done by then.
    local turns, seen = 0, {}
    local check = uv.new_check()
    check:start(function()
      turns = turns + 1
      seen[#seen + 1] = kernel:stats().cranks
    end)
    local before, batchesBefore = kernel:stats().cranks, a.batches
    local p = kernel:queueMessage(root, 'relay', { 100 })
    local box = watch(p)
    p:next(function() check:close() end)
    uv.run()
    assert.same({ true, 100 }, { box.ok, box.value })
    local cranks = kernel:stats().cranks - before
    assert.is_true(cranks >= 100, 'cranks ' .. cranks)
    -- At most 4 cranks per batch, and the loop turned between batches.
    assert.is_true(a.batches - batchesBefore >= cranks / 4, 'batches ' .. (a.batches - batchesBefore))
    assert.is_true(turns >= cranks // 4 - 1, ('%d turns for %d cranks'):format(turns, cranks))
    local midway = 0
    for _, c in ipairs(seen) do
      if c > before and c < before + cranks then midway = midway + 1 end
    end
    assert.is_true(midway >= cranks / 8, 'turns in the middle of the work ' .. midway)
  end)

  it('lets a luv timer answer a service call the vat awaits', function()
    kernel:attach(uv)
    local root = launch({ 'late' })
    local box = watch(kernel:queueMessage(root, 'ask', { kernel.services.late.object, 4 }))
    -- The kernel goes idle waiting on the service; the timer's answer is
    -- a host promise turn, which the loop notices before it waits again.
    uv.run()
    assert.same({ true, 40 }, { box.ok, box.value })
  end)

  it('wakes for a vat timer: uv.run does not return before it fires', function()
    kernel:attach(uv)
    local root = launch()
    local box = watch(kernel:queueMessage(root, 'sleep', { 30 }))
    uv.run()
    assert.same({ true, 'woke' }, { box.ok, box.value })
    assert.is_false(uv.loop_alive())
  end)

  it('takes work from luv callbacks and from outside the loop', function()
    kernel:attach(uv)
    local root = launch()
    -- From a luv timer, once the kernel is idle.
    local box
    local t = uv.new_timer()
    t:start(5, 0, function()
      t:close()
      box = watch(kernel:queueMessage(root, 'countdown', { 3 }))
    end)
    uv.run()
    assert.same({ true, 'done' }, { box.ok, box.value })
    -- From the main chunk, between two runs of the loop.
    box = watch(kernel:queueMessage(root, 'countdown', { 2 }))
    assert.is_nil(box.ok)
    uv.run()
    assert.same({ true, 'done' }, { box.ok, box.value })
  end)

  it('is detached by stop, and refuses a second attach', function()
    local a = kernel:attach(uv)
    assert.has_error(function() kernel:attach(uv) end, 'attach: the kernel is already attached to a loop')
    local root = launch()
    a:detach()
    assert.is_nil(kernel._attachment)
    uv.run()
    assert.is_false(uv.loop_alive())
    -- Detached, it runs when called, as before.
    assert.equal('done', kernel:queueMessage(root, 'countdown', { 2 }):await())
    kernel:attach(uv)
    local box = watch(kernel:queueMessage(root, 'sleep', { 60000 }))
    local t = uv.new_timer()
    -- Stopping the kernel from a callback closes its handles: the loop
    -- ends although the vat's timer never fired.
    t:start(1, 0, function()
      t:close()
      kernel:stop()
    end)
    uv.run()
    assert.is_nil(box.ok)
    assert.is_false(uv.loop_alive())
    assert.has_error(function() kernel:attach(uv) end, 'kernel is stopped')
  end)

  it('can be stopped by host code that runs inside a batch', function()
    kernel:attach(uv)
    local root = launch()
    -- The vat's timer keeps the kernel's loop, and so the poll handle on
    -- its descriptor, alive when the kernel is stopped.
    kernel:queueMessage(root, 'sleep', { 60000 })
    -- A handler that runs inside a crank (a result's) may not stop the
    -- kernel; the kernel stays attached and keeps running.
    -- A host turn that a luv callback queues runs in a batch, between
    -- cranks: there it may.
    local refused
    local kit = ocap.makePromiseKit()
    kit.promise:next(function() kernel:stop() end)
    local t = uv.new_timer()
    local box = watch(kernel:queueMessage(root, 'countdown', { 1 }):next(function(v)
      refused = select(2, pcall(kernel.stop, kernel))
      t:start(0, 0, function()
        t:close()
        kit.resolve()
      end)
      return v
    end))
    uv.run()
    assert.same({ true, 'done' }, { box.ok, box.value })
    assert.matches('cannot stop the kernel while a crank is running', refused)
    assert.is_true(kernel.stopped)
    for _, entry in ipairs(kernel.logs()) do assert.not_equal('error', entry.level, entry.message) end
    assert.is_false(uv.loop_alive())
  end)

  it('refuses what is not a loop', function()
    assert.has_error(function() kernel:attach({}) end, 'attach: the loop has no new_idle')
    assert.has_error(function() kernel:attach(uv, { batch = 0 }) end, 'attach: batch must be a positive integer')
    assert.is_nil(kernel._attachment)
  end)
end)

describe('kernel:pump and kernel:nextWakeup', function()
  local kernel
  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() kernel:stop() end)

  -- A driver for any loop: batches while there is work, a sleep until the
  -- kernel's next timer otherwise. Returns the number of batches.
  local function drive(done)
    local batches = 0
    while not done() do
      batches = batches + 1
      if not kernel:pump(4) then
        local ms = kernel:nextWakeup()
        if ms == nil then break end
        assert(ms > 0, 'idle with work due now')
        uv.sleep(ms)
      end
    end
    return batches
  end

  it('runs at most maxCranks cranks per call, and says when to call again', function()
    assert.is_nil(kernel:nextWakeup())
    local launched = watch(kernel:launchSubcluster(cluster()))
    assert.equal(0, kernel:nextWakeup())
    drive(function() return launched.ok ~= nil end)
    local root = launched.value.rootKref
    local before = kernel:stats().cranks
    local box = watch(kernel:queueMessage(root, 'relay', { 40 }))
    assert.equal(0, kernel:nextWakeup())
    local batches = drive(function() return box.ok ~= nil end)
    local cranks = kernel:stats().cranks - before
    assert.same({ true, 40 }, { box.ok, box.value })
    assert.is_true(batches >= cranks / 4, ('%d batches for %d cranks'):format(batches, cranks))
    assert.is_false(kernel:pump(4))
    assert.is_nil(kernel:nextWakeup())
  end)

  it("gives the kernel's next timer", function()
    local launched = watch(kernel:launchSubcluster(cluster()))
    drive(function() return launched.ok ~= nil end)
    local root = launched.value.rootKref
    kernel:queueMessage(root, 'sleep', { 60000 })
    while kernel:pump(4) do end
    local ms, fd = kernel:nextWakeup()
    assert.is_true(ms > 0 and ms <= 60000, 'ms ' .. tostring(ms))
    assert.is_true(math.type(fd) == 'integer' and fd >= 0)
    -- The driver sleeps until the earlier timer is due, then runs it.
    local box = watch(kernel:queueMessage(root, 'sleep', { 20 }))
    drive(function() return box.ok ~= nil end)
    assert.same({ true, 'woke' }, { box.ok, box.value })
  end)

  it('refuses a bad batch size', function()
    assert.has_error(function() kernel:pump(0) end, 'pump: maxCranks must be a positive integer')
  end)
end)
