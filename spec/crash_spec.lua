-- Crash safety (issue #3): a ledger workload in a child process is killed
-- with SIGKILL at random moments and restarted; afterwards the total is
-- unchanged, every acknowledged transfer was applied exactly once, and
-- nothing was applied twice.
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

-- A killed child may stay a zombie until something reaps it; that is dead.
local function alive(pid)
  local f = io.open('/proc/' .. pid .. '/stat')
  if not f then return false end
  local stat = f:read('a')
  f:close()
  return stat:match('^%d+ %b() (%a)') ~= 'Z'
end

local function runAndKill(db, acks, durability, delay)
  local pid = sh(('sh -c \'%s run spec/ledger_child.lua %s run %s >>%s 2>>%s.err & echo $!\'')
    :format(BIN, db, durability, acks, acks)):match('%d+')
  os.execute(('sleep %.3f'):format(delay))
  os.execute('kill -9 ' .. pid .. ' 2>/dev/null')
  for _ = 1, 200 do
    if not alive(pid) then return end
    os.execute('sleep 0.01')
  end
  error('child ' .. pid .. ' did not die')
end

local function check(db, acks, durability)
  local out = sh(('%s run spec/ledger_child.lua %s check %s 2>>%s.err'):format(BIN, db, durability, acks))
  local line = out:match('(#[^\n]+)')
  assert(line, 'the check run printed no report: ' .. out .. sh('cat ' .. acks .. '.err'))
  return marshal.unserializeData({ body = line, slots = {} })
end

local function verify(db, acks, durability)
  local report = check(db, acks, durability)
  local total, withdrawn, deposited = 0, {}, {}
  for _, r in pairs(report) do
    total = total + r.balance
    assert.equal(0, r.duplicates, 'a deposit was delivered twice')
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
  for id in pairs(withdrawn) do
    assert.is_true(deposited[id], 'transfer ' .. id .. ' was withdrawn but not deposited')
  end
  return acked
end

describe('crash safety', function()
  for _, durability in ipairs({ 'none', 'fsync' }) do
    it(('survives %d SIGKILLs with durability %s'):format(KILLS, durability), function()
      local dir = testing.tempDir()
      local db, acks = dir .. '/db', dir .. '/acks.txt'
      io.open(acks, 'w'):close()
      math.randomseed(os.time())
      for i = 1, KILLS do
        -- The first run also launches the ledger, so give it longer.
        runAndKill(db, acks, durability, (i == 1 and 0.4 or 0.05) + math.random() * 0.3)
      end
      local acked = verify(db, acks, durability)
      assert.is_true(acked > KILLS, ('only %d transfers were acknowledged'):format(acked))
    end)
  end
end)
