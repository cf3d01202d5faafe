-- Crash safety (issue #3): a ledger workload in a child process is killed
-- with SIGKILL at random moments and restarted; afterwards the total is
-- unchanged, every acknowledged transfer was applied exactly once, and
-- nothing was applied twice. Garbage collection runs all along (issue #12):
-- each transfer makes a receipt the recipient asks once and drops; none
-- is freed while reachable, and all are collected in the end.
local testing = require 'ocap.testing'
local marshal = require 'ocap.marshal'

local BIN = os.getenv('OCAP_BIN') or 'build/ocap'
local KILLS = 25

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read('a')
  p:close()
  return out
end

-- A killed child may stay a zombie until something reaps it; that is dead
-- once its other threads (LevelDB's) have exited too: a zombie thread-group
-- leader is reported while they still hold the database's lock.
local function alive(pid)
  local f = io.open('/proc/' .. pid .. '/status')
  if not f then return false end
  local status = f:read('a')
  f:close()
  return status:match('\nState:%s*(%a)') ~= 'Z' or tonumber(status:match('\nThreads:%s*(%d+)')) ~= 1
end

-- The acknowledgements so far: lines in the acks file.
local function ackCount(acks)
  local n = 0
  for _ in io.lines(acks) do n = n + 1 end
  return n
end

-- Polls until done() holds, sleeping a little more each time; a generous
-- wall-clock limit is only a hang guard, and says what never happened.
local function waitFor(done, what)
  local slept, pause = 0, 0.005
  while not done() do
    if slept > 120 then error(what .. ' after 120 s') end
    os.execute(('sleep %.3f'):format(pause))
    slept, pause = slept + pause, math.min(pause * 2, 0.2)
  end
end

-- Starts the child and kills it with SIGKILL. With waitForAck, the kill
-- comes `delay` seconds after the child acknowledged its first transfer,
-- so the run made progress however slow the machine is; without, after
-- `delay` seconds from the start, which may fall anywhere, in the launch or
-- in the recovery of a restart too.
local function runAndKill(db, acks, durability, delay, waitForAck, child)
  local before = ackCount(acks)
  local pid = sh(('sh -c \'%s run %s %s run %s >>%s 2>>%s.err & echo $!\'')
    :format(BIN, child or 'spec/ledger_child.lua', db, durability, acks, acks)):match('%d+')
  if waitForAck then
    waitFor(function() return ackCount(acks) > before or not alive(pid) end,
      'child ' .. pid .. ' acknowledged nothing')
    assert(alive(pid), 'child ' .. pid .. ' exited: ' .. sh('cat ' .. acks .. '.err'))
  end
  os.execute(('sleep %.3f'):format(delay))
  os.execute('kill -9 ' .. pid .. ' 2>/dev/null')
  waitFor(function() return not alive(pid) end, 'child ' .. pid .. ' did not die')
end

local function check(db, acks, durability)
  local out = sh(('%s run spec/ledger_child.lua %s check %s 2>>%s.err'):format(BIN, db, durability, acks))
  local line = out:match('(#[^\n]+)')
  assert(line, 'the check run printed no report: ' .. out .. sh('cat ' .. acks .. '.err'))
  return marshal.unserializeData({ body = line, slots = {} })
end

local function verify(db, acks, durability)
  local report = check(db, acks, durability)
  -- Every object's counts are those of the references the database holds.
  assert.same({}, report.wrongCounts)
  local objects = report.objects
  report.objects, report.unpinned, report.wrongCounts = nil, nil, nil
  local total, withdrawn, deposited = 0, {}, {}
  for _, r in pairs(report) do
    total = total + r.balance
    assert.equal(0, r.duplicates, 'a deposit was delivered twice')
    assert.equal(0, r.badReceipts, 'a receipt was freed while a vat could still reach it')
    for _, id in ipairs(r.withdrawn) do
      assert.is_nil(withdrawn[id], 'transfer ' .. id .. ' withdrawn twice')
      withdrawn[id] = true
    end
    for _, id in ipairs(r.deposited) do
      assert.is_nil(deposited[id], 'transfer ' .. id .. ' deposited twice')
      deposited[id] = true
    end
  end
  assert.equal(5 * 1000, total)
  local acked = 0
  for line in io.lines(acks) do
    local id, result = line:match('^ACK (%d+) (%a+)$')
    id = tonumber(id)
    if id and result == 'ok' then
      acked = acked + 1
      assert.is_true(withdrawn[id], 'acknowledged transfer ' .. id .. ' was lost')
      assert.is_true(deposited[id], 'acknowledged transfer ' .. id .. ' was never deposited')
    end
  end
  local receipts = 0
  for id in pairs(withdrawn) do
    assert.is_true(deposited[id], 'transfer ' .. id .. ' was withdrawn but not deposited')
    receipts = receipts + 1
  end
  -- Every receipt was collected, even those a heap took in after its last
  -- reap before a kill: only the 5 roots and the kernel facet are left.
  assert.is_true(receipts > 0)
  assert.equal(6, objects)
  return acked
end

describe('crash safety', function()
  for _, durability in ipairs({ 'none', 'fsync' }) do
    it(('survives %d SIGKILLs with durability %s'):format(KILLS, durability), function()
      local dir = testing.tempDir()
      local db, acks = dir .. '/db', dir .. '/acks.txt'
      io.open(acks, 'w'):close()
      math.randomseed(os.time())
      local waited = 0
      for i = 1, KILLS do
        -- Every other run is killed only after it made progress, so the
        -- acknowledgements below do not depend on the machine's speed.
        local waitForAck = i % 2 == 0
        if waitForAck then waited = waited + 1 end
        runAndKill(db, acks, durability, (waitForAck and 0 or 0.05) + math.random() * 0.3, waitForAck)
      end
      local acked = verify(db, acks, durability)
      assert.is_true(acked >= waited, ('only %d transfers were acknowledged'):format(acked))
    end)
  end
end)

-- The promise counters are stored as bounds, written 1024 past the next id
-- when a sync finds the id past the stored bound (docs/storage.md): a kill
-- between a bound's write and the ids passing it, or at any other moment,
-- must leave a store whose counters are past every promise it names and
-- every id whose message the host saw answered, so that none is handed
-- out twice; and the kernel's check must agree with it.
describe('crash safety of the promise counters', function()
  it('keeps every stored and acknowledged id below the counters after SIGKILLs', function()
    local dir = testing.tempDir()
    local db, acks = dir .. '/db', dir .. '/acks.txt'
    io.open(acks, 'w'):close()
    math.randomseed(os.time())
    for _ = 1, 8 do
      -- Thousands of round trips a second: the bound is passed many times.
      runAndKill(db, acks, 'none', math.random() * 0.3, true, 'spec/bounds_child.lua')
      local acked = 0
      for line in io.lines(acks) do
        local next = tonumber(line:match('^ACK %d+ (%d+)$'))
        if next and next > acked then acked = next end
      end
      local out = sh(('%s run spec/bounds_child.lua %s check 2>>%s.err'):format(BIN, db, acks))
      local next = tonumber(out:match('NEXT (%d+)'))
      assert(next, 'the check run printed no report: ' .. out .. sh('cat ' .. acks .. '.err'))
      assert.is_nil(out:match('BAD [^\n]*'))
      assert.is_true(next >= acked,
        ('nextPromiseId %d after a kill, an acknowledged id reached %d'):format(next, acked))
      -- The check closed the kernel cleanly: the counter is stored as it is.
      local live = tonumber(out:match('LIVE (%d+)'))
      local again = sh(('%s run spec/bounds_child.lua %s check 2>>%s.err'):format(BIN, db, acks))
      assert.equal(live, tonumber(again:match('NEXT (%d+)')))
    end
  end)
end)
