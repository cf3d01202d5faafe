-- Persistence and restarts (issue #3): state survives kernel restarts,
-- vats come back with their baggage, bootstrap runs once.
local testing = require 'ocap.testing'
local ocap = require 'ocap'
local support = require 'support'
local rejection = support.rejection

local COUNTER = 'spec/vats/counter.lua'

local function pair()
  return {
    bootstrap = 'main',
    vats = {
      main = { sourceSpec = COUNTER, parameters = { start = 10 } },
      other = { sourceSpec = COUNTER, parameters = { start = 100 } },
    },
  }
end

local function count(kernel, message)
  local n = 0
  for _, m in ipairs(testing.messages(kernel)) do
    if m == message then n = n + 1 end
  end
  return n
end

describe('persistence', function()
  local kernel, db
  before_each(function()
    db = testing.tempDir()
    kernel = testing.makeKernel({ database = db })
  end)
  after_each(function() kernel:stop() end)

  it('keeps the id counters a vat stores above every number it handed out', function()
    -- More sends for results than a reserve (1024) holds, in one delivery:
    -- each gets the result vpid p+N, which a restarted vat must not reuse.
    local r = kernel:launchSubcluster({ bootstrap = 'alice', vats = {
      alice = { sourceSpec = 'spec/vats/echo.lua' }, bob = { sourceSpec = 'spec/vats/echo.lua' } } }):await()
    assert.equal(1100 * 1101 // 2, kernel:queueMessage(r.rootKref, 'pingPeer', { 'bob', 1100 }):await())
    local alice = kernel:getSubcluster(r.subclusterId).vats.alice
    local o, p = kernel.K:kvGet('vs.' .. alice .. '.idCounters'):match('^(%d+) (%d+)$')
    assert.is_true(tonumber(o) > 1 and tonumber(p) > 1100, ('idCounters %s %s'):format(o, p))
  end)

  it('keeps vats, c-lists and baggage across kernel restarts; bootstrap runs once', function()
    local r = kernel:launchSubcluster(pair()):await()
    assert.equal('bootstrapped', r.bootstrapResult)
    assert.equal(11, kernel:queueMessage(r.rootKref, 'increment', {}):await())
    assert.equal(1, count(kernel, 'bootstrap called'))
    kernel = testing.restart(kernel)
    assert.equal(2, #kernel:getStatus().vats)
    assert.equal(12, kernel:queueMessage(r.rootKref, 'increment', {}):await())
    assert.equal(101, kernel:queueMessage(r.rootKref, 'callOther', { 'increment' }):await())
    kernel = testing.restart(kernel)
    assert.equal(13, kernel:queueMessage(r.rootKref, 'increment', {}):await())
    assert.equal(102, kernel:queueMessage(r.rootKref, 'callOther', { 'increment' }):await())
    assert.equal(0, count(kernel, 'bootstrap called'))
    assert.same(kernel:getSubclusters()[1].vats, (kernel:getSubcluster(r.subclusterId)).vats)
  end)

  it('leaves no log to replay after a clean stop that wrote much', function()
    -- LevelDB keeps recent writes in its log, which the next open replays
    -- key by key: a clean stop writes them out as a table instead.
    local function logBytes()
      local n = 0
      for name in io.popen("ls '" .. db .. "'"):lines() do
        if name:match('%.log$') then
          local f = assert(io.open(db .. '/' .. name, 'rb'))
          n = n + f:seek('end')
          f:close()
        end
      end
      return n
    end
    local r = kernel:launchSubcluster(pair()):await()
    local big = ('x'):rep(5000)
    for i = 1, 30 do kernel:queueMessage(r.rootKref, 'storeThing', { 'k' .. i, big .. i }):await() end
    assert.is_true(logBytes() > 150000)
    kernel:stop()
    assert.is_true(logBytes() < 4096, 'the log still holds ' .. logBytes() .. ' bytes')
    kernel = testing.restart(kernel)
    assert.equal(big .. 17, kernel:queueMessage(r.rootKref, 'getThing', { 'k17' }):await())
  end)

  it('restarts lazily: no vat runs until it gets a delivery', function()
    local r = kernel:launchSubcluster(pair()):await()
    kernel = testing.restart(kernel)
    assert.equal(0, count(kernel, 'buildRootObject'))
    kernel:queueMessage(r.rootKref, 'get', {}):await()
    assert.equal(1, count(kernel, 'buildRootObject'))
  end)

  it('restartVat rebuilds one vat from its baggage, keeping its root', function()
    local r = kernel:launchSubcluster(pair()):await()
    kernel:queueMessage(r.rootKref, 'increment', { 5 }):await()
    local vatId = kernel:getSubcluster(r.subclusterId).vats.main
    kernel:restartVat(vatId):await()
    assert.equal(2, count(kernel, 'buildRootObject') - 1) -- main twice, other once
    assert.equal(16, kernel:queueMessage(r.rootKref, 'increment', {}):await())
    assert.equal(101, kernel:queueMessage(r.rootKref, 'callOther', { 'increment' }):await())
  end)

  it('keeps messages still in the run queue across a restart', function()
    local r = kernel:launchSubcluster(pair()):await()
    kernel:queueMessage(r.rootKref, 'increment', { 1 })
    kernel:queueMessage(r.rootKref, 'increment', { 2 })
    kernel = testing.restart(kernel) -- stop commits the queued sends
    kernel:run()
    assert.equal(13, kernel:queueMessage(r.rootKref, 'get', {}):await())
  end)

  it('wipes everything with resetStorage', function()
    kernel:launchSubcluster(pair()):await()
    kernel = testing.restart(kernel, { resetStorage = true })
    assert.equal(0, #kernel:getStatus().vats)
    assert.equal(0, #kernel:getSubclusters())
  end)

  it('keeps durable stores and presences in baggage across restarts', function()
    local r = kernel:launchSubcluster(pair()):await()
    assert.equal(1, kernel:queueMessage(r.rootKref, 'storeThing', { 'b', { x = 1 } }):await())
    assert.equal(2, kernel:queueMessage(r.rootKref, 'storeThing', { 'a', 'A' }):await())
    kernel = testing.restart(kernel)
    assert.same({ x = 1 }, kernel:queueMessage(r.rootKref, 'getThing', { 'b' }):await())
    assert.same({ 'a', 'b' }, kernel:queueMessage(r.rootKref, 'thingKeys', {}):await())
    assert.equal(101, kernel:queueMessage(r.rootKref, 'callOther', { 'increment' }):await())
  end)

  it('loads vats from the stored bundle even when the source file is gone', function()
    local dir = testing.tempDir()
    os.execute(("cp %s %s/v.lua"):format(COUNTER, dir))
    local r = kernel:launchSubcluster({ bootstrap = 'c', vats = { c = { sourceSpec = dir .. '/v.lua' } } }):await()
    os.remove(dir .. '/v.lua')
    kernel = testing.restart(kernel)
    assert.equal(1, kernel:queueMessage(r.rootKref, 'increment', {}):await())
  end)

  it('rejects messages to ephemeral exports after a restart, and the vat lives on', function()
    local r = kernel:launchSubcluster(pair()):await()
    local eph = kernel:queueMessage(r.rootKref, 'makeEphemeral', {}):await()
    assert.equal('hi', ocap.E(eph).hi():await())
    local kref = kernel:krefOf(eph)
    kernel = testing.restart(kernel)
    local e = rejection(kernel:queueMessage(kref, 'hi', {}))
    assert.equal('OBJECT_DELETED', e.code)
    assert.equal(11, kernel:queueMessage(r.rootKref, 'increment', {}):await())
  end)

  it('never gives an old ref to a new object after a restart', function()
    local r = kernel:launchSubcluster(pair()):await()
    local old = kernel:krefOf(kernel:queueMessage(r.rootKref, 'makeEphemeral', {}):await())
    kernel = testing.restart(kernel)
    local new = kernel:krefOf(kernel:queueMessage(r.rootKref, 'makeEphemeral', {}):await())
    assert.are_not.equal(old, new)
    assert.equal('OBJECT_DELETED', rejection(kernel:queueMessage(old, 'hi', {})).code)
    assert.equal('hi', kernel:queueMessage(new, 'hi', {}):await())
  end)

  it('keeps a restarted vat able to send while its earlier sends are unanswered', function()
    local r = kernel:launchSubcluster(pair()):await()
    local vatId = kernel:getSubcluster(r.subclusterId).vats.main
    kernel:queueMessage(r.rootKref, 'callOther', { 'increment' }):await()
    kernel:restartVat(vatId):await()
    assert.equal(102, kernel:queueMessage(r.rootKref, 'callOther', { 'increment' }):await())
    assert.equal(103, kernel:queueMessage(r.rootKref, 'callOther', { 'increment' }):await())
    assert.equal(0, #kernel:getStatus().terminatedVats)
  end)

  it('rejects the promises the previous host decided', function()
    local r = kernel:launchSubcluster(pair()):await()
    local hostPromise = ocap.makePromiseKit().promise
    -- The vat receives a promise the host decides, and sends to it.
    kernel:queueMessage(r.rootKref, 'hold', { hostPromise }):await()
    local kpid
    local key
    repeat
      key = kernel.K:kvNext('kp', key)
      if key and key:match('%.decider$') and kernel.K:kvGet(key) == 'kernel' then kpid = key:match('^(kp%d+)') end
    until not key
    assert.is_truthy(kpid)
    kernel = testing.restart(kernel)
    kernel:run()
    assert.is_not.equal('unresolved', kernel.K:kvGet(kpid .. '.state') or 'freed')
  end)

  it('reports a vat that no longer starts as failed, keeping it; the rest boots', function()
    local r = kernel:launchSubcluster(pair()):await()
    local r2 = kernel:launchSubcluster({ bootstrap = 'x', vats = { x = { sourceSpec = COUNTER } } }):await()
    kernel:queueMessage(r.rootKref, 'poison', {}):await()
    kernel = testing.restart(kernel)
    local e = rejection(kernel:queueMessage(r.rootKref, 'get', {}))
    assert.equal('VAT_FAILED', e.code)
    assert.matches('poisoned', e.message)
    assert.equal(1, kernel:queueMessage(r2.rootKref, 'increment', {}):await())
    assert.equal(0, #kernel:getStatus().terminatedVats)
    local failed = {}
    for _, v in ipairs(kernel:getStatus().vats) do
      if v.state == 'failed' then failed[#failed + 1] = v end
    end
    assert.equal(1, #failed)
    assert.matches('poisoned', failed[1].reason)
  end)

  it('keeps baggage writes made before an ordinary error, as JavaScript would', function()
    local r = kernel:launchSubcluster(pair()):await()
    assert.equal('crashing now', rejection(kernel:queueMessage(r.rootKref, 'crash', {})).message)
    assert.equal(11, kernel:queueMessage(r.rootKref, 'get', {}):await())
  end)
end)

describe('durable exos', function()
  it('keep their refs and state across restarts; ephemeral ones do not', function()
    local db = testing.tempDir()
    local kernel = testing.makeKernel({ database = db })
    local r = kernel:launchSubcluster({ bootstrap = 'b', vats = { b = { sourceSpec = 'spec/vats/durable.lua' } } })
      :await()
    local clock = kernel:krefOf(kernel:queueMessage(r.rootKref, 'clock', {}):await())
    local alice = kernel:krefOf(kernel:queueMessage(r.rootKref, 'open', { 'alice', 10 }):await())
    local bob = kernel:krefOf(kernel:queueMessage(r.rootKref, 'open', { 'bob', 5 }):await())
    local temp = kernel:krefOf(kernel:queueMessage(r.rootKref, 'ephemeral', {}):await())
    assert.equal(1, kernel:queueMessage(clock, 'tick', {}):await())
    assert.equal(15, kernel:queueMessage(alice, 'deposit', { 5 }):await())
    kernel = testing.restart(kernel)
    assert.equal(2, kernel:queueMessage(clock, 'tick', {}):await())
    assert.equal(15, kernel:queueMessage(alice, 'balance', {}):await())
    assert.equal(8, kernel:queueMessage(bob, 'deposit', { 3 }):await())
    assert.equal('alice', kernel:queueMessage(alice, 'owner', {}):await())
    assert.equal(clock, kernel:krefOf(kernel:queueMessage(r.rootKref, 'clock', {}):await()))
    assert.equal('OBJECT_DELETED', rejection(kernel:queueMessage(temp, 'hi', {})).code)
    kernel:stop()
  end)
end)

describe('baggage', function()
  local kernel, root
  before_each(function()
    kernel = testing.makeKernel()
    root = kernel:launchSubcluster({ bootstrap = 'c', vats = { c = { sourceSpec = COUNTER } } }):await().rootKref
  end)
  after_each(function() kernel:stop() end)

  local function op(...) return kernel:queueMessage(root, 'baggageOp', table.pack(...)):await() end
  local function opError(...)
    return rejection(kernel:queueMessage(root, 'baggageOp', table.pack(...))).message
  end

  it('supports has, init, get, set, delete and getSize', function()
    assert.is_false(op('has', 'k'))
    op('init', 'k', 'v')
    assert.is_true(op('has', 'k'))
    assert.equal('v', op('get', 'k'))
    op('set', 'k', 'w')
    assert.equal('w', op('get', 'k'))
    local size = op('getSize')
    op('delete', 'k')
    assert.equal(size - 1, op('getSize'))
  end)

  it('names the key in its errors', function()
    op('init', 'dup', 1)
    assert.matches('key "dup" already registered', opError('init', 'dup', 2))
    assert.matches('key "missing" not found', opError('get', 'missing'))
    assert.matches('key "missing" not found', opError('set', 'missing', 1))
    assert.matches('key "missing" not found', opError('delete', 'missing'))
  end)

  it('accepts numbers and booleans as keys, in sorted order', function()
    op('init', 3, 'three')
    op('init', -1.5, 'neg')
    op('init', true, 't')
    assert.equal('neg', op('get', -1.5))
    assert.equal('three', op('get', 3))
    assert.equal('t', op('get', true))
  end)

  it('keeps integers beyond 2^53 apart, in order', function()
    local big = math.tointeger(2 ^ 53)
    op('init', big, 'a')
    op('init', big + 1, 'b')
    op('init', big + 2, 'c')
    op('init', -big - 1, 'd')
    assert.equal('b', op('get', big + 1))
    assert.equal('d', op('get', -big - 1))
    local keys = kernel:queueMessage(root, 'baggageKeys', {}):await()
    local ints = {}
    for _, k in ipairs(keys) do
      if math.type(k) == 'integer' and (k > 2 ^ 52 or k < -2 ^ 52) then ints[#ints + 1] = k end
    end
    assert.same({ -big - 1, big, big + 1, big + 2 }, ints)
  end)
end)

describe('database errors', function()
  it('refuses a directory that is not a database, leaving it alone', function()
    local dir = testing.tempDir()
    local f = assert(io.open(dir .. '/notes.txt', 'w'))
    f:write('keep me')
    f:close()
    local ok, err = pcall(testing.makeKernel, { database = dir })
    assert.is_false(ok)
    assert.matches('not', err)
    assert.equal('keep me', io.open(dir .. '/notes.txt'):read('a'))
  end)

  it('refuses a database open in this process', function()
    local dir = testing.tempDir()
    local k1 = testing.makeKernel({ database = dir })
    local ok, err = pcall(testing.makeKernel, { database = dir })
    assert.is_false(ok)
    assert.matches('already open in this process', err)
    k1:stop()
  end)

  it('refuses a database open in this process under another spelling', function()
    local dir = testing.tempDir()
    local parent, name = dir:match('^(.*)/([^/]+)$')
    os.execute(("ln -s '%s' '%s.link'"):format(dir, dir))
    finally(function() os.remove(dir .. '.link') end)
    local k1 = testing.makeKernel({ database = dir .. '/db' })
    local r = k1:launchSubcluster({ bootstrap = 'c', vats = { c = { sourceSpec = 'spec/vats/counter.lua' } } }):await()
    local spellings = { dir .. '/db/', dir .. '//db', dir .. '/./db',
      parent .. '/' .. name .. '/../' .. name .. '/db', dir .. '.link/db' }
    for _, other in ipairs(spellings) do
      local ok, err = pcall(testing.makeKernel, { database = other })
      assert.is_false(ok, other)
      assert.matches('database ' .. other:gsub('%p', '%%%0') .. ' is already open in this process', err)
    end
    -- The first kernel is undisturbed.
    assert.equal(1, k1:queueMessage(r.rootKref, 'increment', {}):await())
    k1:stop()
    -- Once closed, any spelling opens it.
    local k2 = testing.makeKernel({ database = dir .. '/db/' })
    assert.equal(1, #k2:getSubclusters())
    k2:stop()
  end)

  it('refuses a database in use by another process', function()
    local dir = testing.tempDir()
    local ready = dir .. '.ready'
    local script = ("local k = require('ocap').Kernel.make{ database = %q, logger = function() end } "
      .. "io.open(%q, 'w'):close() io.read('a') k:stop()"):format(dir, ready)
    local child = io.popen("lua5.4 -e " .. ("%q"):format(script):gsub('\\\n', '\\n'), 'w')
    -- Wait for the child to hold the database, however slow the machine;
    -- the limit only turns a child that never opens it into a failure.
    local waited = 0
    while not io.open(ready) do
      assert(waited < 120, 'the child did not open the database in 120 s')
      os.execute('sleep 0.05')
      waited = waited + 0.05
    end
    local ok, err = pcall(testing.makeKernel, { database = dir })
    child:close()
    os.remove(ready)
    assert.is_false(ok)
    assert.matches('in use by another process', err)
  end)

  it('refuses a database of another schema version', function()
    local dir = testing.tempDir()
    local k1 = testing.makeKernel({ database = dir })
    k1.K:kvSet('version', '999')
    k1:stop()
    local ok, err = pcall(testing.makeKernel, { database = dir })
    assert.is_false(ok)
    assert.matches('schema version 999', err)
    -- Nothing was rewritten: the version is still 999.
    local ok2, err2 = pcall(testing.makeKernel, { database = dir })
    assert.is_false(ok2)
    assert.matches('schema version 999', err2)
  end)
end)
