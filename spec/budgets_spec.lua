-- Budgets a vat cannot escape (issue #9, items 3, 4, 7, 9 and 11): what a
-- vat sends, queues, arms and logs is bounded and charged to it, a vat
-- never loses its state because of what another vat sent it or because it
-- failed to restart, and every number in a config is checked.
local testing = require 'ocap.testing'
local ocap = require 'ocap'
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

    it('refuses a kernel-side budget that is not an integer in its range', function()
      assert.equal(where .. 'maxMessageBytes: must be an integer number of bytes, from 1024 to 2^40, got 0.5',
        launchError({ maxMessageBytes = 0.5 }))
      assert.equal(where .. 'maxCrankBytes: must be an integer number of bytes, from 1024 to 2^40, got nan',
        launchError({ maxCrankBytes = 0 / 0 }))
      assert.equal(where .. 'maxTimers: must be an integer number of timers, from 0 to 2^40, got -1',
        launchError({ maxTimers = -1 }))
      assert.equal(where .. 'maxLogBytes: must be an integer number of bytes, from 0 to 2^40, got inf',
        launchError({ maxLogBytes = math.huge }))
      assert.equal(where .. 'maxQueuedBytes: must be an integer number of bytes, from 1024 to 2^40, got "big"',
        launchError({ maxQueuedBytes = 'big' }))
      assert.equal(where .. 'maxMessageSlots: must be an integer number of slots, from 0 to 2^40, got 1e+100',
        launchError({ maxMessageSlots = 1e100 }))
    end)

    it('accepts integral floats and runs with the meter given', function()
      local meter = { mode = 'instructions', instructions = 3e6 }
      local r = kernel:launchSubcluster({
        bootstrap = 'b', vats = { b = { sourceSpec = BUDGET, creationOptions = { meter = meter } } },
      }):await()
      assert.equal(4, kernel:queueMessage(r.rootKref, 'ping', { 4 }):await())
      -- 3e6 is the budget, not the default (1e8): a 5e6-step loop is
      -- stopped (counted: in time mode it would finish well within time).
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

  describe('a message that costs more to decode than its receiver has', function()
    local MiB = 1 << 20
    -- s may send big messages; r has a small memory budget and data in
    -- its baggage.
    local function launchPair()
      local r = kernel:launchSubcluster({
        bootstrap = 's',
        vats = {
          s = { sourceSpec = BUDGET, creationOptions = { maxMessageBytes = 32 * MiB, maxCrankBytes = 64 * MiB } },
          r = { sourceSpec = BUDGET, creationOptions = { memoryLimit = 8 * MiB, maxMessageBytes = 32 * MiB,
            maxCrankBytes = 64 * MiB } },
        },
      }):await()
      local sc = kernel:getSubcluster(r.subclusterId)
      local recv = kernel:queueMessage(r.rootKref, 'peer', { 'r' }):await()
      kernel:queueMessage(recv, 'meet', { 's', kernel:getPresence(r.rootKref) }):await()
      assert.equal('precious', kernel:queueMessage(recv, 'put', { 'data', 'precious' }):await())
      return r.rootKref, recv, sc.vats.r
    end

    it('is refused: the result is rejected, the receiver keeps running with its state', function()
      local s, recv, vatId = launchPair()
      -- 200,000 records are about 600 KB of capdata and well over 8 MiB decoded.
      local res = kernel:queueMessage(s, 'sendRecords', { 'r', 200000 }):await()
      assert.is_false(res.ok)
      assert.equal('DELIVERY_REFUSED', res.err.code)
      assert.equal(('[KERNEL:DELIVERY_REFUSED] vat %s refused a message it has no memory to decode '
        .. '(memoryLimit 8388608 bytes)'):format(vatId), res.err.message)
      assert.is_true(support.isLive(kernel, vatId))
      assert.is_nil(support.terminatedRecord(kernel, vatId))
      assert.equal('precious', kernel:queueMessage(recv, 'get', { 'data' }):await())
      -- It still works, with its memory back: a message it can decode.
      assert.equal(1000, kernel:queueMessage(s, 'sendRecords', { 'r', 1000 }):await().err)
      assert.equal(7, kernel:queueMessage(recv, 'ping', { 7 }):await())
      local warned = false
      for _, e in ipairs(kernel:logs()) do
        if e.vatId == vatId and e.level == 'warn' and tostring(e.message):match('has no memory to decode') then
          warned = true
        end
      end
      assert.is_true(warned, 'the refusal is not logged')
    end)

    it('is refused, and the references it carried are still let go of', function()
      local _, recv = launchPair()
      kernel:collectGarbage():await()
      local before = kernel:stats().objects
      local one, list = {}, {}
      for i = 1, 200000 do list[i] = one end
      -- A new import for r, among slots r runs out of memory decoding.
      local ok, err = pcall(function()
        return kernel:queueMessage(recv, 'ping', { list, ocap.makeDefaultExo('carried', {}) }):await()
      end)
      assert.is_false(ok)
      assert.equal('DELIVERY_REFUSED', err.code)
      list = nil -- luacheck: ignore 311
      kernel:collectGarbage():await()
      assert.equal(before, kernel:stats().objects)
    end)

    it('is refused in a promise resolution too: the promise is rejected instead', function()
      local _, recv, vatId = launchPair()
      -- r asks s for the records: the reply reaches r as a notify.
      local res = kernel:queueMessage(recv, 'askRecords', { 's', 200000 }):await()
      assert.is_false(res.ok)
      assert.equal('DELIVERY_REFUSED', res.err.code)
      assert.matches('refused a promise resolution it has no memory to decode', res.err.message, 1, true)
      assert.is_true(support.isLive(kernel, vatId))
      assert.equal('precious', kernel:queueMessage(recv, 'get', { 'data' }):await())
      assert.same({ ok = true, count = 1000 }, kernel:queueMessage(recv, 'askRecords', { 's', 1000 }):await())
    end)
  end)

  describe('what a vat sends', function()
    local function launchPair(creationOptions)
      local r = kernel:launchSubcluster({
        bootstrap = 's',
        vats = {
          s = { sourceSpec = BUDGET, creationOptions = creationOptions },
          r = { sourceSpec = BUDGET },
        },
      }):await()
      local sc = kernel:getSubcluster(r.subclusterId)
      return r.rootKref, kernel:queueMessage(r.rootKref, 'peer', { 'r' }):await(), sc.vats.s
    end

    it('is refused at the sender, as an ordinary error, over maxMessageBytes (default 1 MiB)', function()
      local s, _, vatId = launchPair(nil)
      local res = kernel:queueMessage(s, 'trySend', { 'r', 2 << 20 }):await()
      assert.is_false(res.ok)
      assert.matches("^message of 20971%d%d bytes is over this vat's limit of 1048576 %(maxMessageBytes%)$", res.err)
      assert.is_true(kernel:queueMessage(s, 'trySend', { 'r', 1000 }):await().ok)
      assert.is_true(support.isLive(kernel, vatId))
    end)

    it('is refused at the sender over maxMessageSlots', function()
      local s = launchPair({ maxMessageSlots = 10 })
      local res = kernel:queueMessage(s, 'sendRecords', { 'r', 3 }):await()
      assert.equal(3, res.err)
    end)

    it('rejects a result over maxMessageBytes with the reason, and the vat goes on', function()
      local s, _, vatId = launchPair({ maxMessageBytes = 4096 })
      local err = rejection(kernel:queueMessage(s, 'bigResult', { 5000 }))
      assert.equal("result of 5003 bytes is over this vat's limit of 4096 (maxMessageBytes)", err.message)
      assert.equal('rrrr', kernel:queueMessage(s, 'bigResult', { 4 }):await())
      assert.is_true(support.isLive(kernel, vatId))
    end)

    it('and is still waiting in the kernel is bounded by maxQueuedBytes, across deliveries', function()
      local s, recv, vatId = launchPair({ maxQueuedBytes = 64 * 1024 })
      local kit = ocap.makePromiseKit()
      kernel:queueMessage(s, 'hold', { kit.promise }):await()
      -- Parked on a promise nobody resolves yet, one message per delivery.
      for _ = 1, 6 do assert.is_true(kernel:queueMessage(s, 'sendToHeld', { 10000 }):await().ok) end
      local res = kernel:queueMessage(s, 'sendToHeld', { 10000 }):await()
      assert.is_false(res.ok)
      assert.matches("^this vat has 60%d%d%d bytes of messages waiting in the kernel; 100%d%d more would "
        .. "pass its limit of 65536 %(maxQueuedBytes%)$", res.err)
      assert.is_true(support.isLive(kernel, vatId))
      -- Once they are delivered, it may send again.
      kit.resolve(recv)
      kernel:run()
      assert.is_true(kernel:queueMessage(s, 'sendToHeld', { 10000 }):await().ok)
      kernel:run()
      assert.is_nil(kernel.K:kvGet(vatId .. '.queuedBytes'), 'nothing is waiting any more')
    end)

    it('counts every message of one delivery against maxQueuedBytes', function()
      local s, _, vatId = launchPair({ maxQueuedBytes = 64 * 1024 })
      local err = rejection(kernel:queueMessage(s, 'flood', { 'r', 7, 10000 }))
      assert.matches("this vat has 60%d%d%d bytes of messages waiting in the kernel; 100%d%d more would "
        .. "pass its limit of 65536 %(maxQueuedBytes%)", err.message)
      assert.is_true(support.isLive(kernel, vatId))
      kernel:run()
      assert.is_nil(kernel.K:kvGet(vatId .. '.queuedBytes'), 'the six sent were delivered')
      assert.equal(3, kernel:queueMessage(s, 'flood', { 'r', 3, 10000 }):await())
    end)

    it('in one delivery is bounded by maxCrankBytes: over it the vat is terminated, the crank rolled back', function()
      local s, recv, vatId = launchPair({ maxCrankBytes = 64 * 1024 })
      assert.equal(7, kernel:queueMessage(s, 'flood', { 'r', 7, 8192 }):await())
      local err = rejection(kernel:queueMessage(s, 'flood', { 'r', 9, 8192 }))
      assert.equal('VAT_FATAL:QUOTA_EXCEEDED', err.code)
      assert.matches(("vat %s terminated: sent %%d+ bytes in one delivery, over this vat's limit of 65536 "
        .. '%%(maxCrankBytes%%)'):format(vatId), err.message)
      assert.is_false(support.isLive(kernel, vatId))
      -- Nothing of the fatal crank was queued.
      assert.equal(0, kernel:stats().queue)
      assert.equal(1, kernel:queueMessage(recv, 'ping', { 1 }):await())
    end)
  end)

  describe('log entries from vats', function()
    local logview = require 'ocap.logview'

    local function launch(creationOptions)
      local r = kernel:launchSubcluster({
        bootstrap = 'b', vats = { b = { sourceSpec = BUDGET, creationOptions = creationOptions } },
      }):await()
      return r.rootKref, kernel:getSubcluster(r.subclusterId).vats.b
    end

    local function lastEntry(vatId)
      local logs = kernel:logs()
      for i = #logs, 1, -1 do
        if logs[i].vatId == vatId then return logs[i] end
      end
    end

    it('cannot forge a line: newlines and control characters are escaped', function()
      local b, vatId = launch()
      kernel:queueMessage(b, 'logLine', { 'ok\n[error] kernel [kernel] forged\r\27[2K', 'data\nline',
        { trace = 'one\n[error] two' } }):await()
      local e = lastEntry(vatId)
      assert.equal('ok\\n[error] kernel [kernel] forged\\r\\x1b[2K', e.message)
      local line = logview.format(e)
      -- A multi-line datum (a traceback) keeps its lines, indented.
      assert.equal(('[log] %s ok\\n[error] kernel [kernel] forged\\r\\x1b[2K data\\nline {trace = \n'
        .. '    one\n    [error] two}'):format(vatId), line)
      -- Every line after the first is indented: none looks like an entry.
      for l in line:gmatch('\n([^\n]*)') do assert.matches('^    ', l) end
    end)

    it('are bounded: an entry over 16 KiB or 256 values reaches the host as a notice', function()
      local b, vatId = launch()
      kernel:queueMessage(b, 'logHuge', { 20000 }):await()
      assert.matches('^log entry of 200%d%d bytes dropped: it is over 16384 bytes$', lastEntry(vatId).message)
      assert.same({ 'kernel' }, lastEntry(vatId).tags)
      kernel:queueMessage(b, 'logMany', { 300 }):await()
      assert.matches('dropped: it has more than 256 values$', lastEntry(vatId).message)
      kernel:queueMessage(b, 'logMany', { 100 }):await()
      local e = lastEntry(vatId)
      assert.equal('many', e.message)
      assert.equal(logview.MAX_FIELDS, e.data.n)
    end)

    it('never hand the host a count it did not check', function()
      -- A stand-in for the runtime logs through the raw syscall what the
      -- real runtime never would: a data count of 10^12.
      kernel.K:setRuntime({ { 'ocap.vatboot', [[
local M = {}
function M.boot(syscall)
  syscall.log('warn', '#{"data":{"n":1000000000000},"message":"count","tags":["a","b"]}')
  syscall.log('warn', '#{"data":[1,2],"message":{"not":"a string"},"tags":"notalist"}')
  return function(kind) if kind == 'startVat' then return true end end, {}, {}
end
return M
]] } })
      kernel:launchSubcluster({ bootstrap = 'b', vats = { b = { sourceSpec = BUDGET } } })
      local got = {}
      for _, e in ipairs(kernel:logs()) do
        if e.level == 'warn' then got[#got + 1] = e end
      end
      assert.equal(2, #got)
      assert.equal('count', got[1].message)
      assert.equal(0, got[1].data.n)
      assert.same({ 'a', 'b' }, got[1].tags)
      assert.equal('[warn] v1 [a,b] count', logview.format(got[1]))
      assert.equal('(a table, not a message)', got[2].message)
      assert.same({}, got[2].tags)
      assert.equal(2, got[2].data.n)
      kernel:terminateVat('v1')
    end)

    it('in one delivery are bounded by maxLogBytes: over it the vat is terminated', function()
      local b, vatId = launch({ maxLogBytes = 10000 })
      assert.equal(3, kernel:queueMessage(b, 'logFlood', { 3, 3000 }):await())
      local err = rejection(kernel:queueMessage(b, 'logFlood', { 4, 3000 }))
      assert.equal('VAT_FATAL:QUOTA_EXCEEDED', err.code)
      assert.matches("logged %d+ bytes in one delivery, over this vat's limit of 10000 %(maxLogBytes%)", err.message)
      assert.is_false(support.isLive(kernel, vatId))
    end)
  end)

  describe('timers', function()
    local function launch(creationOptions)
      local r = kernel:launchSubcluster({
        bootstrap = 'b',
        vats = { b = { sourceSpec = BUDGET, globals = { 'setTimeout', 'clearTimeout' },
          creationOptions = creationOptions } },
      }):await()
      return r.rootKref, kernel:getSubcluster(r.subclusterId).vats.b
    end

    it('a vat may have at most maxTimers live timers; cleared and fired ones do not count', function()
      local b, vatId = launch({ maxTimers = 5 })
      local res = kernel:queueMessage(b, 'armTimers', { 7 }):await()
      assert.equal(5, res.armed)
      assert.equal("too many live timers: this vat's limit is 5 (maxTimers)", res.err)
      assert.is_true(support.isLive(kernel, vatId))
      -- Clearing two makes room for two.
      kernel:queueMessage(b, 'clearTimer', { 1 }):await()
      kernel:queueMessage(b, 'clearTimer', { 2 }):await()
      local more = kernel:queueMessage(b, 'armTimers', { 3 }):await()
      assert.equal(2, more.armed)
      for _, id in ipairs({ 3, 4, 5, more.ids[1], more.ids[2] }) do
        kernel:queueMessage(b, 'clearTimer', { id }):await()
      end
      -- One-shot timers that fired are released: 3 rounds of 5.
      for _ = 1, 3 do assert.equal(5, kernel:queueMessage(b, 'fireTimers', { 5 }):await()) end
    end)

    it('has a default of 1000 live timers', function()
      local b = launch(nil)
      local res = kernel:queueMessage(b, 'armTimers', { 1001 }):await()
      assert.equal(1000, res.armed)
      assert.matches('limit is 1000 %(maxTimers%)', res.err)
    end)
  end)

  describe('a notify', function()
    it('tells thousands of promises in one delivery, each once', function()
      local r = kernel:launchSubcluster({
        bootstrap = 'a', vats = { a = { sourceSpec = BUDGET }, b = { sourceSpec = BUDGET } },
      }):await()
      local n = 3000
      assert.equal(n * (n + 1) // 2, kernel:queueMessage(r.rootKref, 'sumPromises', { 'b', n }):await())
      assert.equal(0, kernel:stats().queue)
    end)
  end)
end)
