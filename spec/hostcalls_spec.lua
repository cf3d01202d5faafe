-- Host calls made inside a crank (docs/api.md, "Host calls made inside a
-- crank"): host code runs in cranks (a kernel service here), and the crank
-- is the unit of atomicity. A call that only writes the store becomes part
-- of the crank; one with effects outside the store (a vat's Lua state
-- started or closed) runs once the crank has committed. Either way, a
-- crank that fails after the call rolls back whole: its message stays
-- queued and runs again, and the kernel's counts stay right.
local testing = require 'ocap.testing'
local ocap = require 'ocap'

local ECHO = 'spec/vats/echo.lua'
local USER = 'spec/vats/service_user.lua'

--- The stored bundles' reference counts: hash -> n.
local function bundleCounts(kernel)
  local out, K, key = {}, kernel.K, nil
  while true do
    key = K:kvNext('bundle.', key)
    if not key then return out end
    local hash = key:match('^bundle%.(%x+)%.refCount$')
    if hash then out[hash] = tonumber(K:kvGet(key)) end
  end
end

describe('a host call inside a crank that then fails', function()
  local kernel, calls, asked, made, broken, saved, victim, victimRoot, svcKref, writer

  -- A kernel service whose method makes a host call, then returns a
  -- presence of `broken`, an object whose stored counts the spec damaged:
  -- the kernel reads them to resolve the result, and the crank fails
  -- after the call, as any kernel failure (a store write that fails) would
  -- make it.
  before_each(function()
    kernel = testing.makeKernel()
    calls, asked, made = 0, {}, {}
    local holder = kernel:launchSubcluster({ bootstrap = 'h', vats = { h = { sourceSpec = ECHO } } }):await()
    broken = holder.rootKref
    local r = kernel:launchSubcluster({ bootstrap = 'v', vats = { v = { sourceSpec = ECHO } } }):await()
    victim, victimRoot = kernel:getSubcluster(r.subclusterId).vats.v, r.rootKref
    local svc = ocap.makeDefaultExo('svc', {
      run = function(_, what, arg)
        calls = calls + 1
        if what == 'terminateVat' then
          asked[calls] = kernel:terminateVat(arg, 'asked by a service')
        elseif what == 'terminateSubcluster' then
          asked[calls] = kernel:terminateSubcluster(arg)
        elseif what == 'launchSubcluster' then
          asked[calls] = kernel:launchSubcluster({ bootstrap = 'n', vats = { n = { sourceSpec = ECHO } } })
        elseif what == 'restartVat' then
          asked[calls] = kernel:restartVat(arg)
        elseif what == 'revoke' then
          kernel:revoke(arg)
        elseif what == 'write' then
          -- An IO channel is an exo of the host's state: host code holding
          -- one may call it directly.
          asked[calls] = writer:write('line ' .. calls)
        elseif what == 'export' then
          -- The first run only: a new export of the host's, and a new
          -- result promise.
          if calls == 1 then
            made[1] = ocap.makeDefaultExo('fresh', { who = function() return 'the host' end })
            asked[1] = kernel:queueMessage(victimRoot, 'echo', { made[1] })
          end
        elseif what == 'read' then
          asked[calls] = writer:read()
        elseif what == 'commit' then
          kernel.K:kvSet('host.note', 'written')
          kernel.K:commit()
        end
        return kernel:getPresence(broken)
      end,
    })
    svcKref = kernel:registerKernelServiceObject('svc', svc).kref
  end)
  after_each(function() kernel:stop() end)

  --- Sends run(what, arg) to the service with `broken` damaged: the crank
  --- fails. Returns the result promise, still pending.
  local function failing(what, arg)
    local K = kernel.K
    saved = K:kvGet(broken .. '.refCount')
    K:kvSet(broken .. '.refCount', 'zzz')
    K:commit()
    local p = kernel:queueMessage(svcKref, 'run', { what, arg })
    local ok, err = pcall(function() return p:await() end)
    assert.is_false(ok)
    assert.matches(("crank failed: corrupt database: key '%s.refCount' holds 'zzz'"):format(broken), err, 1, true)
    assert.equal(1, calls)
    -- Rolled back whole: the message is queued again, and the tables in
    -- memory agree with the store.
    assert.equal(1, K:queueLength())
    assert.is_true(K:check())
    return p
  end

  --- Repairs `broken`; the message runs again, and this time commits.
  local function repaired(p)
    if saved then kernel.K:kvSet(broken .. '.refCount', saved) else kernel.K:kvDelete(broken .. '.refCount') end
    kernel.K:commit()
    assert.equal(broken, kernel:krefOf(p:await()))
    assert.equal(2, calls)
  end

  it('terminateVat: the vat lives until the crank commits, then is terminated once', function()
    local before = bundleCounts(kernel)
    local p = failing('terminateVat', victim)
    assert.is_nil(kernel.K:kvGet('terminated.' .. victim))
    assert.is_truthy(kernel.K:kvGet('vat.' .. victim))
    assert.same(before, bundleCounts(kernel))
    repaired(p)
    assert.is_nil(asked[2]:await())
    assert.equal('asked by a service', kernel:getStatus().terminatedVats[1].reason)
    assert.is_nil(kernel.K:kvGet('vat.' .. victim))
    local hash, n = next(before)
    assert.equal(n - 1, bundleCounts(kernel)[hash])
    assert.equal('OBJECT_DELETED', select(2, pcall(function()
      return kernel:queueMessage(victimRoot, 'ping', { 1 }):await()
    end)).code)
    assert.is_true(kernel.K:check())
  end)

  it('terminateSubcluster: nothing is terminated by the failed crank', function()
    local sc = kernel:getStatus().vats[2].subclusterId
    local p = failing('terminateSubcluster', sc)
    assert.is_truthy(kernel:getSubcluster(sc))
    repaired(p)
    asked[2]:await()
    assert.is_nil(kernel:getSubcluster(sc))
    assert.equal(1, #kernel:getStatus().vats)
    assert.is_true(kernel.K:check())
  end)

  it('launchSubcluster: the subcluster is launched once, by the crank that committed', function()
    local before = bundleCounts(kernel)
    local p = failing('launchSubcluster')
    assert.equal(2, #kernel:getSubclusters())
    assert.same(before, bundleCounts(kernel))
    repaired(p)
    local r = asked[2]:await()
    assert.equal(3, #kernel:getSubclusters())
    assert.equal(7, kernel:queueMessage(r.rootKref, 'ping', { 7 }):await())
    local hash, n = next(before)
    assert.equal(n + 1, bundleCounts(kernel)[hash])
    assert.is_true(kernel.K:check())
  end)

  it('restartVat: the vat keeps running, and restarts once the crank commits', function()
    assert.equal(1, kernel:queueMessage(victimRoot, 'ping', { 1 }):await())
    local p = failing('restartVat', victim)
    assert.is_true(kernel.K:vatLive(victim))
    repaired(p)
    asked[2]:await()
    assert.equal(2, kernel:queueMessage(victimRoot, 'ping', { 2 }):await())
    assert.is_true(kernel.K:check())
  end)

  it('revoke: the revocation is the crank\'s, rolled back with it', function()
    local p = failing('revoke', victimRoot)
    assert.is_false(kernel:isRevoked(victimRoot))
    repaired(p)
    assert.is_true(kernel:isRevoked(victimRoot))
    assert.equal('OBJECT_REVOKED', select(2, pcall(function()
      return kernel:queueMessage(victimRoot, 'ping', { 1 }):await()
    end)).code)
    assert.is_true(kernel.K:check())
  end)

  it('an IO write: the line leaves once, after the crank that committed', function()
    local path = testing.tempDir() .. '/out.txt'
    local r = kernel:launchSubcluster({ bootstrap = 'u', io = { f = { type = 'file', path = path, direction = 'out' } },
      vats = { u = { sourceSpec = 'spec/vats/io_user.lua' } } }):await()
    writer = kernel.ioChannels[r.subclusterId].f.object
    local p = failing('write')
    repaired(p)
    asked[2]:await()
    local f = assert(io.open(path, 'rb'))
    local text = f:read('a')
    f:close()
    assert.equal('line 2\n', text)
  end)

  it('a vat exit in a crank that fails: its channels close all the same', function()
    -- The exit is handled once the crank is over, even one that failed
    -- (the vat asked; its exit is not rolled back), and the channels of
    -- its subcluster close after that: the failed crank's own after-crank
    -- work is dropped, but not this. The crank fails at the vat's send,
    -- on a damaged object counter.
    local path = testing.tempDir() .. '/out.txt'
    local r = kernel:launchSubcluster({ bootstrap = 'x', io = { f = { type = 'file', path = path, direction = 'out' } },
      vats = { x = { sourceSpec = 'spec/vats/exiter.lua' } } }):await()
    local chan = kernel.ioChannels[r.subclusterId].f.object
    kernel:queueMessage(r.rootKref, 'hold', { kernel:getPresence(victimRoot) }):await()
    local p = kernel:queueMessage(r.rootKref, 'sendThenExit', {})
    local K = kernel.K
    local counter = K:kvGet('nextObjectId')
    K:kvSet('nextObjectId', 'zzz')
    K:commit()
    local ok, err = pcall(function() return p:await() end)
    assert.is_false(ok)
    assert.matches("crank failed: corrupt database: key 'nextObjectId' holds 'zzz'", err, 1, true)
    K:kvSet('nextObjectId', counter)
    K:commit()
    kernel:run()
    assert.is_nil(kernel:getSubcluster(r.subclusterId))
    ok, err = pcall(function() return chan:write('late'):await() end)
    assert.is_false(ok)
    assert.equal('IO channel "f" is closed', err.message)
    assert.is_true(K:check())
  end)

  it('an IO read: the line goes to the crank that committed, none is lost', function()
    local path = testing.tempDir() .. '/in.txt'
    local f = assert(io.open(path, 'wb'))
    f:write('line 1\nline 2\n')
    f:close()
    local r = kernel:launchSubcluster({ bootstrap = 'u', io = { f = { type = 'file', path = path, direction = 'in' } },
      vats = { u = { sourceSpec = 'spec/vats/io_user.lua' } } }):await()
    writer = kernel.ioChannels[r.subclusterId].f.object
    local p = failing('read')
    repaired(p)
    assert.equal('line 1', asked[2]:await())
    -- The failed crank took nothing: the next read gets the next line.
    assert.equal('line 2', writer:read():await())
  end)

  it('an export and a promise of the crank that failed never name another\'s', function()
    local p = failing('export')
    repaired(p)
    -- The krefs the failed crank handed the host are not handed out again:
    -- a new vat's root (an object) and a result (a promise) get new ones.
    local r = kernel:launchSubcluster({ bootstrap = 'n', vats = { n = { sourceSpec = ECHO } } }):await()
    local root = kernel:getPresence(r.rootKref)
    local got = kernel:queueMessage(r.rootKref, 'echo', { root }):await()
    assert.is_not.equal(made[1], got)
    assert.equal(r.rootKref, kernel:krefOf(got))
    local answer = kernel:queueMessage(r.rootKref, 'ping', { 3 })
    assert.equal(3, answer:await())
    assert.equal('pending', require('ocap.promise').state(asked[1]))
    assert.is_true(kernel.K:check())
  end)

  it('K:commit: commits nothing of the crank, whose writes roll back whole', function()
    local p = failing('commit')
    assert.is_nil(kernel.K:kvGet('host.note'))
    repaired(p)
    assert.equal('written', kernel.K:kvGet('host.note'))
  end)
end)

describe('K:abort inside a crank', function()
  local kernel
  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() kernel:stop() end)

  it('is refused, and the message is delivered once', function()
    local calls, refused = 0, nil
    local svc = ocap.makeDefaultExo('svc', {
      undo = function()
        calls = calls + 1
        kernel.K:kvSet('host.note', 'kept')
        if calls == 1 then refused = select(2, pcall(kernel.K.abort, kernel.K)) end
        return calls
      end,
    })
    local kref = kernel:registerKernelServiceObject('svc', svc).kref
    assert.equal(1, kernel:queueMessage(kref, 'undo', {}):await())
    kernel:run()
    assert.equal(1, calls)
    assert.matches('cannot abort the store while a crank is running', refused, 1, true)
    assert.equal('kept', kernel.K:kvGet('host.note'))
    assert.equal(0, kernel.K:queueLength())
    assert.is_true(kernel.K:check())
  end)
end)

describe('host work asked for in a delivery that the kernel undoes', function()
  -- A vat that fails fatally has its delivery rolled back, and the crank
  -- goes on to terminate it, and commits: a termination the logger asked
  -- for in that delivery goes with the delivery.
  it('is dropped with it, and the rest of the crank stands', function()
    local kernel, victim, asked
    kernel = testing.makeKernel({ logger = function(e)
      if e.message == 'looping' then asked = kernel:terminateVat(victim, 'asked by a logger') end
    end })
    local v = kernel:launchSubcluster({ bootstrap = 'v', vats = { v = { sourceSpec = ECHO } } }):await()
    victim = kernel:getSubcluster(v.subclusterId).vats.v
    local r = kernel:launchSubcluster({ bootstrap = 'r', vats = { r = { sourceSpec = 'spec/vats/runaway.lua',
      creationOptions = { meter = { instructions = 2e6 } } } } }):await()
    local runaway = kernel:getSubcluster(r.subclusterId).vats.r
    local p = kernel:queueMessage(r.rootKref, 'logThenLoop', {})
    local ok, err = pcall(function() return p:await() end)
    assert.is_false(ok)
    assert.matches('METER', tostring(err), 1, true)
    assert.is_truthy(asked)
    local settled = false
    asked:next(function() settled = true end, function() settled = true end)
    kernel:run()
    assert.is_false(settled)
    -- The runaway vat is terminated (the crank's own work), the victim not.
    local gone = kernel:getStatus().terminatedVats
    assert.equal(1, #gone)
    assert.equal(runaway, gone[1].id)
    assert.equal(5, kernel:queueMessage(v.rootKref, 'echo', { 5 }):await())
    assert.is_true(kernel.K:check())
    kernel:stop()
  end)
end)

describe('the core bindings that start or stop vats, inside a crank', function()
  local kernel
  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() kernel:stop() end)

  -- K:terminate, K:stopVat, K:createVat, K:holdVat and K:releaseHeld act
  -- outside the
  -- store (a vat's Lua state closed or started), which the crank's
  -- rollback would not undo: host code in a crank is refused them, and
  -- the vat they name is untouched.
  it('are refused, and the vat they name keeps running', function()
    local r = kernel:launchSubcluster({ bootstrap = 'v', vats = { v = { sourceSpec = ECHO } } }):await()
    local vatId = kernel:getSubcluster(r.subclusterId).vats.v
    local K, refused = kernel.K, {}
    local svc = ocap.makeDefaultExo('svc', {
      poke = function()
        refused.terminate = select(2, pcall(K.terminate, K, vatId, '#"x"'))
        refused.stopVat = select(2, pcall(K.stopVat, K, vatId))
        refused.holdVat = select(2, pcall(K.holdVat, K, vatId))
        refused.releaseHeld = select(2, pcall(K.releaseHeld, K, vatId, true))
        refused.createVat = select(2, pcall(K.createVat, K, 'v99', { main = 'm', modules = { m = 'return {}' } }))
        return 'poked'
      end,
    })
    local kref = kernel:registerKernelServiceObject('svc', svc).kref
    assert.equal('poked', kernel:queueMessage(kref, 'poke', {}):await())
    for _, name in ipairs({ 'terminate', 'stopVat', 'holdVat', 'releaseHeld', 'createVat' }) do
      assert.matches('K:' .. name .. ' is refused while a crank is running', refused[name], 1, true)
    end
    assert.equal(0, #kernel:getStatus().terminatedVats)
    assert.equal(7, kernel:queueMessage(r.rootKref, 'echo', { 7 }):await())
    assert.is_true(K:check())
  end)
end)

describe('K:createVat raising once the vat exists', function()
  -- A runtime whose boot starts at once, as sandbox_spec's.
  local BOOT = [[
local M = {}
function M.boot()
  return function(kind) if kind == 'startVat' then return true end end, {}, {}
end
return M
]]

  -- The host's options raise at their second read of `modules` (the
  -- preloads, after the vat's state is made) or their third (after the
  -- start, giving unrequired modules their text back), as a host out of
  -- memory would there. The vat was left half built, its collector
  -- stopped, and createVat then said it was already running.
  it('leaves no vat behind, and the vat can be created again', function()
    local core = require 'ocap.core'
    local K = assert(core.open({}))
    finally(function() K:close() end)
    K:setRuntime({ { 'ocap.vatboot', BOOT } })
    for _, failing in ipairs({ 2, 3 }) do
      local reads = 0
      local opts = setmetatable({ main = 'm' }, { __index = function(_, k)
        if k ~= 'modules' then return nil end
        reads = reads + 1
        if reads == failing then error('the host failed here', 0) end
        return { m = 'return {}' }
      end })
      assert.same({ false, 'the host failed here' }, { pcall(K.createVat, K, 'v1', opts) })
      assert.equal(failing, reads)
      assert.is_false(K:vatLive('v1'))
      assert.is_true(K:createVat('v1', { main = 'm', modules = { m = 'return {}' } }))
      K:stopVat('v1')
    end
  end)
end)

describe('host calls with effects outside the store, inside a crank', function()
  local kernel
  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() kernel:stop() end)

  it('run after the crank, in the order they were made', function()
    local r = kernel:launchSubcluster({ bootstrap = 'a', vats = {
      a = { sourceSpec = ECHO }, b = { sourceSpec = ECHO } } }):await()
    local vats = kernel:getSubcluster(r.subclusterId).vats
    local order, seen = {}, {}
    local svc = ocap.makeDefaultExo('svc', {
      run = function()
        -- Still alive when the call returns: nothing ran yet.
        local p1 = kernel:terminateVat(vats.b, 'first')
        seen.live = kernel.K:vatLive(vats.b)
        seen.pending = require('ocap.promise').state(p1)
        local p2 = kernel:launchSubcluster({ bootstrap = 'n', vats = { n = { sourceSpec = ECHO } } })
        local p3 = kernel:terminateVat(vats.a, 'second')
        p1:next(function() order[#order + 1] = 'terminate b' end)
        p2:next(function() order[#order + 1] = 'launch' end)
        p3:next(function() order[#order + 1] = 'terminate a' end)
        return 'asked'
      end,
    })
    local kref = kernel:registerKernelServiceObject('svc', svc).kref
    assert.equal('asked', kernel:queueMessage(kref, 'run', {}):await())
    kernel:run()
    assert.is_true(seen.live)
    assert.equal('pending', seen.pending)
    -- The launch's promise waits for its bootstrap, a later crank.
    assert.same({ 'terminate b', 'terminate a', 'launch' }, order)
    local reasons = {}
    for _, t in ipairs(kernel:getStatus().terminatedVats) do reasons[t.id] = t.reason end
    assert.same({ [vats.a] = 'second', [vats.b] = 'first' }, reasons)
    assert.equal(1, #kernel:getSubclusters())
  end)

  it('cannot be awaited on the main thread inside the crank: a clear error', function()
    local r = kernel:launchSubcluster({ bootstrap = 'a', vats = { a = { sourceSpec = ECHO } } }):await()
    local vatId = kernel:getSubcluster(r.subclusterId).vats.a
    local raised
    local svc = ocap.makeDefaultExo('svc', { run = function() return 'ran' end })
    local kref = kernel:registerKernelServiceObject('svc', svc).kref
    -- A result handler runs on the main thread, inside the crank that
    -- told the host.
    local done = kernel:queueMessage(kref, 'run', {}):next(function()
      local ok, err = pcall(function() return kernel:terminateVat(vatId):await() end)
      raised = not ok and err or 'awaited'
    end)
    done:await()
    assert.matches('kernel:step() called while a crank is running: host code inside a crank cannot run the kernel, '
      .. 'nor await on the main thread a promise that only a later crank settles', raised, 1, true)
    -- The termination itself was made, once the crank was over.
    kernel:run()
    assert.equal(vatId, kernel:getStatus().terminatedVats[1].id)
  end)
end)

describe('the kernel facet from a system vat', function()
  it('terminates, restarts, pings, revokes and upgrades end to end', function()
    local kernel = testing.makeKernel({ systemSubclusters = {
      { name = 'sys', config = { bootstrap = 'u', services = { 'kernelFacet' },
        vats = { u = { sourceSpec = USER } } } } } })
    local root = kernel:getSystemSubclusterRoot('sys')
    local function facet(...) return kernel:queueMessage(root, 'facet', table.pack(...)):await() end
    local r = kernel:launchSubcluster({ bootstrap = 'a', vats = {
      a = { sourceSpec = ECHO }, b = { sourceSpec = ECHO } } }):await()
    local vats = kernel:getSubcluster(r.subclusterId).vats
    assert.equal('pong', facet('pingVat', vats.a))
    facet('restartVat', vats.a)
    assert.equal(3, kernel:queueMessage(r.rootKref, 'ping', { 3 }):await())
    assert.equal(2, facet('upgradeVat', vats.a, { sourceSpec = ECHO }).incarnation)
    facet('revoke', r.rootKref)
    assert.is_true(facet('isRevoked', r.rootKref))
    facet('terminateVat', vats.b, 'by the facet')
    local reasons = {}
    for _, t in ipairs(kernel:getStatus().terminatedVats) do reasons[t.id] = t.reason end
    assert.equal('by the facet', reasons[vats.b])
    assert.is_true(kernel.K:check())
    -- reset, last: it wipes the caller's own subcluster too, once the
    -- crank that asked has committed.
    pcall(facet, 'reset')
    assert.same({}, kernel:getSubclusters())
    assert.equal(0, #kernel:getStatus().vats)
    assert.is_true(kernel.K:check())
    kernel:stop()
  end)
end)

describe('a vat started by a crank that then fails', function()
  it('is stopped with it: its restart runs again, and its previous incarnation is told', function()
    local kernel = testing.makeKernel()
    local K = kernel.K
    local hang = ocap.makeDefaultExo('hang', {
      hang = function() return require('ocap.promise').makePromiseKit().promise end,
    })
    local hk = kernel:registerKernelServiceObject('hang', hang).kref
    local r = kernel:launchSubcluster({ bootstrap = 'a',
      vats = { a = { sourceSpec = ECHO }, h = { sourceSpec = ECHO } } }):await()
    local vatA = kernel:getSubcluster(r.subclusterId).vats.a
    local h = kernel:krefOf(kernel:queueMessage(r.rootKref, 'peer', { 'h' }):await())
    -- v1 decides a promise its heap waits on.
    local pending = kernel:queueMessage(r.rootKref, 'call', { kernel:getPresence(hk), 'hang' })
    kernel:run()
    local function damage(kref)
      local saved = K:kvGet(kref .. '.refCount')
      K:kvSet(kref .. '.refCount', 'zzz')
      K:commit()
      return function()
        if saved then K:kvSet(kref .. '.refCount', saved) else K:kvDelete(kref .. '.refCount') end
        K:commit()
      end
    end
    local z = ocap.makeDefaultExo('z', {})
    local p = kernel:queueMessage(r.rootKref, 'callPeer', { 'h', 'echo', z })
    K:commit()
    -- The first run fails in the vat (its send to h meets a damaged
    -- count): the vat, whose heap went on, is stopped.
    local repair = damage(h)
    assert.is_false(pcall(function() return p:await() end))
    assert.is_false(K:vatLive(vatA))
    repair()
    -- The second restarts the vat, which rejects what its previous
    -- incarnation decided, then fails before the delivery (z's count):
    -- the rejection is rolled back, so the vat must not stay started.
    repair = damage(kernel:krefOf(z))
    assert.is_false(pcall(function() return p:await() end))
    assert.is_false(K:vatLive(vatA))
    repair()
    pcall(function() return p:await() end)
    kernel:run()
    assert.equal('rejected', require('ocap.promise').state(pending))
    local ok, err = pcall(function() return pending:await() end)
    assert.is_false(ok)
    assert.matches('vat ' .. vatA .. ' restarted: the promises its previous incarnation decided are lost',
      err.message, 1, true)
    assert.is_true(K:check())
    kernel:stop()
  end)
end)
