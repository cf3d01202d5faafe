-- Vat limits (issue #6, part 2): creationOptions.meter.instructions and
-- creationOptions.memoryLimit. A runaway vat is terminated with
-- VAT_FATAL:METER_EXHAUSTED or VAT_FATAL:MEMORY_EXHAUSTED, its crank is
-- rolled back, its promises are rejected, and the kernel and the other vats
-- go on. Budgets are small so that every case ends quickly.
local testing = require 'ocap.testing'
local ocap = require 'ocap'
local support = require 'support'
local rejection = support.rejection
local terminatedRecord = support.terminatedRecord
local isLive = support.isLive
local E = ocap.E

local RUNAWAY = 'spec/vats/runaway.lua'
local GLUTTON = 'spec/vats/glutton.lua'
local ECHO = 'spec/vats/echo.lua'
local COUNTER = 'spec/vats/counter.lua'

local METER = 'VAT_FATAL:METER_EXHAUSTED'
local SANITIZED = (os.getenv('LD_PRELOAD') or ''):find('asan', 1, true) ~= nil
local MEMORY = 'VAT_FATAL:MEMORY_EXHAUSTED'

-- Every case runs with each meter mode (docs/security.md): 'time' (the
-- default) stops a runaway vat when its CPU-time allowance runs out,
-- 'instructions' counts. Cases that need an exact count run in
-- instruction mode only.
local MODES = { 'time', 'instructions' }

local function limitsFor(mode)
  return { meter = { mode = mode, instructions = 2e6 }, memoryLimit = 8 * 1024 * 1024 }
end

local function oneOf(codes, code)
  for _, c in ipairs(codes) do
    if c == code then return true end
  end
  return false
end

-- The reason of a terminated vat names the fatal code without the
-- VAT_FATAL: prefix handling mattering: 'METER_EXHAUSTED' or 'MEMORY_EXHAUSTED'.
local function shortCode(code) return (code:gsub('^VAT_FATAL:', '')) end

-- The resident set size of this process in MiB, or nil off Linux.
local function rssMiB()
  local f = io.open('/proc/self/statm', 'r')
  if not f then return nil end
  local _, resident = f:read('n', 'n')
  f:close()
  return resident and resident * 4096 / 2 ^ 20
end

for _, MODE in ipairs(MODES) do
describe('vat limits (' .. MODE .. ' meter)', function()
  local function limits() return limitsFor(MODE) end
  local kernel
  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() kernel:stop() end)

  -- A subcluster with the runaway vat (small budgets) and a healthy echo
  -- vat (default budgets), echo being the bootstrap vat.
  local function launchRunaway(creationOptions)
    local r = kernel:launchSubcluster({
      bootstrap = 'e',
      vats = {
        r = { sourceSpec = RUNAWAY, creationOptions = creationOptions },
        e = { sourceSpec = ECHO },
      },
    }):await()
    local vatId = kernel:getSubcluster(r.subclusterId).vats.r
    local runaway = kernel:queueMessage(r.rootKref, 'peer', { 'r' }):await()
    return r.rootKref, runaway, vatId
  end

  describe('a runaway vat', function()
    -- Observed with 2e6 instructions and 8 MiB: both recursions run out of
    -- memory (the Lua stack grows past 8 MiB before Lua's own stack limit,
    -- about 1,000,000 slots, is reached); runaway.lua's concatBomb builds
    -- its 1 KB strings with string.rep, which is charged up front, and
    -- exhausts the meter before the memory.
    local cases = {
      { 'loop', { METER } },
      { 'loopInPcall', { METER } },
      { 'loopAcrossCoroutines', { METER } },
      { 'recurse', { MEMORY, METER }, MEMORY },
      { 'recurseInPcall', { MEMORY, METER }, MEMORY },
      { 'stringBomb', { MEMORY } },
      { 'concatBomb', { METER, MEMORY }, METER },
      { 'tableBombInPcall', { MEMORY } },
      { 'turnLoop', { METER, MEMORY }, METER },
      { 'reactionBomb', { MEMORY, METER }, MEMORY },
    }

    for _, case in ipairs(cases) do
      local method, codes, observed = case[1], case[2], case[3]
      it(method .. ': is terminated with ' .. table.concat(codes, ' or ') ..
        (observed and (' (observed: ' .. observed .. ')') or '') .. ', and the rest goes on', function()
        local echo, runaway, vatId = launchRunaway(limits())
        -- A promise the runaway vat decides, asked for before it runs away.
        local waiting = E(runaway).waitForever()
        assert.equal(1, E(runaway).ping(1):await())

        local err = rejection(E(runaway)[method]())
        assert.is_true(oneOf(codes, err.code),
          method .. ' gave ' .. tostring(err.code) .. ': ' .. tostring(err.message))
        -- Which budget runs out first is exact only when counted: in time
        -- mode a loaded machine can use up the allowance before the memory.
        if observed and MODE == 'instructions' then assert.equal(observed, err.code) end
        assert.equal(('[KERNEL:%s] vat %s terminated: %s'):format(err.code, vatId,
          err.code == METER and 'instruction meter exhausted' or 'memory limit exceeded'), err.message)

        -- The kernel records the termination, with its reason.
        local rec = terminatedRecord(kernel, vatId)
        assert.is_table(rec, 'vat ' .. vatId .. ' is not listed in terminatedVats')
        assert.is_string(rec.reason)
        assert.matches(shortCode(err.code), rec.reason, 1, true)
        assert.is_false(isLive(kernel, vatId))

        -- Every other promise the vat decided is rejected.
        local w = rejection(waiting)
        assert.equal('VAT_TERMINATED', w.code)
        assert.matches('vat ' .. vatId .. ' terminated', w.message, 1, true)
        assert.matches(shortCode(err.code), w.message, 1, true)

        -- Later messages to the dead vat, from the host or from a vat.
        assert.equal('OBJECT_DELETED', rejection(E(runaway).ping(2)).code)
        assert.equal('OBJECT_DELETED', rejection(kernel:queueMessage(kernel:krefOf(runaway), 'ping', { 3 })).code)
        local viaEcho = kernel:queueMessage(echo, 'tryPeer', { 'r', 'ping', 4 }):await()
        assert.is_false(viaEcho.ok)
        assert.equal('OBJECT_DELETED', viaEcho.err.code)

        -- The other vat and the host still work.
        assert.equal(5, kernel:queueMessage(echo, 'ping', { 5 }):await())
        local other = kernel:launchSubcluster({ bootstrap = 'e', vats = { e = { sourceSpec = ECHO } } }):await()
        assert.equal('still here', kernel:queueMessage(other.rootKref, 'echo', { 'still here' }):await())
        assert.equal(0, kernel:stats().queue)
      end)
    end

    it('rejects a calling vat with the same code', function()
      local echo, _, vatId = launchRunaway(limits())
      local res = kernel:queueMessage(echo, 'tryPeer', { 'r', 'loop' }):await()
      assert.is_false(res.ok)
      assert.equal(METER, res.err.code)
      assert.matches('vat ' .. vatId .. ' terminated: instruction meter exhausted', res.err.message, 1, true)
      assert.equal(6, kernel:queueMessage(echo, 'ping', { 6 }):await())
    end)

    it('is not terminated by a string.rep beyond Lua\'s own size limit (a plain error)', function()
      -- runaway.lua's repBomb asks for 1 TiB: Lua refuses any string over
      -- 2^31 bytes with "resulting string too large" before allocating.
      local _, runaway, vatId = launchRunaway(limits())
      local err = rejection(E(runaway).repBomb())
      assert.is_nil(err.code)
      assert.equal('resulting string too large', err.message)
      assert.equal(7, E(runaway).ping(7):await())
      assert.is_true(isLive(kernel, vatId))
    end)
  end)

  describe('memory bombs through C library buffers', function()
    local function launchGlutton()
      local r = kernel:launchSubcluster({
        bootstrap = 'g', vats = { g = { sourceSpec = GLUTTON, creationOptions = limits() } },
      }):await()
      return r.rootKref, kernel:getSubcluster(r.subclusterId).vats.g
    end

    -- string.rep and table.concat build their result in a luaL_Buffer,
    -- which raises Lua's memory error; a memory error caught by the vat's
    -- own pcall, xpcall or coroutine.resume still ends the vat.
    local function bombTerminates(method)
      local g, vatId = launchGlutton()
      local ok, err = pcall(ocap.await, kernel:queueMessage(g, method, {}))
      assert.is_false(ok)
      assert.is_table(err, 'expected an error value, got ' .. tostring(err))
      assert.equal(MEMORY, err.code)
      assert.is_false(isLive(kernel, vatId))
      assert.matches('MEMORY_EXHAUSTED', terminatedRecord(kernel, vatId).reason, 1, true)
      assert.equal('OBJECT_DELETED', rejection(kernel:queueMessage(g, 'ping', { 1 })).code)
    end

    it('string.rep of 64 MiB in an 8 MiB vat terminates it with MEMORY_EXHAUSTED', function()
      bombTerminates('repBomb')
    end)

    it('table.concat of 10 MB in an 8 MiB vat terminates it with MEMORY_EXHAUSTED', function()
      bombTerminates('concatBomb')
    end)
  end)

  describe('the crank that exhausts a budget', function()
    local function launchWithPeers()
      local r = kernel:launchSubcluster({
        bootstrap = 'g',
        vats = {
          g = { sourceSpec = GLUTTON, creationOptions = limits() },
          tally = { sourceSpec = COUNTER },
          e = { sourceSpec = ECHO },
        },
      }):await()
      local sc = kernel:getSubcluster(r.subclusterId)
      local tally = kernel:queueMessage(r.rootKref, 'peer', { 'tally' }):await()
      return r.rootKref, tally, sc.vats.g
    end

    for _, kind in ipairs({ 'meter', 'memory' }) do
      local code = kind == 'meter' and METER or MEMORY
      it('is rolled back (' .. kind .. '): its sends and resolutions never happen', function()
        local g, tally, vatId = launchWithPeers()
        local held = kernel:queueMessage(g, 'hold', { 'k' })
        -- In one delivery: sendOnly and send to tally, resolve `held`,
        -- write baggage, log, then exhaust the budget.
        local err = rejection(kernel:queueMessage(g, 'sideEffectsThen', { kind, 'k' }))
        assert.equal(code, err.code)
        -- The resolution was discarded: `held` is rejected as any other
        -- promise of the dead vat, not fulfilled.
        local h = rejection(held)
        assert.equal('VAT_TERMINATED', h.code)
        assert.matches(shortCode(code), h.message, 1, true)
        -- Neither message reached the tally vat.
        assert.equal(0, E(tally).get():await())
        assert.equal(1, E(tally).increment():await())
        assert.is_false(isLive(kernel, vatId))
        assert.equal(0, kernel:stats().queue)
      end)

      it('discards an exitVat made in it (' .. kind .. '): the vat ends as exhausted, not exited', function()
        local g, _, vatId = launchWithPeers()
        local err = rejection(kernel:queueMessage(g, 'exitThen', { kind }))
        assert.equal(code, err.code)
        local rec = terminatedRecord(kernel, vatId)
        assert.matches(shortCode(code), rec.reason, 1, true)
        assert.not_matches('^exited', rec.reason)
        assert.is_nil(rec.completion)
      end)
    end

    it('may be a later delivery of the same method: its result is then rejected with VAT_TERMINATED', function()
      -- awaitThen awaits a reply from the tally vat and loops in the
      -- notify delivery that resumes it; the message's own delivery had
      -- ended, so its result is one more promise of the dead vat.
      local g, tally, vatId = launchWithPeers()
      local err = rejection(kernel:queueMessage(g, 'awaitThen', { 'meter' }))
      assert.equal('VAT_TERMINATED', err.code)
      assert.matches('METER_EXHAUSTED', err.message, 1, true)
      assert.matches('METER_EXHAUSTED', terminatedRecord(kernel, vatId).reason, 1, true)
      assert.equal(0, E(tally).get():await())
    end)
  end)

  describe('budgets', function()
    local function launchGlutton(creationOptions)
      local r = kernel:launchSubcluster({
        bootstrap = 'g', vats = { g = { sourceSpec = GLUTTON, creationOptions = creationOptions } },
      }):await()
      return r.rootKref, kernel:getSubcluster(r.subclusterId).vats.g
    end

    -- In time mode a finite loop over its count is not stopped unless it
    -- runs out of time: counting it is instruction mode's guarantee.
    local countedIt = MODE == 'instructions' and it or pending
    countedIt('the instruction budget is per delivery, not per vat', function()
      local g, vatId = launchGlutton(limits())
      -- About 1.6e6 instructions each, 8e6 in all, against 2e6 a delivery.
      for _ = 1, 5 do
        assert.equal(800000, kernel:queueMessage(g, 'spin', { 800000 }):await())
      end
      assert.is_true(isLive(kernel, vatId))
      assert.equal(METER, rejection(kernel:queueMessage(g, 'spin', { 2000000 })).code)
      assert.is_false(isLive(kernel, vatId))
    end)

    it('a vat that makes far more garbage than its limit survives', function()
      local options = limits()
      -- Under the sanitizers' malloc (make asan preloads it) this churn
      -- takes about 20 times its usual 5 ms of CPU, more than a time-mode
      -- allowance of 2e6 instructions (50 ms): give it room there.
      if MODE == 'time' and SANITIZED then options.meter.instructions = 1e8 end
      local g, vatId = launchGlutton(options)
      -- 3 x 50 MiB of garbage, 1 MiB at a time, in an 8 MiB vat.
      for _ = 1, 3 do
        assert.equal(50 * (1 << 20) + 91, kernel:queueMessage(g, 'churn', { 50 }):await())
      end
      assert.is_true(isLive(kernel, vatId))
    end)

    it('a collection makes room for a big string.rep when the vat holds mostly garbage', function()
      local options = limits()
      -- The sanitizers' malloc makes this churn outlast a time-mode
      -- allowance of 2e6 instructions too, as above.
      if MODE == 'time' and SANITIZED then options.meter.instructions = 1e8 end
      local g, vatId = launchGlutton(options)
      -- garbageThenRep drops 6 MiB and then asks string.rep for 2.5 MiB;
      -- live data never exceeds about 6 MiB of the 8 MiB.
      local ok, res = pcall(ocap.await, kernel:queueMessage(g, 'garbageThenRep', {}))
      assert.is_true(ok, tostring(type(res) == 'table' and res.message or res))
      assert.equal(40 * 64 * 1024, res)
      assert.is_true(isLive(kernel, vatId))
    end)

    -- The defaults do not depend on MODE: run them once.
    local onceIt = MODE == 'time' and it or pending
    onceIt('are finite by default: a vat without creationOptions is stopped', function()
      -- The default meter is 1e8 instructions a delivery in time mode, 2 s
      -- of CPU time: this test takes several seconds.
      local echo, runaway, vatId = launchRunaway(nil)
      local err = rejection(E(runaway).loop())
      assert.equal(METER, err.code)
      assert.matches('METER_EXHAUSTED', terminatedRecord(kernel, vatId).reason, 1, true)
      -- The default memory limit (64 MiB) stops a doubling string.
      local _, runaway2, vatId2 = launchRunaway(nil)
      assert.equal(MEMORY, rejection(E(runaway2).stringBomb()).code)
      assert.matches('MEMORY_EXHAUSTED', terminatedRecord(kernel, vatId2).reason, 1, true)
      -- Deep recursion with the defaults ends either way: observed, Lua's
      -- own stack limit comes first and the caller gets "stack overflow".
      local _, runaway3, vatId3 = launchRunaway(nil)
      local rec = rejection(E(runaway3).recurse())
      if rec.code then
        assert.is_true(oneOf({ METER, MEMORY }, rec.code))
      else
        assert.matches('stack overflow', rec.message, 1, true)
        assert.equal(1, E(runaway3).ping(1):await())
        assert.is_true(isLive(kernel, vatId3))
      end
      assert.equal(8, kernel:queueMessage(echo, 'ping', { 8 }):await())
    end)
  end)

  describe('a budget exhausted while the vat starts', function()
    local function expectRefused(vatConfig, message)
      local keys = kernel:keyCount()
      local err = rejection(kernel:launchSubcluster({ bootstrap = 'g', vats = { g = vatConfig } }))
      assert.equal(message, err.message)
      assert.equal(0, #kernel:getStatus().vats)
      assert.equal(0, #kernel:getSubclusters())
      assert.equal(0, #kernel:getStatus().terminatedVats)
      assert.equal(keys, kernel:keyCount())
      local r = kernel:launchSubcluster({ bootstrap = 'e', vats = { e = { sourceSpec = ECHO } } }):await()
      assert.equal(9, kernel:queueMessage(r.rootKref, 'ping', { 9 }):await())
    end

    it('refuses the launch when the top level loops', function()
      expectRefused({ sourceSpec = 'spec/vats/loop_toplevel.lua', creationOptions = limits() },
        'vat "g" failed to start: instruction meter exhausted')
    end)

    it('refuses the launch when buildRootObject loops', function()
      expectRefused({ sourceSpec = GLUTTON, parameters = { exhaustAtBuild = 'meter' }, creationOptions = limits() },
        'vat "g" failed to start: instruction meter exhausted')
    end)

    it('refuses the launch when buildRootObject runs out of memory', function()
      expectRefused({ sourceSpec = GLUTTON, parameters = { exhaustAtBuild = 'memory' }, creationOptions = limits() },
        'vat "g" failed to start: memory limit exceeded')
    end)

    it('refuses the launch when the memory limit cannot hold the runtime', function()
      expectRefused({ sourceSpec = GLUTTON, creationOptions = { memoryLimit = 65536 } },
        'vat "g" failed to start: memory limit exceeded')
    end)
  end)

  -- Validation does not depend on MODE: run it once.
  local onceDescribe = MODE == 'time' and describe or function() end
  onceDescribe('creationOptions validation', function()
    local function launchError(creationOptions)
      return rejection(kernel:launchSubcluster({
        bootstrap = 'g', vats = { g = { sourceSpec = GLUTTON, creationOptions = creationOptions } },
      })).message
    end

    it('refuses a memoryLimit that is not an integer of at least 65536 bytes', function()
      local msg = 'ClusterConfig.vats.g.creationOptions.memoryLimit: must be an integer number of bytes, '
        .. 'at least 65536 and at most 2^40, got '
      assert.equal(msg .. '65535', launchError({ memoryLimit = 65535 }))
      assert.equal(msg .. '1000000.5', launchError({ memoryLimit = 1e6 + 0.5 }))
      assert.equal(msg .. '"8M"', launchError({ memoryLimit = '8M' }))
      assert.equal(0, #kernel:getStatus().vats)
    end)

    it('refuses a meter mode that is not time or instructions', function()
      local msg = "ClusterConfig.vats.g.creationOptions.meter.mode: must be 'time' or 'instructions', got "
      assert.equal(msg .. '"count"', launchError({ meter = { mode = 'count', instructions = 1e6 } }))
      assert.equal(msg .. '1', launchError({ meter = { mode = 1 } }))
      assert.equal('ClusterConfig.vats.g.creationOptions.meter: unknown key "modes"',
        launchError({ meter = { modes = 'time', instructions = 1e6 } }))
      assert.equal(0, #kernel:getStatus().vats)
    end)

    it('accepts either meter mode, with or without a budget', function()
      for _, mode in ipairs(MODES) do
        for _, meter in ipairs({ { mode = mode }, { mode = mode, instructions = 1e6 } }) do
          local ok, res = pcall(ocap.await, kernel:launchSubcluster({
            bootstrap = 'g', vats = { g = { sourceSpec = GLUTTON, creationOptions = { meter = meter } } },
          }))
          assert.is_true(ok, tostring(type(res) == 'table' and res.message or res))
          assert.equal(3, kernel:queueMessage(res.rootKref, 'ping', { 3 }):await())
        end
      end
    end)

    it('refuses a meter that is not a positive number of instructions', function()
      local msg = 'ClusterConfig.vats.g.creationOptions.meter.instructions: must be a positive integral number, '
        .. 'at most 1e15, got '
      assert.equal(msg .. '0', launchError({ meter = { instructions = 0 } }))
      assert.equal(msg .. '-5', launchError({ meter = { instructions = -5 } }))
      assert.equal(msg .. 'nil', launchError({ meter = {} }))
      assert.equal('ClusterConfig.vats.g.creationOptions: unknown key "cpu"', launchError({ cpu = 1 }))
    end)

    it("accepts API.md's example creationOptions (memoryLimit = 64 * 2^20, an integral float)", function()
      local creationOptions = { meter = { instructions = 1e8 }, memoryLimit = 64 * 2 ^ 20 }
      local ok, res = pcall(ocap.await, kernel:launchSubcluster({
        bootstrap = 'g', vats = { g = { sourceSpec = GLUTTON, creationOptions = creationOptions } },
      }))
      assert.is_true(ok, tostring(type(res) == 'table' and res.message or res))
      assert.equal(3, kernel:queueMessage(res.rootKref, 'ping', { 3 }):await())
    end)
  end)

  describe('resources of terminated vats', function()
    it('are released: many runaway vats leave one terminatedVats record each and no memory', function()
      -- Under the sanitizers, keeping 5 MiB takes more than a time-mode
      -- allowance of 2e6 instructions (120 ms there): 1e7 gives it room
      -- and keeps each runaway 'meter' vat to 0.6 s.
      local options = limits()
      if MODE == 'time' and SANITIZED then options.meter.instructions = 1e7 end
      local function cycle(i)
        local r = kernel:launchSubcluster({
          bootstrap = 'g', vats = { g = { sourceSpec = GLUTTON, creationOptions = options } },
        }):await()
        local vatId = kernel:getSubcluster(r.subclusterId).vats.g
        -- 5 MiB live, then run away: each vat holds about 8 MiB at its end.
        assert.equal(5, kernel:queueMessage(r.rootKref, 'keep', { 5 }):await())
        local kind = i % 2 == 0 and 'memory' or 'meter'
        assert.equal(kind == 'meter' and METER or MEMORY,
          rejection(kernel:queueMessage(r.rootKref, 'exhaust', { kind })).code)
        assert.is_false(isLive(kernel, vatId))
      end
      cycle(1)
      collectgarbage()
      local keys, rss = kernel:keyCount(), rssMiB()
      local n = 20
      for i = 2, n + 1 do cycle(i) end
      collectgarbage()
      -- The subclusters are gone; the only keys left are the records.
      assert.equal(0, #kernel:getSubclusters())
      assert.equal(0, #kernel:getStatus().vats)
      assert.equal(n + 1, #kernel:getStatus().terminatedVats)
      assert.is_true(kernel:keyCount() - keys <= n,
        ('%d keys more after %d terminated vats'):format(kernel:keyCount() - keys, n))
      assert.equal(0, kernel:stats().queue)
      -- 20 leaked vat states would hold over 160 MiB.
      if rss then
        local grown = rssMiB() - rss
        assert.is_true(grown < 64, ('resident memory grew by %.1f MiB'):format(grown))
      end
    end)
  end)
end)
end
