-- The instruction meter bounds CPU (issue 9, item 6): every library
-- function and pattern that does work in proportion to its input is charged
-- for it, so a vat's budget bounds the work it can do in one delivery.
--
-- The specs count, they never time. A burner vat with a small budget does
-- one expensive thing n times in a delivery, for n = 1, 2, 4, ... until the
-- delivery ends the vat with METER_EXHAUSTED; the work of the last delivery
-- that completed (n times the work of one call, in bytes or matching steps)
-- must stay within a bound derived from the budget. Without the charges the
-- deliveries keep completing until the work passes four times the bound,
-- and the spec fails.
local testing = require 'ocap.testing'
local ocap = require 'ocap'
local support = require 'support'

local BURNER = 'spec/vats/burner.lua'
local METER = 'VAT_FATAL:METER_EXHAUSTED'

-- Instructions per delivery, and the vat's memory.
local BUDGET = 600000
local MEMORY = 32 * 1024 * 1024

-- Work a budget admits, per instruction: matching steps cost about one
-- instruction each, and the cheapest byte work (copying, comparing) about
-- 1/64 of one. The bounds allow twice that.
local STEPS = 2
local BYTES = 128

-- VM instructions that compare or concatenate long strings are bounded by
-- the meter's CPU-time backstop: 500 ns of CPU per instruction of budget
-- (4000 under the sanitizers). A core compares or copies at most tens of
-- bytes a nanosecond (about 50 on the reference machine), so the work
-- admitted stays under 256 bytes per nanosecond of the allowance; without
-- the backstop it is only bounded by the instruction budget, about a
-- thousand times more.
local SANITIZED = (os.getenv('LD_PRELOAD') or ''):find('asan', 1, true) ~= nil
local VM = 256 * (SANITIZED and 4000 or 500)

