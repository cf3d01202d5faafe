-- Integrity of the kernel's tables (issue #9, items 2, 8 and 10): values of
-- any length are read whole, and a damaged database gives a clean error.
local testing = require 'ocap.testing'
local ocap = require 'ocap'

local SCENARIO = 'spec/vats/scenario.lua'

describe('promise subscribers', function()
  local kernel
  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() kernel:stop() end)

  it('notifies every one of 100 vats awaiting one promise', function()
    local roots = {}
    for i = 1, 100 do
      local r = kernel:launchSubcluster({ bootstrap = 'w', vats = {
        w = { sourceSpec = SCENARIO, parameters = { name = 'w' .. i } } } }):await()
      roots[i] = r.rootKref
    end
    local kit = ocap.makePromiseKit()
    for i = 1, 100 do
      assert.equal('noted', kernel:queueMessage(roots[i], 'takePromiseNoWait', { kit.promise }):await())
    end
    kit.resolve('go')
    kernel:run()
    local told = 0
    for i = 1, 100 do
      if kernel:queueMessage(roots[i], 'lastSeen', {}):await() == 'go' then told = told + 1 end
    end
    assert.equal(100, told)
  end)
end)

describe('decoding capdata', function()
  -- A fresh copy of the Lua codec (the reference the C codec hands errors
  -- and rare bodies to) whose string.find counts the bytes each call
  -- scans, so work is counted rather than timed.
  local function countingMarshal()
    local scanned, realFind = 0, string.find
    local function find(s, pat, init, plain)
      local from = init or 1
      local a, b = realFind(s, pat, from, plain)
      if plain or pat:sub(1, 1) ~= '^' then scanned = scanned + ((b or #s) - from + 1) end
      return a, b
    end
    local saved = package.loaded['ocap.marshal.reference']
    package.loaded['ocap.marshal.reference'] = nil
    string.find = find -- luacheck: ignore 122 (the copy caches it when loaded)
    local ok, m = pcall(require, 'ocap.marshal.reference')
    string.find = realFind -- luacheck: ignore 122
    package.loaded['ocap.marshal.reference'] = saved
    assert(ok, m)
    return m, function() local n = scanned; scanned = 0; return n end
  end

  local function bareRemotables(n)
    local parts, slots = {}, {}
    for i = 0, n - 1 do
      parts[i + 1] = ('"$%d"'):format(i)
      slots[i + 1] = 'o-' .. (i + 1)
    end
    return { body = '#[' .. table.concat(parts, ',') .. ']', slots = slots }
  end

  it('scans a body a bounded number of times, however many slots it has', function()
    local marshal, takeScanned = countingMarshal()
    -- The Lua decoder's scans (the C one, which this state may have, reads
    -- a body twice: ocap_sc_scan, then the build).
    local m = marshal.makeMarshal(function() error('unused') end, function(slot) return { slot } end)
    local perByte = {}
    for _, n in ipairs({ 500, 4000 }) do
      local capdata = bareRemotables(n)
      takeScanned()
      assert.equal(n, #m.unserialize(capdata))
      perByte[#perByte + 1] = takeScanned() / #capdata.body
    end
    -- A search of the body per slot made this 4000 / 500 = 8 times larger.
    assert.is_true(perByte[2] < 2 * perByte[1], ('%.1f then %.1f'):format(perByte[1], perByte[2]))
    assert.is_true(perByte[2] < 10, ('%.1f bytes scanned per body byte'):format(perByte[2]))
  end)
end)

describe('a damaged database', function()
  local COUNTER = 'spec/vats/counter.lua'
  local function counterCluster() return { bootstrap = 'c', vats = { c = { sourceSpec = COUNTER } } } end

  -- A database made by a kernel: one vat that counted once.
  local function made()
    local db = testing.tempDir()
    local kernel = testing.makeKernel({ database = db })
    local r = kernel:launchSubcluster(counterCluster()):await()
    assert.equal(1, kernel:queueMessage(r.rootKref, 'increment', {}):await())
    kernel:stop()
    return db, r.rootKref
  end

  -- Writes `damage` (key = value) into db with the kernel's raw access.
  local function damage(db, keys)
    local kernel = testing.makeKernel({ database = db })
    for key, value in pairs(keys) do kernel.K:kvSet(key, value) end
    kernel.K:commit()
    kernel:stop()
  end

  -- Reopens db, runs act(kernel), and returns the error it raised; the
  -- kernel is stopped whatever happens.
  local function failure(db, act)
    local kernel = testing.makeKernel({ database = db })
    local ok, err = pcall(act, kernel)
    pcall(kernel.stop, kernel)
    assert.is_false(ok, 'expected an error')
    return type(err) == 'table' and tostring(err.message) or tostring(err)
  end

  -- The kernel is still usable for other databases.
  after_each(function()
    local kernel = testing.makeKernel({ database = testing.tempDir() })
    local r = kernel:launchSubcluster(counterCluster()):await()
    assert.equal(1, kernel:queueMessage(r.rootKref, 'increment', {}):await())
    kernel:stop()
  end)

  it('names a vat id counter that is not a number', function()
    local db = made()
    damage(db, { nextVatId = '99999999999999999999999' })
    local err = failure(db, function(k) return k:launchSubcluster(counterCluster()):await() end)
    assert.matches("corrupt database: key 'nextVatId' holds '99999999999999999999999'", err, 1, true)
    assert.matches('not a count', err, 1, true)
  end)

  it('names a subcluster counter that is not a number', function()
    local db = made()
    damage(db, { nextSubclusterId = 'x1' })
    local err = failure(db, function(k) return k:launchSubcluster(counterCluster()):await() end)
    assert.matches('corrupt database: key "nextSubclusterId" holds "x1"', err, 1, true)
  end)

  it('names a run-queue index that is not a number', function()
    local db, root = made()
    damage(db, { ['runQueue.tail'] = 'abc' })
    local err = failure(db, function(k) return k:queueMessage(root, 'increment', {}):await() end)
    assert.matches("key 'runQueue.tail' holds 'abc'", err, 1, true)
  end)

  it('refuses an absurd vat id instead of sizing a table by it (it hung)', function()
    local db, root = made()
    local kernel = testing.makeKernel({ database = db })
    local K = kernel.K
    local vat = K:kvGet('vat.v1') -- names the same stored bundle
    kernel:stop()
    local huge = 'v99999999999999999999'
    damage(db, { ['vat.' .. huge] = vat, [root .. '.owner'] = huge })
    local err = failure(db, function(k) return k:queueMessage(root, 'increment', {}):await() end)
    assert.matches(("the owner of %s is '%s', not an endpoint"):format(root, huge), err, 1, true)
  end)

  it('fails a host call that meets a damaged object, and only that call', function()
    local db, root = made()
    local kernel = testing.makeKernel({ database = db })
    local other = kernel:launchSubcluster(counterCluster()):await().rootKref
    local vat = kernel.K:kvGet('vat.v1')
    kernel:stop()
    local huge = 'v99999999999999999999'
    damage(db, { ['vat.' .. huge] = vat, [root .. '.owner'] = huge })
    kernel = testing.makeKernel({ database = db })
    finally(function() kernel:stop() end)
    local ok, err = pcall(kernel.queueMessage, kernel, root, 'increment', {})
    assert.is_false(ok)
    assert.matches(("the owner of %s is '%s', not an endpoint"):format(root, huge), err, 1, true)
    -- The next crank neither fails for it nor drops the message sent
    -- after it (it did both, once).
    assert.equal(1, kernel:queueMessage(other, 'increment', {}):await())
    assert.equal(2, kernel:queueMessage(other, 'increment', {}):await())
    assert.is_true(kernel.K:check())
  end)

  it('starts a vat with a large but valid id without a table that large', function()
    local db, root = made()
    local kernel = testing.makeKernel({ database = db })
    local K = kernel.K
    local vat = K:kvGet('vat.v1') -- names the same stored bundle
    kernel:stop()
    local big = 'v4294967296'
    damage(db, { ['vat.' .. big] = vat, [root .. '.owner'] = big })
    kernel = testing.makeKernel({ database = db })
    -- The vat starts; it does not know the object the damaged key gave it.
    local ok, err = pcall(function() return kernel:queueMessage(root, 'increment', {}):await() end)
    kernel:stop()
    assert.is_false(ok)
    assert.matches('no longer exists', err.message)
  end)

  it('names a c-list entry too long to be a reference', function()
    local db, root = made()
    damage(db, { ['v1.c.' .. root] = ('o'):rep(300) })
    local err = failure(db, function(k) return k:queueMessage(root, 'increment', {}):await() end)
    assert.matches(("key 'v1.c.%s' holds 'ooo"):format(root), err, 1, true)
    assert.matches('(300 bytes), which is not a reference', err, 1, true)
  end)

  it("keeps a vat whose id counters are garbled from running, and its data", function()
    local db, root = made()
    local kernel = testing.makeKernel({ database = db })
    local vatId = kernel:getStatus().vats[1].id
    local key = 'vs.' .. vatId .. '.idCounters'
    local good = kernel.K:kvGet(key)
    kernel:stop()
    -- Unparsed, these counters restarted at 1 and handed out refs again.
    damage(db, { [key] = '1e308 5' })
    kernel = testing.makeKernel({ database = db })
    local ok, err = pcall(function() return kernel:queueMessage(root, 'increment', {}):await() end)
    assert.is_false(ok)
    assert.matches('corrupt database: vat store key "idCounters" holds "1e308"', tostring(err), 1, true)
    assert.equal('failed', kernel:getStatus().vats[1].state)
    kernel.K:kvSet(key, good)
    kernel.K:commit()
    kernel:restartVat(vatId):await()
    assert.equal(2, kernel:queueMessage(root, 'increment', {}):await())
    kernel:stop()
  end)

  -- LevelDB read CURRENT and the manifest to their end: a link to
  -- /dev/zero hung the open.
  local function linkToZero(db, name)
    assert(os.remove(db .. '/' .. name))
    assert(os.execute(('ln -s /dev/zero %q'):format(db .. '/' .. name)))
  end

  it('refuses a CURRENT that is a link to a device', function()
    local db = made()
    linkToZero(db, 'CURRENT')
    local ok, err = pcall(testing.makeKernel, { database = db })
    assert.is_false(ok)
    assert.matches('is corrupt (CURRENT is a symbolic link, not a regular file)', err, 1, true)
  end)

  it('refuses a MANIFEST that is a link to a device', function()
    local db = made()
    local manifest = io.open(db .. '/CURRENT'):read('l')
    linkToZero(db, manifest)
    local ok, err = pcall(testing.makeKernel, { database = db })
    assert.is_false(ok)
    assert.matches(manifest .. ' is a symbolic link, not a regular file', err, 1, true)
  end)
end)

describe('a kernel failure during a syscall', function()
  it('fails the crank without blaming the vat; repaired, the message runs', function()
    local kernel = testing.makeKernel()
    local COUNTER = 'spec/vats/counter.lua'
    local r = kernel:launchSubcluster({ bootstrap = 'main', vats = {
      main = { sourceSpec = COUNTER }, other = { sourceSpec = COUNTER, parameters = { start = 100 } } } }):await()
    assert.equal(101, kernel:queueMessage(r.rootKref, 'callOther', { 'increment' }):await())
    local main = kernel:getSubcluster(r.subclusterId).vats.main
    -- Damage main's c-list entry for its import of the other vat's root.
    local K, key = kernel.K, nil
    repeat key = K:kvNext(main .. '.c.o-', key) until key == nil or K:kvGet(key):match('^ko')
    assert.is_truthy(key)
    local kref = K:kvGet(key)
    K:kvSet(key, 'zzz')
    K:commit()
    local p = kernel:queueMessage(r.rootKref, 'callOther', { 'increment' })
    local ok, err = pcall(function() return p:await() end)
    assert.is_false(ok)
    assert.matches(("crank failed: corrupt database: key '%s' holds 'zzz'"):format(key), err, 1, true)
    assert.equal(0, #kernel:getStatus().terminatedVats)
    -- The crank was rolled back and the message is still queued.
    K:kvSet(key, kref)
    K:commit()
    assert.equal(102, p:await())
    assert.equal(103, kernel:queueMessage(r.rootKref, 'callOther', { 'increment' }):await())
    kernel:stop()
  end)
end)

describe("host writes to the kernel's tables", function()
  local kernel
  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() kernel:stop() end)

  -- Host code runs inside cranks (here a host object's method, called by
  -- a vat): a write there to a key whose record the crank may hold would
  -- have the kernel forget (free) that record under it.
  it('are refused while a crank runs', function()
    local root = kernel:launchSubcluster({ bootstrap = 'e', vats = {
      e = { sourceSpec = 'spec/vats/echo.lua' } } }):await().rootKref
    local K = kernel.K
    local tried = {}
    local host = ocap.makeDefaultExo('host', {
      poke = function()
        for _, key in ipairs({ 'kp999999.state', 'ko999999.owner', 'v9.c.ko999999', 'gcAction.zz' }) do
          local ok, err = pcall(K.kvSet, K, key, 'x')
          tried[#tried + 1] = ok and key .. ' written' or err
          ok, err = pcall(K.kvDelete, K, key)
          tried[#tried + 1] = ok and key .. ' deleted' or err
        end
        -- A key of no kernel table is the host's to write.
        K:kvSet('host.note', 'x')
        return K:kvGet('host.note')
      end,
    })
    assert.equal('x', kernel:queueMessage(root, 'call', { host, 'poke' }):await())
    assert.equal(8, #tried)
    for _, t in ipairs(tried) do
      assert.matches("^cannot write the kernel's key %S+ while a crank is running$", t)
    end
    -- Between cranks, host code may write them (inspection, tests).
    K:kvSet('kp999999.state', 'x')
    K:kvDelete('kp999999.state')
  end)
end)

describe('a reset from inside a crank', function()
  -- kernel:reset() terminates every vat and wipes the store: from host
  -- code that a crank runs (here a host object's method, called by a
  -- vat) it would free the vat and the records the crank is using.
  it('is refused, and the kernel goes on', function()
    local kernel = testing.makeKernel()
    local root = kernel:launchSubcluster({ bootstrap = 'e', vats = {
      e = { sourceSpec = 'spec/vats/echo.lua' } } }):await().rootKref
    local raised
    local host = ocap.makeDefaultExo('host', {
      poke = function()
        local ok, err = pcall(kernel.reset, kernel)
        raised = not ok and err or 'reset ran'
        return 'poked'
      end,
    })
    assert.equal('poked', kernel:queueMessage(root, 'call', { host, 'poke' }):await())
    assert.matches('cannot reset the kernel while a crank is running', raised, 1, true)
    -- The vat is still there and answers.
    assert.equal('poked', kernel:queueMessage(root, 'call', { host, 'poke' }):await())
    -- Between cranks the reset goes through.
    kernel:reset()
    assert.same({}, kernel:getSubclusters())
    kernel:stop()
  end)
end)