-- Each case runs with both meter modes. In time mode the allowance is a
-- 25th of the backstop's (20 ns an instruction), so the same bounds hold;
-- library charges count in both modes.
for _, MODE in ipairs({ 'time', 'instructions' }) do
describe('the meter (' .. MODE .. ' mode)', function()
  local kernel
  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() kernel:stop() end)

  local function launch()
    local r = kernel:launchSubcluster({
      bootstrap = 'b',
      vats = {
        b = {
          sourceSpec = BURNER,
          creationOptions = { meter = { mode = MODE, instructions = BUDGET }, memoryLimit = MEMORY },
        },
      },
    }):await()
    return r.rootKref, kernel:getSubcluster(r.subclusterId).vats.b
  end

  -- Doubles n until the vat dies; returns the work (n * unit) of the last
  -- delivery that completed, the error that ended the vat (nil when it
  -- never died) and the vat's id.
  local function admitted(kind, size, unit, bound)
    local root, vatId = launch()
    local cap = (bound == VM and 2 or 4) * bound * BUDGET
    local n, done = 1, 0
    while true do
      local ok, res = pcall(ocap.await, kernel:queueMessage(root, 'work', { kind, n, size }))
      if not ok then return done * unit, res, vatId end
      done = n
      if n * unit > cap then return done * unit, nil, vatId end
      n = n * 2
    end
  end

  -- The cases: kind (see spec/vats/burner.lua), input size, the work of one
  -- call in units, and the bound in units per instruction.
  local function bytes(n) return n end
  local function quadratic(n) return n * n // 2 end
  local cases = {
    -- Patterns, in matching steps or bytes searched.
    { 'starB', 4096, quadratic, STEPS },
    { 'lazyB', 4096, quadratic, STEPS },
    { 'gmatchStar', 4096, quadratic, STEPS },
    { 'gsubStar', 4096, quadratic, STEPS },
    { 'optional', 22, function(n) return 2 ^ n end, STEPS },
    { 'dots', 200, function(n) return n ^ 4 / 24 end, STEPS },
    { 'lazyAs', 200, function(n) return n ^ 4 / 24 end, STEPS },
    { 'findPlain', 1 << 20, bytes, BYTES },
    { 'findLiteral', 1 << 20, bytes, BYTES },
    { 'gsubCopy', 1 << 16, bytes, STEPS },
    -- Library functions, in bytes or values processed; each bound is twice
    -- what the function's charge admits (core/vat.c has the table).
    { 'upper', 1 << 16, bytes, 4 },
    { 'lower', 1 << 16, bytes, 4 },
    { 'reverse', 1 << 16, bytes, 4 },
    { 'sub', 1 << 20, bytes, BYTES },
    { 'byte', 1 << 16, bytes, 2 },
    { 'subCoerced', 1 << 20, bytes, BYTES },
    { 'byteCoerced', 1 << 16, bytes, 2 },
    { 'format', 1 << 20, bytes, BYTES },
    { 'formatQ', 1 << 16, bytes, 2 },
    { 'concat', 1 << 20, bytes, 16 },
    { 'utf8len', 1 << 16, bytes, 2 },
    { 'utf8codepoint', 1 << 16, bytes, 1 },
    { 'utf8offset', 1 << 16, bytes, 8 },
    { 'utf8codes', 1 << 16, bytes, 8 },
    { 'tonumber', 1 << 16, bytes, 4 },
    { 'tonumberBase', 1 << 16, bytes, 2 },
    { 'rawequal', 1 << 20, bytes, BYTES },
    -- Frames walked by error(msg, 1e6) from 20,000 frames deep.
    { 'errorLevel', 20000, bytes, 16 },
    -- 64 strings: 64 * 6 comparisons, each over the whole string.
    { 'sort', 1 << 16, function(n) return 64 * 6 * n end, BYTES },
    { 'pack', 1 << 16, bytes, 1 },
    { 'unpack', 1 << 16, bytes, 1 },
    { 'packsize', 1 << 16, bytes, 1 },
    -- VM instructions, in bytes compared or copied.
    { 'ltVM', 1 << 20, bytes, VM },
    { 'eqVM', 1 << 20, bytes, VM },
    { 'concatVM', 1 << 20, bytes, VM },
  }

  for _, case in ipairs(cases) do
    local kind, size, unit, bound = case[1], case[2], case[3](case[2]), case[4]
    it(('%s on %d bytes: at most %d units of work per instruction'):format(kind, size, bound), function()
      local work, err, vatId = admitted(kind, size, unit, bound)
      assert.is_table(err, ('%s never ran out of its budget: %.0f units of work in one delivery'):format(kind, work))
      assert.equal(METER, err.code, tostring(err.message))
      assert.is_true(work <= bound * BUDGET,
        ('%s did %.0f units of work on %d instructions'):format(kind, work, BUDGET))
      assert.is_false(support.isLive(kernel, vatId))
      -- In time mode the time is the meter, and the reason says no more.
      -- Under the sanitizers the backstop's allowance is eight times larger
      -- (4000 ns an instruction), so the instruction count may end the vat
      -- first; the bound on the work above is what holds in every build.
      if bound == VM and MODE == 'instructions' and not SANITIZED then
        assert.matches('instruction meter exhausted (CPU time: its allowance of', err.message, 1, true)
        assert.matches('CPU time', support.terminatedRecord(kernel, vatId).reason, 1, true)
      end
    end)
  end

  it('ends a vat that thrashes the collector near its memory limit', function()
    -- Live data grows 64 KiB a delivery while each delivery makes 1.2 MB
    -- of small garbage: once the live data is within a few hundred KiB of
    -- the limit, the garbage makes Lua collect the whole heap again and
    -- again. Those collections are charged, so the vat runs out of
    -- instructions before it runs out of memory.
    local limit = 8 * 1024 * 1024
    local r = kernel:launchSubcluster({
      bootstrap = 'b',
      vats = {
        b = {
          sourceSpec = BURNER,
          creationOptions = { meter = { mode = MODE, instructions = 2e6 }, memoryLimit = limit },
        },
      },
    }):await()
    local vatId = kernel:getSubcluster(r.subclusterId).vats.b
    local err
    for _ = 1, limit // 65536 + 8 do
      local ok, res = pcall(ocap.await, kernel:queueMessage(r.rootKref, 'grow', { 64, 20000 }))
      if not ok then
        err = res
        break
      end
    end
    assert.is_table(err, 'the vat never ran out')
    assert.equal(METER, err.code, err.message)
    -- In time mode the collections' charges and their own CPU time both
    -- use up the allowance, and either may end the vat first.
    if MODE == 'time' and not err.message:find('garbage collection', 1, true) then
      assert.matches('terminated: instruction meter exhausted$', err.message)
      return
    end
    assert.matches('garbage collection: %d+ emergency collections near the memory limit', err.message)
    local collections = tonumber(err.message:match('(%d+) emergency collections'))
    -- Each charged collection costs the heap's size / 16 instructions, at
    -- least about 7 MiB / 16 here: the budget pays for at most 5.
    assert.is_true(collections <= 5, collections .. ' collections')
    assert.matches('garbage collection', support.terminatedRecord(kernel, vatId).reason, 1, true)
  end)

  it('leaves ordinary patterns cheap', function()
    local root = launch()
    -- 64 KiB of text through the usual idioms, several times a delivery.
    assert.equal(8, kernel:queueMessage(root, 'work', { 'gsubCopy', 8, 4096 }):await())
  end)
end)
end
